"""The money path: record PENDING, execute under row locks into a double-entry ledger, fail or recover.

1. Record: the operation is inserted PENDING in its own short commit; the idempotency key (unique per caller)
   and a hash of the parameters live on that row, so a duplicate request finds it instead of executing twice.
   A retry of a key whose attempt was abandoned (claimed longer than PENDING_TIMEOUT ago) claims the row instead.
2. Execute: one DB transaction locks the user wallets in id order, checks status, funds and daily limit,
   moves the balances, appends the entries and marks the row COMPLETED, all in one durable commit. Only a
   PENDING row can be marked, so of all the attempts on one row at most one ever moves money.
3. Fail: a refusal rolls that back and marks the row FAILED (failure_code, failure_reason), durably before the
   answer. A database outage instead leaves the row PENDING for the client's retry to take over.
4. Recover: rows PENDING past the timeout touched no balance. Those without a key (nothing can retry them), and
   keyed ones after the key's retention, are failed as INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Entry, Transaction, User, Wallet
from wallet import errors, events, metrics
from wallet.auth import Principal
from wallet.history import load_transaction, render_transaction
from wallet.money import currency_exponent, format_minor, to_minor
from wallet.runtime import Runtime
from wallet.wallets import WALLET_COLUMNS, open_wallet, render_wallet

log = logging.getLogger("wallet.ledger")

T = Transaction.__table__
# No wallet may hold more than this many minor units (far below BIGINT's limit).
MAX_BALANCE = 10**18
# Idempotency keys are kept at least this long (API.md): until then an abandoned keyed operation waits for a retry.
KEY_RETENTION = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Party:
    """A user wallet taking part in an operation, as read before recording."""

    wallet_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    number: str
    currency: str


@dataclass(frozen=True)
class Operation:
    type: str  # DEPOSIT | WITHDRAWAL | TRANSFER | REVERSAL
    amount: int
    currency: str
    source: Party | None
    destination: Party | None
    description: str | None
    params: Mapping[str, Any]  # the normalised request, hashed for idempotency
    provider: str | None = None  # a payment provider confirms it later (wallet/deposits.py); else it runs at once
    # Hook for holds (wallet/holds.py): the hold a capture draws on, kept on the row; and a step run inside step 2's
    # transaction right after the wallet locks (so it can lock the hold row after them, in the one lock order), which
    # may refuse (raise) and returns how much of the source's held amount it released for this operation to spend.
    hold_id: uuid.UUID | None = None
    draw: Callable[[AsyncConnection], Awaitable[int]] | None = None
    # The transaction a REVERSAL gives back (part of), kept on the row (wallet/reversals.py).
    reverses: uuid.UUID | None = None


@dataclass(frozen=True)
class Outcome:
    transaction: dict[str, Any]
    replayed: bool
    # The caller's wallet balance right after this operation (for the compatibility endpoint).
    wallet_balance: int | None


# ---- reading the parties (before anything is recorded) ----------------------------------------------------
# Each read is a statement of its own (Runtime.autocommit, no BEGIN/COMMIT round trips): nothing here needs one
# snapshot, and step 2 re-checks under the row locks whatever could have changed since.

_PARTY_COLUMNS = (Wallet.id, Wallet.user_id, User.username, Wallet.number, Wallet.currency)


def _party(row: Any) -> Party:
    return Party(row.id, row.user_id, row.username, row.number, row.currency)


async def own_wallet(conn: AsyncConnection, principal: Principal, wallet_id: uuid.UUID) -> Party:
    row = (
        await conn.execute(
            select(*_PARTY_COLUMNS)
            .join(User, User.id == Wallet.user_id)
            .where(Wallet.id == wallet_id, Wallet.user_id == principal.user_id)
        )
    ).first()
    if row is None:
        raise errors.NotFound("Wallet not found.")
    return _party(row)


async def any_user_wallet(conn: AsyncConnection, wallet_id: uuid.UUID) -> Party:
    row = (
        await conn.execute(select(*_PARTY_COLUMNS).join(User, User.id == Wallet.user_id).where(Wallet.id == wallet_id))
    ).first()
    if row is None:
        raise errors.NotFound("Wallet not found.")
    return _party(row)


# The hot path's statements are plain SQL: building Core statements per call (cache keys, IN-list expansion) was a
# visible share of a transfer's Python time in the profile (bench/RESULTS.md).
_TWO_PARTIES = text("""
SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
WHERE w.id IN (CAST(:wallet AS uuid), CAST(:to_wallet AS uuid))
""")


async def _own_and_recipient_wallets(
    conn: AsyncConnection, principal: Principal, wallet_id: uuid.UUID, to_wallet_id: uuid.UUID
) -> tuple[Party, Party]:
    """The caller's wallet and the recipient's, both named by id, in one read (the common transfer)."""
    rows = (await conn.execute(_TWO_PARTIES, {"wallet": wallet_id, "to_wallet": to_wallet_id})).all()
    found = {row.id: row for row in rows}
    own = found.get(wallet_id)
    if own is None or own.user_id != principal.user_id:
        raise errors.NotFound("Wallet not found.")
    if to_wallet_id not in found:
        raise errors.NotFound("Recipient wallet not found.")
    return _party(own), _party(found[to_wallet_id])


async def _recipient(conn: AsyncConnection, recipient: Mapping[str, Any], currency: str) -> Party:
    """Resolve to_wallet_number / to_username / to_phone to one user wallet."""
    query = select(*_PARTY_COLUMNS).join(User, User.id == Wallet.user_id)
    if "to_wallet_number" in recipient:
        query = query.where(Wallet.number == recipient["to_wallet_number"])
    else:
        if "to_username" in recipient:
            user_filter = func.lower(User.username) == recipient["to_username"].lower()
        else:
            user_filter = User.phone == recipient["to_phone"]
        if (await conn.execute(select(User.id).where(user_filter))).first() is None:
            raise errors.NotFound("Recipient not found.")
        # The recipient's wallet in the source currency: their oldest one.
        query = query.where(user_filter, Wallet.currency == currency).order_by(Wallet.created_at, Wallet.id).limit(1)
        row = (await conn.execute(query)).first()
        if row is None:
            raise errors.CurrencyMismatch(f"The recipient has no {currency} wallet.")
        return _party(row)
    row = (await conn.execute(query)).first()
    if row is None:
        raise errors.NotFound("Recipient wallet not found.")
    return _party(row)


# ---- the lifecycle --------------------------------------------------------------------------------------------

_system_wallets: dict[str, uuid.UUID] = {}


async def _system_wallet(rt: Runtime, currency: str) -> uuid.UUID:
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


def request_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def _known_row(
    principal: Principal, op: Operation, tx_id: uuid.UUID, reference: str, created_at: dt.datetime
) -> dict[str, Any]:
    """The transaction's rendered columns, built from what we already know (saves a read)."""
    src, dst = op.source, op.destination
    return {
        "id": tx_id,
        "seq": 0,
        "reference": reference,
        "type": op.type,
        "status": "PENDING",
        "amount": op.amount,
        "currency": op.currency,
        "source_wallet_id": src.wallet_id if src else None,
        "destination_wallet_id": dst.wallet_id if dst else None,
        "source_user_id": src.user_id if src else None,
        "destination_user_id": dst.user_id if dst else None,
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "source_number": src.number if src else None,
        "destination_number": dst.number if dst else None,
        "source_username": src.username if src else None,
        "destination_username": dst.username if dst else None,
        "description": op.description,
        "provider": op.provider,
        "provider_reference": reference if op.provider else None,
        "hold_id": op.hold_id,
        "reverses": op.reverses,
        "reversed_amount": 0,
        "failure_code": None,
        "failure_reason": None,
        "created_at": created_at,
        "completed_at": None,
    }


