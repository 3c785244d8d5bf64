"""Readiness: the database (and Redis, when configured) answer; a 503 names the one that does not."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from wallet.errors import ServiceUnavailable
from wallet.platform.runtime import Runtime

log = logging.getLogger("wallet.health")


async def _answers(probe: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(2):
            await probe()
    except Exception:
        return "down"
    return "ok"


async def check_ready(rt: Runtime) -> None:
    async def database() -> None:
        async with rt.autocommit() as conn:
            await conn.execute(text("SELECT 1"))

    # Both at once, so a dependency that hangs costs the probe its timeout once, not twice.
    db, redis = await asyncio.gather(_answers(database), _answers(rt.store.ping))
    state = {"database": db, "redis": redis if rt.settings.redis_url else "not configured"}
    down = [name for name, value in state.items() if value == "down"]
    if down:
        log.warning("not ready: %s down", " and ".join(down), extra=state)
        raise ServiceUnavailable(f"Not answering: {', '.join(down)}.", details=state)
