"""Steps 2 and 3 of the money path (lifecycle.py): execute a recorded operation in one statement (ledger_execute(),
migrations/versions/0014_fast_path.py), or mark it FAILED. The lifecycle and the operations built on the ledger
(wallet/operations/) import them from here."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import Wallet
from wallet import errors
from wallet.ledger import batch, history
from wallet.ledger.batch import Refused
from wallet.ledger.history import load_transaction
from wallet.ledger.record import Operation
from wallet.ledger.wallets import open_wallet
from wallet.money import currency_exponent, format_minor
from wallet.notify import events
from wallet.platform import metrics
from wallet.platform.prepared import Prepared, postgres_error
from wallet.platform.runtime import Runtime

# No wallet may hold more than this many minor units (far below BIGINT's limit).
MAX_BALANCE = 10**18

_system_wallets: dict[str, uuid.UUID] = {}


async def system_wallet(rt: Runtime, currency: str) -> uuid.UUID:
    """The per-currency account standing for the outside world (created on first use)."""
    if currency not in _system_wallets:
        async with rt.transaction() as conn:
            found = (
                await conn.execute(
                    select(Wallet.id).where(Wallet.is_system, ~Wallet.is_fx, Wallet.currency == currency)
                )
            ).scalar()
        if found is None:
            try:
                async with rt.transaction() as conn:
                    found = (await open_wallet(conn, None, currency, f"system {currency}")).id
            except IntegrityError:  # another process created it first
                async with rt.transaction() as conn:
                    found = (
                        await conn.execute(
                            select(Wallet.id).where(Wallet.is_system, ~Wallet.is_fx, Wallet.currency == currency)
                        )
                    ).scalar_one()
        _system_wallets[currency] = found
    return _system_wallets[currency]


def daily_limit(rt: Runtime, kind: str, currency: str) -> int:
    """The daily limit of a WITHDRAWAL (payouts too) or TRANSFER in minor units of `currency` (0: none)."""
    major = rt.settings.daily_withdraw_limit if kind == "WITHDRAWAL" else rt.settings.daily_transfer_limit
    return int(major.scaleb(currency_exponent(currency) or 0))


def over_daily_limit(kind: str, amount: int, currency: str, limit: int, used: int) -> errors.DailyLimitExceeded:
    """The refusal of `amount` that brought the day's usage to `used`, over `limit`."""
    remaining = limit - (used - amount)
    return errors.DailyLimitExceeded(
        f"This would exceed the daily {kind.lower()} limit of {format_minor(limit, currency)} "
        f"{currency}; {format_minor(max(remaining, 0), currency)} remains today."
    )


# FOR NO KEY UPDATE: the foreign-key checks (KEY SHARE) of rows being recorded meanwhile must not queue behind
# these locks, or recording and executing deadlock each other. Only an operation with a draw step (a hold capture)
# takes them ahead of ledger_execute(), in its own transaction, to run that step under them.
_LOCK = text("""
SELECT w.id, u.status FROM wallets w JOIN users u ON u.id = w.user_id
WHERE w.id = ANY(CAST(:ids AS uuid[])) ORDER BY w.id FOR NO KEY UPDATE OF w
""")


def check_status(status: str, whose: str) -> None:
    if status == "frozen":
        raise errors.AccountFrozen(f"The {whose} account is frozen.")
    if status == "inactive":
        raise errors.AccountInactive(f"The {whose} account is inactive.")


def _roles(op: Operation) -> tuple[str, str]:
    """Whose account a status refusal names, for the source and the destination."""
    return ("sending", "recipient's") if op.type == "TRANSFER" else ("wallet owner's", "wallet owner's")


def refusal_error(refused: Refused, op: Operation, limit: int) -> Exception:
    """The API's error for a refusal ledger_execute() raised (SQLSTATE class WL)."""
    if refused.sqlstate == "WL001":
        check_status(refused.message, refused.detail)  # MESSAGE the status, DETAIL whose
    if refused.sqlstate == "WL002":
        available = format_minor(int(refused.detail), op.currency)
        return errors.InsufficientFunds(f"Insufficient funds: the available balance is {available} {op.currency}.")
    if refused.sqlstate == "WL003":
        return errors.BalanceLimitExceeded()
    if refused.sqlstate == "WL004":
        return over_daily_limit(op.type, op.amount, op.currency, limit, int(refused.detail))
    return NoLongerPending()


@dataclass(frozen=True)
class Moved:
    """What step 2 answers: when the money moved, and each side's balance (and held amount, where the step reads
    it) after the move."""

    done_at: dt.datetime
    source_balance: int | None
    destination_balance: int | None
    source_held: int | None = None
    destination_held: int | None = None