# Step 1 in one round trip: in autocommit mode the INSERT is a transaction of its own, and set_config(..., true)
# makes its commit skip the wait for the disk as SET LOCAL synchronous_commit = off would. No answer depends on a
# PENDING row alone (a replay of it answers 409 IN_PROGRESS, "try again"), and the commit that finishes the row
# waits for the disk, which writes this earlier commit first: the log is flushed in order.
# A key already recorded by this caller inserts nothing; if that row is PENDING and its claim expired (the attempt
# died) and it is the same request on the same wallets, this attempt claims it instead. The row lock makes
# concurrent retries queue here, and each re-checks the claim: exactly one of them takes the row over. A provider
# deposit is never taken over: it waits for the payment, not for an attempt (wallet/deposits.py).
_RECORD = text("""
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO transactions AS t (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
    source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
    provider, provider_reference, hold_id, reverses)
SELECT CAST(:id AS uuid), :reference, :type, CAST(:amount AS bigint), :currency, CAST(:source_wallet_id AS uuid),
    CAST(:destination_wallet_id AS uuid), CAST(:source_user_id AS uuid), CAST(:destination_user_id AS uuid),
    CAST(:initiator_id AS uuid), CAST(:api_key_id AS uuid), :idempotency_key, :request_hash, :description, :provider,
    :provider_reference, CAST(:hold_id AS uuid), CAST(:reverses AS uuid)
FROM relaxed
ON CONFLICT (initiator_id, idempotency_key) DO UPDATE SET claimed_at = now()
WHERE t.status = 'PENDING' AND t.provider IS NULL AND t.claimed_at < now() - CAST(:abandoned AS interval)
    AND t.request_hash = excluded.request_hash
    AND t.source_wallet_id IS NOT DISTINCT FROM excluded.source_wallet_id
    AND t.destination_wallet_id IS NOT DISTINCT FROM excluded.destination_wallet_id
RETURNING id, reference, created_at
""")


