"""Step 1 of the money path (lifecycle.py): an operation's parties, and its PENDING record with the idempotency check,
in one statement. The lifecycle and the operations built on the ledger (wallet/operations/) import them from here."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Transaction, User, Wallet
from wallet import errors
from wallet.money import to_minor
from wallet.platform.prepared import Prepared
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

T = Transaction.__table__


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
    # A payment provider confirms it later (wallet/operations/deposits.py); else it runs at once.
    provider: str | None = None
    # Hook for holds (wallet/operations/holds.py): the hold a capture draws on, kept on the row; and a step run inside
    # step 2's transaction right after the wallet locks (so it can lock the hold row after them, in the one lock order),
    # which may refuse (raise) and returns how much of the source's held amount it released for this operation to spend.
    # It is given the transaction's id (a paid payment request links it: wallet/operations/payment_requests.py).
    hold_id: uuid.UUID | None = None
    draw: Callable[[AsyncConnection, uuid.UUID], Awaitable[int]] | None = None
    # The transaction a REVERSAL gives back (part of), kept on the row (wallet/operations/reversals.py).
    reverses: uuid.UUID | None = None
    # The client's labels, kept on the row (and in params, so the idempotency hash covers them).
    metadata: Mapping[str, str] | None = None


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


def request_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


# Step 1 in one round trip: in autocommit mode the INSERT is a transaction of its own, and set_config(..., true)
# makes its commit skip the wait for the disk as SET LOCAL synchronous_commit = off would. No answer depends on a
# PENDING row alone (a replay of it answers 409 IN_PROGRESS, "try again"), and the commit that finishes the row
# waits for the disk, which writes this earlier commit first: the log is flushed in order.
# A key already recorded by this caller inserts nothing; if that row is PENDING and its claim expired (the attempt
# died) and it is the same request on the same wallets, this attempt claims it instead. The row lock makes
# concurrent retries queue here, and each re-checks the claim: exactly one of them takes the row over. A provider
# deposit is never taken over: it waits for the payment, not for an attempt (wallet/operations/deposits.py).
# The statement also reads the row already under the key when it inserted nothing (a replay needs no second read).
_PENDING = """
inserted AS (
    INSERT INTO transactions AS t (id, reference, type, amount, currency, source_wallet_id, destination_wallet_id,
        source_user_id, destination_user_id, initiator_id, api_key_id, idempotency_key, request_hash, description,
        provider, provider_reference, hold_id, reverses, metadata)
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
        :provider, :provider_reference, CAST(:hold_id AS uuid), CAST(:reverses AS uuid), CAST(:metadata AS jsonb)
    FROM relaxed"""
_RELAXED = "relaxed AS (SELECT set_config('synchronous_commit', 'off', true))"
_RECORD = Prepared(text(f"WITH {_RELAXED}, {_PENDING.format(rows=_RECORD_ROW)} SELECT * FROM claim"))


# Resolving the parties and recording in the same statement (a transfer, a deposit or withdrawal, an admin deposit):
# `named` is the wallet the request names by id (the caller's own unless :owner is NULL); `recipient` the transfer's
# other side by id, number, username, phone or e-mail (then the user's oldest wallet in the named wallet's currency).
# The row is inserted only when the parties are valid for the operation and :currency is the named wallet's (the caller
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
    UNION ALL
    SELECT id FROM users WHERE email_key = CAST(:to_email AS text)
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
        NULL, NULL, NULL, NULL, CAST(:metadata AS jsonb)
    FROM relaxed, (SELECT CAST(:type AS text) = 'DEPOSIT' AS deposit) c, named n LEFT JOIN recipient r ON true
    WHERE n.currency = :currency AND CAST(:amount AS bigint) IS NOT NULL
        AND (CAST(:type AS text) <> 'TRANSFER' OR (r.id <> n.id AND r.currency = n.currency))"""
_RESOLVE_AND_RECORD = Prepared(
    text(f"""
WITH {_RELAXED}, {_RESOLVE}, {_PENDING.format(rows=_RESOLVED_ROW)}
SELECT n.id, n.user_id, n.username, n.number, n.currency, n.name, n.status, n.created_at AS wallet_created_at,
    r.id AS to_id, r.user_id AS to_user_id,
    r.username AS to_username, r.number AS to_number, r.currency AS to_currency,
    EXISTS (SELECT 1 FROM recipient_user) AS recipient_user_found, c.*
FROM claim c LEFT JOIN named n ON true LEFT JOIN recipient r ON true
""")
)


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


async def recorded_amount(conn: AsyncConnection, principal: Principal, key: str | None) -> int | None:
    """The amount the caller's earlier request with this key recorded, if any: an operation whose default amount is
    "all that remains" resolves it once, so a retry (a replay, or the take-over of an attempt that died) moves what
    its first attempt recorded, whatever remains by then."""
    if key is None:
        return None
    return (
        await conn.execute(select(T.c.amount).where(T.c.initiator_id == principal.user_id, T.c.idempotency_key == key))
    ).scalar()


def metadata_json(metadata: Mapping[str, str] | None) -> str | None:
    """The metadata as the statements take it: JSON text they cast to jsonb."""
    return None if metadata is None else orjson.dumps(metadata).decode()


def abandoned_after(rt: Runtime) -> dt.timedelta:
    return dt.timedelta(seconds=rt.settings.pending_timeout)


def new_reference() -> tuple[uuid.UUID, str]:
    return uuid.uuid4(), f"TX{secrets.token_hex(8).upper()}"


async def record(
    rt: Runtime, principal: Principal, op: Operation, key: str | None
) -> tuple[Claimed | None, Recorded | None]:
    """Step 1 for an operation whose parties are already resolved (a hold's capture, a provider deposit). Returns
    (the id, reference and created_at of the row this attempt claimed, new or abandoned, None), or (None, the row
    already under the key)."""
    tx_id, reference = new_reference()
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
        "metadata": metadata_json(op.metadata),
        "abandoned": abandoned_after(rt),
    }
    async with rt.autocommit() as conn:
        return await _claim(conn, await _RECORD.one(conn, values), principal, key, digest)


