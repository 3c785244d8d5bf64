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
from types import SimpleNamespace
from typing import Any, NamedTuple

import orjson
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
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
    type: str  # DEPOSIT | WITHDRAWAL | TRANSFER
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


@dataclass(frozen=True)
class Outcome:
    transaction: dict[str, Any]
    replayed: bool
    # The caller's wallet balance right after this operation (for the compatibility endpoint).
    wallet_balance: int | None
    # And what holds reserved of it then (None on a replay).
    wallet_held: int | None = None


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


# ---- the lifecycle --------------------------------------------------------------------------------------------

_system_wallets: dict[str, uuid.UUID] = {}


async def _system_wallet(rt: Runtime, currency: str) -> uuid.UUID:
    """The per-currency account standing for the outside world (created on first use)."""
    if currency not in _system_wallets:
        async with rt.transaction() as conn:
            found = (
                await conn.execute(select(Wallet.id).where(Wallet.is_system, Wallet.currency == currency))
            ).scalar()
        if found is None:
            try:
                async with rt.transaction() as conn:
                    found = (await open_wallet(conn, None, currency, f"system {currency}")).id
            except IntegrityError:  # another process created it first
                async with rt.transaction() as conn:
                    found = (
                        await conn.execute(select(Wallet.id).where(Wallet.is_system, Wallet.currency == currency))
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
# The statement also reads the row already under the key when it inserted nothing (a replay needs no second read).
_PENDING = """
inserted AS (
    INSERT INTO transactions AS t (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
        source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
        provider, provider_reference, hold_id)
    {rows}
    ON CONFLICT (initiator_id, idempotency_key) DO UPDATE SET claimed_at = now()
    WHERE t.status = 'PENDING' AND t.provider IS NULL AND t.claimed_at < now() - CAST(:abandoned AS interval)
        AND t.request_hash = excluded.request_hash
        AND t.source_wallet_id IS NOT DISTINCT FROM excluded.source_wallet_id
        AND t.destination_wallet_id IS NOT DISTINCT FROM excluded.destination_wallet_id
    RETURNING id, reference, created_at
), claim AS (
    SELECT i.id AS tx_id, i.reference, i.created_at, e.id AS existing_id, e.request_hash AS existing_hash
    FROM (SELECT 1) AS one LEFT JOIN inserted i ON true
    LEFT JOIN transactions e ON i.id IS NULL AND e.initiator_id = CAST(:initiator_id AS uuid)
        AND e.idempotency_key = :idempotency_key
)"""

_RECORD_ROW = """
    SELECT CAST(:id AS uuid), :reference, :type, CAST(:amount AS bigint), :currency, CAST(:source_wallet_id AS uuid),
        CAST(:destination_wallet_id AS uuid), CAST(:source_user_id AS uuid), CAST(:destination_user_id AS uuid),
        CAST(:initiator_id AS uuid), CAST(:api_key_id AS uuid), :idempotency_key, :request_hash, :description,
        :provider, :provider_reference, CAST(:hold_id AS uuid)
    FROM relaxed"""
_RELAXED = "relaxed AS (SELECT set_config('synchronous_commit', 'off', true))"
_RECORD = text(f"WITH {_RELAXED}, {_PENDING.format(rows=_RECORD_ROW)} SELECT * FROM claim")


# Resolving the parties and recording in the same statement (a transfer, a deposit or withdrawal, an admin deposit):
# `named` is the wallet the request names by id (the caller's own unless :owner is NULL); `recipient` the transfer's
# other side by id, number, username or phone (then the user's oldest wallet in the named wallet's currency). The
# row is inserted only when the parties are valid for the operation and :currency is the named wallet's (the caller
# converted the amount with it, and passes a NULL amount to only resolve); the answer always carries both parties
# and whether a username or phone found a user, so every refusal is told apart without another read.
_RESOLVE = """
named AS (
    SELECT w.id, w.user_id, u.username, w.number, w.currency, w.name, w.status, w.created_at
    FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = CAST(:wallet AS uuid) AND w.user_id = coalesce(CAST(:owner AS uuid), w.user_id)
), recipient_user AS (
    SELECT id FROM users WHERE lower(username) = lower(CAST(:to_username AS text))
    UNION ALL
    SELECT id FROM users WHERE phone = CAST(:to_phone AS text)
), recipient AS (
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.id = CAST(:to_wallet AS uuid)
    UNION ALL
    SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
    WHERE w.number = CAST(:to_number AS text)
    UNION ALL
    (SELECT w.id, w.user_id, u.username, w.number, w.currency FROM wallets w JOIN users u ON u.id = w.user_id
     WHERE w.user_id = (SELECT id FROM recipient_user) AND w.currency = (SELECT currency FROM named)
     ORDER BY w.created_at, w.id LIMIT 1)
)"""

# A deposit credits the named wallet (its destination); a withdrawal or a transfer debits it (the source).
_RESOLVED_ROW = """
    SELECT CAST(:id AS uuid), :reference, CAST(:type AS text), CAST(:amount AS bigint), n.currency,
        CASE WHEN c.deposit THEN NULL ELSE n.id END, CASE WHEN c.deposit THEN n.id ELSE r.id END,
        CASE WHEN c.deposit THEN NULL ELSE n.user_id END, CASE WHEN c.deposit THEN n.user_id ELSE r.user_id END,
        CAST(:initiator_id AS uuid), CAST(:api_key_id AS uuid), :idempotency_key, :request_hash, :description,
        NULL, NULL, NULL
    FROM relaxed, (SELECT CAST(:type AS text) = 'DEPOSIT' AS deposit) c, named n LEFT JOIN recipient r ON true
    WHERE n.currency = :currency AND CAST(:amount AS bigint) IS NOT NULL
        AND (CAST(:type AS text) <> 'TRANSFER' OR (r.id <> n.id AND r.currency = n.currency))"""
_RESOLVE_AND_RECORD = text(f"""
WITH {_RELAXED}, {_RESOLVE}, {_PENDING.format(rows=_RESOLVED_ROW)}
SELECT n.id, n.user_id, n.username, n.number, n.currency, n.name, n.status, n.created_at AS wallet_created_at,
    r.id AS to_id, r.user_id AS to_user_id,
    r.username AS to_username, r.number AS to_number, r.currency AS to_currency,
    EXISTS (SELECT 1 FROM recipient_user) AS recipient_user_found, c.*
FROM claim c LEFT JOIN named n ON true LEFT JOIN recipient r ON true
""")


class Claimed(NamedTuple):
    """The row step 1 recorded (or took over) for this attempt."""

    id: uuid.UUID
    reference: str
    created_at: dt.datetime


class Recorded(NamedTuple):
    """The row already under the key, not this attempt's to execute."""

    id: uuid.UUID
    request_hash: str


async def _claim(
    conn: AsyncConnection, row: Any, principal: Principal, key: str | None, digest: str
) -> tuple[Claimed | None, Recorded | None]:
    if row.tx_id is not None:
        return Claimed(row.tx_id, row.reference, row.created_at), None
    existing = Recorded(row.existing_id, row.existing_hash)
    if row.existing_id is None:  # recorded by a request that committed after this statement's snapshot was taken
        existing = Recorded(
            *(
                await conn.execute(
                    select(T.c.id, T.c.request_hash).where(
                        T.c.initiator_id == principal.user_id, T.c.idempotency_key == key
                    )
                )
            ).one()
        )
    if existing.request_hash != digest:
        raise errors.IdempotencyMismatch()
    return None, existing


def _abandoned(rt: Runtime) -> dt.timedelta:
    return dt.timedelta(seconds=rt.settings.pending_timeout)


def _new_reference() -> tuple[uuid.UUID, str]:
    return uuid.uuid4(), f"TX{secrets.token_hex(8).upper()}"


async def record(
    rt: Runtime, principal: Principal, op: Operation, key: str | None
) -> tuple[Claimed | None, Recorded | None]:
    """Step 1 for an operation whose parties are already resolved (a hold's capture, a provider deposit). Returns
    (the id, reference and created_at of the row this attempt claimed, new or abandoned, None), or (None, the row
    already under the key)."""
    tx_id, reference = _new_reference()
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
        "abandoned": _abandoned(rt),
    }
    async with rt.autocommit() as conn:
        return await _claim(conn, (await conn.execute(_RECORD, values)).one(), principal, key, digest)


