"""Row locks several capabilities share: one user's changes to a per-user limit, serialised."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models import User


async def lock_user(conn: AsyncConnection, user_id: uuid.UUID) -> None:
    """Serialise one user's changes to a per-user limit (API keys, webhook endpoints), so concurrent creations
    cannot pass it together. NO KEY UPDATE: rows that merely refer to the user are not held up."""
    await conn.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