async def record(rt: Runtime, principal: Principal, op: Operation, key: str | None) -> tuple[Any, Any]:
    """Step 1. Returns (the id, reference and created_at of the row this attempt claimed, new or abandoned, None),
    or (None, the row already under the key)."""
    tx_id, reference = uuid.uuid4(), f"TX{secrets.token_hex(8).upper()}"
    digest = request_hash(op.params)
    values = {
        "id": tx_id,
        "reference": reference,
        "type": op.type,
        "amount": op.amount,
        "currency": op.currency,
        "source_wallet_id": op.source.wallet_id if op.source else None,
        "destination_wallet_id": op.destination.wallet_id if op.destination else None,
        "source_user_id": op.source.user_id if op.source else None,
        "destination_user_id": op.destination.user_id if op.destination else None,
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "idempotency_key": key,
        "request_hash": digest,
        "description": op.description,
        "provider": op.provider,
        "provider_reference": reference if op.provider else None,
        "hold_id": op.hold_id,
        "reverses": op.reverses,
        "abandoned": dt.timedelta(seconds=rt.settings.pending_timeout),
    }
    async with rt.autocommit() as conn:
        inserted = (await conn.execute(_RECORD, values)).first()
        if inserted is not None:
            return inserted, None
        existing = (
            await conn.execute(
                select(T.c.id, T.c.request_hash).where(
                    T.c.initiator_id == principal.user_id, T.c.idempotency_key == key
                )
            )
        ).one()
    if existing.request_hash != digest:
        raise errors.IdempotencyMismatch()
    return None, existing


async def recorded_amount(conn: AsyncConnection, principal: Principal, key: str | None) -> int | None:
    """The amount the caller's earlier request with this key recorded, if any: an operation whose default amount is
    "all that remains" resolves it once, so a retry (a replay, or the take-over of an attempt that died) moves what
    its first attempt recorded, whatever remains by then."""
    if key is None:
        return None
    return (
        await conn.execute(select(T.c.amount).where(T.c.initiator_id == principal.user_id, T.c.idempotency_key == key))
    ).scalar()


# FOR NO KEY UPDATE: the foreign-key checks (KEY SHARE) of rows being recorded meanwhile must not queue behind
# these locks, or recording and executing deadlock each other.
_LOCK = text("""
SELECT w.id, w.balance, w.held, u.status, now() AS now FROM wallets w JOIN users u ON u.id = w.user_id
WHERE w.id = ANY(CAST(:ids AS uuid[])) ORDER BY w.id FOR NO KEY UPDATE OF w
""")