@dataclass(frozen=True)
class Request:
    """A money request as the client named it: the wallet by id (`owner`'s, or any user's when None) and, for a
    transfer, the recipient by to_wallet_id / to_wallet_number / to_username / to_phone."""

    type: str  # DEPOSIT | WITHDRAWAL | TRANSFER
    wallet_id: uuid.UUID
    owner: uuid.UUID | None
    amount: Decimal
    description: str | None
    params: Callable[[int], Mapping[str, Any]]  # the normalised request for the amount in minor units
    recipient: Mapping[str, Any] | None = None


# A wallet's currency never changes: this process remembers the ones it has seen, so it converts the amount before
# the one statement that resolves and records (an unknown wallet is assumed in DEFAULT_CURRENCY; the statement
# checks, and a wrong guess costs one more statement).
_currencies: dict[uuid.UUID, str] = {}
_CURRENCIES_KEPT = 100_000


def _minor_or_none(amount: Decimal, currency: str) -> int | None:
    try:
        return to_minor(amount, currency)
    except errors.ValidationError:
        return None  # refused below once the wallet's currency is known, after the parties' own refusals


def _parties(row: Any, request: Request) -> tuple[Party, Party | None]:
    """The named wallet and the recipient from the statement's answer, or the refusal the request earns."""
    if row.id is None:
        raise errors.NotFound("Wallet not found.")
    named = Party(row.id, row.user_id, row.username, row.number, row.currency)
    if request.recipient is None:
        return named, None
    if row.to_id is None:
        if "to_wallet_id" in request.recipient or "to_wallet_number" in request.recipient:
            raise errors.NotFound("Recipient wallet not found.")
        if not row.recipient_user_found:
            raise errors.NotFound("Recipient not found.")
        raise errors.CurrencyMismatch(f"The recipient has no {named.currency} wallet.")
    if row.to_id == named.wallet_id:
        raise errors.SameWallet()
    if row.to_currency != named.currency:
        raise errors.CurrencyMismatch(
            f"The source wallet holds {named.currency} and the recipient wallet {row.to_currency}."
        )
    return named, Party(row.to_id, row.to_user_id, row.to_username, row.to_number, row.to_currency)


