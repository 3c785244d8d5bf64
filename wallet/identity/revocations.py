"""Revoked logins as one process knows them: PostgreSQL's sessions table is the truth, loaded here and polled."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Session

# Each poll reads again this far before the previous one: a revocation whose transaction began before that poll
# but committed after it (so the poll could not see it) is still found, as long as it took less than this.
OVERLAP = dt.timedelta(seconds=60)


class RevokedSessions:
    """Session ids revoked recently enough that an access token of theirs may still be unexpired.

    A lookup is a dict membership test, so checking every request costs nothing measurable. The set forgets a
    session once every access token it issued has expired (they were all issued before its revocation).
    """

    def __init__(self, access_token_ttl: int) -> None:
        self._keep = dt.timedelta(seconds=access_token_ttl) + OVERLAP
        self._revoked: dict[uuid.UUID, dt.datetime] = {}
        self._polled_at: dt.datetime | None = None
        self._watchers: dict[uuid.UUID, set[Callable[[], None]]] = {}

    def __contains__(self, session_id: uuid.UUID) -> bool:
        return session_id in self._revoked

    def add(self, revoked: Iterable[tuple[uuid.UUID, dt.datetime]]) -> None:
        """Sessions this process has just revoked (id, revoked_at): known here at once, before any poll."""
        for session_id, revoked_at in revoked:
            self._revoked[session_id] = revoked_at
            for on_revoked in self._watchers.get(session_id, ()):
                asyncio.get_running_loop().call_soon(on_revoked)  # not in the revoker's way, whatever it does

    def watch(self, session_id: uuid.UUID, on_revoked: Callable[[], None]) -> Callable[[], None]:
        """Call on_revoked as soon as this process learns the session was revoked (at once when revoked here, at
        the next poll when elsewhere), for what lasts beyond a request (a stream); returns the call that stops it."""
        self._watchers.setdefault(session_id, set()).add(on_revoked)

        def unwatch() -> None:
            watchers = self._watchers.get(session_id, set())
            watchers.discard(on_revoked)
            if not watchers:
                self._watchers.pop(session_id, None)

        return unwatch

    async def poll(self, conn: AsyncConnection) -> None:
        """Learn the revocations committed since the last poll (at the first, all that still matter)."""
        now = (await conn.execute(select(func.now()))).scalar_one()
        since = now - self._keep if self._polled_at is None else self._polled_at - OVERLAP
        rows = await conn.execute(select(Session.id, Session.revoked_at).where(Session.revoked_at > since))
        self.add((row.id, row.revoked_at) for row in rows)
        horizon = now - self._keep
        self._revoked = {sid: at for sid, at in self._revoked.items() if at > horizon}
        self._polled_at = now