@dataclass(frozen=True)
class Request:
    """A money request as the client named it: the wallet by id (`owner`'s, or any user's when None) and, for a
    transfer, the recipient by to_wallet_id / to_wallet_number / to_username / to_phone / to_email."""

    type: str  # DEPOSIT | WITHDRAWAL | TRANSFER
    wallet_id: uuid.UUID
    owner: uuid.UUID | None
    amount: Decimal
    description: str | None
    params: Callable[[int], Mapping[str, Any]]  # the normalised request for the amount in minor units
    recipient: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] | None = None


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


def parties(row: Any, request: Request) -> tuple[Party, Party | None]:
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


async def resolve_and_record(
    rt: Runtime, principal: Principal, request: Request, key: str | None, *, only_resolve: bool = False
) -> tuple[Operation, Claimed | None, Recorded | None, Any]:
    """Step 1 with the parties resolved in the same statement: one round trip (two when this process had not seen
        the wallet and it is not in DEFAULT_CURRENCY). With only_resolve, records nothing. Also returns the statement's
    answer, whose name, status and wallet_created_at describe the named wallet."""
    recipient = request.recipient or {}
    currency = _currencies.get(request.wallet_id, rt.settings.default_currency)
    tx_id, reference = new_reference()
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
        "to_email": recipient.get("to_email"),  # the address's email_key (handlers' RecipientEmail)
        "initiator_id": principal.user_id,
        "api_key_id": principal.api_key_id,
        "idempotency_key": key,
        "description": request.description,
        "metadata": metadata_json(request.metadata),
        "abandoned": abandoned_after(rt),
    }
    async with rt.autocommit() as conn:
        while True:
            minor = None if only_resolve else _minor_or_none(request.amount, currency)
            digest = request_hash(request.params(minor)) if minor is not None else None
            values.update(currency=currency, amount=minor, request_hash=digest)
            row = await _RESOLVE_AND_RECORD.one(conn, values)
            named, other = parties(row, request)
            if len(_currencies) >= _CURRENCIES_KEPT:
                _currencies.clear()
            _currencies[named.wallet_id] = named.currency
            if only_resolve or (minor is not None and named.currency == currency):
                break
            to_minor(request.amount, named.currency)  # raises when the amount does not fit the wallet's currency
            currency = named.currency  # a wrong guess: again, with the amount converted in the wallet's currency
        source, destination = (None, named) if request.type == "DEPOSIT" else (named, other)
        op = Operation(
            request.type,
            minor or 0,
            currency,
            source,
            destination,
            request.description,
            request.params(minor or 0),
            metadata=request.metadata,
        )
        if only_resolve:
            return op, None, None, row
        claimed, existing = await _claim(conn, row, principal, key, digest)
    return op, claimed, existing, row
