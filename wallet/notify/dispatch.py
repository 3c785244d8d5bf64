"""The dispatcher every server process runs: it claims due deliveries (webhooks, e-mail), sends them, records each try.

A delivery row is queued in the same statement that writes its event (events.cte()). Two lanes, each a loop of its
own with its own slots, so that neither can hold the other up: webhooks and e-mail. A claim is a lease: in the same
short commit it moves next_attempt_at past the send timeout and marks the row in flight (leased_until), so no other
process takes it while it is in flight, and a process that dies mid-send leaves it to be claimed again when the lease
ends (at least once; the webhook-id and the Message-ID let receivers drop repeats). Each claimed row is sent on its
own and recorded the moment it ends: a slow receiver holds up its own slot, nothing else.

Webhooks are claimed fairly and within caps that hold across every process: one delivery per endpoint in turn, at
most WEBHOOK_ENDPOINT_CONCURRENCY in flight per endpoint and WEBHOOK_USER_CONCURRENCY per user (counted from the
leases, under a lock that makes webhook claims one at a time in the cluster: a claim is one short statement). An
endpoint whose attempts failed WEBHOOK_BREAKER_FAILURES times in a row is left alone as a whole (its circuit breaker is
open) until breaker_until, then probed one delivery at a time: a success closes the breaker, a failure opens it again
for twice as long.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Delivery, WebhookEndpoint
from wallet.notify import Attempt, mail, webhooks
from wallet.platform.logs import LoopLog
from wallet.platform.prepared import Prepared
from wallet.platform.runtime import Runtime

log = logging.getLogger("wallet.dispatch")

TIMEOUT = 10  # seconds for one send, connect to last byte
LEASE = TIMEOUT + 20  # how long a claimed row is left alone
MAX_RETRY_DELAY = 10 * 3600
MAX_BREAKER_OPEN = 3600  # seconds an open breaker waits at most before its next probe
WEBHOOK_CLAIM_LOCK = 727275  # pg_advisory_xact_lock key: webhook claims one at a time (migrations hold 727274)
BACKLOG_COUNT_LIMIT = 10_000  # the backlog gauge counts this far: a scrape reads at most this many index entries
D = Delivery.__table__
E = WebhookEndpoint.__table__

# What a lane's send needs of a claimed row (the endpoint's columns are NULL for an e-mail).
_CLAIMED = """
RETURNING d.id, d.channel, d.attempts, d.created_at, d.endpoint_id, w.url, w.secret,
    CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret,
    e.id AS event_id, e.type, e.created_at AS event_created_at, e.data, u.email, u.username
"""

_LEASE = """attempts = d.attempts + 1, leased_until = now() + make_interval(secs => :lease),
    next_attempt_at = now() + make_interval(secs => :lease)"""

# busy: the endpoints with pending webhook deliveries, read from the index by a skip scan (one probe per endpoint, not
# one per row: a dead endpoint's backlog costs nothing here). flying: the leases in force. Each endpoint whose breaker
# is closed or due for its probe offers its due rows, oldest first, as far as its room; ranked round-robin (every
# endpoint's first row before any second), a user's rows are kept within their room, then the process's free slots.
CLAIM_WEBHOOKS = text(f"""
WITH RECURSIVE busy(endpoint_id) AS (
    (SELECT endpoint_id FROM deliveries WHERE status = 'pending' AND channel = 'webhook' ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT x.endpoint_id FROM deliveries x
            WHERE x.status = 'pending' AND x.channel = 'webhook' AND x.endpoint_id > busy.endpoint_id
            ORDER BY x.endpoint_id LIMIT 1)
    FROM busy WHERE busy.endpoint_id IS NOT NULL
), flying AS (
    SELECT endpoint_id, count(*) AS n FROM deliveries
    WHERE leased_until IS NOT NULL AND leased_until > now() GROUP BY endpoint_id
), offered AS (
    SELECT due.id, w.user_id, due.turn
    FROM busy JOIN webhook_endpoints w ON w.id = busy.endpoint_id
    LEFT JOIN flying f ON f.endpoint_id = w.id
    CROSS JOIN LATERAL (
        SELECT x.id, row_number() OVER (ORDER BY x.next_attempt_at) AS turn FROM deliveries x
        WHERE x.endpoint_id = w.id AND x.status = 'pending' AND x.channel = 'webhook' AND x.next_attempt_at <= now()
        ORDER BY x.next_attempt_at
        LIMIT greatest(
            CASE WHEN w.consecutive_failures >= :breaker_failures THEN 1 ELSE :per_endpoint END - coalesce(f.n, 0), 0)
    ) due
    WHERE w.breaker_until IS NULL OR w.breaker_until <= now()
), user_flying AS (
    SELECT w.user_id, sum(f.n) AS n FROM flying f JOIN webhook_endpoints w ON w.id = f.endpoint_id GROUP BY w.user_id
), ranked AS (
    SELECT o.id, o.turn, coalesce(uf.n, 0) AS user_flying,
        row_number() OVER (PARTITION BY o.user_id ORDER BY o.turn, random()) AS user_turn
    FROM offered o LEFT JOIN user_flying uf ON uf.user_id = o.user_id
), chosen AS (
    SELECT id FROM ranked WHERE user_turn <= :per_user - user_flying ORDER BY turn, random() LIMIT :slots
)
UPDATE deliveries d SET {_LEASE}
FROM chosen, events e, users u, webhook_endpoints w
WHERE d.id = chosen.id AND d.status = 'pending' AND d.next_attempt_at <= now()
    AND e.id = d.event_id AND u.id = e.user_id AND w.id = d.endpoint_id
{_CLAIMED}""")

CLAIM_MAIL = text(f"""
UPDATE deliveries d SET {_LEASE}
FROM (SELECT id FROM deliveries WHERE status = 'pending' AND channel = 'email' AND next_attempt_at <= now()
      ORDER BY next_attempt_at LIMIT :slots FOR UPDATE SKIP LOCKED) due
