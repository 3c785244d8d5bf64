"""The dispatcher every server process runs: it claims due deliveries (webhooks, e-mail), sends them, records each try.

A delivery row is queued in the same statement that writes its event (events.cte()). Dispatchers claim due rows with
FOR UPDATE SKIP LOCKED and, in that same short commit, push next_attempt_at past the send timeout: the claim is a
lease, so no other process takes the row while it is in flight, and a process that dies mid-send leaves it to be
claimed again when the lease ends (at least once; the webhook-id and the Message-ID let receivers drop repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import httpx
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Delivery, WebhookEndpoint
from wallet.notify import Attempt, mail, webhooks
from wallet.platform.logs import LoopLog
from wallet.platform.runtime import Runtime

log = logging.getLogger("wallet.dispatch")

TIMEOUT = 10  # seconds for one send, connect to last byte
LEASE = TIMEOUT + 20  # how long a claimed row is left alone
MAX_RETRY_DELAY = 10 * 3600
BATCH = 20
D = Delivery.__table__
E = WebhookEndpoint.__table__

CLAIM = text("""
UPDATE deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
FROM (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at LIMIT :batch FOR UPDATE SKIP LOCKED) due
JOIN deliveries x ON x.id = due.id
JOIN events e ON e.id = x.event_id
JOIN users u ON u.id = e.user_id
LEFT JOIN webhook_endpoints w ON w.id = x.endpoint_id
WHERE d.id = due.id
RETURNING d.id, d.channel, d.attempts, d.created_at, d.endpoint_id, w.url, w.secret,
    CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret,
    e.id AS event_id, e.type, e.created_at AS event_created_at, e.data, u.email, u.username
""")


def retry_delay(rt: Runtime, attempts: int) -> float:
    """Exponential: the first retry after WEBHOOK_FIRST_RETRY_MS, doubling, at most MAX_RETRY_DELAY apart."""
    return min(rt.settings.webhook_first_retry_ms / 1000 * 2 ** (attempts - 1), MAX_RETRY_DELAY)


async def _record(rt: Runtime, conn: AsyncConnection, row: Any, attempt: Attempt) -> None:
    # Only if still this claim's (attempts unchanged): a retry requested meanwhile keeps its own schedule.
    mine = (D.c.id == row.id, D.c.attempts == row.attempts, D.c.status == "pending")
    outcome = {"last_status_code": attempt.status_code, "last_error": attempt.error and attempt.error[:255]}
    if attempt.error is None:
        await conn.execute(update(D).where(*mine).values(status="succeeded", delivered_at=func.now(), **outcome))
        if row.endpoint_id is not None:
            await conn.execute(update(E).where(E.c.id == row.endpoint_id).values(status="active"))
        return
    delay = retry_delay(rt, row.attempts)
    age = (dt.datetime.now(dt.UTC) - row.created_at).total_seconds()
    if attempt.permanent or age + delay > rt.settings.webhook_retry_for:
        await conn.execute(update(D).where(*mine).values(status="failed", next_attempt_at=None, **outcome))
        if row.endpoint_id is not None:
            await conn.execute(update(E).where(E.c.id == row.endpoint_id).values(status="failing"))
        return
    next_at = func.now() + dt.timedelta(seconds=delay)
    await conn.execute(update(D).where(*mine).values(next_attempt_at=next_at, **outcome))


async def dispatch_once(rt: Runtime, client: httpx.AsyncClient) -> int:
    """Claim a batch of due deliveries, send them concurrently, record each outcome; how many were claimed."""
    async with rt.transaction() as conn:
        claimed = (await conn.execute(CLAIM, {"lease": LEASE, "batch": BATCH})).all()

    async def send(row: Any) -> Attempt:
        if row.channel == "email":
            return await mail.send(rt, row, TIMEOUT)
        return await webhooks.post(rt, client, row)

    # Sent concurrently, recorded together: one connection per process however large the batch.
    attempts = await asyncio.gather(*(send(row) for row in claimed))
    async with rt.transaction() as conn:
        for row, attempt in zip(claimed, attempts, strict=True):
            await _record(rt, conn, row, attempt)
    return len(claimed)


async def dispatcher(rt: Runtime, stopping: asyncio.Event) -> None:
    """Runs in every server process until `stopping` is set; a batch under way is finished first."""
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        report = LoopLog(log, "dispatch")
        while not stopping.is_set():
            try:
                more = await dispatch_once(rt, client)
                report.ok()
                if more:
                    continue  # more may be due
            except Exception as error:
                report.failed(error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), rt.settings.events_poll_ms / 1000)
