"""Transaction history: rendering a transaction for a viewer, and keyset-paged listings."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Integer, Select, and_, bindparam, cast, or_, select, union_all
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from models import Transaction, User, Wallet
from wallet.errors import NotFound
from wallet.money import format_minor
from wallet.notify import events
from wallet.platform.paging import bigint, decode_cursor, encode_cursor
from wallet.platform.prepared import Prepared
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

T = Transaction.__table__
_SW, _DW = aliased(Wallet), aliased(Wallet)
_SU, _DU = aliased(User), aliased(User)


def render_fx(row: Mapping[str, Any]) -> dict[str, Any]:
    """A cross-currency transfer's conversion (wallet/operations/fx.py): the payer paid amount/currency, the payee
    received destination_amount/destination_currency, at the quote's rate."""
    return {
        "quote_id": row["fx_quote_id"],
        "rate": f"{row['fx_rate']:.10f}",
        "source_amount": format_minor(row["amount"], row["currency"]),
        "source_currency": row["currency"],
        "destination_amount": format_minor(row["destination_amount"], row["destination_currency"]),
        "destination_currency": row["destination_currency"],
    }


def render_transaction(row: Mapping[str, Any], viewer: uuid.UUID) -> dict[str, Any]:
    """A transaction as the API shows it to `viewer`: direction and counterparty are from their side."""
    outgoing = row["source_user_id"] == viewer
    incoming = row["destination_user_id"] == viewer
    if outgoing and incoming:
        direction = "internal"
    elif outgoing or (not incoming and row["type"] == "WITHDRAWAL"):
        direction = "out"
    else:
        direction = "in"
    counterparty = None
    # A transfer's other side; a reversal's too when it gives a transfer back (from the recipient to the sender).
    two_users = row["source_user_id"] is not None and row["destination_user_id"] is not None
    # Its sender learns who received a transfer once the money moved, not before: a refused transfer to a phone number
    # or a username would otherwise tell, for nothing, who owns it.
    unsent = row["type"] == "TRANSFER" and direction == "out" and row["status"] != "COMPLETED"
    if (row["type"] == "TRANSFER" or (row["type"] == "REVERSAL" and two_users)) and not unsent:
        side = "destination" if direction in ("out", "internal") else "source"
        counterparty = {"username": row[f"{side}_username"], "wallet_number": row[f"{side}_number"]}
    return {
        "id": row["id"],
        "reference": row["reference"],
        "type": row["type"],
        "status": row["status"],
        "amount": format_minor(row["amount"], row["currency"]),
        "currency": row["currency"],
        "source_wallet_id": row["source_wallet_id"],
        "destination_wallet_id": row["destination_wallet_id"],
        "direction": direction,
        "counterparty": counterparty,
        "description": row["description"],
        "failure_code": row["failure_code"],
        "failure_reason": row["failure_reason"],
        "provider": row["provider"],
        "provider_reference": row["provider_reference"],
        "hold_id": row["hold_id"],
        "metadata": row.get("metadata") or {},
        "payment_request_id": row.get("payment_request_id"),
        "reverses": row["reverses"],
        "reversed_amount": format_minor(row["reversed_amount"], row["currency"]),
        # Rows built before execution (wallet/ledger/lifecycle.py) carry no FX columns: only a COMPLETED FX transfer has
        # them.
        "fx": render_fx(row) if row.get("fx_quote_id") is not None else None,
        # Which of the viewer's API keys initiated it; another party's keys are not theirs to see.
        "api_key_id": row["api_key_id"] if row["initiator_id"] == viewer else None,
        "created_at": row["created_at"],
        # Last: an event rendered before its transaction completes ends `"completed_at":null}`, and ledger_stamp()
        # (migrations/versions/0029_leaner_step_two.py) writes the time into that end of the text.
        "completed_at": row["completed_at"],
    }


def transaction_events(row: Mapping[str, Any], initiator_id: uuid.UUID) -> list[events.NewEvent]:
    """What a COMPLETED or FAILED transaction tells whom: its initiator learns the outcome; on completion the owner
    of the credited wallet learns the money arrived (every deposit, a transfer from someone else)."""
    status = row["status"].lower()
    found = [events.NewEvent(initiator_id, f"transaction.{status}", render_transaction(row, initiator_id))]
    recipient = row["destination_user_id"]
    if status == "completed" and recipient is not None:
        if row["type"] == "DEPOSIT":
            found.append(events.NewEvent(recipient, "deposit.completed", render_transaction(row, recipient)))
        elif row["type"] == "TRANSFER" and recipient != initiator_id:
            found.append(events.NewEvent(recipient, "transfer.received", render_transaction(row, recipient)))
    return found


def _detailed(inner: Any) -> Select:
    """Add the wallet numbers and usernames of both sides to transaction rows."""
    return (
        select(
            inner,
            _SW.number.label("source_number"),
            _DW.number.label("destination_number"),
            _SU.username.label("source_username"),
            _DU.username.label("destination_username"),
        )
        .select_from(inner)
        .outerjoin(_SW, _SW.id == inner.c.source_wallet_id)
        .outerjoin(_DW, _DW.id == inner.c.destination_wallet_id)
        .outerjoin(_SU, _SU.id == inner.c.source_user_id)
        .outerjoin(_DU, _DU.id == inner.c.destination_user_id)
    )