JOIN deliveries x ON x.id = due.id
JOIN events e ON e.id = x.event_id
JOIN users u ON u.id = e.user_id
LEFT JOIN webhook_endpoints w ON w.id = x.endpoint_id
WHERE d.id = due.id
{_CLAIMED}""")

# A failure counts towards the breaker only while it is closed or probing: sends that were in flight when it opened
# end without pushing it further. Reaching the threshold opens it for the cooldown, doubled by each failure beyond.
BREAKER_FAILED = text("""
UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
    breaker_until = CASE WHEN consecutive_failures + 1 >= :threshold THEN now() + make_interval(
        secs => least(:cooldown * 2 ^ (consecutive_failures + 1 - :threshold), :longest)) END
WHERE id = :id AND (breaker_until IS NULL OR breaker_until <= now())
RETURNING consecutive_failures, breaker_until
""")

BACKLOG = text(f"""
SELECT lane.channel,
    (SELECT count(*) FROM (SELECT 1 FROM deliveries
        WHERE status = 'pending' AND channel = lane.channel LIMIT {BACKLOG_COUNT_LIMIT}) counted) AS pending,
    (SELECT extract(epoch FROM now() - min(created_at)) FROM deliveries
        WHERE status = 'pending' AND channel = lane.channel) AS oldest
FROM (VALUES ('webhook'), ('email')) lane(channel)
""")


# A send that succeeded, recorded in one statement (no BEGIN and COMMIT round trips): the delivery marked succeeded if
# still this claim's (attempts unchanged: a retry requested meanwhile keeps its own schedule), and its endpoint made
# healthy again only if it had failed (a healthy one's row stays as it is, with no new version of it, a dead tuple, per
# delivery). The commit need not wait for the disk (set_config(..., true), as SET LOCAL synchronous_commit = off): a
# record lost in a crash only means the row is sent again when its lease ends. The endpoint's UPDATE joins the
# delivery's count, so the delivery's row is locked before its endpoint's, as retry_delivery locks them.
SUCCEEDED = Prepared(
    text("""
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), done AS (
    UPDATE deliveries SET status = 'succeeded', delivered_at = now(), last_status_code = :status_code,
        last_error = NULL, leased_until = NULL
    WHERE id = :id AND attempts = :attempts AND status = 'pending' AND EXISTS (SELECT FROM relaxed)
    RETURNING id
)
UPDATE webhook_endpoints SET status = 'active', consecutive_failures = 0, breaker_until = NULL
FROM (SELECT count(*) FROM done) AS recorded
WHERE id = CAST(:endpoint_id AS uuid)
    AND NOT (status = 'active' AND consecutive_failures = 0 AND breaker_until IS NULL)
