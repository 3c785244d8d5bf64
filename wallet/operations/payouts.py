"""Payouts to bank accounts through Paystack Transfers: the banks, the payout accounts users pay out to, and the
payouts themselves.

A payout account is added only once Paystack has resolved it (the holder's name, from the bank) and registered it as
a transfer recipient; the row keeps the recipient code a transfer names and the resolved name the user checks. Paystack
is called before anything is written and with no lock held; the insert is then one short transaction under the user's
row lock (the limit per user, and the same account added twice answers the one there is).

A payout holds its amount on the wallet (a hold whose payee is the currency's system account, the outside world) and
is recorded PENDING in the same commit, under the wallet's row lock, with the daily withdrawal limit charged; then
Paystack's /transfer is called with the payout's reference, no lock held. Paystack's word (its answer, the signed
webhook, or a verify by the sweep) goes through apply(): success captures the hold as a WITHDRAWAL to the system
account (a money-path operation under a key derived from the payout, so duplicates and races capture once), failed
releases it, reversed releases it or, after success, credits the money back as a REVERSAL linked to the withdrawal.
Each change of a payout is one commit with its ledger rows and its events.

Sent once: the payout's send claim (send_claimed_at) belongs to the request that created it; another attempt (the
sweep, after a server died mid-call or Paystack timed out) takes it over only once it is older than the provider's
timeout and the pending timeout, and then asks Paystack about the reference before sending it again. Paystack itself
refuses a reference twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import case, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Hold, Payout, PayoutAccount, User, Wallet
from wallet import errors
from wallet.ledger import history, lifecycle
from wallet.ledger.execute import Moved, NoLongerPending, check_status, daily_limit, over_daily_limit, system_wallet
from wallet.ledger.record import Operation, Party, own_wallet, request_hash
from wallet.money import format_minor, to_minor
from wallet.notify import events
from wallet.operations import deposits, holds
from wallet.platform import metrics
from wallet.platform.locks import lock_user
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal
from wallet.providers import paystack

log = logging.getLogger("wallet.payouts")

A = PayoutAccount.__table__
# Live payout accounts per user.
MAX_ACCOUNTS = 20
# Seconds a process keeps Paystack's bank list per currency (banks change rarely; each form that picks one asks).
BANKS_TTL = 3600
# currency -> (when it was fetched, monotonic; the (code, name) pairs)
_banks: dict[str, tuple[float, list[tuple[str, str]]]] = {}
COLUMNS = (A.c.id, A.c.bank_code, A.c.bank_name, A.c.account_number, A.c.account_name, A.c.currency, A.c.created_at)


def _supported(currency: str) -> None:
    if currency not in paystack.RECIPIENT_TYPES:
        raise errors.CurrencyNotSupported(
            f"Paystack pays out in {', '.join(sorted(paystack.RECIPIENT_TYPES))}; not in {currency}."
        )


async def _bank_list(rt: Runtime, currency: str) -> list[tuple[str, str]]:
    client = paystack.client(rt.settings)
    _supported(currency)
    cached = _banks.get(currency)
    if cached is not None and time.monotonic() - cached[0] < BANKS_TTL:
        return cached[1]
    try:
        banks = await client.banks(currency)
    except paystack.PaystackError as error:
        log.warning("paystack bank list failed", extra={"currency": currency, "reason": str(error)})
        raise errors.ProviderError(str(error)) from None
    _banks[currency] = (time.monotonic(), banks)
    return banks


async def list_banks(rt: Runtime, currency: str) -> dict[str, Any]:
    """The banks Paystack pays out to in `currency` (kept BANKS_TTL seconds per process)."""
    return {"items": [{"code": code, "name": name} for code, name in await _bank_list(rt, currency)]}


def render_account(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "bank_code": row.bank_code,
        "bank_name": row.bank_name,
        "account_number_masked": "*" * (len(row.account_number) - 4) + row.account_number[-4:],
        "account_name": row.account_name,
        "currency": row.currency,
        "created_at": row.created_at,
    }


async def add_account(
    rt: Runtime, principal: Principal, bank_code: str, account_number: str, currency: str
) -> dict[str, Any]:
    """Resolve the account with Paystack, register it as a transfer recipient, and keep it for the caller."""
    client = paystack.client(rt.settings)
    bank_name = dict(await _bank_list(rt, currency)).get(bank_code)
    if bank_name is None:
        raise errors.PayoutAccountInvalid(f"Paystack knows no bank {bank_code} for {currency}; see GET /banks.")
    try:
        name = await client.resolve(account_number, bank_code)
        if name is None:
            raise errors.PayoutAccountInvalid()
        recipient = await client.create_recipient(
            name=name, account_number=account_number, bank_code=bank_code, currency=currency
        )
    except paystack.PaystackError as error:
        log.warning("paystack payout account failed", extra={"user_id": str(principal.user_id), "reason": str(error)})
        raise errors.ProviderError(str(error)) from None
    async with rt.transaction() as conn:
        # Under the user's row lock: concurrent adds cannot pass the limit or add one account twice.
        await lock_user(conn, principal.user_id)
        live = (A.c.user_id == principal.user_id) & A.c.deleted_at.is_(None)
        same = live & (A.c.bank_code == bank_code) & (A.c.account_number == account_number) & (A.c.currency == currency)
        existing = (await conn.execute(select(*COLUMNS).where(same))).one_or_none()
        if existing is not None:
            return render_account(existing)
        if (await conn.execute(select(func.count()).where(live))).scalar_one() >= MAX_ACCOUNTS:
            raise errors.LimitReached(f"At most {MAX_ACCOUNTS} payout accounts per user.")
        row = (
            await conn.execute(
                insert(A)
                .values(
                    id=uuid.uuid4(),
                    user_id=principal.user_id,
                    bank_code=bank_code,
                    bank_name=recipient.bank_name or bank_name,
                    account_number=account_number,
                    account_name=name,
                    currency=currency,
                    recipient_code=recipient.code,
                )
                .returning(*COLUMNS)
            )
        ).one()
    log.info("payout account added", extra={"user_id": str(principal.user_id), "payout_account_id": str(row.id)})
    return render_account(row)


async def list_accounts(rt: Runtime, principal: Principal) -> dict[str, Any]:
    """The caller's payout accounts, oldest first (at most MAX_ACCOUNTS)."""
    async with rt.autocommit() as conn:
        rows = await conn.execute(
            select(*COLUMNS)
            .where(A.c.user_id == principal.user_id, A.c.deleted_at.is_(None))
            .order_by(A.c.created_at, A.c.id)
        )
    return {"items": [render_account(row) for row in rows]}


