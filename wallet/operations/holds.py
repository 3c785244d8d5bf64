"""Holds: reserve an amount of a payer's wallet for a payee, then capture it (through the ledger) or release it.

The reserved total of a wallet is its `held` column, changed only in the transaction that changes a hold's status
or captured amount and only under the payer's wallet row lock, so it always equals the remaining amounts of its
ACTIVE holds; a CHECK keeps held <= balance. Every path takes the locks in one order, wallet rows then the hold
row, as the ledger's execution does (wallet rows in id order, then the capture's hold), so none can deadlock.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from models import Hold, Wallet
from wallet import errors
from wallet.ledger import lifecycle
from wallet.ledger.execute import check_status
from wallet.ledger.record import Operation, Party, any_user_wallet, recorded_amount, request_hash
from wallet.money import format_minor, to_minor
from wallet.notify import events
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

H = Hold.__table__
_PAYER, _PAYEE = aliased(Wallet), aliased(Wallet)
# The expiry sweep releases at most this many holds per run (the next run takes the rest).
SWEEP_BATCH = 500


def render_hold(row: Any) -> dict[str, Any]:
    remaining = row.amount - row.captured_amount if row.status == "ACTIVE" else 0
    return {
        "id": row.id,
        "from_wallet_id": row.from_wallet_id,
        "to_wallet_id": row.to_wallet_id,
        "amount": format_minor(row.amount, row.currency),
        "captured_amount": format_minor(row.captured_amount, row.currency),
        "remaining_amount": format_minor(remaining, row.currency),
        "currency": row.currency,
        "status": row.status,
        "description": row.description,
        "expires_at": row.expires_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


LOCK_PAYER = text("""
SELECT w.balance, w.held, u.status FROM wallets w JOIN users u ON u.id = w.user_id
WHERE w.id = CAST(:wallet AS uuid) FOR NO KEY UPDATE OF w
""")
_PAYEE_STATUS = text(
    "SELECT u.status FROM wallets w JOIN users u ON u.id = w.user_id WHERE w.id = CAST(:wallet AS uuid)"
)
# A hold with this key already placed by this caller inserts nothing (its first request answers again).
PLACE = text("""
INSERT INTO holds (id, from_wallet_id, to_wallet_id, initiator_id, idempotency_key, request_hash, amount, currency,
    description, expires_at)
VALUES (CAST(:id AS uuid), CAST(:from_wallet AS uuid), CAST(:to_wallet AS uuid), CAST(:initiator AS uuid), :key,
    :request_hash, CAST(:amount AS bigint), :currency, :description, now() + CAST(:expires_in AS interval))
