"""The logins of a user as they see them (device, address, when made and last used) and ending them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from models import Session
from wallet import errors
from wallet.identity.auth import announce_revoked, end_logins
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

_COLUMNS = (Session.id, Session.created_at, Session.last_used_at, Session.user_agent, Session.ip)


def _live(principal: Principal) -> tuple[Any, ...]:
    return (Session.user_id == principal.user_id, Session.revoked_at.is_(None), Session.expires_at > func.now())


async def list_sessions(rt: Runtime, principal: Principal, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """The caller's logins that can still be used, newest first; `current` is the one asking."""

    def render(row: Any) -> dict[str, Any]:
        return {**row._mapping, "current": row.id == principal.session_id}

    return await created_page(rt, select(*_COLUMNS).where(*_live(principal)), Session, limit, cursor, render)


async def revoke(rt: Runtime, principal: Principal, session_id: uuid.UUID) -> None:
    """End one of the caller's logins (this one too, if it names it); an unknown or ended one is a 404."""
    async with rt.transaction() as conn:
        revoked = await end_logins(conn, *_live(principal), Session.id == session_id)
    if not revoked:
        raise errors.NotFound("No such session.")
    await announce_revoked(rt, revoked)


async def revoke_others(rt: Runtime, principal: Principal) -> None:
    """Sign out everywhere else: every login of the caller but this one."""
    async with rt.transaction() as conn:
        revoked = await end_logins(conn, *_live(principal), Session.id != principal.session_id)
    await announce_revoked(rt, revoked)