async def delete_account(rt: Runtime, principal: Principal, account_id: uuid.UUID) -> None:
    """Stop using one of the caller's payout accounts (the row stays for the payouts that name it)."""
    async with rt.autocommit() as conn:
        deleted = (
            await conn.execute(
                update(A)
                .where(A.c.id == account_id, A.c.user_id == principal.user_id, A.c.deleted_at.is_(None))
                .values(deleted_at=func.now())
                .returning(A.c.id)
            )
        ).scalar()
    if deleted is None:
        raise errors.NotFound("Payout account not found.")


# ---- payouts ----------------------------------------------------------------------------------------------------

P = Payout.__table__
H = Hold.__table__
# A payout's hold does not expire by itself: Paystack's word ends it.
HOLD_LIFETIME = dt.timedelta(days=3650)
# Pending payouts the sweep asks Paystack about per round, oldest first.
SWEEP_BATCH = 100
# Paystack's transfer statuses that end a transfer without money leaving (reversed is told apart: it may come after
# a success).
FAILED = frozenset({"failed", "rejected", "abandoned", "blocked"})
STATUSES = ("PENDING", "COMPLETED", "FAILED", "REVERSED")
# Paystack's webhook events about transfers (handlers/deposits.py hands them to receive_event).
TRANSFER_EVENTS = frozenset({"transfer.success", "transfer.failed", "transfer.reversed"})