async def _locked_parties(conn: AsyncConnection, op: Operation) -> dict[uuid.UUID, Any]:
    ids = [p.wallet_id for p in (op.source, op.destination) if p is not None]
    return {r.id: r for r in (await conn.execute(_LOCK, {"ids": ids})).all()}


def _limit_for(rt: Runtime, op: Operation) -> int:
    major = rt.settings.daily_withdraw_limit if op.type == "WITHDRAWAL" else rt.settings.daily_transfer_limit
    return int(major.scaleb(currency_exponent(op.currency) or 0))


def _over_daily_limit(op: Operation, limit: int, used: int) -> errors.DailyLimitExceeded:
    remaining = limit - (used - op.amount)
    return errors.DailyLimitExceeded(
        f"This would exceed the daily {op.type.lower()} limit of {format_minor(limit, op.currency)} "
        f"{op.currency}; {format_minor(max(remaining, 0), op.currency)} remains today."
    )


# Step 2's writes in one round trip: today's usage, added under its row lock so concurrent requests queue there and
# the limit holds (when :charged_user is set); both user balances (the system account keeps none); the two entries
# with the balances after them; and the COMPLETED mark, which returns no row when the transaction is no longer
# PENDING. Every wallet written is already locked by _locked_parties, so the order of these writes cannot deadlock.
# The transaction's events are written in this same statement and commit (events.CTE; rolled back with the
# rest when the row is no longer PENDING).
_MOVE = text(f"""
WITH {events.CTE}, usage AS (
    INSERT INTO daily_usage AS d (user_id, currency, kind, day, amount)
    SELECT CAST(:charged_user AS uuid), :currency, :type, CAST(timezone('UTC', now()) AS date), CAST(:amount AS bigint)
    WHERE CAST(:charged_user AS uuid) IS NOT NULL
    ON CONFLICT (user_id, currency, kind, day) DO UPDATE SET amount = d.amount + excluded.amount
    RETURNING d.amount
), moved AS (
    UPDATE wallets AS w SET balance = w.balance + m.delta, updated_at = now()
    FROM (VALUES (CAST(:source AS uuid), -CAST(:amount AS bigint)),
                 (CAST(:destination AS uuid), CAST(:amount AS bigint))) AS m (id, delta)
    WHERE w.id = m.id
    RETURNING w.id, w.balance
), legs AS (
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT CAST(:tx AS uuid), l.wallet_id, l.amount, :currency, moved.balance
    FROM (VALUES (CAST(:source_leg AS uuid), -CAST(:amount AS bigint)),
                 (CAST(:destination_leg AS uuid), CAST(:amount AS bigint))) AS l (wallet_id, amount)
    LEFT JOIN moved ON moved.id = l.wallet_id
)
UPDATE transactions SET status = 'COMPLETED', completed_at = now()
WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
RETURNING completed_at, (SELECT amount FROM usage) AS used,
    (SELECT balance FROM moved WHERE id = CAST(:source AS uuid)) AS source_after,
    (SELECT balance FROM moved WHERE id = CAST(:destination AS uuid)) AS destination_after
""")


def check_status(status: str, whose: str) -> None:
    if status == "frozen":
        raise errors.AccountFrozen(f"The {whose} account is frozen.")
    if status == "inactive":
        raise errors.AccountInactive(f"The {whose} account is inactive.")


