"""Who a transfer would reach, asked before it is sent: a recipient named by username, phone, e-mail or wallet number,
answered as a payments app shows it on its review step (a masked name, a masked wallet number, the currency).

Throttled per caller (LOOKUPS in LOOKUP_WINDOW seconds, every lookup counted, found or not), so it is no way to test
many names, phones or numbers for accounts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from models import User, Wallet
from wallet import errors
from wallet.identity.identifiers import email_key
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

LOOKUPS = 30
LOOKUP_WINDOW = 600
MASK = "\u2022" * 3  # •••


def mask_name(username: str) -> str:
    """ "bobsmith" -> "bo•••h", "bob" -> "b•••": enough to tell a right recipient from a wrong one, never the name."""
    if len(username) <= 3:
        return f"{username[0]}{MASK}"
    return f"{username[:2]}{MASK}{username[-1]}"


def mask_number(number: str) -> str:
    """ "4821302061" -> "••••2061"."""
    return f"\u2022\u2022\u2022\u2022{number[-4:]}"


async def _throttle(rt: Runtime, principal: Principal) -> None:
    key = f"recipient-lookup:{principal.user_id}"
    if await rt.store.hit(key, LOOKUP_WINDOW) > LOOKUPS:
        _, ttl = await rt.store.count(key)
        raise errors.RateLimited(ttl, f"At most {LOOKUPS} recipient lookups in {LOOKUP_WINDOW // 60} minutes.")


async def look_up(rt: Runtime, principal: Principal, field: str, value: str, currency: str | None) -> dict[str, Any]:
    """The active recipient `field` (username, phone, email: an address as the API normalised it, or wallet_number)
    names: by a wallet number that wallet; otherwise the person's oldest active wallet in `currency` (any currency
    when None), as a transfer from a wallet in that currency picks it. Anyone else is 404, as an unknown name is."""
    await _throttle(rt, principal)
    query = (
        select(User.username, Wallet.number, Wallet.currency)
        .join(Wallet, Wallet.user_id == User.id)
        .where(User.status == "active", Wallet.status == "active")
        .order_by(Wallet.created_at, Wallet.id)
        .limit(1)
    )
    if field == "username":
        query = query.where(func.lower(User.username) == value.lower())
    elif field == "phone":
        query = query.where(User.phone == value)
    elif field == "email":
        query = query.where(User.email_key == email_key(value))
    else:
        query = query.where(Wallet.number == value)
    if currency is not None:
        query = query.where(Wallet.currency == currency)
    async with rt.transaction() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise errors.NotFound(f"No recipient with a {currency} wallet found." if currency else "Recipient not found.")
    return {
        "display_name": mask_name(row.username),
        "wallet_number_masked": mask_number(row.number),
        "currency": row.currency,
    }
