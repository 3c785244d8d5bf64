"""Payouts to bank accounts through Paystack Transfers: the banks, and the payout accounts users pay out to.

A payout account is added only once Paystack has resolved it (the holder's name, from the bank) and registered it as
a transfer recipient; the row keeps the recipient code a transfer names and the resolved name the user checks. Paystack
is called before anything is written and with no lock held; the insert is then one short transaction under the user's
row lock (the limit per user, and the same account added twice answers the one there is).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from sqlalchemy import func, insert, select, update

from models import PayoutAccount
from wallet import errors
from wallet.platform.locks import lock_user
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
