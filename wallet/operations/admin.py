"""Admin services: find users, change their status, credit wallets, read any history; each change is logged
(reversals, wallet/operations/reversals.py, log theirs with log_money_action)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from models import AdminAction, User
from models.admin import ACTIONS as ACTIONS
from wallet import errors
from wallet.identity import accounts
from wallet.identity.auth import announce_revoked
from wallet.ledger import history, lifecycle, wallets
from wallet.money import format_minor
from wallet.notify import events
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

# action -> (the statuses it may start from, the status it sets). Repeating an action is allowed (and logged);
# a deactivated account is brought back only by `activate`, and a frozen one only by `unfreeze`.
TRANSITIONS = {
    "freeze": ({"active", "frozen"}, "frozen"),
    "unfreeze": ({"frozen", "active"}, "active"),
    "deactivate": ({"active", "frozen", "inactive"}, "inactive"),
    "activate": ({"inactive", "active"}, "active"),
}
# The event the user is sent when an action changes their status (a repeat that changes nothing sends none).
STATUS_EVENTS = {
    "freeze": "account.frozen",
    "unfreeze": "account.unfrozen",
    "deactivate": "account.deactivated",
    "activate": "account.activated",
}

_ACTION_COLUMNS = (
    AdminAction.id,
    AdminAction.admin_id,
    AdminAction.action,
    AdminAction.target_user_id,
    AdminAction.target_wallet_id,
    AdminAction.transaction_id,
    AdminAction.reason,
    AdminAction.details,
    AdminAction.created_at,
)


# ---- users -------------------------------------------------------------------------------------------------------


def _contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with LIKE's own wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_users(rt: Runtime, *, q: str | None = None, limit: int = 50, cursor: str | None = None) -> dict:
    """Users newest first; `q` matches a part of the username, e-mail or phone, ignoring case."""
    query = select(*accounts.USER_COLUMNS)
    if q:
        pattern = _contains(q)
        query = query.where(
            or_(*(column.ilike(pattern, escape="\\") for column in (User.username, User.email, User.phone)))
        )
    return await created_page(rt, query, User, limit, cursor, accounts.render_user)


async def user_wallets(rt: Runtime, user_id: uuid.UUID) -> dict[str, Any]:
    """A user's wallets and totals, so an admin can find the wallet to credit."""
    await accounts.get_user(rt, user_id)  # an unknown user is a 404, not an empty list
    return await wallets.list_user_wallets(rt, user_id)


async def user_transactions(rt: Runtime, user_id: uuid.UUID, **filters: Any) -> dict[str, Any]:
    """A user's history from their side, with the same filters and paging as their own listing."""
    await accounts.get_user(rt, user_id)  # an unknown user is a 404, not an empty list
    return await history.list_transactions(rt, user_id, **filters)


async def change_status(
    rt: Runtime, principal: Principal, user_id: uuid.UUID, action: str, reason: str | None
) -> dict[str, Any]:
    """Freeze, unfreeze, activate or deactivate a user; the change and its log entry commit together."""
    if user_id == principal.user_id:
        # Not even unfreeze/activate: a frozen admin must not lift another admin's decision about them.
        raise errors.ValidationError(
            {"user_id": ["An admin cannot change their own status."]}, "An admin cannot change their own status."
        )
    allowed_from, status = TRANSITIONS[action]
    async with rt.transaction() as conn:
        current = (await conn.execute(select(User.status).where(User.id == user_id).with_for_update())).scalar()
        if current is None:
            raise errors.NotFound("User not found.")
        if current not in allowed_from:
            remedy = "activate" if current == "inactive" else "unfreeze"
            raise errors.InvalidRequest(f"The account is {current}; use {remedy} instead.")
        if current == status:  # a repeat (freezing a frozen user) changes nothing: no log entry, no event
            return accounts.render_user(
                (await conn.execute(select(*accounts.USER_COLUMNS).where(User.id == user_id))).one()
            )
        row, revoked = await accounts.write_status(conn, user_id, status)
        await conn.execute(
            insert(AdminAction).values(
                admin_id=principal.user_id,
                action=action,
                target_user_id=user_id,
                reason=reason,
                details={"from": current, "to": status},
            )
        )
        change = {"user_id": user_id, "status": status, "previous_status": current}
        await events.emit(conn, [events.NewEvent(user_id, STATUS_EVENTS[action], change)])
    await announce_revoked(rt, revoked)
    return accounts.render_user(row)