async def load_transaction(conn: Any, transaction_id: uuid.UUID) -> Mapping[str, Any] | None:
    inner = select(T).where(T.c.id == transaction_id).subquery()
    row = (await conn.execute(_detailed(inner))).first()
    return row._mapping if row else None


async def load_transactions(conn: Any, transaction_ids: list[uuid.UUID]) -> dict[uuid.UUID, Mapping[str, Any]]:
    """Several transactions by id (a batch's items), each as load_transaction() reads one."""
    inner = select(T).where(T.c.id.in_(transaction_ids)).subquery()
    return {row.id: row._mapping for row in (await conn.execute(_detailed(inner))).all()}


def _visible(row: Mapping[str, Any], user_id: uuid.UUID) -> bool:
    """A user sees what left their wallets, what reached them, and whatever they asked for (a refused deposit's
    source is the system account, yet its answer gave the caller the id)."""
    return (
        row["source_user_id"] == user_id
        or row["initiator_id"] == user_id
        or (row["destination_user_id"] == user_id and row["status"] == "COMPLETED")
    )


async def get_transaction(rt: Runtime, principal: Principal, transaction_id: uuid.UUID) -> dict[str, Any]:
    async with rt.transaction() as conn:
        row = await load_transaction(conn, transaction_id)
    if row is None or not _visible(row, principal.user_id):
        raise NotFound("Transaction not found.")
    return render_transaction(row, principal.user_id)


# The filters list_transactions() takes besides the page: each compares the insertion sequence or a column.
_FILTERS = {
    "cursor": lambda: T.c.seq < bindparam("before_seq"),
    "type": lambda: T.c.type == bindparam("type"),
    "status": lambda: T.c.status == bindparam("status"),
    "since": lambda: T.c.created_at >= bindparam("since"),
    "until": lambda: T.c.created_at < bindparam("until"),
    # Containment, which the GIN index on metadata answers (jsonb_path_ops).
    "metadata": lambda: T.c.metadata.op("@>")(cast(bindparam("metadata"), JSONB)),
}
_OWNER = Prepared(select(Wallet.user_id).where(Wallet.id == bindparam("wallet_id")))


@functools.cache
def _listing(by_wallet: bool, given: frozenset[str]) -> Prepared:
    """The listing statement for one shape of request (by wallet or by user, which filters are given), built once:
    building it, and SQLAlchemy's cache key of a new statement, cost several times what PostgreSQL spends on it."""
    filters = [_FILTERS[name]() for name in sorted(given)]
    user_id, limit = bindparam("user_id"), bindparam("limit", type_=Integer)
    if by_wallet:
        wallet_id = bindparam("wallet_id")
        out_side = T.c.source_wallet_id == wallet_id
        in_side = and_(T.c.destination_wallet_id == wallet_id, T.c.source_wallet_id.is_distinct_from(wallet_id))
    else:
        out_side = T.c.source_user_id == user_id
        in_side = and_(T.c.destination_user_id == user_id, T.c.source_user_id.is_distinct_from(user_id))
    outgoing = select(T).where(out_side, *filters).order_by(T.c.seq.desc()).limit(limit)
    # Incoming and not yet completed (or refused) only when the user asked for it: their own deposits.
    shown = or_(T.c.status == "COMPLETED", T.c.initiator_id == user_id)
    incoming = select(T).where(in_side, shown, *filters).order_by(T.c.seq.desc()).limit(limit)
    page = union_all(outgoing, incoming).subquery()
    return Prepared(_detailed(page).order_by(page.c.seq.desc()).limit(limit))


async def list_transactions(
    rt: Runtime,
    user_id: uuid.UUID,
    *,
    limit: int = 50,
    cursor: str | None = None,
    wallet_id: uuid.UUID | None = None,
    type: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Newest first, keyset-paged on the insertion sequence so concurrent inserts never shift a page; `metadata`
    keeps the transactions whose metadata has all of its keys with those values.

    Two index range scans (outgoing, then incoming-but-not-outgoing) are merged, so the cost follows the page,
    not the size of the user's history.
    """
    params: dict[str, Any] = {"user_id": user_id, "wallet_id": wallet_id, "limit": limit + 1}
    given = {
        "type": type,
        "status": status,
        "since": since,
        "until": until,
        "metadata": orjson.dumps(metadata).decode() if metadata else None,
    }
    if cursor is not None:
        given["cursor"] = params["before_seq"] = decode_cursor(cursor, bigint)[0]
    params.update((name, value) for name, value in given.items() if name != "cursor" and value is not None)
    query = _listing(wallet_id is not None, frozenset(name for name, value in given.items() if value is not None))

    async with rt.autocommit() as conn:
        if wallet_id is not None:
            owner = await _OWNER.scalar(conn, {"wallet_id": wallet_id})
            if owner != user_id:
                raise NotFound("Wallet not found.")
        rows = await query.all(conn, params)

    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [render_transaction(r, user_id) for r in rows],
        "next_cursor": encode_cursor(rows[-1]["seq"]) if more else None,
    }