ON CONFLICT (initiator_id, idempotency_key) DO NOTHING
RETURNING *
""")


def _tell_both(hold: Any, kind: str, payer: uuid.UUID, payee: uuid.UUID) -> list[events.NewEvent]:
    """The hold event (created, captured, released) for its payer and its payee."""
    rendered = render_hold(hold)
    return [events.NewEvent(payer, kind, rendered), events.NewEvent(payee, kind, rendered)]


RESERVE = text("UPDATE wallets SET held = held + CAST(:amount AS bigint) WHERE id = CAST(:wallet AS uuid)")


async def place(
    rt: Runtime,
    principal: Principal,
    from_wallet_id: uuid.UUID,
    recipient: Mapping[str, Any],
    amount: Decimal,
    expires_in: int,
    description: str | None,
    key: str | None,
) -> tuple[dict[str, Any], bool]:
    """Reserve `amount` of the caller's wallet for the recipient, in one transaction under the payer's row lock
    (so a withdrawal or another hold racing for the same funds queues behind it and sees it). Returns (the hold,
    replayed). A refusal records nothing: a retry of its key is decided afresh."""
    payer, payee = await lifecycle.payer_and_payee(rt, principal, from_wallet_id, recipient)
    minor = to_minor(amount, payer.currency)
    params = {
        "op": "HOLD",
        "wallet": payer.wallet_id,
        "recipient": dict(recipient),
        "amount": minor,
        "expires_in": expires_in,
        "description": description,
    }
    hashed = request_hash(params)
    async with rt.transaction() as conn:
        locked = (await conn.execute(LOCK_PAYER, {"wallet": payer.wallet_id})).one()
        values = {
            "id": uuid.uuid4(),
            "from_wallet": payer.wallet_id,
            "to_wallet": payee.wallet_id,
            "initiator": principal.user_id,
            "key": key,
            "request_hash": hashed,
            "amount": minor,
            "currency": payer.currency,
            "description": description,
            "expires_in": dt.timedelta(seconds=expires_in),
        }
        hold = (await conn.execute(PLACE, values)).first()
        if hold is not None:
            check_status(locked.status, "paying")
            check_status((await conn.execute(_PAYEE_STATUS, {"wallet": payee.wallet_id})).scalar(), "payee's")
            if locked.balance - locked.held < minor:
                available = format_minor(locked.balance - locked.held, payer.currency)
                raise errors.InsufficientFunds(
                    f"Insufficient funds: the available balance is {available} {payer.currency}."
                )
            await conn.execute(RESERVE, {"amount": minor, "wallet": payer.wallet_id})
            await events.emit(conn, _tell_both(hold, "hold.created", payer.user_id, payee.user_id))
            return render_hold(hold), False
        existing = (
            await conn.execute(select(H).where(H.c.initiator_id == principal.user_id, H.c.idempotency_key == key))
        ).one()
    if existing.request_hash != hashed:
        raise errors.IdempotencyMismatch()
    return render_hold(existing), True


def _visible_to(user_id: uuid.UUID) -> Any:
    return or_(_PAYER.user_id == user_id, _PAYEE.user_id == user_id)


def _with_sides() -> Any:
    return (
        select(H, _PAYER.user_id.label("payer_id"), _PAYEE.user_id.label("payee_id"))
        .join(_PAYER, _PAYER.id == H.c.from_wallet_id)
        .join(_PAYEE, _PAYEE.id == H.c.to_wallet_id)
    )


async def _visible_hold(conn: AsyncConnection, principal: Principal, hold_id: uuid.UUID) -> Any:
    """The hold if the caller is its payer or payee; anyone else is told it does not exist."""
    row = (await conn.execute(_with_sides().where(H.c.id == hold_id, _visible_to(principal.user_id)))).first()
    if row is None:
        raise errors.NotFound("Hold not found.")
    return row


async def _ended_by_caller(conn: AsyncConnection, principal: Principal, hold_id: uuid.UUID) -> Any:
    """A visible hold its payer or payee may capture or void: not a payout's (its payee is the outside world, and
    Paystack's word on the transfer ends it: wallet/operations/payouts.py)."""
    row = await _visible_hold(conn, principal, hold_id)
    if row.payee_id is None:
        raise errors.HoldNotActive("This hold reserves a payout: it ends when Paystack reports the transfer.")
    return row


async def get_hold(rt: Runtime, principal: Principal, hold_id: uuid.UUID) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        return render_hold(await _visible_hold(conn, principal, hold_id))


