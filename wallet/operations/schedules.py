"""Scheduled and recurring transfers: a schedule pays a recipient an amount at `start_at`, then every day, week or
month, for `count` occurrences, until a moment, or until cancelled; the scheduler (run_due, a background job of every
server process) runs each occurrence that is due.

Each occurrence is one transfer through the money path (wallet/ledger/lifecycle.py) by the schedule's owner, under
the idempotency key `scheduled-transfer:<schedule id>:<occurrence date>`: two processes running the same occurrence,
or a process killed after the money moved and before the schedule advanced, find the transaction already under
that key and pay nothing more. The schedule then advances by a compare-and-set on its occurrence number, in the same
commit as the occurrence's record, so each occurrence is recorded once. A refused occurrence (no funds, a frozen
account, the daily limit) is recorded with its reason and the schedule moves on to the next.

Monthly occurrences fall on start_at's day of the month; in a month without that day (the 29th to 31st), on the
month's last day, and back on the day itself the month after (January 31, February 28 or 29, March 31).
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import aliased

from models import ScheduledOccurrence, ScheduledTransfer, User, Wallet
from wallet import errors
from wallet.ledger import history, lifecycle
from wallet.money import format_minor, to_minor
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

log = logging.getLogger("wallet.schedules")

S = ScheduledTransfer.__table__
O = ScheduledOccurrence.__table__  # noqa: E741
_TO, _PAYEE = aliased(Wallet), aliased(User)
PERIODS = {"day": dt.timedelta(days=1), "week": dt.timedelta(weeks=1)}
# The scheduler runs at most this many due occurrences per run (the next run takes the rest); a schedule shows its
# latest occurrences, at most this many.
BATCH = 100
OCCURRENCES_SHOWN = 50
# A start this far in the past is still "now" (the client's clock and ours differ).
CLOCK_SLACK = dt.timedelta(minutes=1)


def occurrence_at(start: dt.datetime, every: str | None, n: int) -> dt.datetime:
    """When occurrence n (from 0) of a schedule falls: a month's is on start's day, or the month's last day."""
    if n == 0 or every is None:
        return start
    if every in PERIODS:
        return start + n * PERIODS[every]
    year, month = divmod(start.month - 1 + n, 12)
    year, month = start.year + year, month + 1
    return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))


def _after(row: Any, n: int) -> dt.datetime | None:
    """When occurrence n is due, or None when the schedule has no occurrence n."""
    if (n > 0 and row.every is None) or (row.count is not None and n >= row.count):
        return None
    at = occurrence_at(row.start_at, row.every, n)
    return None if row.until is not None and at > row.until else at


def _columns() -> tuple[Any, ...]:
    return (*S.c, _TO.number.label("to_number"), _PAYEE.username.label("to_username"))


def _detailed(query: Any) -> Any:
    return query.join(_TO, _TO.id == S.c.to_wallet_id).join(_PAYEE, _PAYEE.id == _TO.user_id)