async def step_values(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> dict[str, Any]:
    """ledger_execute()'s arguments for an operation and its PENDING row, with its events' parameters."""
    system_id = await system_wallet(rt, op.currency) if op.source is None or op.destination is None else None
    limit = daily_limit(rt, op.type, op.currency) if op.source is not None else 0
    source_role, destination_role = _roles(op)
    # completed_at is ledger_execute()'s to stamp into the events.
    completed = {**row, "status": "COMPLETED", "completed_at": None}
    return {
        "tx": row["id"],
        "type": op.type,
        "amount": op.amount,
        "currency": op.currency,
        "source": op.source.wallet_id if op.source else None,
        "destination": op.destination.wallet_id if op.destination else None,
        "system": system_id,
        "charged_user": op.source.user_id if limit else None,
        "limit": limit,
        "released": 0,
        "max_balance": MAX_BALANCE,
        "source_role": source_role,
        "destination_role": destination_role,
        **events.params(history.transaction_events(completed, initiator_id)),
    }


async def execute(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> Moved:
    """Step 2 by ledger_execute(), in a group commit or alone (or, for a hold's capture, drawing on the hold)."""
    values = await step_values(rt, op, row, initiator_id)
    limit = values["limit"]
    if op.draw is None:
        done = await batch.execute(rt, values)
    else:
        done = await _execute_drawing(rt, op, values)
    if isinstance(done, Refused):
        raise refusal_error(done, op, limit)
    metrics.money(op.type, "COMPLETED")  # committed: counted once, whoever executed it (a request, a provider)
    return Moved(done.done_at, done.source_balance, done.destination_balance, done.source_held, done.destination_held)


async def _execute_drawing(rt: Runtime, op: Operation, values: dict[str, Any]) -> batch.Outcome:
    """Step 2 of an operation with a draw step (a hold capture), alone, in its own transaction."""
    try:
        async with rt.transaction() as conn:
            ids = [p.wallet_id for p in (op.source, op.destination) if p is not None]
            locked = {r.id: r.status for r in (await conn.execute(_LOCK, {"ids": ids})).all()}
            for party, whose in ((op.source, values["source_role"]), (op.destination, values["destination_role"])):
                if party is not None:
                    check_status(locked[party.wallet_id], whose)
            # What active holds reserve is not available to spend, but what this capture released is.
            values["released"] = await op.draw(conn, values["tx"])
            return (await conn.execute(batch.EXECUTE, values)).one()
    except DBAPIError as error:
        if (refused := batch.refusal(error)) is None:
            raise
        return refused


def record_lost(error: BaseException) -> bool:
    """Step 2 wrote entries for a transaction row that is not there: its PENDING record, committed without waiting
    for the disk (step 1, record.py), did not survive a database crash or a failover that came between the two
    steps. Nothing of the operation happened, and its key is free again: a retry records and executes it anew."""
    found = postgres_error(error)
    return found is not None and getattr(found, "constraint_name", None) == "fk_entries_transaction_id_transactions"


class NoLongerPending(Exception):
    """The row was no longer PENDING when this attempt went to mark it COMPLETED: another attempt, a provider's
    confirmation or recovery finished it first (and this attempt's rollback moved nothing)."""


# Step 3 in one round trip: the FAILED mark (only of a row still PENDING) and its events, stamped with its
# completed_at (ledger_stamp(), migrations/versions/0014_fast_path.py), in one statement and one durable commit.
_FAILED_EVENTS = events.cte(
    "(SELECT ledger_stamp(CAST(:event_data AS text[]), completed_at) FROM failed)", "EXISTS (SELECT FROM failed)"
)
_MARK_FAILED = Prepared(
    text(f"""
WITH failed AS MATERIALIZED (
    UPDATE transactions SET status = 'FAILED', failure_code = :code, failure_reason = :reason, completed_at = now()
    WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
    RETURNING type, completed_at
), {_FAILED_EVENTS}
SELECT type FROM failed
""")
)


async def mark_failed(
    rt: Runtime, tx_id: uuid.UUID, code: str, reason: str, row: Mapping[str, Any] | None = None
) -> bool:
    """Step 3, with its event (only if this marked it); whether it did. Its commit waits for the disk: the refusal
    is about to be answered, and a retry of the key after a database crash must replay it, not execute. `row` is the
    transaction as rendered so far, when the caller has it (else it is read first)."""
    reason = reason[:255]
    async with rt.autocommit() as conn:
        if row is None:
            row = await load_transaction(conn, tx_id)
        failed = {**row, "status": "FAILED", "failure_code": code, "failure_reason": reason, "completed_at": None}
        values = {"tx": tx_id, "code": code, "reason": reason}
        values |= events.params(history.transaction_events(failed, failed["initiator_id"]))
        marked = await _MARK_FAILED.first(conn, values)
    if marked:  # not when recovery or another delivery decided the row first
        metrics.money(marked.type, code)
    return marked is not None