def render_payout(row: Any, admin: bool = False) -> dict[str, Any]:
    rendered = {
        "id": row.id,
        "wallet_id": row.wallet_id,
        "payout_account_id": row.payout_account_id,
        "status": row.status,
        "amount": format_minor(row.amount, row.currency),
        "currency": row.currency,
        "description": row.description,
        "metadata": row.metadata or {},
        "hold_id": row.hold_id,
        "transaction_id": row.transaction_id,
        "reversal_transaction_id": row.reversal_id,
        "provider_reference": row.reference,
        "failure_code": row.failure_code,
        "failure_reason": row.failure_reason,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "completed_at": row.completed_at,
    }
    if admin:
        rendered |= {
            "user_id": row.user_id,
            "provider_status": row.provider_status,
            "transfer_code": row.transfer_code,
            "sent_at": row.sent_at,
        }
    return rendered


def _by_key(principal: Principal, key: str) -> Any:
    return select(P).where(P.c.user_id == principal.user_id, P.c.idempotency_key == key)


def _replayed(row: Any, hashed: str) -> dict[str, Any]:
    if row.request_hash != hashed:
        raise errors.IdempotencyMismatch()
    return render_payout(row)


_CHARGE = text("""
INSERT INTO daily_usage AS d (user_id, currency, kind, day, amount)
VALUES (CAST(:user AS uuid), :currency, 'WITHDRAWAL', CAST(timezone('UTC', now()) AS date), CAST(:amount AS bigint))
ON CONFLICT (user_id, currency, kind, day) DO UPDATE SET amount = d.amount + excluded.amount
RETURNING d.amount
""")


async def _hold_and_record(
    rt: Runtime,
    conn: AsyncConnection,
    principal: Principal,
    wallet: Party,
    account_id: uuid.UUID,
    minor: int,
    system: uuid.UUID,
    values: Mapping[str, Any],
) -> Any:
    """Under the wallet's row lock (taken by the caller): the refusals, the daily limit, the hold (payee: `system`,
    the currency's system account) and the PENDING payout with their events. Returns the payout row."""
    locked = (await conn.execute(holds.LOCK_PAYER, {"wallet": wallet.wallet_id})).one()
    check_status(locked.status, "wallet owner's")
    if locked.balance - locked.held < minor:
        available = format_minor(locked.balance - locked.held, wallet.currency)
        raise errors.InsufficientFunds(f"Insufficient funds: the available balance is {available} {wallet.currency}.")
    limit = daily_limit(rt, "WITHDRAWAL", wallet.currency)
    if limit:  # under the usage row's lock, after the wallet's, as every withdrawal takes them
        used = (
            await conn.execute(_CHARGE, {"user": principal.user_id, "currency": wallet.currency, "amount": minor})
        ).scalar_one()
        if used > limit:
            raise over_daily_limit("WITHDRAWAL", minor, wallet.currency, limit, used)
    hold = (
        await conn.execute(
            holds.PLACE,
            {
                "id": uuid.uuid4(),
                "from_wallet": wallet.wallet_id,
                "to_wallet": system,
                "initiator": principal.user_id,
                "key": None,
                "request_hash": values["request_hash"],
                "amount": minor,
                "currency": wallet.currency,
                "description": values["description"],
                "expires_in": HOLD_LIFETIME,
            },
        )
    ).one()
    await conn.execute(holds.RESERVE, {"amount": minor, "wallet": wallet.wallet_id})
    payout = (
        await conn.execute(
            insert(P)
            .values(
                id=uuid.uuid4(),
                user_id=principal.user_id,
                wallet_id=wallet.wallet_id,
                payout_account_id=account_id,
                amount=minor,
                currency=wallet.currency,
                reference=f"PO{secrets.token_hex(8).upper()}",
                hold_id=hold.id,
                **values,
            )
            .returning(P)
        )
    ).one()
    told = [("hold.created", holds.render_hold(hold)), ("payout.pending", render_payout(payout))]
    await events.emit(conn, [events.NewEvent(principal.user_id, kind, data) for kind, data in told])
    return payout


