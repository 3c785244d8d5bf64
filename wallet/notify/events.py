"""The event outbox: write a user's events inside the transaction of the change they report; read them in order.

Ordering: events.id is a global identity, and identities are handed out in call order, not commit order. So every
statement that writes events first locks one `event_heads` row per user concerned (in user id order, so two writers
cannot deadlock) and only then takes the ids. The lock is held until commit, so of two commits writing events for
one user the later one takes its ids after the earlier committed: a user's ids increase in commit order, and a reader
following `id > after` never skips an event that commits later. Writers call this last in their transaction, after
any wallet or user row locks, so the heads lock is always the innermost one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallet.errors import ValidationError
from wallet.platform.logs import LoopLog
from wallet.platform.paging import bigint, decode_cursor, encode_cursor
from wallet.platform.runtime import Runtime

log = logging.getLogger("wallet.events")

TYPES = (
    "transaction.completed",
    "transaction.failed",
    "transfer.received",
    "deposit.completed",
    "hold.created",
    "hold.captured",
    "hold.released",
    "payment_request.created",
    "payment_request.paid",
    "payment_request.declined",
    "payment_request.cancelled",
    "payment_request.expired",
    "payout.pending",
    "payout.completed",
    "payout.failed",
    "payout.reversed",
    "account.frozen",
    "account.unfrozen",
    "account.deactivated",
    "account.activated",
    "api_key.created",
    "api_key.revoked",
)

# The events that are also e-mailed (wallet/notify/mail.py writes them).
MAILED = (
    "transfer.received",
    "deposit.completed",
    "account.frozen",
    "account.unfrozen",
    "account.deactivated",
    "api_key.created",
    "payment_request.created",
    "payout.completed",
    "payout.failed",
    "payout.reversed",
)


@dataclass(frozen=True)
class NewEvent:
    user_id: uuid.UUID
    type: str
    data: Mapping[str, Any]


def cte(
    event_data: str = "CAST(:event_data AS text[])",
    when: str = "true",
    users: str = "CAST(:event_users AS uuid[])",
    types: str = "CAST(:event_types AS text[])",
) -> str:
    """CTEs that write the events given as :event_users / :event_types / :event_data (see params()); a statement
    that already holds the locks of a change includes them (the ledger's), others run emit(). The ledger passes its
    own `event_data` expression (the data with completed_at stamped by the change, which also makes these CTEs run
    after the change's locks) and `when`, a condition for writing them at all (the change took place); its group
    commit also its own `users` and `types` (the events of the operations of a batch that took place)."""
    return f"""
new_events (user_id, type, data, n) AS (
    SELECT * FROM unnest({users}, {types}, {event_data}) WITH ORDINALITY
    WHERE {when}
), event_locks AS (
    INSERT INTO event_heads AS h (user_id, last_event_at)
    SELECT DISTINCT user_id, now() FROM new_events ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_at = excluded.last_event_at
    RETURNING h.user_id
), emitted AS (
    -- The join makes each event wait for its user's lock row before its id is taken.
    INSERT INTO events (user_id, type, data)
    SELECT n.user_id, n.type, CAST(n.data AS jsonb) FROM new_events n JOIN event_locks l ON l.user_id = n.user_id
    ORDER BY n.n
    RETURNING id, user_id, type
), queued AS (
    -- A webhook delivery per active endpoint of the user that takes the type; an e-mail when the type is mailed and
    -- the user has an address.
    INSERT INTO deliveries (id, channel, endpoint_id, event_id, next_attempt_at)
    SELECT gen_random_uuid(), 'webhook', w.id, e.id, now()
    FROM emitted e JOIN webhook_endpoints w ON w.user_id = e.user_id
    WHERE w.status = 'active' AND (e.type = ANY(w.event_types) OR '*' = ANY(w.event_types))
    UNION ALL
    SELECT gen_random_uuid(), 'email', NULL, e.id, now() FROM emitted e JOIN users u ON u.id = e.user_id
    WHERE u.email IS NOT NULL AND e.type = ANY(CAST(:mailed_types AS text[]))
)"""


_EMIT = text(f"WITH {cte()} SELECT count(*) FROM emitted")


def to_json(data: Mapping[str, Any]) -> str:
    # OPT_UTC_Z: times read as the API writes them (ISO 8601 with Z); str() for asyncpg's own UUID class.
    return orjson.dumps(data, option=orjson.OPT_UTC_Z, default=str).decode()


def params(events: Sequence[NewEvent]) -> dict[str, list[Any]]:
    """The bind parameters of CTE for these events (empty lists write nothing)."""
    for event in events:
        assert event.type in TYPES, event.type
    return {
        "event_users": [e.user_id for e in events],
        "event_types": [e.type for e in events],
        "event_data": [to_json(e.data) for e in events],
        "mailed_types": list(MAILED),
    }


async def emit(conn: AsyncConnection, events: Sequence[NewEvent]) -> None:
    """Write events in the caller's transaction; call it after the change's own row locks are taken."""
    if events:
        await conn.execute(_EMIT, params(events))


def render_event(row: Any) -> dict[str, Any]:
    return {"id": row.id, "type": row.type, "created_at": row.created_at, "data": row.data}


_AFTER = text("""
SELECT id, type, created_at, data FROM events WHERE user_id = CAST(:user AS uuid) AND id > :after
ORDER BY id LIMIT :limit
""")


async def read_after(conn: AsyncConnection, user_id: uuid.UUID, after: int, limit: int) -> list[Any]:
    """Up to `limit` of a user's events after `after`, oldest first."""
    return (await conn.execute(_AFTER, {"user": user_id, "after": after, "limit": limit})).all()


async def list_events(
    rt: Runtime, user_id: uuid.UUID, *, after: int | None = None, cursor: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The caller's events oldest first after `after` (an event id) or `cursor` (a page's next_cursor)."""
    if after is not None and cursor is not None:
        raise ValidationError({"cursor": ["Give either after or cursor, not both."]})
    if cursor is not None:
        after = decode_cursor(cursor, bigint)[0]
    async with rt.autocommit() as conn:
        rows = await read_after(conn, user_id, after or 0, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [render_event(r) for r in rows], "next_cursor": encode_cursor(rows[-1].id) if more else None}


# ---- live streams -----------------------------------------------------------------------------------------------

_NEWEST = text("""
SELECT u.user_id, (SELECT max(id) FROM events e WHERE e.user_id = u.user_id) AS newest
FROM unnest(CAST(:users AS uuid[])) AS u (user_id)
""")


class Hub:
    """One per process: while streams are open, it polls the newest event id of their users (one indexed query for
    all of them) and wakes the streams of a user whose newest id moved. Each stream then reads its own gap with
    read_after(), so a wake-up is only a hint and a missed one costs latency, never an event.

    Polling rather than LISTEN/NOTIFY: NOTIFY takes a cluster-wide lock at commit, which would serialise every money
    commit; rather than Redis pub/sub: a publish after commit is lost when the process dies in between, so the
    database would have to be read anyway. See docs/events.md.
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._streams: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.closing = False  # the process is stopping: each stream sends what it has and ends

    @property
    def open_streams(self) -> int:
        return sum(map(len, self._streams.values()))

    def close(self) -> None:
        """Wake every stream for the last time (the process is stopping)."""
        self.closing = True
        for streams in self._streams.values():
            for wake in streams:
                wake.set()

    def subscribe(self, user_id: uuid.UUID) -> asyncio.Event:
        wake = asyncio.Event()
        self._streams.setdefault(user_id, set()).add(wake)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return wake

    def unsubscribe(self, user_id: uuid.UUID, wake: asyncio.Event) -> None:
        streams = self._streams.get(user_id, set())
        streams.discard(wake)
        if not streams:
            self._streams.pop(user_id, None)

    async def _poll(self) -> None:
        seen: dict[uuid.UUID, int | None] = {}
        report = LoopLog(log, "event stream poll")
        while self._streams:  # the task ends with the last stream; subscribe() starts it again
            try:
                async with self._rt.autocommit() as conn:
                    rows = (await conn.execute(_NEWEST, {"users": list(self._streams)})).all()
                latest = {row.user_id: row.newest for row in rows}
                for user, newest in latest.items():
                    if user not in seen or seen[user] != newest:
                        for wake in self._streams.get(user, ()):
                            wake.set()
                seen = latest
                report.ok()
            except Exception as error:  # the database is away: streams keep their cursors and catch up when it is back
                report.failed(error)
            await asyncio.sleep(self._rt.settings.events_poll_ms / 1000)