async def execute(
    rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID
) -> tuple[dt.datetime, int | None, int | None]:
    """Step 2. Returns (completed_at, source balance after, destination balance after)."""
    tx_id = row["id"]
    system_id = await _system_wallet(rt, op.currency) if op.source is None or op.destination is None else None
    async with rt.transaction() as conn:
        locked = await _locked_parties(conn, op)
        # now() is the transaction's start, so it is the completed_at the COMPLETED mark below will write.
        completed = {**row, "status": "COMPLETED", "completed_at": next(iter(locked.values())).now}
        if op.source is not None:
            source = locked[op.source.wallet_id]
            check_status(source.status, "sending" if op.type == "TRANSFER" else "wallet owner's")
        if op.destination is not None:
            check_status(
                locked[op.destination.wallet_id].status, "recipient's" if op.type == "TRANSFER" else "wallet owner's"
            )
        released = await op.draw(conn) if op.draw is not None else 0
        # What active holds reserve is not available to spend (but what this operation's hold released is).
        if op.source is not None and source.balance - source.held + released < op.amount:
            available = format_minor(source.balance - source.held, op.currency)
            raise errors.InsufficientFunds(f"Insufficient funds: the available balance is {available} {op.currency}.")
        if op.destination is not None and locked[op.destination.wallet_id].balance + op.amount > MAX_BALANCE:
            raise errors.BalanceLimitExceeded()
        limit = _limit_for(rt, op) if op.source is not None else 0
        moved = (
            await conn.execute(
                _MOVE,
                {
                    "tx": tx_id,
                    "type": op.type,
                    "amount": op.amount,
                    "currency": op.currency,
                    "charged_user": op.source.user_id if limit else None,
                    "source": op.source.wallet_id if op.source else None,
                    "destination": op.destination.wallet_id if op.destination else None,
                    "source_leg": op.source.wallet_id if op.source else system_id,
                    "destination_leg": op.destination.wallet_id if op.destination else system_id,
                    **events.params(events.transaction_events(completed, initiator_id)),
                },
            )
        ).first()
        if moved is None:
            raise NoLongerPending()
        if limit and moved.used > limit:
            raise _over_daily_limit(op, limit, moved.used)
    metrics.money(op.type, "COMPLETED")  # committed: counted once, whoever executed it (a request, a provider)
    return moved.completed_at, moved.source_after, moved.destination_after


class NoLongerPending(Exception):
    """The row was no longer PENDING when this attempt went to mark it COMPLETED: another attempt, a provider's
    confirmation or recovery finished it first (and this attempt's rollback moved nothing)."""


async def mark_failed(rt: Runtime, tx_id: uuid.UUID, code: str, reason: str) -> None:
    """Step 3 in a fresh session, with its event (only if this marked it). Its commit waits for the disk: the
    refusal is about to be answered, and a retry of the key after a database crash must replay it, not execute."""
    async with rt.transaction() as conn:
        failed = (
            await conn.execute(
                update(T)
                .where(T.c.id == tx_id, T.c.status == "PENDING")
                .values(status="FAILED", failure_code=code, failure_reason=reason[:255], completed_at=func.now())
                .returning(T.c.type)
            )
        ).first()
        if failed:  # not when recovery or another delivery decided the row first
            row = await load_transaction(conn, tx_id)
            await events.emit(conn, events.transaction_events(row, row["initiator_id"]))
    if failed:
        metrics.money(failed.type, code)


async def _release(rt: Runtime, tx_id: uuid.UUID) -> None:
    """The database failed this attempt: nothing moved, so let a retry of the key take the row over at once
    (expire the claim) rather than after PENDING_TIMEOUT. Best effort: the claim expires by itself anyway."""
    with contextlib.suppress(errors.ServiceUnavailable):
        async with rt.autocommit() as conn:
            await conn.execute(
                update(T)
                .where(T.c.id == tx_id, T.c.status == "PENDING")
                .values(claimed_at=func.now() - dt.timedelta(seconds=rt.settings.pending_timeout))
            )


async def _replay(rt: Runtime, principal: Principal, op: Operation, tx_id: uuid.UUID, viewer: uuid.UUID) -> Outcome:
    """Answer as the attempt that finished the row did; a row still PENDING is another attempt's to finish."""
    async with rt.transaction() as conn:
        row = await load_transaction(conn, tx_id)
        balance = None
        own = op.source if op.source and op.source.user_id == principal.user_id else op.destination
        if row["status"] == "COMPLETED" and own is not None:
            balance = (
                await conn.execute(
                    select(Entry.balance_after).where(Entry.transaction_id == tx_id, Entry.wallet_id == own.wallet_id)
                )
            ).scalar()
    if row["status"] == "PENDING":
        # No transaction_id here: a PENDING row is not yet on disk, and nothing is answered that is not durable.
        raise errors.IdempotencyInProgress()
    if row["status"] == "FAILED":
        error = errors.recorded_failure(row["failure_code"], row["failure_reason"], str(row["id"]))
        error.replayed = True  # type: ignore[attr-defined]
        raise error
    return Outcome(render_transaction(row, viewer), True, balance)


