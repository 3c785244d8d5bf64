"""Deposits paid through Paystack: start a checkout, then apply Paystack's word on the payment exactly once.

The row is recorded PENDING by the ledger (provider 'paystack', provider_reference = our reference) before Paystack
is called, with no lock held. Paystack's word arrives three ways: the signed webhook, a verify when the owner reads
the deposit, and the sweep of deposits whose webhook never came. All three go through apply(), which credits under
the wallet row lock with the ledger's status guard, so duplicates and races credit once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, select, update

from models import PendingTransaction, Transaction, User, Wallet
from wallet import errors
from wallet.ledger.execute import NoLongerPending, check_status, execute, mark_failed
from wallet.ledger.history import load_transaction, render_transaction
from wallet.ledger.record import Operation, Party, own_wallet, record
from wallet.money import format_minor, to_minor
from wallet.platform.runtime import Runtime
from wallet.principal import Principal
from wallet.providers import paystack

log = logging.getLogger("wallet.deposits")

T = Transaction.__table__
PROVIDER = "paystack"
# Paystack statuses that end a payment without money; any other non-success status may still turn into a payment.
DECLINED = frozenset({"failed", "reversed"})
# Deposits the sweep verifies per round, oldest first.
SWEEP_BATCH = 100
# A provider reference as we make them (ledger: TX + 16 hex digits), with room for other providers' forms.
REFERENCE = re.compile(r"^[A-Za-z0-9._=-]{1,64}\Z")
# Reading a pending deposit asks Paystack at most once per this many seconds per deposit, across every process (the
# store's window: Redis when several processes share it); the webhook and the sweep bring the news meanwhile.
VERIFY_EVERY = 2
# The verify in flight per reference in this process: concurrent reads wait for it instead of asking again.
_verifying: dict[str, asyncio.Future[None]] = {}


def _checkout(row: Any, viewer: uuid.UUID) -> dict[str, Any]:
    return {
        "transaction": render_transaction(row, viewer),
        "reference": row["provider_reference"],
        "authorization_url": row["authorization_url"],
    }


async def _replay(rt: Runtime, principal: Principal, key: str) -> dict[str, Any]:
    """The first answer to this key: the checkout once Paystack gave one (whatever became of the payment since),
    the recorded failure when initialize failed, or 409 while the first request is still talking to Paystack."""
    async with rt.autocommit() as conn:
        tx_id = (
            await conn.execute(select(T.c.id).where(T.c.initiator_id == principal.user_id, T.c.idempotency_key == key))
        ).scalar_one()
        row = await load_transaction(conn, tx_id)
    if row["authorization_url"] is not None:
        return {**_checkout(row, principal.user_id), "replayed": True}
    if row["status"] == "FAILED":
        error = errors.recorded_failure(row["failure_code"], row["failure_reason"], str(row["id"]))
        error.replayed = True  # type: ignore[attr-defined]
        raise error
    raise errors.IdempotencyInProgress()


async def initialize(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    amount: Decimal,
    callback_url: str | None,
    key: str | None,
) -> dict[str, Any]:
    """Record a PENDING deposit into the caller's wallet and open Paystack's checkout for it."""
    client = paystack.client(rt.settings)
    async with rt.autocommit() as conn:
        wallet = await own_wallet(conn, principal, wallet_id)
        owner = (await conn.execute(select(User.email, User.status).where(User.id == principal.user_id))).one()
    # Refused before the payer is sent to pay: money taken for a blocked account could only wait at Paystack.
    check_status(owner.status, "wallet owner's")
    email = owner.email
    if wallet.currency not in paystack.CURRENCIES:
        raise errors.CurrencyNotSupported(
            f"Paystack takes {', '.join(sorted(paystack.CURRENCIES))}; this wallet holds {wallet.currency}."
        )
    if email is None:
        # Paystack sends the receipt there; a made-up address would be accepted and then bounce.
        raise errors.ValidationError(
            {"email": ["Paystack needs the payer's e-mail address: set one with PATCH /api/v1/users/me first."]}
        )
    minor = to_minor(amount, wallet.currency)
    callback_url = callback_url or rt.settings.paystack_callback_url
    params = {"op": "PAYSTACK_DEPOSIT", "wallet": wallet.wallet_id, "amount": minor, "callback_url": callback_url}
    op = Operation("DEPOSIT", minor, wallet.currency, None, wallet, None, params, provider=PROVIDER)
    inserted, _ = await record(rt, principal, op, key)
    if inserted is None:  # the key's row: still initializing, waiting for the payment, or finished
        return await _replay(rt, principal, key)  # type: ignore[arg-type]  # only a key finds an earlier row

    try:
        url = await client.initialize(
            email=email, amount=minor, currency=wallet.currency, reference=inserted.reference, callback_url=callback_url
        )
    except paystack.PaystackError as error:
        log.warning("paystack initialize failed", extra={"transaction_id": str(inserted.id), "reason": str(error)})
        await mark_failed(rt, inserted.id, errors.ProviderError.code, str(error))
        raise errors.ProviderError(str(error), transaction_id=str(inserted.id)) from None
    # A durable commit (also of the PENDING row before it) before the payer is sent to pay.
    async with rt.transaction() as conn:
        stored = update(T).where(T.c.id == inserted.id, T.c.status == "PENDING").values(authorization_url=url)
        await conn.execute(stored)
        row = await load_transaction(conn, inserted.id)
    if row["authorization_url"] is None:  # failed meanwhile (only a PENDING_TIMEOUT below Paystack's timeout can)
        raise errors.recorded_failure(row["failure_code"], row["failure_reason"], str(row["id"]))
    return {**_checkout(row, principal.user_id), "replayed": False}


_BY_REFERENCE = (
    select(T.c.id, T.c.status, T.c.amount, T.c.currency, T.c.destination_wallet_id, T.c.destination_user_id)
    .add_columns(Wallet.number, User.username)
    .join(Wallet, Wallet.id == T.c.destination_wallet_id)
    .join(User, User.id == T.c.destination_user_id)
)


async def apply(rt: Runtime, reference: str, status: str, amount: int, currency: str) -> None:
    """Paystack's word on the payment `reference` (from the webhook, a verify or the sweep): a matching success is
    credited exactly once, a mismatch or a decline fails the deposit; anything else leaves it waiting."""
    async with rt.autocommit() as conn:
        row = (
            await conn.execute(_BY_REFERENCE.where(T.c.provider == PROVIDER, T.c.provider_reference == reference))
        ).first()
    if row is None or row.status == "COMPLETED":
        return  # not ours, or credited already: a duplicate delivery changes nothing
    context = {"transaction_id": str(row.id), "reference": reference, "paystack_status": status}
    if row.status == "FAILED":
        if status == "success":  # paid after we gave it up (expired): the money is at Paystack, not in the wallet
            log.error("paystack confirmed a deposit that had failed; refund or credit it by hand", extra=context)
        return
    if status in DECLINED:
        await mark_failed(rt, row.id, "PROVIDER_DECLINED", f"Paystack reports the payment {status}.")
        return
    if status != "success":
        return
    if (amount, currency) != (row.amount, row.currency):
        reported = f"{format_minor(amount, row.currency)} {currency}" if currency == row.currency else currency
        log.error(
            "paystack reported another amount or currency; not credited, an operator must look",
            extra={**context, "expected_minor": row.amount, "reported_minor": amount, "reported_currency": currency},
        )
        await mark_failed(
            rt,
            row.id,
            "PROVIDER_MISMATCH",
            f"Paystack reported {reported}, but {format_minor(row.amount, row.currency)} {row.currency} was asked for.",
        )
        return
    wallet = Party(row.destination_wallet_id, row.destination_user_id, row.username, row.number, row.currency)
    op = Operation("DEPOSIT", row.amount, row.currency, None, wallet, None, {}, provider=PROVIDER)
    async with rt.autocommit() as conn:
        recorded = dict(await load_transaction(conn, row.id))  # what its events will show
    try:
        await execute(rt, op, recorded, recorded["initiator_id"])
    except NoLongerPending:
        return  # another delivery or a verify completed it first (the status guard refused this one)
    except errors.WalletError as error:
        # Paid, but the account is frozen or inactive now: keep it PENDING so the sweep credits it once allowed.
        log.error("paid deposit cannot be credited yet; kept PENDING", extra={**context, "code": error.code})
        return
    log.info("paystack deposit credited", extra=context)


async def _verify(rt: Runtime, client: paystack.Paystack, reference: str) -> paystack.Verified | None:
    """Ask Paystack and apply its answer; None when Paystack knows no such payment. Raises PaystackError."""
    verified = await client.verify(reference)
    if verified is not None:
        await apply(rt, reference, verified.status, verified.amount, verified.currency)
    return verified


async def _verify_for_reader(rt: Runtime, reference: str) -> None:
    """Ask Paystack about a deposit being read, unless it was asked within VERIFY_EVERY; never an error (what is
    known is answered, and the sweep asks again later)."""
    if await rt.store.hit(f"paystack-verify:{reference}", VERIFY_EVERY) > 1:
        return
    try:
        await _verify(rt, paystack.client(rt.settings), reference)
    except paystack.PaystackError as error:
        log.warning("paystack verify failed", extra={"reference": reference, "reason": str(error)})


async def get_deposit(rt: Runtime, principal: Principal, reference: str) -> dict[str, Any]:
    """The caller's deposit by its reference; while it waits for the payment, Paystack is asked first (once for all
    the reads of it in flight, and at most every VERIFY_EVERY seconds)."""
    if not REFERENCE.match(reference):
        raise errors.NotFound("Deposit not found.")
    query = select(T.c.id, T.c.status, T.c.authorization_url).where(
        T.c.provider == PROVIDER, T.c.provider_reference == reference, T.c.destination_user_id == principal.user_id
    )
    async with rt.autocommit() as conn:
        found = (await conn.execute(query)).first()
    if found is None:
        raise errors.NotFound("Deposit not found.")
    if found.status == "PENDING" and found.authorization_url is not None and rt.settings.paystack_secret_key:
        flight = _verifying.get(reference)
        if flight is None:
            flight = _verifying[reference] = asyncio.ensure_future(_verify_for_reader(rt, reference))
            flight.add_done_callback(lambda _: _verifying.pop(reference, None))
        await asyncio.shield(flight)  # a reader that goes away does not cancel the others' verify
    async with rt.autocommit() as conn:
        row = await load_transaction(conn, found.id)
    return render_transaction(row, principal.user_id)


async def sweep(rt: Runtime) -> int:
    """Verify deposits whose webhook is late (lost), and fail those Paystack has not confirmed by the expiry.
    A deposit is only given up after Paystack was asked and did not say success, so confirmed money is never lost.
    Returns how many were given up."""
    waited = func.now() - dt.timedelta(seconds=rt.settings.pending_timeout)
    expired = func.now() - dt.timedelta(seconds=rt.settings.paystack_pending_timeout)
    # Initialize outlives PENDING_TIMEOUT by at most Paystack's timeout: a row still without its checkout page after
    # both was left by a server that died mid-call, and no payer ever saw it.
    stalled = waited - dt.timedelta(seconds=paystack.TIMEOUT)
    async with rt.autocommit() as conn:
        rows = (
            await conn.execute(
                select(
                    T.c.id,
                    T.c.provider_reference,
                    T.c.authorization_url,
                    (T.c.created_at < expired).label("expired"),
                    (T.c.created_at < stalled).label("stalled"),
                )
                .where(
                    T.c.id.in_(select(PendingTransaction.transaction_id)),
                    T.c.status == "PENDING",
                    T.c.provider == PROVIDER,
                    T.c.created_at < waited,
                )
                .order_by(T.c.created_at)
                .limit(SWEEP_BATCH)
            )
        ).all()
    given_up = 0
    for row in rows:
        if row.authorization_url is None:
            if row.stalled:
                await mark_failed(rt, row.id, errors.Interrupted.code, errors.Interrupted.message)
                given_up += 1
            continue
        if not rt.settings.paystack_secret_key:
            continue  # Paystack was turned off: the deposits wait until it is back
        try:
            verified = await _verify(rt, paystack.client(rt.settings), row.provider_reference)
        except paystack.PaystackError as error:
            log.warning("paystack verify failed; the sweep retries", extra={"reason": str(error)})
            break  # Paystack is down: the next round tries again, nothing is given up meanwhile
        if row.expired and (verified is None or verified.status != "success"):
            await mark_failed(rt, row.id, "PROVIDER_EXPIRED", "The payment was not completed in time.")
            given_up += 1
    return given_up


def signed_event(rt: Runtime, body: bytes, signature: str | None) -> dict[str, Any]:
    """A Paystack webhook's event: the signature is checked on the raw bytes before anything is parsed."""
    if not rt.settings.paystack_secret_key:
        raise errors.ProviderNotConfigured()
    if not paystack.signature_valid(rt.settings.paystack_secret_key, body, signature):
        raise errors.InvalidSignature()
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.InvalidJson() from None
    if not isinstance(event, dict):
        raise errors.InvalidJson("The event must be a JSON object.")
    return event


async def receive_charge(rt: Runtime, event: dict[str, Any]) -> None:
    """A signed `charge.success`: applied to the deposit it names."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    reference, amount, currency = data.get("reference"), data.get("amount"), data.get("currency")
    problems = {}
    if not isinstance(reference, str) or not REFERENCE.match(reference):
        problems["data.reference"] = ["A reference string is required."]
    if type(amount) is not int or amount <= 0:
        problems["data.amount"] = ["A positive integer amount in minor units is required."]
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        problems["data.currency"] = ["A three-letter currency code is required."]
    if problems:
        raise errors.ValidationError(problems, "The charge.success event is malformed.")
    await apply(rt, reference, "success", amount, currency.upper())