async def list_holds(
    rt: Runtime,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None = None,
    wallet_id: uuid.UUID | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The caller's holds as payer or payee, newest first, paged like every list; `wallet_id` must be one of the
    caller's wallets."""
    query = _with_sides().where(_visible_to(principal.user_id))
    if wallet_id is not None:
        async with rt.autocommit() as conn:
            owner = (await conn.execute(select(Wallet.user_id).where(Wallet.id == wallet_id))).scalar()
        if owner != principal.user_id:
            raise errors.NotFound("Wallet not found.")
        query = query.where(or_(H.c.from_wallet_id == wallet_id, H.c.to_wallet_id == wallet_id))
    if status is not None:
        query = query.where(H.c.status == status)
    return await created_page(rt, query, Hold, limit, cursor, render_hold)


# ---- capture (a ledger transfer that draws on the hold) ------------------------------------------------------

_HOLD_FOR_CAPTURE = text("""
SELECT status, amount - captured_amount AS remaining, expires_at <= now() AS expired
FROM holds WHERE id = CAST(:hold AS uuid) FOR UPDATE
""")
_CAPTURE = text("""
UPDATE holds SET captured_amount = captured_amount + CAST(:amount AS bigint),
    status = CASE WHEN :final OR captured_amount + CAST(:amount AS bigint) = amount THEN 'CAPTURED' ELSE 'ACTIVE' END,
    updated_at = now()
WHERE id = CAST(:hold AS uuid)
RETURNING *
""")
_UNRESERVE = text("UPDATE wallets SET held = held - CAST(:amount AS bigint) WHERE id = CAST(:wallet AS uuid)")


def _drawer(
    hold_id: uuid.UUID, payer: Party, payee: Party, amount: int, final: bool
) -> Callable[[AsyncConnection, uuid.UUID], Awaitable[int]]:
    """The capture's step inside the ledger's execution (Operation.draw), after the wallet locks: refuse unless the
    hold is active, unexpired and covers the amount; then count the capture, and release from the payer's held
    total the captured amount and, on the final capture, the rest."""

    async def draw(conn: AsyncConnection, _transaction_id: uuid.UUID) -> int:
        hold = (await conn.execute(_HOLD_FOR_CAPTURE, {"hold": hold_id})).one()
        if hold.status != "ACTIVE" or hold.expired:
            raise errors.HoldNotActive()
        if amount > hold.remaining:
            raise errors.HoldExceeded()
        captured = (await conn.execute(_CAPTURE, {"hold": hold_id, "amount": amount, "final": final})).one()
        released = hold.remaining if final else amount
        await conn.execute(_UNRESERVE, {"amount": released, "wallet": payer.wallet_id})
        # Written in the capture's commit: rolled back with it if the transfer is refused after this step.
        await events.emit(conn, _tell_both(captured, "hold.captured", payer.user_id, payee.user_id))
        return released

    return draw


async def capture(
    rt: Runtime, principal: Principal, hold_id: uuid.UUID, amount: Decimal | None, final: bool, key: str | None
) -> lifecycle.Outcome:
    """Transfer all (the default) or part of what remains of a hold from payer to payee; the payer or the payee
    asks. Idempotent per key like any ledger operation; every refusal decided under the locks is recorded FAILED."""
    async with rt.autocommit() as conn:
        hold = await _ended_by_caller(conn, principal, hold_id)
        payer = await any_user_wallet(conn, hold.from_wallet_id)
        payee = await any_user_wallet(conn, hold.to_wallet_id)
        earlier = await recorded_amount(conn, principal, key)
    if earlier is None and hold.status != "ACTIVE":
        raise errors.HoldNotActive()  # a new request with nothing left to capture: no amount to record
    requested = None if amount is None else to_minor(amount, hold.currency)
    minor = requested or earlier or hold.amount - hold.captured_amount
    params = {"op": "CAPTURE", "hold": hold_id, "amount": requested, "final": final}
    op = Operation(
        "TRANSFER",
        minor,
        hold.currency,
        payer,
        payee,
        hold.description,
        params,
        hold_id=hold_id,
        draw=_drawer(hold_id, payer, payee, minor, final),
    )
    return await lifecycle.run(rt, principal, op, key)


# ---- release: void and expiry ------------------------------------------------------------------------------------

_LOCK_WALLET = text("SELECT 1 FROM wallets WHERE id = CAST(:wallet AS uuid) FOR NO KEY UPDATE")
# Close an ACTIVE hold (a void only before its expiry, the sweep only after) and give its remaining amount back to
# the payer's available balance, in one statement under the payer's row lock taken just before.
_CLOSE = text("""
WITH closed AS (
    UPDATE holds SET status = :status, updated_at = now()
    WHERE id = CAST(:hold AS uuid) AND status = 'ACTIVE' AND (expires_at > now()) = :live
    RETURNING *
), released AS (
    UPDATE wallets w SET held = w.held - (closed.amount - closed.captured_amount)
    FROM closed WHERE w.id = closed.from_wallet_id
)
SELECT closed.*, payer.user_id AS payer_id, payee.user_id AS payee_id
FROM closed JOIN wallets payer ON payer.id = closed.from_wallet_id JOIN wallets payee ON payee.id = closed.to_wallet_id
""")


async def _close(conn: AsyncConnection, hold_id: uuid.UUID, payer_wallet: uuid.UUID, status: str) -> Any:
    await conn.execute(_LOCK_WALLET, {"wallet": payer_wallet})
    closed = (await conn.execute(_CLOSE, {"hold": hold_id, "status": status, "live": status == "VOIDED"})).first()
    if closed is not None:
        await events.emit(conn, _tell_both(closed, "hold.released", closed.payer_id, closed.payee_id))
    return closed


async def void(rt: Runtime, principal: Principal, hold_id: uuid.UUID) -> dict[str, Any]:
    """The payer or the payee cancels what remains of an active hold."""
    async with rt.autocommit() as conn:
        hold = await _ended_by_caller(conn, principal, hold_id)
    async with rt.transaction() as conn:
        closed = await _close(conn, hold_id, hold.from_wallet_id, "VOIDED")
    if closed is None:
        raise errors.HoldNotActive()
    return render_hold(closed)


async def expire(rt: Runtime) -> int:
    """The sweep: mark ACTIVE holds past their expiry EXPIRED and release them; returns how many."""
    async with rt.autocommit() as conn:
        due = (
            await conn.execute(
                select(H.c.id, H.c.from_wallet_id)
                .where(H.c.status == "ACTIVE", H.c.expires_at <= func.now())
                .order_by(H.c.expires_at)
                .limit(SWEEP_BATCH)
            )
        ).all()
    expired = 0
    for hold in due:  # one short transaction each: a wallet lock is never held for the whole batch
        async with rt.transaction() as conn:
            expired += await _close(conn, hold.id, hold.from_wallet_id, "EXPIRED") is not None
    return expired