""")
)


def retry_delay(rt: Runtime, attempts: int) -> float:
    """Exponential: the first retry after WEBHOOK_FIRST_RETRY_MS, doubling, at most MAX_RETRY_DELAY apart."""
    return min(rt.settings.webhook_first_retry_ms / 1000 * 2 ** (attempts - 1), MAX_RETRY_DELAY)


async def _failed(rt: Runtime, conn: AsyncConnection, row: Any, attempt: Attempt) -> None:
    """A send that failed: the delivery's next try (or its end) and its endpoint's breaker, in one transaction. Its
    commit need not wait for the disk either (see SUCCEEDED)."""
    await conn.execute(text("SET LOCAL synchronous_commit = off"))
    # The delivery's row before its endpoint's, as retry_delivery locks them: no deadlock between the two.
    mine = (D.c.id == row.id, D.c.attempts == row.attempts, D.c.status == "pending")
    outcome = {"last_status_code": attempt.status_code, "last_error": attempt.error[:255], "leased_until": None}
    delay = retry_delay(rt, row.attempts)
    age = (dt.datetime.now(dt.UTC) - row.created_at).total_seconds()
    given_up = attempt.permanent or age + delay > rt.settings.webhook_retry_for
    if given_up:
        await conn.execute(update(D).where(*mine).values(status="failed", next_attempt_at=None, **outcome))
    else:
        next_at = func.now() + dt.timedelta(seconds=delay)
        await conn.execute(update(D).where(*mine).values(next_attempt_at=next_at, **outcome))
    if row.endpoint_id is not None:
        await _breaker_failed(rt, conn, row.endpoint_id)
        if given_up:
            await conn.execute(update(E).where(E.c.id == row.endpoint_id).values(status="failing"))


async def _breaker_failed(rt: Runtime, conn: AsyncConnection, endpoint_id: Any) -> None:
    settings = rt.settings
    counted = (
        await conn.execute(
            BREAKER_FAILED,
            {
                "id": endpoint_id,
                "threshold": settings.webhook_breaker_failures,
                "cooldown": settings.webhook_breaker_cooldown_ms / 1000,
                "longest": MAX_BREAKER_OPEN,
            },
        )
    ).first()
    if counted is not None and counted.breaker_until is not None:
        log.warning(
            "webhook endpoint breaker open",
            extra={
                "endpoint_id": str(endpoint_id),
                "consecutive_failures": counted.consecutive_failures,
                "until": counted.breaker_until.isoformat(),
            },
        )


async def claim_webhooks(rt: Runtime, slots: int) -> list[Any]:
    settings = rt.settings
    async with rt.transaction() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WEBHOOK_CLAIM_LOCK})
        result = await conn.execute(
            CLAIM_WEBHOOKS,
            {
                "lease": LEASE,
                "slots": slots,
                "per_endpoint": settings.webhook_endpoint_concurrency,
                "per_user": settings.webhook_user_concurrency,
                "breaker_failures": settings.webhook_breaker_failures,
            },
        )
        return list(result.all())


async def claim_mail(rt: Runtime, slots: int) -> list[Any]:
    async with rt.transaction() as conn:
        return list((await conn.execute(CLAIM_MAIL, {"lease": LEASE, "slots": slots})).all())


async def backlog(rt: Runtime) -> dict[str, tuple[int, float]]:
    """Per lane (webhook, email): pending deliveries (counted up to BACKLOG_COUNT_LIMIT) and the age in seconds of the
    oldest (0 when none). Index-only reads, bounded whatever the table holds."""
    async with rt.autocommit() as conn:
        rows = (await conn.execute(BACKLOG)).all()
    return {row.channel: (row.pending, float(row.oldest or 0)) for row in rows}


Claim = Callable[[Runtime, int], Awaitable[list[Any]]]
Send = Callable[[Any], Awaitable[Attempt]]


async def _deliver(rt: Runtime, report: LoopLog, send: Send, row: Any) -> None:
    """Send one claimed row and record how it went, at once. If the record cannot be written, the lease ends and the
    row is sent again (at least once)."""
    try:
        attempt = await asyncio.wait_for(send(row), TIMEOUT)
    except TimeoutError:
        attempt = Attempt(None, f"Timeout: no answer within {TIMEOUT} s")
    try:
        if attempt.error is None:
            async with rt.autocommit() as conn:
                values = {"id": row.id, "attempts": row.attempts, "status_code": attempt.status_code}
                await SUCCEEDED.first(conn, {**values, "endpoint_id": row.endpoint_id})
        else:
            async with rt.transaction() as conn:
                await _failed(rt, conn, row, attempt)
        report.ok()
    except Exception as error:
        report.failed(error)


async def lane(rt: Runtime, name: str, slots: int, claim: Claim, send: Send, stopping: asyncio.Event) -> None:
    """One lane's loop: keeps up to `slots` sends in flight, claiming again whenever one ends or, when nothing was
    due, every EVENTS_POLL_MS. Once `stopping` is set it claims nothing more and returns when the sends under way
    have ended and been recorded (cancelled, at the end of a drain's grace, their leases end and others send them)."""
    report = LoopLog(log, f"dispatch {name}")
    poll = rt.settings.events_poll_ms / 1000
    flying: set[asyncio.Task[None]] = set()
    try:
        while not stopping.is_set():
            claimed: list[Any] = []
            if len(flying) < slots:
                try:
                    claimed = await claim(rt, slots - len(flying))
                    report.ok()
                except Exception as error:
                    report.failed(error)
            flying.update(asyncio.create_task(_deliver(rt, report, send, row)) for row in claimed)
            if not flying:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll)
                continue
            # Full: nothing to do until a send ends. Otherwise also look again after the poll interval (new rows,
            # retries coming due, a breaker's probe).
            timeout = None if len(flying) >= slots else poll
            done, _ = await asyncio.wait(flying, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            flying -= done
        if flying:
            await asyncio.wait(flying)
    finally:
        for task in flying:
            task.cancel()


async def dispatcher(rt: Runtime, stopping: asyncio.Event) -> None:
    """Runs in every server process until `stopping` is set: the webhook lane and the e-mail lane, side by side."""
    settings = rt.settings
    timeout = httpx.Timeout(TIMEOUT, connect=settings.webhook_connect_timeout)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False) as client:
        await asyncio.gather(
            lane(
                rt,
                "webhook",
                settings.webhook_concurrency,
                claim_webhooks,
                lambda row: webhooks.post(rt, client, row),
                stopping,
            ),
            lane(rt, "email", settings.mail_concurrency, claim_mail, lambda row: mail.send(rt, row, TIMEOUT), stopping),
        )