# Step 2: (rt, operation, its PENDING row, initiator) -> (completed_at, source balance after, destination balance after)
Step2 = Callable[[Runtime, Operation, dict[str, Any], uuid.UUID], Awaitable[tuple[dt.datetime, int | None, int | None]]]


async def run(
    rt: Runtime,
    principal: Principal,
    op: Operation,
    key: str | None,
    viewer: uuid.UUID | None = None,
    step: Step2 = execute,
) -> Outcome:
    """Record, execute (`step`: execute(), or an operation's own step 2 with its own rules: a reversal's,
    wallet/reversals.py, or a cross-currency transfer's, wallet/fx.py), and fail or complete one money operation;
    idempotent per (caller, key)."""
    viewer = viewer or principal.user_id
    inserted, existing = await record(rt, principal, op, key)
    if existing is not None:
        return await _replay(rt, principal, op, existing.id, viewer)
    tx_id = inserted.id
    # created_at comes from the database, as a replay will read it.
    row = _known_row(principal, op, tx_id, inserted.reference, inserted.created_at)
    try:
        completed_at, source_after, destination_after = await step(rt, op, row, principal.user_id)
    except NoLongerPending:
        return await _replay(rt, principal, op, tx_id, viewer)
    except errors.ServiceUnavailable as error:
        await _release(rt, tx_id)
        error.transaction_id = str(tx_id)
        raise
    except errors.WalletError as error:
        await mark_failed(rt, tx_id, error.code, error.message)
        error.transaction_id = str(tx_id)
        raise
    except Exception:
        log.exception("money operation failed unexpectedly", extra={"transaction_id": str(tx_id)})
        try:
            await mark_failed(rt, tx_id, "INTERNAL_ERROR", "The operation failed unexpectedly.")
        except Exception:
            log.exception("could not mark the transaction FAILED; recovery will", extra={"transaction_id": str(tx_id)})
        raise
    row.update(status="COMPLETED", completed_at=completed_at)
    own_after = source_after if op.source and op.source.user_id == principal.user_id else destination_after
    return Outcome(render_transaction(row, viewer), False, own_after)


# ---- the operations ---------------------------------------------------------------------------------------------


async def _single_wallet_op(
    rt: Runtime, principal: Principal, wallet_id: uuid.UUID, kind: str, amount: Decimal, description: str | None
) -> tuple[Operation, Party]:
    if kind == "DEPOSIT" and not rt.settings.allow_self_deposit:
        raise errors.Forbidden("Self-service deposits are turned off on this server.")
    async with rt.autocommit() as conn:
        wallet = await own_wallet(conn, principal, wallet_id)
    minor = to_minor(amount, wallet.currency)
    params = {"op": kind, "wallet": wallet.wallet_id, "amount": minor, "description": description}
    source, destination = (None, wallet) if kind == "DEPOSIT" else (wallet, None)
    return Operation(kind, minor, wallet.currency, source, destination, description, params), wallet


async def own_wallet_operation(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    kind: str,
    amount: Decimal,
    description: str | None,
    key: str | None,
) -> Outcome:
    """A DEPOSIT into, or a WITHDRAWAL from, one of the caller's wallets."""
    op, _ = await _single_wallet_op(rt, principal, wallet_id, kind, amount, description)
    return await run(rt, principal, op, key)


