"""Wallets: opening them, reading them, and rendering them as the API's plain values."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Wallet
from wallet.errors import NotFound
from wallet.money import format_minor
from wallet.platform.prepared import Prepared
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

WALLET_COLUMNS = (
    Wallet.id,
    Wallet.number,
    Wallet.name,
    Wallet.currency,
    Wallet.balance,
    Wallet.held,
    Wallet.status,
    Wallet.created_at,
    Wallet.updated_at,
)


def render_wallet(row: Any, balance: int | None = None) -> dict[str, Any]:
    balance = row.balance if balance is None else balance
    return {
        "id": row.id,
        "number": row.number,
        "name": row.name,
        "currency": row.currency,
        "balance": format_minor(balance, row.currency),
        # What active holds (wallet/operations/holds.py) reserve is still in the balance but no longer available to
        # spend.
        "available_balance": format_minor(balance - row.held, row.currency),
        "status": row.status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def open_wallet(
    conn: AsyncConnection, user_id: uuid.UUID | None, currency: str, name: str | None, fx: bool = False
) -> Any:
    """Insert a wallet with a fresh random 10-digit number (retrying the rare collision); `fx` makes the system
    account an FX account (wallet/operations/fx.py)."""
    while True:
        number = f"{secrets.randbelow(9 * 10**9) + 10**9}"
        row = (
            await conn.execute(
                insert(Wallet)
                .values(
                    id=uuid.uuid4(),
                    number=number,
                    user_id=user_id,
                    currency=currency,
                    name=name,
                    is_system=user_id is None,
                    is_fx=fx,
                )
                .on_conflict_do_nothing(index_elements=[Wallet.number])
                .returning(*WALLET_COLUMNS)
            )
        ).first()
        if row is not None:
            return row


async def create_wallet(rt: Runtime, principal: Principal, currency: str, name: str | None) -> dict[str, Any]:
    async with rt.transaction() as conn:
        return render_wallet(await open_wallet(conn, principal.user_id, currency, name))


async def list_wallets(rt: Runtime, principal: Principal) -> dict[str, Any]:
    return await list_user_wallets(rt, principal.user_id)


async def list_user_wallets(rt: Runtime, user_id: uuid.UUID) -> dict[str, Any]:
    """Every wallet of a user, oldest first, and the total balance per currency."""
    async with rt.transaction() as conn:
        rows = (
            await conn.execute(
                select(*WALLET_COLUMNS).where(Wallet.user_id == user_id).order_by(Wallet.created_at, Wallet.id)
            )
        ).all()
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.currency] = totals.get(row.currency, 0) + row.balance
    return {
        "items": [render_wallet(r) for r in rows],
        "totals": [{"currency": c, "balance": format_minor(v, c)} for c, v in sorted(totals.items())],
    }


# Built once: a statement built per call costs more of the server's CPU than PostgreSQL spends running it.
_OWN_WALLET = Prepared(
    select(*WALLET_COLUMNS).where(Wallet.id == bindparam("wallet_id"), Wallet.user_id == bindparam("user_id"))
)


async def get_wallet(rt: Runtime, principal: Principal, wallet_id: uuid.UUID) -> dict[str, Any]:
    """The caller's wallet; another user's wallet is reported as not found, never as forbidden."""
    async with rt.autocommit() as conn:
        row = await _OWN_WALLET.first(conn, {"wallet_id": wallet_id, "user_id": principal.user_id})
    if row is None:
        raise NotFound("Wallet not found.")
    return render_wallet(row)


async def get_balance(rt: Runtime, principal: Principal, wallet_id: uuid.UUID) -> dict[str, Any]:
    wallet = await get_wallet(rt, principal, wallet_id)
    return {
        "wallet_id": wallet["id"],
        "currency": wallet["currency"],
        "balance": wallet["balance"],
        "available_balance": wallet["available_balance"],
    }
