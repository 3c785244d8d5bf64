"""Wallets: opening them, reading them, and rendering them as the API's plain values."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Wallet
from wallet.errors import NotFound, ValidationError
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
        "at": None,
    }


# ---- balances as of a moment (the running balance each entry carries) -----------------------------------------
# An entry's balance_after is the wallet's balance right after it, written by the statement that writes the entry, in
# the order the wallet's row lock lets entries in (their ids). Its created_at is the start of the database transaction
# that wrote it, which may have waited for that lock: two operations racing for one wallet can be stamped in the other
# order. So the balance at a moment is the last-written (highest id) of the entries stamped at or before it within
# ORDERING_WINDOW of the latest such stamp (a wait for the lock is far shorter): two index probes on
# ix_entries_wallet_id_created_at however long the history, and 0 before the first entry.
ORDERING_WINDOW = dt.timedelta(minutes=1)
# (OFFSET 0 keeps the window a subquery of its own: else the planner may walk the primary key backwards for the
# highest id, through every later entry of every wallet.)
_AT = """COALESCE((SELECT x.balance_after FROM (
                       SELECT e.id, e.balance_after FROM entries e WHERE e.wallet_id = w.id AND e.created_at <= {moment}
                       AND e.created_at >= (SELECT max(l.created_at) FROM entries l WHERE l.wallet_id = w.id
                                            AND l.created_at <= {moment}) - CAST(:window AS interval)
                       OFFSET 0) x
                   ORDER BY x.id DESC LIMIT 1), 0)"""
_BALANCE_AT = Prepared(
    text(f"""
SELECT w.id, w.currency, {_AT.format(moment="CAST(:at AS timestamptz)")} AS balance
FROM wallets w WHERE w.id = CAST(:wallet_id AS uuid) AND w.user_id = CAST(:user_id AS uuid)
""")
)
_BALANCE_SERIES = Prepared(
    text(f"""
SELECT w.id, w.currency, p.at, {_AT.format(moment="p.at")} AS balance
FROM wallets w, generate_series(CAST(:since AS timestamptz), CAST(:until AS timestamptz), interval '1 day') AS p(at)
WHERE w.id = CAST(:wallet_id AS uuid) AND w.user_id = CAST(:user_id AS uuid)
ORDER BY p.at
""")
)
MAX_POINTS = 366  # a year of days: a series is a chart, not an export (statements are)


def _past(at: dt.datetime, name: str) -> None:
    if at > dt.datetime.now(dt.UTC):
        raise ValidationError({name: ["Must not be in the future."]})


async def balance_at(rt: Runtime, principal: Principal, wallet_id: uuid.UUID, at: dt.datetime) -> dict[str, Any]:
    """The caller's wallet's balance as of `at` (not in the future). What was available then is not kept (holds come
    and go), so available_balance is null."""
    _past(at, "at")
    async with rt.autocommit() as conn:
        values = {"wallet_id": wallet_id, "user_id": principal.user_id, "at": at, "window": ORDERING_WINDOW}
        row = await _BALANCE_AT.first(conn, values)
    if row is None:
        raise NotFound("Wallet not found.")
    return {
        "wallet_id": row.id,
        "currency": row.currency,
        "balance": format_minor(row.balance, row.currency),
        "available_balance": None,
        "at": at,
    }


async def balance_series(
    rt: Runtime, principal: Principal, wallet_id: uuid.UUID, since: dt.datetime, until: dt.datetime
) -> dict[str, Any]:
    """The caller's wallet's balance at `since` and each day after it up to `until` (at most MAX_POINTS points)."""
    _past(until, "to")
    if since > until:
        raise ValidationError({"from": ["Must not be after `to`."]})
    if (until - since) // dt.timedelta(days=1) + 1 > MAX_POINTS:
        raise ValidationError({"to": [f"At most {MAX_POINTS} points: narrow the period."]})
    async with rt.autocommit() as conn:
        values = {
            "wallet_id": wallet_id,
            "user_id": principal.user_id,
            "since": since,
            "until": until,
            "window": ORDERING_WINDOW,
        }
        rows = await _BALANCE_SERIES.all(conn, values)
    if not rows:  # no such wallet of the caller's (a valid period always has its first point)
        raise NotFound("Wallet not found.")
    return {
        "wallet_id": rows[0].id,
        "currency": rows[0].currency,
        "items": [{"at": r.at, "balance": format_minor(r.balance, r.currency)} for r in rows],
    }
