"""Readiness: the database (and Redis, when configured) answer."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from wallet.errors import ServiceUnavailable
from wallet.runtime import Runtime


async def check_ready(rt: Runtime) -> None:
    try:
        async with asyncio.timeout(2):
            async with rt.transaction() as conn:
                await conn.execute(text("SELECT 1"))
            await rt.store.ping()
    except Exception:
        raise ServiceUnavailable("The database or Redis is not answering.") from None