# ---- money -------------------------------------------------------------------------------------------------------


async def log_money_action(
    conn: AsyncConnection, admin_id: uuid.UUID, action: str, tx: Mapping[str, Any], reason: str | None
) -> None:
    """Log an admin's credit or reversal in the caller's transaction, once per transaction (a replay logs nothing).
    Its target is the user wallet the money leaves, else the one it reaches."""
    side = "source" if tx["source_wallet_id"] is not None else "destination"
    details = {
        "amount": format_minor(tx["amount"], tx["currency"]),
        "currency": tx["currency"],
        "status": tx["status"],
        "failure_code": tx["failure_code"],
    }
    if tx["reverses"] is not None:
        details["reverses"] = str(tx["reverses"])
    await conn.execute(
        insert(AdminAction)
        .values(
            admin_id=admin_id,
            action=action,
            target_user_id=tx[f"{side}_user_id"],
            target_wallet_id=tx[f"{side}_wallet_id"],
            transaction_id=tx["id"],
            reason=reason,
            details=details,
        )
        .on_conflict_do_nothing(index_elements=[AdminAction.transaction_id])
    )


async def log_outcome(
    rt: Runtime, principal: Principal, action: str, transaction_id: uuid.UUID, reason: str | None
) -> None:
    """Log a credit or reversal once per transaction, in a commit of its own after the ledger's (for what the ledger
    decided without the log: a credit, a refused reversal). A crash in between leaves the entry missing; the
    client's retry with the same Idempotency-Key writes it then."""
    async with rt.transaction() as conn:
        tx = await history.load_transaction(conn, transaction_id)
        if tx["status"] != "PENDING":  # not an attempt the database cut off: its retry logs the outcome
            await log_money_action(conn, principal.user_id, action, tx, reason)


async def credit(
    rt: Runtime,
    principal: Principal,
    wallet_id: uuid.UUID,
    amount: Decimal,
    description: str | None,
    reason: str | None,
    key: str | None,
) -> lifecycle.Outcome:
    """Credit any user wallet as a DEPOSIT initiated by the admin; a refused credit is logged too."""
    try:
        outcome = await lifecycle.admin_deposit(rt, principal, wallet_id, amount, description, reason, key)
    except errors.WalletError as error:
        if error.transaction_id is not None:  # recorded, then FAILED (e.g. the account is frozen)
            await log_outcome(rt, principal, "credit", uuid.UUID(error.transaction_id), reason)
        raise
    await log_outcome(rt, principal, "credit", outcome.transaction["id"], reason)
    return outcome


# ---- the log -----------------------------------------------------------------------------------------------------


_ADMIN, _TARGET = aliased(User), aliased(User)
_NAMES = (_ADMIN.username.label("admin_username"), _TARGET.username.label("target_username"))


def _render_action(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in (*_ACTION_COLUMNS, *_NAMES)}


async def list_actions(
    rt: Runtime,
    *,
    target_user_id: uuid.UUID | None = None,
    action: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The admin action log, newest first, with the names of the admin and of the user it was about."""
    query = (
        select(*_ACTION_COLUMNS, *_NAMES)
        .outerjoin(_ADMIN, _ADMIN.id == AdminAction.admin_id)
        .outerjoin(_TARGET, _TARGET.id == AdminAction.target_user_id)
    )
    if target_user_id is not None:
        query = query.where(AdminAction.target_user_id == target_user_id)
    if action is not None:
        query = query.where(AdminAction.action == action)
    return await created_page(rt, query, AdminAction, limit, cursor, _render_action)