async def create(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    account_id: uuid.UUID,
    amount: Decimal,
    description: str | None,
    metadata: Mapping[str, str] | None,
    key: str | None,
) -> tuple[dict[str, Any], bool]:
    """Hold `amount` of the caller's wallet for one of their payout accounts, record the payout PENDING, and ask
    Paystack to send it. Returns (the payout as it stands after Paystack's answer, replayed)."""
    client = paystack.client(rt.settings)
    async with rt.autocommit() as conn:
        wallet = await own_wallet(conn, principal, wallet_id)
        account = (
            await conn.execute(
                select(A.c.currency, A.c.deleted_at).where(A.c.id == account_id, A.c.user_id == principal.user_id)
            )
        ).first()
        earlier = None if key is None else (await conn.execute(_by_key(principal, key))).first()
    minor = to_minor(amount, wallet.currency)
    params = {"op": "PAYOUT", "wallet": wallet_id, "account": account_id, "amount": minor, "description": description}
    hashed = request_hash(lifecycle.with_metadata(params, metadata))
    if earlier is not None:
        return _replayed(earlier, hashed), True
    if account is None or account.deleted_at is not None:
        raise errors.NotFound("Payout account not found.")
    if account.currency != wallet.currency:
        raise errors.CurrencyMismatch(
            f"The payout account is in {account.currency}; this wallet holds {wallet.currency}."
        )
    values = {"idempotency_key": key, "request_hash": hashed, "description": description, "metadata": metadata}
    # Known before the wallet's lock is taken (its first use in a process may create it, on a connection of its own).
    system = await system_wallet(rt, wallet.currency)
    try:
        async with rt.transaction() as conn:
            # The wallet's lock first: a request with the same key on this wallet waits here and then finds it.
            await conn.execute(holds.LOCK_PAYER, {"wallet": wallet.wallet_id})
            earlier = None if key is None else (await conn.execute(_by_key(principal, key))).first()
            if earlier is None:
                payout = await _hold_and_record(rt, conn, principal, wallet, account_id, minor, system, values)
    except IntegrityError:  # the same key at once on another wallet: that one was recorded
        if key is None:
            raise
        async with rt.autocommit() as conn:
            earlier = (await conn.execute(_by_key(principal, key))).one()  # type: ignore[arg-type]
    if earlier is not None:
        return _replayed(earlier, hashed), True
    log.info("payout recorded", extra={"payout_id": str(payout.id), "reference": payout.reference})
    try:
        await _send(rt, client, payout, verify_first=False)
    except paystack.PaystackError as error:  # only a verify after a duplicate raises: the sweep asks again
        log.warning(
            "paystack transfer unknown; the sweep verifies", extra={"reference": payout.reference, "reason": str(error)}
        )
    return await _current(rt, payout.id), False


async def _current(rt: Runtime, payout_id: uuid.UUID, admin: bool = False) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        return render_payout((await conn.execute(select(P).where(P.c.id == payout_id))).one(), admin)


# ---- talking to Paystack ---------------------------------------------------------------------------------------


async def _acknowledged(rt: Runtime, payout: Any, transfer: paystack.Transfer) -> None:
    """Keep Paystack's acknowledgement (the transfer code, its status) and apply its status."""
    async with rt.autocommit() as conn:
        await conn.execute(
            update(P)
            .where(P.c.id == payout.id)
            .values(
                sent_at=func.coalesce(P.c.sent_at, func.now()),
                transfer_code=func.coalesce(P.c.transfer_code, transfer.code),
                # A settled payout keeps the word that settled it (a webhook may overtake the answer to /transfer).
                provider_status=case((P.c.status == "PENDING", transfer.status), else_=P.c.provider_status),
                updated_at=func.now(),
            )
        )
    await apply(rt, payout.reference, transfer)