async def _resolve_and_record(
    rt: Runtime, principal: Principal, request: Request, key: str | None, *, only_resolve: bool = False
) -> tuple[Operation, Claimed | None, Recorded | None, Any]:
    """Step 1 with the parties resolved in the same statement: one round trip (two when this process had not seen
        the wallet and it is not in DEFAULT_CURRENCY). With only_resolve, records nothing. Also returns the statement's
    answer, whose name, status and wallet_created_at describe the named wallet."""
    recipient = request.recipient or {}
    currency = _currencies.get(request.wallet_id, rt.settings.default_currency)
    tx_id, reference = _new_reference()
    values = {
        "id": tx_id,
        "reference": reference,
        "type": request.type,
        "wallet": request.wallet_id,
        "owner": request.owner,
        "to_wallet": recipient.get("to_wallet_id"),
        "to_number": recipient.get("to_wallet_number"),
        "to_username": recipient.get("to_username"),
        "to_phone": recipient.get("to_phone"),
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "idempotency_key": key,
        "description": request.description,
        "abandoned": _abandoned(rt),
    }
    async with rt.autocommit() as conn:
        while True:
            minor = None if only_resolve else _minor_or_none(request.amount, currency)
            digest = request_hash(request.params(minor)) if minor is not None else None
            values.update(currency=currency, amount=minor, request_hash=digest)
            row = (await conn.execute(_RESOLVE_AND_RECORD, values)).one()
            named, other = _parties(row, request)
            if len(_currencies) >= _CURRENCIES_KEPT:
                _currencies.clear()
            _currencies[named.wallet_id] = named.currency
            if only_resolve or (minor is not None and named.currency == currency):
                break
            to_minor(request.amount, named.currency)  # raises when the amount does not fit the wallet's currency
            currency = named.currency  # a wrong guess: again, with the amount converted in the wallet's currency
        source, destination = (None, named) if request.type == "DEPOSIT" else (named, other)
        op = Operation(
            request.type, minor or 0, currency, source, destination, request.description, request.params(minor or 0)
        )
        if only_resolve:
            return op, None, None, row
        claimed, existing = await _claim(conn, row, principal, key, digest)
    return op, claimed, existing, row