async def operation(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    operation_type: str,
    amount: Decimal,
    description: str | None,
    key: str | None,
) -> dict[str, Any]:
    """The compatibility endpoint: a deposit or withdrawal answered with the updated wallet."""
    kind = "DEPOSIT" if operation_type == "DEPOSIT" else "WITHDRAWAL"
    op, wallet = await _single_wallet_op(rt, principal, wallet_id, kind, amount, description)
    outcome = await run(rt, principal, op, key)
    async with rt.transaction() as conn:
        row = (await conn.execute(select(*WALLET_COLUMNS).where(Wallet.id == wallet.wallet_id))).one()
    rendered = render_wallet(row, outcome.wallet_balance)
    rendered["updated_at"] = outcome.transaction["completed_at"]
    return {"wallet": rendered, "replayed": outcome.replayed}


async def payer_and_payee(
    rt: Runtime, principal: Principal, from_wallet_id: uuid.UUID, recipient: Mapping[str, Any]
) -> tuple[Party, Party]:
    """The caller's wallet and a recipient's (by id, number, username or phone) in the same currency: a transfer's
    or a hold's two sides."""
    async with rt.autocommit() as conn:
        if "to_wallet_id" in recipient:
            source, destination = await _own_and_recipient_wallets(
                conn, principal, from_wallet_id, recipient["to_wallet_id"]
            )
        else:
            source = await own_wallet(conn, principal, from_wallet_id)
            destination = await _recipient(conn, recipient, source.currency)
    if destination.wallet_id == source.wallet_id:
        raise errors.SameWallet()
    if destination.currency != source.currency:
        raise errors.CurrencyMismatch(
            f"The source wallet holds {source.currency} and the recipient wallet {destination.currency}."
        )
    return source, destination


async def transfer(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
    key: str | None,
) -> Outcome:
    source, destination = await payer_and_payee(rt, principal, from_wallet_id, recipient)
    minor = to_minor(amount, source.currency)
    params = {
        "op": "TRANSFER",
        "wallet": source.wallet_id,
        "recipient": dict(recipient),
        "amount": minor,
        "description": description,
    }
    op = Operation("TRANSFER", minor, source.currency, source, destination, description, params)
    return await run(rt, principal, op, key)


async def admin_deposit(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    amount: Decimal,
    description: str | None,
    reason: str | None,
    key: str | None,
) -> Outcome:
    """An admin credits any user wallet; the admin is kept on the row as its initiator. The logged reason is part
    of the request, so reusing a key with another reason is a mismatch like any other changed parameter."""
    async with rt.autocommit() as conn:
        wallet = await any_user_wallet(conn, wallet_id)
    minor = to_minor(amount, wallet.currency)
    params = {
        "op": "ADMIN_DEPOSIT",
        "wallet": wallet.wallet_id,
        "amount": minor,
        "description": description,
        "reason": reason,
    }
    op = Operation("DEPOSIT", minor, wallet.currency, None, wallet, description, params)
    return await run(rt, principal, op, key, viewer=wallet.user_id)


# ---- recovery --------------------------------------------------------------------------------------------------


async def recover_interrupted(rt: Runtime) -> int:
    """Step 4: fail rows whose claim is older than the timeout and that no retry can take over any more: those
    without a key, and keyed ones past the key's retention. Their execution never committed (or they would not be
    PENDING), so no balance was touched; the status guard makes this safe against a late commit or a claim. A
    provider deposit waits for its provider instead: wallet/deposits.py sweeps those."""
    timeout = dt.timedelta(seconds=rt.settings.pending_timeout)
    async with rt.transaction() as conn:
        failed = (
            await conn.execute(
                update(T)
                .where(
                    T.c.status == "PENDING",
                    T.c.claimed_at < func.now() - timeout,
                    T.c.idempotency_key.is_(None) | (T.c.claimed_at < func.now() - max(timeout, KEY_RETENTION)),
                    T.c.provider.is_(None),
                )
                .values(
                    status="FAILED",
                    failure_code=errors.Interrupted.code,
                    failure_reason=errors.Interrupted.message,
                    completed_at=func.now(),
                )
                .returning(T.c.id, T.c.initiator_id)
            )
        ).all()
        # Their events, in the same commit (rare, so one read per row is fine).
        for tx in failed:
            await events.emit(conn, events.transaction_events(await load_transaction(conn, tx.id), tx.initiator_id))
    return len(failed)