async def _send(rt: Runtime, client: paystack.Paystack, payout: Any, *, verify_first: bool) -> None:
    """Send the payout's transfer under this attempt's claim: first ask Paystack about the reference when an earlier
    attempt may have sent it. A timeout, an unreachable Paystack or a 5xx leaves it PENDING (the sweep verifies, and
    sends it again only if Paystack knows no such transfer); a 4xx refusal (Paystack did nothing) fails it. Raises
    PaystackError only when a verify fails."""
    if verify_first and (known := await client.verify_transfer(payout.reference)) is not None:
        await _acknowledged(rt, payout, known)
        return
    async with rt.autocommit() as conn:
        recipient = (
            await conn.execute(select(A.c.recipient_code).where(A.c.id == payout.payout_account_id))
        ).scalar_one()
    try:
        sent = await client.transfer(
            amount=payout.amount,
            currency=payout.currency,
            recipient=recipient,
            reference=payout.reference,
            reason=payout.description,
        )
    except paystack.PaystackRefused as error:
        if error.duplicate:  # sent by an earlier attempt: Paystack's word on it is what counts
            if (known := await client.verify_transfer(payout.reference)) is not None:
                await _acknowledged(rt, payout, known)
            return
        if error.status >= 500:
            log.warning("paystack failed on the transfer; the sweep verifies", extra={"reference": payout.reference})
            return
        log.warning("paystack refused the transfer", extra={"reference": payout.reference, "reason": str(error)})
        await _fail(rt, payout.id, "PROVIDER_REFUSED", str(error), None)
        return
    except paystack.PaystackError as error:
        log.warning(
            "paystack transfer unanswered; the sweep verifies",
            extra={"reference": payout.reference, "reason": str(error)},
        )
        return
    await _acknowledged(rt, payout, sent)


_RECLAIM = text("""
UPDATE payouts SET send_claimed_at = now()
WHERE id = CAST(:id AS uuid) AND status = 'PENDING' AND sent_at IS NULL
    AND send_claimed_at < now() - CAST(:window AS interval)
RETURNING *
""")


def _send_window(rt: Runtime) -> dt.timedelta:
    """How long a send claim lasts: the call it covers has ended (Paystack's timeout) and then some."""
    return dt.timedelta(seconds=paystack.TIMEOUT + rt.settings.pending_timeout)


async def sweep(rt: Runtime) -> None:
    """The payouts Paystack has not settled: the unsent ones whose claim expired (a server died mid-call, or Paystack
    timed out) are verified and, if Paystack knows no such transfer, sent; the sent ones are verified (a webhook
    was lost). Paystack's answer is applied as any other."""
    if not rt.settings.paystack_secret_key:
        return  # Paystack was turned off: the payouts wait until it is back
    client = paystack.client(rt.settings)
    waited = func.now() - dt.timedelta(seconds=rt.settings.pending_timeout)
    async with rt.autocommit() as conn:
        rows = (
            await conn.execute(
                select(P.c.id, P.c.reference, P.c.sent_at)
                .where(P.c.status == "PENDING", P.c.created_at < waited)
                .order_by(P.c.created_at)
                .limit(SWEEP_BATCH)
            )
        ).all()
    for row in rows:
        try:
            if row.sent_at is None:
                async with rt.autocommit() as conn:
                    claimed = (await conn.execute(_RECLAIM, {"id": row.id, "window": _send_window(rt)})).first()
                if claimed is not None:
                    await _send(rt, client, claimed, verify_first=True)
            elif (known := await client.verify_transfer(row.reference)) is not None:
                await _acknowledged(rt, row, known)
        except paystack.PaystackError as error:
            log.warning("paystack transfer verify failed; the sweep retries", extra={"reason": str(error)})
            return  # Paystack is down: the next round tries again