def _limit_for(rt: Runtime, op: Operation) -> int:
    major = rt.settings.daily_withdraw_limit if op.type == "WITHDRAWAL" else rt.settings.daily_transfer_limit
    return int(major.scaleb(currency_exponent(op.currency) or 0))


def _over_daily_limit(op: Operation, limit: int, used: int) -> errors.DailyLimitExceeded:
    remaining = limit - (used - op.amount)
    return errors.DailyLimitExceeded(
        f"This would exceed the daily {op.type.lower()} limit of {format_minor(limit, op.currency)} "
        f"{op.currency}; {format_minor(max(remaining, 0), op.currency)} remains today."
    )


# Step 2 in one round trip: ledger_execute() (migrations/versions/0012_fast_path.py) locks the wallets in id order,
# checks status, funds, the balance ceiling and the daily limit (charged under its usage row's lock, so concurrent
# requests queue there and the limit holds), moves the balances, appends the entries and marks the row COMPLETED;
# the events CTEs then write the transaction's events with the completed_at it stamped into them, after its locks
# (wallet/events.py). Sent outside an explicit transaction, the statement is one durable commit, no BEGIN/COMMIT
# round trips; a refusal RAISEs and rolls all of it back.
_EXECUTE = text(f"""
WITH done AS MATERIALIZED (
    SELECT * FROM ledger_execute(CAST(:tx AS uuid), :type, CAST(:amount AS bigint), :currency,
        CAST(:source AS uuid), CAST(:destination AS uuid), CAST(:system AS uuid), CAST(:charged_user AS uuid),
        CAST(:limit AS bigint), CAST(:released AS bigint), CAST(:max_balance AS bigint), :source_role,
        :destination_role, CAST(:event_data AS text[]))
), {events.cte("(SELECT stamped_events FROM done)")}
SELECT done_at, source_balance, destination_balance, source_held, destination_held FROM done
""")

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


def _refusal(error: DBAPIError, op: Operation, limit: int) -> Exception | None:
    """The API's error for a refusal ledger_execute() raised (SQLSTATE class WL), else None."""
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    if not sqlstate.startswith("WL"):
        return None
    detail = getattr(error.orig, "detail", None) or ""
    message = str(getattr(error.orig.__cause__, "message", ""))  # the status, for WL001
    if sqlstate == "WL001":
        check_status(message, detail)
    if sqlstate == "WL002":
        available = format_minor(int(detail), op.currency)
        return errors.InsufficientFunds(f"Insufficient funds: the available balance is {available} {op.currency}.")
    if sqlstate == "WL003":
        return errors.BalanceLimitExceeded()
    if sqlstate == "WL004":
        return _over_daily_limit(op, limit, int(detail))
    return NoLongerPending()


async def execute(
    rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID
) -> tuple[dt.datetime, int | None, int | None]:
    """Step 2. Returns (completed_at, source balance after, destination balance after)."""
    done = await _execute(rt, op, row, initiator_id)
    return done.done_at, done.source_balance, done.destination_balance


