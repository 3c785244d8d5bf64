"""Payment requests: a payee asks a payer for an amount; the payer pays it (a transfer through the ledger) or declines
it, the payee may cancel it, and it expires.

A request is paid by the ledger's own transfer with a draw step (Operation.draw) that, inside the transfer's commit
and after its wallet locks, locks the request row, refuses unless it is OPEN and unexpired, and marks it PAID with the
transfer's id. So of any number of pays (repeated, concurrent, or racing a decline, a cancel or the expiry) exactly
one transfer completes; the others are recorded FAILED with REQUEST_NOT_OPEN. Decline, cancel and the expiry sweep
lock only the request row (the same last lock a pay takes), so no path can deadlock another.

An OPEN request past its expiry is shown EXPIRED at once; the sweep (server.py, every RECOVERY_INTERVAL) then marks
it so and emits `payment_request.expired`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from models import PaymentRequest, Transaction, User, Wallet
from wallet import errors
from wallet.identity.identifiers import email_key, normalize_email
from wallet.ledger import lifecycle
from wallet.ledger.record import Operation, any_user_wallet, own_wallet, recorded_amount
from wallet.money import format_minor, to_minor
from wallet.notify import events
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

R = PaymentRequest.__table__
T = Transaction.__table__
_PAYEE, _PAYER, _PAYEE_WALLET = aliased(User), aliased(User), aliased(Wallet)
# The expiry sweep marks at most this many requests per run (the next run takes the rest).
SWEEP_BATCH = 500


def render_request(row: Any) -> dict[str, Any]:
    status = "EXPIRED" if row.status == "OPEN" and row.lapsed else row.status
    return {
        "id": row.id,
        "payee": {"username": row.payee_username, "wallet_number": row.payee_wallet_number},
        "payer": {"username": row.payer_username},
        "amount": format_minor(row.amount, row.currency),
        "currency": row.currency,
        "description": row.description,
        "status": status,
        "transaction_id": row.transaction_id,
        "expires_at": row.expires_at,
        "created_at": row.created_at,
    }


def _with_parties() -> Any:
    return (
        select(
            R,
            _PAYEE.username.label("payee_username"),
            _PAYEE_WALLET.number.label("payee_wallet_number"),
            _PAYER.username.label("payer_username"),
            (R.c.expires_at <= func.now()).label("lapsed"),
        )
        .join(_PAYEE, _PAYEE.id == R.c.payee_id)
        .join(_PAYEE_WALLET, _PAYEE_WALLET.id == R.c.payee_wallet_id)
        .join(_PAYER, _PAYER.id == R.c.payer_id)
    )


async def _rendered(conn: AsyncConnection, request_id: uuid.UUID) -> Any:
    return (await conn.execute(_with_parties().where(R.c.id == request_id))).one()


def _tell_both(row: Any, kind: str) -> list[events.NewEvent]:
    rendered = render_request(row)
    return [events.NewEvent(row.payee_id, kind, rendered), events.NewEvent(row.payer_id, kind, rendered)]


# ---- create ------------------------------------------------------------------------------------------------------


async def _payer_id(conn: AsyncConnection, recipient: Mapping[str, Any]) -> uuid.UUID:
    """The user asked to pay, named by username, phone, e-mail or one of their wallet numbers (active users only:
    anyone else is not found, as an unknown name is)."""
    field, value = next(iter(recipient.items()))
    query = select(User.id).where(User.status == "active")
    if field == "to_username":
        query = query.where(func.lower(User.username) == value.lower())
    elif field == "to_phone":
        query = query.where(User.phone == value)
    elif field == "to_email":
        query = query.where(User.email_key == email_key(normalize_email(value, field)))
    else:
        query = query.join(Wallet, Wallet.user_id == User.id).where(Wallet.number == value)
    found = (await conn.execute(query)).scalar()
    if found is None:
        raise errors.NotFound("Recipient not found.")
    return found


async def create(
    rt: Runtime,
    principal: Principal,
    recipient: Mapping[str, Any],
    amount: Decimal,
    currency: str,
    description: str | None,
    expires_in: int,
) -> dict[str, Any]:
    """Ask the recipient for `amount`, to be paid into the caller's oldest wallet in `currency`."""
    minor = to_minor(amount, currency)
    async with rt.transaction() as conn:
        payer_id = await _payer_id(conn, recipient)
        if payer_id == principal.user_id:
            raise errors.ValidationError({next(iter(recipient)): ["You cannot ask yourself for money."]})
        payee_wallet = (
            await conn.execute(
                select(Wallet.id)
                .where(Wallet.user_id == principal.user_id, Wallet.currency == currency)
                .order_by(Wallet.created_at, Wallet.id)
                .limit(1)
            )
        ).scalar()
        if payee_wallet is None:
            raise errors.CurrencyMismatch(f"You have no {currency} wallet to be paid into.")
        request_id = (
            await conn.execute(
                insert(R)
                .values(
                    id=uuid.uuid4(),
                    payee_id=principal.user_id,
                    payee_wallet_id=payee_wallet,
                    payer_id=payer_id,
                    amount=minor,
                    currency=currency,
                    description=description,
                    expires_at=func.now() + dt.timedelta(seconds=expires_in),
                )
                .returning(R.c.id)
            )
        ).scalar_one()
        row = await _rendered(conn, request_id)
        await events.emit(conn, _tell_both(row, "payment_request.created"))
    return render_request(row)