async def receive_event(rt: Runtime, event: Mapping[str, Any]) -> None:
    """A signed `transfer.success`, `transfer.failed` or `transfer.reversed` (handlers/deposits.py checked the
    signature): applied like any other word of Paystack's."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    reference = data.get("reference")
    if not isinstance(reference, str) or not deposits.REFERENCE.match(reference):
        raise errors.ValidationError({"data.reference": ["A reference string is required."]}, "The event is malformed.")
    try:
        transfer = paystack.parse_transfer(data)
    except paystack.PaystackError as error:
        raise errors.ValidationError({"data": [str(error)]}, f"The {event.get('event')} event is malformed.") from None
    await apply(rt, reference, transfer)


# ---- applying Paystack's word ----------------------------------------------------------------------------------


async def apply(rt: Runtime, reference: str, transfer: paystack.Transfer) -> None:
    """Paystack's word on the transfer `reference`: success captures a PENDING payout once, a failure releases it, a
    reversal releases it or gives a COMPLETED one back; anything else (pending) changes nothing."""
    for _ in range(3):  # a payout that changed meanwhile (a concurrent delivery) is looked at again
        async with rt.autocommit() as conn:
            payout = (await conn.execute(select(P).where(P.c.reference == reference))).first()
        if payout is None:
            return  # not ours
        context = {"payout_id": str(payout.id), "reference": reference, "paystack_status": transfer.status}
        if transfer.status == "success" and payout.status == "PENDING":
            if (transfer.amount, transfer.currency) != (payout.amount, payout.currency):
                log.error("paystack reported another amount or currency; an operator must look", extra=context)
                return
            done = await _ledger(rt, payout, reversal=False)
        elif transfer.status in FAILED | {"reversed"} and payout.status == "PENDING":
            code = "PROVIDER_REVERSED" if transfer.status == "reversed" else "PROVIDER_FAILED"
            done = await _fail(
                rt, payout.id, code, f"Paystack reports the transfer {transfer.status}.", transfer.status
            )
        elif transfer.status == "reversed" and payout.status == "COMPLETED":
            done = await _ledger(rt, payout, reversal=True)
        else:
            if transfer.status == "success" and payout.status == "FAILED":
                log.error("paystack sent a transfer we had given up; an operator must look", extra=context)
            return
        if done:
            log.info("payout settled", extra=context)
            return


async def _ledger(rt: Runtime, payout: Any, reversal: bool) -> bool:
    """Run the capture (or the reversal) of `payout` on the money path, under a key derived from the payout, as its
    owner: every delivery of the same word records the same operation, so it moves money once. False when the payout
    changed meanwhile (look again)."""
    owner = Principal(user_id=payout.user_id, session_id=None, role="user")
    async with rt.autocommit() as conn:
        party = (
            await conn.execute(
                select(Wallet.number, User.username)
                .join(User, User.id == Wallet.user_id)
                .where(Wallet.id == payout.wallet_id)
            )
        ).one()
    wallet = Party(payout.wallet_id, payout.user_id, party.username, party.number, payout.currency)
    name = "PAYOUT_REVERSAL" if reversal else "PAYOUT_CAPTURE"
    op = Operation(
        "REVERSAL" if reversal else "WITHDRAWAL",
        payout.amount,
        payout.currency,
        None if reversal else wallet,
        wallet if reversal else None,
        f"Payout {payout.reference} returned" if reversal else payout.description or f"Payout {payout.reference}",
        {"op": name, "payout": payout.id},
        hold_id=None if reversal else payout.hold_id,
        reverses=payout.transaction_id if reversal else None,
    )
    try:
        await lifecycle.run(rt, owner, op, f"{name.lower()}:{payout.id}", step=_payout_step(payout.id, reversal))
    except errors.IdempotencyInProgress:
        return True  # another delivery is completing it right now
    except errors.ServiceUnavailable:
        raise
    except errors.WalletError:  # _Changed, or its replay (recorded FAILED): the payout changed meanwhile
        return False
    return True


class _Changed(errors.WalletError):
    """The payout was no longer in the status the step expected (another word of Paystack's came first)."""

    code = "PAYOUT_CHANGED"
    message = "The payout changed meanwhile."


_LOCK_WALLET = text("SELECT now() AS now FROM wallets WHERE id = CAST(:wallet AS uuid) FOR NO KEY UPDATE")
_LOCK_PAYOUT = text("SELECT * FROM payouts WHERE id = CAST(:id AS uuid) FOR UPDATE")

# Capture: the wallet pays the hold's amount to the system account (its held total drops by as much), the hold is
# CAPTURED and the payout COMPLETED, in one statement with the events; no row when the transaction is no longer
# PENDING (the rollback undoes the rest).
_CAPTURE = text(f"""
WITH moved AS (
    UPDATE wallets SET balance = balance - CAST(:amount AS bigint), held = held - CAST(:amount AS bigint),
        updated_at = now()
    WHERE id = CAST(:wallet AS uuid) RETURNING balance
), legs AS (
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT CAST(:tx AS uuid), CAST(:wallet AS uuid), -CAST(:amount AS bigint), :currency, balance FROM moved
    UNION ALL SELECT CAST(:tx AS uuid), CAST(:system AS uuid), CAST(:amount AS bigint), :currency, NULL
), captured AS (
    UPDATE holds SET captured_amount = amount, status = 'CAPTURED', updated_at = now()
    WHERE id = CAST(:hold AS uuid) AND status = 'ACTIVE'
), settled AS (
    UPDATE payouts SET status = 'COMPLETED', transaction_id = CAST(:tx AS uuid), provider_status = 'success',
        completed_at = now(), updated_at = now()
    WHERE id = CAST(:payout AS uuid)
), {events.cte()}
UPDATE transactions SET status = 'COMPLETED', completed_at = now()
WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
RETURNING completed_at, (SELECT balance FROM moved) AS balance
""")

# Reversal after success: the system account gives the amount back to the wallet, linked to the withdrawal.
_REVERSE = text(f"""
WITH moved AS (
    UPDATE wallets SET balance = balance + CAST(:amount AS bigint), updated_at = now()
    WHERE id = CAST(:wallet AS uuid) RETURNING balance
), legs AS (
    INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after)
    SELECT CAST(:tx AS uuid), CAST(:wallet AS uuid), CAST(:amount AS bigint), :currency, balance FROM moved
    UNION ALL SELECT CAST(:tx AS uuid), CAST(:system AS uuid), -CAST(:amount AS bigint), :currency, NULL
), original AS (
    UPDATE transactions SET reversed_amount = reversed_amount + CAST(:amount AS bigint)
    WHERE id = CAST(:original AS uuid)
), settled AS (
    UPDATE payouts SET status = 'REVERSED', reversal_id = CAST(:tx AS uuid), provider_status = 'reversed',
        updated_at = now()
    WHERE id = CAST(:payout AS uuid)
), {events.cte()}
UPDATE transactions SET status = 'COMPLETED', completed_at = now()
WHERE id = CAST(:tx AS uuid) AND status = 'PENDING'
RETURNING completed_at, (SELECT balance FROM moved) AS balance
""")


def _told(payout: Any, row: dict[str, Any], reversal: bool, now: dt.datetime, hold: Any) -> list[events.NewEvent]:
    """The events of a capture or a reversal: the transaction's, the hold's capture, and the payout's new status."""
    completed = {**row, "status": "COMPLETED", "completed_at": now}
    told = history.transaction_events(completed, payout.user_id)
    settled = {"updated_at": now, "provider_status": "reversed" if reversal else "success"}
    if reversal:
        settled |= {"status": "REVERSED", "reversal_id": row["id"]}
    else:
        settled |= {"status": "COMPLETED", "transaction_id": row["id"], "completed_at": now}
        captured = {**hold._asdict(), "status": "CAPTURED", "captured_amount": hold.amount, "updated_at": now}
        told.append(events.NewEvent(payout.user_id, "hold.captured", holds.render_hold(SimpleNamespace(**captured))))
    after = render_payout(SimpleNamespace(**{**payout._asdict(), **settled}))
    kind = "payout.reversed" if reversal else "payout.completed"
    return [*told, events.NewEvent(payout.user_id, kind, after)]


def _payout_step(payout_id: uuid.UUID, reversal: bool) -> lifecycle.Step2:
    """Step 2 of a payout's capture or reversal: under the wallet's row lock, then the payout's, refuse unless the
    payout is still PENDING (a capture) or COMPLETED (a reversal); then move the money, settle the payout and write
    the events, in one commit."""

    async def step(rt: Runtime, op: Operation, row: dict[str, Any], initiator_id: uuid.UUID) -> Moved:
        wallet = op.destination if reversal else op.source
        assert wallet is not None
        system = await system_wallet(rt, op.currency)
        async with rt.transaction() as conn:
            now = (await conn.execute(_LOCK_WALLET, {"wallet": wallet.wallet_id})).scalar_one()
            payout = (await conn.execute(_LOCK_PAYOUT, {"id": payout_id})).one()
            if payout.status != ("COMPLETED" if reversal else "PENDING"):
                raise _Changed()
            hold = (await conn.execute(select(H).where(H.c.id == payout.hold_id))).one()
            values = {
                "tx": row["id"],
                "wallet": wallet.wallet_id,
                "system": system,
                "amount": op.amount,
                "currency": op.currency,
                "hold": payout.hold_id,
                "payout": payout_id,
                "original": payout.transaction_id,
                **events.params(_told(payout, row, reversal, now, hold)),
            }
            moved = (await conn.execute(_REVERSE if reversal else _CAPTURE, values)).first()
            if moved is None:
                raise NoLongerPending()
        metrics.money(op.type, "COMPLETED")
        return Moved(moved.completed_at, None if reversal else moved.balance, moved.balance if reversal else None)

    return step


# Release: the hold VOIDED and the wallet's held total given back, the day's usage given back, the payout FAILED.
_RELEASE = text("""
WITH voided AS (
    UPDATE holds SET status = 'VOIDED', updated_at = now() WHERE id = CAST(:hold AS uuid) AND status = 'ACTIVE'
    RETURNING *
), released AS (
    UPDATE wallets w SET held = w.held - voided.amount FROM voided WHERE w.id = voided.from_wallet_id
), unused AS (
    UPDATE daily_usage SET amount = greatest(amount - CAST(:amount AS bigint), 0)
    WHERE user_id = CAST(:user AS uuid) AND currency = :currency AND kind = 'WITHDRAWAL'
        AND day = CAST(timezone('UTC', CAST(:created_at AS timestamptz)) AS date)
)
SELECT * FROM voided
""")


async def _fail(rt: Runtime, payout_id: uuid.UUID, code: str, reason: str, provider_status: str | None) -> bool:
    """Release a PENDING payout's hold and mark it FAILED, with its events; False when it was no longer PENDING."""
    async with rt.autocommit() as conn:
        wallet_id = (await conn.execute(select(P.c.wallet_id).where(P.c.id == payout_id))).scalar_one()
    async with rt.transaction() as conn:
        await conn.execute(_LOCK_WALLET, {"wallet": wallet_id})
        payout = (await conn.execute(_LOCK_PAYOUT, {"id": payout_id})).one()
        if payout.status != "PENDING":
            return False
        params = {
            "hold": payout.hold_id,
            "amount": payout.amount,
            "user": payout.user_id,
            "currency": payout.currency,
            "created_at": payout.created_at,
        }
        hold = (await conn.execute(_RELEASE, params)).one()
        failed = (
            await conn.execute(
                update(P)
                .where(P.c.id == payout_id)
                .values(
                    status="FAILED",
                    failure_code=code,
                    failure_reason=reason[:255],
                    provider_status=func.coalesce(provider_status, P.c.provider_status),
                    completed_at=func.now(),
                    updated_at=func.now(),
                )
                .returning(P)
            )
        ).one()
        told = [("hold.released", holds.render_hold(hold)), ("payout.failed", render_payout(failed))]
        await events.emit(conn, [events.NewEvent(payout.user_id, kind, data) for kind, data in told])
    metrics.money("WITHDRAWAL", code)
    return True


# ---- reading ---------------------------------------------------------------------------------------------------


async def get_payout(rt: Runtime, principal: Principal, payout_id: uuid.UUID) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        row = (await conn.execute(select(P).where(P.c.id == payout_id, P.c.user_id == principal.user_id))).first()
    if row is None:
        raise errors.NotFound("Payout not found.")
    return render_payout(row)


async def list_payouts(
    rt: Runtime,
    principal: Principal | None,
    *,
    limit: int,
    cursor: str | None = None,
    wallet_id: uuid.UUID | None = None,
    status: str | None = None,
    user_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Payouts newest first: the caller's (principal), or for an admin (None) everyone's or `user_id`'s with
    Paystack's status."""
    query = select(P)
    if principal is not None:
        query = query.where(P.c.user_id == principal.user_id)
    if user_id is not None:
        query = query.where(P.c.user_id == user_id)
    if wallet_id is not None:
        query = query.where(P.c.wallet_id == wallet_id)
    if status is not None:
        query = query.where(P.c.status == status)
    return await created_page(rt, query, Payout, limit, cursor, lambda row: render_payout(row, principal is None))