def render_schedule(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "from_wallet_id": row.from_wallet_id,
        "to_wallet_id": row.to_wallet_id,
        "counterparty": {"username": row.to_username, "wallet_number": row.to_number},
        "amount": format_minor(row.amount, row.currency),
        "currency": row.currency,
        "description": row.description,
        "start_at": row.start_at,
        "every": row.every,
        "count": row.count,
        "until": row.until,
        "status": row.status,
        "next_run_at": row.next_run_at,
        "runs": row.runs,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def create(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
    start_at: dt.datetime,
    every: str | None,
    count: int | None,
    until: dt.datetime | None,
) -> dict[str, Any]:
    """A new ACTIVE schedule of the caller's: its wallets are resolved (and refused) as a transfer's would be."""
    if start_at < dt.datetime.now(dt.UTC) - CLOCK_SLACK:
        raise errors.ValidationError({"start_at": ["Must not be in the past."]})
    if every is None and (count is not None or until is not None):
        raise errors.ValidationError({"every": ["A schedule that repeats needs `every`; without it, it runs once."]})
    if until is not None and until < start_at:
        raise errors.ValidationError({"until": ["Must not be before `start_at`."]})
    async with rt.session():
        source, destination = await lifecycle.payer_and_payee(rt, principal, from_wallet_id, recipient)
    minor = to_minor(amount, source.currency)
    values = {
        "id": uuid.uuid4(),
        "user_id": principal.user_id,
        "from_wallet_id": source.wallet_id,
        "to_wallet_id": destination.wallet_id,
        "amount": minor,
        "currency": source.currency,
        "description": description,
        "start_at": start_at,
        "every": every,
        "count": count,
        "until": until,
        "next_run_at": start_at,
    }
    async with rt.transaction() as conn:
        await conn.execute(S.insert().values(values))
        return render_schedule((await conn.execute(_detailed(select(*_columns())).where(S.c.id == values["id"]))).one())


async def list_schedules(
    rt: Runtime, principal: Principal, limit: int, cursor: str | None, status: str | None = None
) -> dict[str, Any]:
    query = _detailed(select(*_columns())).where(S.c.user_id == principal.user_id)
    if status is not None:
        query = query.where(S.c.status == status)
    return await created_page(rt, query, ScheduledTransfer, limit, cursor, render_schedule)


async def get_schedule(rt: Runtime, principal: Principal, schedule_id: uuid.UUID) -> dict[str, Any]:
    """One of the caller's schedules with its latest occurrences, newest first, each with its transaction."""
    async with rt.transaction() as conn:
        row = (
            await conn.execute(
                _detailed(select(*_columns())).where(S.c.id == schedule_id, S.c.user_id == principal.user_id)
            )
        ).first()
        if row is None:
            raise errors.NotFound("Scheduled transfer not found.")
        ran = (
            await conn.execute(
                select(O).where(O.c.schedule_id == schedule_id).order_by(O.c.occurrence.desc()).limit(OCCURRENCES_SHOWN)
            )
        ).all()
        transactions = {r.transaction_id: await history.load_transaction(conn, r.transaction_id) for r in ran}
    schedule = render_schedule(row)
    schedule["occurrences"] = [
        {
            "schedule_id": r.schedule_id,
            "occurrence": r.occurrence,
            "occurrence_date": r.occurs_at.astimezone(dt.UTC).date().isoformat(),
            "occurs_at": r.occurs_at,
            "status": r.status,
            "failure_code": r.failure_code,
            "failure_reason": r.failure_reason,
            "ran_at": r.created_at,
            "transaction": history.render_transaction(transactions[r.transaction_id], principal.user_id)
            if r.transaction_id is not None
            else None,
        }
        for r in ran
    ]
    return schedule


async def change_status(rt: Runtime, principal: Principal, schedule_id: uuid.UUID, action: str) -> dict[str, Any]:
    """pause, resume or cancel one of the caller's schedules. A resumed schedule skips the occurrences that fell due
    while it was paused (it does not pay them all at once); a finished or cancelled one cannot change (409)."""
    async with rt.transaction() as conn:
        row = (
            await conn.execute(
                select(S).where(S.c.id == schedule_id, S.c.user_id == principal.user_id).with_for_update()
            )
        ).first()
        if row is None:
            raise errors.NotFound("Scheduled transfer not found.")
        if row.status in ("CANCELLED", "FINISHED"):
            raise errors.ScheduleNotActive(f"The scheduled transfer is {row.status.lower()}.")
        changes: dict[str, Any] = {"status": {"pause": "PAUSED", "resume": "ACTIVE", "cancel": "CANCELLED"}[action]}
        if action == "cancel":
            changes["next_run_at"] = None
        elif action == "resume" and row.status == "PAUSED":
            n, now = row.next_index, dt.datetime.now(dt.UTC)
            while (at := _after(row, n)) is not None and at < now:
                n += 1
            changes.update(next_index=n, next_run_at=at, status="ACTIVE" if at is not None else "FINISHED")
        await conn.execute(S.update().where(S.c.id == schedule_id).values(**changes, updated_at=text("now()")))
        updated = (await conn.execute(_detailed(select(*_columns())).where(S.c.id == schedule_id))).one()
    return render_schedule(updated)


# ---- the scheduler ----------------------------------------------------------------------------------------------

_DUE = text(f"""
SELECT id, user_id, from_wallet_id, to_wallet_id, amount, currency, description, start_at, every, count, until,
    next_index, next_run_at
FROM scheduled_transfers WHERE status = 'ACTIVE' AND next_run_at <= now() ORDER BY next_run_at LIMIT {BATCH}
""")
# The occurrence's record and the schedule's advance, once: only the attempt that still finds the schedule at this
# occurrence advances it (a pause or a cancel meanwhile keeps its status).
_ADVANCE = text("""
WITH advanced AS (
    UPDATE scheduled_transfers SET next_index = next_index + 1, next_run_at = CAST(:next_run_at AS timestamptz),
        runs = runs + 1, updated_at = now(),
        status = CASE WHEN CAST(:next_run_at AS timestamptz) IS NULL AND status <> 'CANCELLED' THEN 'FINISHED'
                      ELSE status END
    WHERE id = CAST(:schedule AS uuid) AND next_index = :occurrence
    RETURNING id
)
INSERT INTO scheduled_occurrences (schedule_id, occurrence, occurs_at, transaction_id, status, failure_code,
                                   failure_reason)
SELECT id, :occurrence, :occurs_at, CAST(:tx AS uuid), :status, :code, :reason FROM advanced
""")


def occurrence_key(schedule_id: uuid.UUID, at: dt.datetime) -> str:
    """The idempotency key of a schedule's occurrence (at most one a day, so its date names it)."""
    return f"scheduled-transfer:{schedule_id}:{at.astimezone(dt.UTC).date().isoformat()}"


async def _run(rt: Runtime, row: Any) -> None:
    """One due occurrence: the transfer (or its replay), then its record and the schedule's advance."""
    owner = Principal(user_id=row.user_id, session_id=None, role="user")
    amount = Decimal(format_minor(row.amount, row.currency))
    values: dict[str, Any] = {"status": "COMPLETED", "code": None, "reason": None}
    try:
        outcome = await lifecycle.transfer(
            rt,
            owner,
            row.from_wallet_id,
            {"to_wallet_id": row.to_wallet_id},
            amount,
            row.description,
            occurrence_key(row.id, row.next_run_at),
        )
        values["tx"] = outcome.transaction["id"]
    except (errors.IdempotencyInProgress, errors.ServiceUnavailable):
        raise  # another process is paying it, or the database is away: a later run finds out
    except errors.WalletError as refused:
        values.update(status="FAILED", code=refused.code, reason=refused.message[:255], tx=refused.transaction_id)
    values.update(
        schedule=row.id,
        occurrence=row.next_index,
        occurs_at=row.next_run_at,
        next_run_at=_after(row, row.next_index + 1),
    )
    async with rt.transaction() as conn:
        await conn.execute(_ADVANCE, values)
    log.info(
        "scheduled transfer occurrence",
        extra={"schedule_id": str(row.id), "occurrence": row.next_index, "status": values["status"]},
    )


async def run_due(rt: Runtime) -> None:
    """Run the occurrences that are due (at most BATCH). One another process is paying is left for a later run."""
    async with rt.transaction() as conn:
        due = (await conn.execute(_DUE)).all()
    for row in due:
        with contextlib.suppress(errors.IdempotencyInProgress):
            await _run(rt, row)