# ---- read ------------------------------------------------------------------------------------------------------


def _visible_to(user_id: uuid.UUID) -> Any:
    return or_(R.c.payer_id == user_id, R.c.payee_id == user_id)


async def _visible_request(conn: AsyncConnection, principal: Principal, request_id: uuid.UUID) -> Any:
    """The request if the caller is its payer or payee; anyone else is told it does not exist."""
    row = (await conn.execute(_with_parties().where(R.c.id == request_id, _visible_to(principal.user_id)))).first()
    if row is None:
        raise errors.NotFound("Payment request not found.")
    return row


async def get_request(rt: Runtime, principal: Principal, request_id: uuid.UUID) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        return render_request(await _visible_request(conn, principal, request_id))


def _status_is(status: str) -> Any:
    """The filter on the status as shown: an OPEN row past its expiry is EXPIRED before the sweep marks it."""
    if status == "OPEN":
        return and_(R.c.status == "OPEN", R.c.expires_at > func.now())
    if status == "EXPIRED":
        return or_(R.c.status == "EXPIRED", and_(R.c.status == "OPEN", R.c.expires_at <= func.now()))
    return R.c.status == status


async def list_requests(
    rt: Runtime,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None = None,
    role: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The requests the caller pays (role=payer), asked for (role=payee), or both, newest first."""
    side = {"payer": R.c.payer_id == principal.user_id, "payee": R.c.payee_id == principal.user_id}
    query = _with_parties().where(side[role] if role else _visible_to(principal.user_id))
    if status is not None:
        query = query.where(_status_is(status))
    return await created_page(rt, query, PaymentRequest, limit, cursor, render_request)


# ---- pay ------------------------------------------------------------------------------------------------------

_LOCK_OPEN = text("""
SELECT status = 'OPEN' AND expires_at > now() AS open FROM payment_requests WHERE id = CAST(:id AS uuid) FOR UPDATE
""")


def _drawer(request_id: uuid.UUID) -> Callable[[AsyncConnection, uuid.UUID], Awaitable[int]]:
    """The pay's step inside the ledger's execution, after the wallet locks: refuse unless the request is still open,
    then mark it PAID by this transfer, with its event, in the transfer's commit."""

    async def draw(conn: AsyncConnection, transaction_id: uuid.UUID) -> int:
        if not (await conn.execute(_LOCK_OPEN, {"id": request_id})).scalar():
            raise errors.RequestNotOpen()
        await conn.execute(
            update(R)
            .where(R.c.id == request_id)
            .values(status="PAID", transaction_id=transaction_id, updated_at=func.now())
        )
        # Still PENDING, so still writable; the link commits with the money or not at all.
        await conn.execute(update(T).where(T.c.id == transaction_id).values(payment_request_id=request_id))
        await events.emit(conn, _tell_both(await _rendered(conn, request_id), "payment_request.paid"))
        return 0  # nothing held is released: a request reserves nothing

    return draw


async def pay(
    rt: Runtime,
    principal: Principal,
    request_id: uuid.UUID,
    from_wallet_id: uuid.UUID,
    key: str | None,
    metadata: Mapping[str, str] | None = None,
) -> lifecycle.Outcome:
    """The payer pays the request from one of their wallets in its currency: a transfer to the payee's wallet,
    idempotent per key like any ledger operation; a refusal decided under the locks is recorded FAILED."""
    async with rt.autocommit() as conn:
        request = await _visible_request(conn, principal, request_id)
        if request.payer_id != principal.user_id:
            raise errors.Forbidden("Only the payer can pay a payment request.")
        payer = await own_wallet(conn, principal, from_wallet_id)
        payee = await any_user_wallet(conn, request.payee_wallet_id)
        earlier = await recorded_amount(conn, principal, key)
    if payer.currency != request.currency:
        raise errors.CurrencyMismatch(f"The request is in {request.currency} and the wallet holds {payer.currency}.")
    if earlier is None and render_request(request)["status"] != "OPEN":
        raise errors.RequestNotOpen()  # a new request for what cannot be paid: nothing to record
    params = lifecycle.with_metadata({"op": "PAY_REQUEST", "request": request_id, "wallet": from_wallet_id}, metadata)
    op = Operation(
        "TRANSFER",
        request.amount,
        request.currency,
        payer,
        payee,
        request.description,
        params,
        draw=_drawer(request_id),
        metadata=metadata,
    )
    outcome = await lifecycle.run(rt, principal, op, key)
    outcome.transaction["payment_request_id"] = request_id  # rendered from what this attempt knew before the draw
    return outcome


# ---- decline, cancel, expire ----------------------------------------------------------------------------------


async def _close(rt: Runtime, principal: Principal, request_id: uuid.UUID, side: str, status: str) -> dict[str, Any]:
    """The payer declines, or the payee cancels, an open request."""
    async with rt.transaction() as conn:
        request = await _visible_request(conn, principal, request_id)
        if getattr(request, f"{side}_id") != principal.user_id:
            raise errors.Forbidden(f"Only the {side} can {'decline' if side == 'payer' else 'cancel'} this request.")
        closed = (
            await conn.execute(
                update(R)
                .where(R.c.id == request_id, R.c.status == "OPEN", R.c.expires_at > func.now())
                .values(status=status, updated_at=func.now())
                .returning(R.c.id)
            )
        ).first()
        if closed is None:
            raise errors.RequestNotOpen()
        row = await _rendered(conn, request_id)
        await events.emit(conn, _tell_both(row, f"payment_request.{status.lower()}"))
    return render_request(row)


async def decline(rt: Runtime, principal: Principal, request_id: uuid.UUID) -> dict[str, Any]:
    return await _close(rt, principal, request_id, "payer", "DECLINED")


async def cancel(rt: Runtime, principal: Principal, request_id: uuid.UUID) -> dict[str, Any]:
    return await _close(rt, principal, request_id, "payee", "CANCELLED")


async def expire(rt: Runtime) -> int:
    """The sweep: mark OPEN requests past their expiry EXPIRED, each with its event; returns how many. Rows a pay or
    a decline holds are skipped (this run) rather than waited for."""
    async with rt.transaction() as conn:
        due = (
            select(R.c.id)
            .where(R.c.status == "OPEN", R.c.expires_at <= func.now())
            .order_by(R.c.expires_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
        expired = (
            (
                await conn.execute(
                    update(R).where(R.c.id.in_(due)).values(status="EXPIRED", updated_at=func.now()).returning(R.c.id)
                )
            )
            .scalars()
            .all()
        )
        if expired:
            rows = (await conn.execute(_with_parties().where(R.c.id.in_(expired)))).all()
            await events.emit(conn, [event for row in rows for event in _tell_both(row, "payment_request.expired")])
    return len(expired)
