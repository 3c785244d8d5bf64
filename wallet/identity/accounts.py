"""Accounts: registration (with a default wallet), the caller's profile, its changes and deactivation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from models import TwoFactor, User, UserIdentity
from wallet.errors import AlreadyExists, NotFound, ValidationError
from wallet.identity import keys
from wallet.identity.auth import Revoked, announce_revoked, check_password_of, end_user_logins, hash_password
from wallet.identity.identifiers import email_key
from wallet.ledger.wallets import open_wallet, render_wallet
from wallet.notify import events
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

_PROFILE = (User.id, User.username, User.email, User.phone, User.role, User.status, User.created_at)
# How the user can sign in, read with the profile (correlated, so UPDATE ... RETURNING can carry it too).
_HAS_PASSWORD = User.password_hash.is_not(None).label("has_password")
_HAS_GOOGLE = (
    exists()
    .where(UserIdentity.user_id == User.id, UserIdentity.provider == "google")
    .correlate(User)
    .label("has_google")
)
_TWO_FACTOR = (
    exists()
    .where(TwoFactor.user_id == User.id, TwoFactor.confirmed_at.is_not(None))
    .correlate(User)
    .label("two_factor")
)
USER_COLUMNS = (*_PROFILE, _HAS_PASSWORD, _HAS_GOOGLE, _TWO_FACTOR)

_UNIQUE_FIELDS = {"uq_users_username_lower": "username", "uq_users_email_key": "email", "uq_users_phone": "phone"}


def render_user(row: Any) -> dict[str, Any]:
    providers = [name for name, has in (("password", row.has_password), ("google", row.has_google)) if has]
    return {**{c.key: getattr(row, c.key) for c in _PROFILE}, "auth_providers": providers, "two_factor": row.two_factor}


def check_password_policy(password: str, username: str) -> None:
    problems = []
    if not 8 <= len(password.encode()) <= 72:
        problems.append("Must be 8 to 72 bytes long.")
    if password.isdigit():
        problems.append("Must not be all digits.")
    if password.lower() == username.lower():
        problems.append("Must not equal the username.")
    if problems:
        raise ValidationError({"password": problems})


def _email(email: str | None) -> dict[str, str | None]:
    """The e-mail columns of a user: the address as given (normalised) and the key it is unique by."""
    return {"email": email, "email_key": email_key(email) if email is not None else None}


def _already_exists(error: IntegrityError) -> AlreadyExists:
    constraint = getattr(error.orig, "__cause__", None)
    field = _UNIQUE_FIELDS.get(getattr(constraint, "constraint_name", ""), "username")
    return AlreadyExists(f"This {field} is already taken.", details={field: ["Already taken."]})


async def register(
    rt: Runtime, *, username: str, password: str, email: str | None, phone: str | None, currency: str | None
) -> dict[str, Any]:
    check_password_policy(password, username)
    password_hash = await hash_password(rt, password)
    try:
        async with rt.transaction() as conn:
            user = (
                await conn.execute(
                    User.__table__.insert()
                    .values(
                        id=uuid.uuid4(), username=username, phone=phone, password_hash=password_hash, **_email(email)
                    )
                    .returning(*USER_COLUMNS)
                )
            ).first()
            wallet = await open_wallet(conn, user.id, currency or rt.settings.default_currency, None)
    except IntegrityError as error:
        raise _already_exists(error) from None
    return {"user": render_user(user), "wallet": render_wallet(wallet)}


async def create_admin(rt: Runtime, username: str, password: str) -> dict[str, Any]:
    """Make USERNAME an admin: promote an existing user (and set the password) or register a new one."""
    check_password_policy(password, username)
    password_hash = await hash_password(rt, password)
    async with rt.transaction() as conn:
        row = (
            await conn.execute(
                update(User)
                .where(func.lower(User.username) == username.lower())
                .values(role="admin", status="active", password_hash=password_hash)
                .returning(*USER_COLUMNS)
            )
        ).first()
    if row is not None:
        return render_user(row)
    created = await register(rt, username=username, password=password, email=None, phone=None, currency=None)
    async with rt.transaction() as conn:
        row = (
            await conn.execute(
                update(User).where(User.id == created["user"]["id"]).values(role="admin").returning(*USER_COLUMNS)
            )
        ).first()
    return render_user(row)


async def get_user(rt: Runtime, user_id: uuid.UUID) -> dict[str, Any]:
    async with rt.transaction() as conn:
        row = (await conn.execute(select(*USER_COLUMNS).where(User.id == user_id))).first()
    if row is None:
        raise NotFound("User not found.")
    return render_user(row)


async def get_me(rt: Runtime, principal: Principal) -> dict[str, Any]:
    return await get_user(rt, principal.user_id)


async def update_me(rt: Runtime, principal: Principal, changes: dict[str, Any], client_ip: str) -> dict[str, Any]:
    """Change e-mail, phone and/or password. A new e-mail or password needs a recent authentication (step-up); a
    password change needs the current one too (unless the account has none yet, as one made by Google sign-in),
    ends the other logins and revokes the API keys (unless `revoke_api_keys` is false)."""
    if "email" in changes or "password" in changes:
        principal.require_recent_authentication(rt.settings.step_up_window)
    values = {"phone": changes["phone"]} if "phone" in changes else {}
    if "email" in changes:
        values.update(_email(changes["email"]))
    new_password = changes.get("password")
    if new_password is not None:
        async with rt.transaction() as conn:
            current = (
                await conn.execute(select(User.username, User.password_hash).where(User.id == principal.user_id))
            ).one()
        if current.password_hash is not None:
            if "current_password" not in changes:
                raise ValidationError({"current_password": ["Required to change the password."]})
            await check_password_of(
                rt, principal.user_id, changes["current_password"], current.password_hash, client_ip
            )
        check_password_policy(new_password, current.username)
        values["password_hash"] = await hash_password(rt, new_password)
    values["updated_at"] = dt.datetime.now(dt.UTC)
    try:
        async with rt.transaction() as conn:
            row = (
                await conn.execute(
                    update(User).where(User.id == principal.user_id).values(**values).returning(*USER_COLUMNS)
                )
            ).one()
            revoked = await end_user_logins(conn, principal.user_id, keep=principal.session_id) if new_password else []
            if new_password and changes.get("revoke_api_keys", True):
                await keys.revoke_all(conn, principal.user_id)
    except IntegrityError as error:
        raise _already_exists(error) from None
    await announce_revoked(rt, revoked)
    return render_user(row)


async def write_status(conn: AsyncConnection, user_id: uuid.UUID, status: str) -> tuple[Any, Revoked]:
    """Set a user's status inside the caller's transaction: the user's row (None when there is no such user), and
    the logins a deactivation ends in the same commit, for the caller to announce_revoked() after it."""
    row = (
        await conn.execute(
            update(User)
            .where(User.id == user_id)
            .values(status=status, updated_at=dt.datetime.now(dt.UTC))
            .returning(*USER_COLUMNS)
        )
    ).first()
    return row, await end_user_logins(conn, user_id) if row is not None and status == "inactive" else []


async def deactivate_me(rt: Runtime, principal: Principal) -> None:
    """The owner closes their account: every login ends, and it is an event like an admin's deactivation."""
    async with rt.transaction() as conn:
        current = (
            await conn.execute(select(User.status).where(User.id == principal.user_id).with_for_update())
        ).scalar_one()
        _, revoked = await write_status(conn, principal.user_id, "inactive")
        change = {"user_id": principal.user_id, "status": "inactive", "previous_status": current}
        await events.emit(conn, [events.NewEvent(principal.user_id, "account.deactivated", change)])
    await announce_revoked(rt, revoked)