async def _execute(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> Any:
    """Step 2: ledger_execute()'s answer (done_at, and each side's balance and held amount after the move)."""
    system_id = await _system_wallet(rt, op.currency) if op.source is None or op.destination is None else None
    limit = _limit_for(rt, op) if op.source is not None else 0
    source_role, destination_role = _roles(op)
    # completed_at is ledger_execute()'s to stamp into the events.
    completed = {**row, "status": "COMPLETED", "completed_at": None}
    values = {
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
        **events.params(events.transaction_events(completed, initiator_id)),
    }
    try:
        if op.draw is None:
            async with rt.autocommit() as conn:
                done = (await conn.execute(_EXECUTE, values)).one()
        else:
            async with rt.transaction() as conn:
                ids = [p.wallet_id for p in (op.source, op.destination) if p is not None]
                locked = {r.id: r.status for r in (await conn.execute(_LOCK, {"ids": ids})).all()}
                for party, whose in ((op.source, source_role), (op.destination, destination_role)):
                    if party is not None:
                        check_status(locked[party.wallet_id], whose)
                # What active holds reserve is not available to spend, but what this capture released is.
                values["released"] = await op.draw(conn)
                done = (await conn.execute(_EXECUTE, values)).one()
    except DBAPIError as error:
        refusal = _refusal(error, op, limit)
        if refusal is None:
            raise
        raise refusal from None
    metrics.money(op.type, "COMPLETED")  # committed: counted once, whoever executed it (a request, a provider)
    return done


class NoLongerPending(Exception):
    """The row was no longer PENDING when this attempt went to mark it COMPLETED: another attempt, a provider's
    confirmation or recovery finished it first (and this attempt's rollback moved nothing)."""


# Step 3 in one round trip: the FAILED mark (only of a row still PENDING) and its events, stamped with its
# completed_at (ledger_stamp(), migrations/versions/0012_fast_path.py), in one statement and one durable commit.
_FAILED_EVENTS = events.cte(
    "(SELECT ledger_stamp(CAST(:event_data AS text[]), completed_at) FROM failed)", "EXISTS (SELECT FROM failed)"
)
_MARK_FAILED = text(f"""
WITH failed AS MATERIALIZED (
    UPDATE transactions SET status = 'FAILED', failure_code = :code, failure_reason = :reason, completed_at = now()
    WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
    RETURNING type, completed_at
), {_FAILED_EVENTS}
SELECT type FROM failed
""")


async def mark_failed(
    rt: Runtime, tx_id: uuid.UUID, code: str, reason: str, row: Mapping[str, Any] | None = None
) -> None:
    """Step 3, with its event (only if this marked it). Its commit waits for the disk: the refusal is about to be
    answered, and a retry of the key after a database crash must replay it, not execute. `row` is the transaction
    as rendered so far, when the caller has it (else it is read first)."""
    reason = reason[:255]
    async with rt.autocommit() as conn:
        if row is None:
            row = await load_transaction(conn, tx_id)
        failed = {**row, "status": "FAILED", "failure_code": code, "failure_reason": reason, "completed_at": None}
        values = {"tx": tx_id, "code": code, "reason": reason}
        values |= events.params(events.transaction_events(failed, failed["initiator_id"]))
        marked = (await conn.execute(_MARK_FAILED, values)).first()
    if marked:  # not when recovery or another delivery decided the row first
        metrics.money(marked.type, code)


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


async def run(
    rt: Runtime, principal: Principal, op: Operation, key: str | None, viewer: uuid.UUID | None = None
) -> Outcome:
    """Record, execute, and fail or complete one money operation; idempotent per (caller, key)."""
    async with rt.session():
        claimed, existing = await record(rt, principal, op, key)
        return await _finish(rt, principal, op, claimed, existing, viewer or principal.user_id)


async def _finish(
    rt: Runtime,
    principal: Principal,
    op: Operation,
    claimed: Claimed | None,
    existing: Recorded | None,
    viewer: uuid.UUID,
) -> Outcome:
    """Steps 2 and 3 for the row step 1 claimed, or the replay of the one already under the key."""
    if claimed is None:
        assert existing is not None
        return await _replay(rt, principal, op, existing.id, viewer)
    tx_id = claimed.id
    # created_at comes from the database, as a replay will read it.
    row = _known_row(principal, op, tx_id, claimed.reference, claimed.created_at)
    try:
        done = await _execute(rt, op, row, principal.user_id)
    except NoLongerPending:
        return await _replay(rt, principal, op, tx_id, viewer)
    except errors.ServiceUnavailable as error:
        await _release(rt, tx_id)
        error.transaction_id = str(tx_id)
        raise
    except errors.WalletError as error:
        await mark_failed(rt, tx_id, error.code, error.message, row)
        error.transaction_id = str(tx_id)
        raise
    except Exception:
        log.exception("money operation failed unexpectedly", extra={"transaction_id": str(tx_id)})
        try:
            await mark_failed(rt, tx_id, "INTERNAL_ERROR", "The operation failed unexpectedly.", row)
        except Exception:
            log.exception("could not mark the transaction FAILED; recovery will", extra={"transaction_id": str(tx_id)})
        raise
    row.update(status="COMPLETED", completed_at=done.done_at)
    if op.source and op.source.user_id == principal.user_id:
        return Outcome(render_transaction(row, viewer), False, done.source_balance, done.source_held)
    return Outcome(render_transaction(row, viewer), False, done.destination_balance, done.destination_held)


async def _run_request(
    rt: Runtime, principal: Principal, request: Request, key: str | None, *, owner_views: bool = False
) -> Outcome:
    """run() for a request whose parties the recording statement resolves; answered as the caller sees it, or as
    the credited wallet's owner does (owner_views)."""
    op, claimed, existing, _ = await _resolve_and_record(rt, principal, request, key)
    viewer = op.destination.user_id if owner_views and op.destination else principal.user_id
    return await _finish(rt, principal, op, claimed, existing, viewer)


# ---- the operations ---------------------------------------------------------------------------------------------


def _own_wallet_request(
    rt: Runtime, principal: Principal, wallet_id: uuid.UUID, kind: str, amount: Decimal, description: str | None
) -> Request:
    if kind == "DEPOSIT" and not rt.settings.allow_self_deposit:
        raise errors.Forbidden("Self-service deposits are turned off on this server.")

    def params(minor: int) -> dict[str, Any]:
        return {"op": kind, "wallet": wallet_id, "amount": minor, "description": description}

    return Request(kind, wallet_id, principal.user_id, amount, description, params)


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
    request = _own_wallet_request(rt, principal, wallet_id, kind, amount, description)
    async with rt.session():
        return await _run_request(rt, principal, request, key)


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
    request = _own_wallet_request(rt, principal, wallet_id, kind, amount, description)
    async with rt.session():
        op, claimed, existing, named = await _resolve_and_record(rt, principal, request, key)
        outcome = await _finish(rt, principal, op, claimed, existing, principal.user_id)
        if outcome.wallet_held is not None:  # rendered from the two statements' answers: no read after the move
            row: Any = SimpleNamespace(
                id=named.id,
                number=named.number,
                name=named.name,
                currency=named.currency,
                held=outcome.wallet_held,
                status=named.status,
                created_at=named.wallet_created_at,
                updated_at=outcome.transaction["completed_at"],
            )
        else:  # a replay: the wallet as it is now
            async with rt.autocommit() as conn:
                row = (await conn.execute(select(*WALLET_COLUMNS).where(Wallet.id == wallet_id))).one()
    rendered = render_wallet(row, outcome.wallet_balance)
    rendered["updated_at"] = outcome.transaction["completed_at"]  # a replay: when its operation moved the balance
    return {"wallet": rendered, "replayed": outcome.replayed}


def _transfer_request(
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
) -> Request:
    def params(minor: int) -> dict[str, Any]:
        return {
            "op": "TRANSFER",
            "wallet": from_wallet_id,
            "recipient": dict(recipient),
            "amount": minor,
            "description": description,
        }

    return Request("TRANSFER", from_wallet_id, principal.user_id, amount, description, params, recipient)


async def payer_and_payee(
    rt: Runtime, principal: Principal, from_wallet_id: uuid.UUID, recipient: Mapping[str, Any]
) -> tuple[Party, Party]:
    """The caller's wallet and a recipient's (by id, number, username or phone) in the same currency: a hold's two
    sides, resolved by the statement a transfer records with (recording nothing)."""
    request = _transfer_request(principal, from_wallet_id, recipient, Decimal(0), None)
    op, _, _, _ = await _resolve_and_record(rt, principal, request, None, only_resolve=True)
    assert op.source is not None and op.destination is not None
    return op.source, op.destination


async def transfer(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    description: str | None,
    key: str | None,
) -> Outcome:
    request = _transfer_request(principal, from_wallet_id, recipient, amount, description)
    async with rt.session():
        return await _run_request(rt, principal, request, key)


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

    def params(minor: int) -> dict[str, Any]:
        return {
            "op": "ADMIN_DEPOSIT",
            "wallet": wallet_id,
            "amount": minor,
            "description": description,
            "reason": reason,
        }

    request = Request("DEPOSIT", wallet_id, None, amount, description, params)
    async with rt.session():
        return await _run_request(rt, principal, request, key, owner_views=True)


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
