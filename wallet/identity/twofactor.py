"""Two-factor sign-in with TOTP (RFC 6238): enrol (secret, otpauth URI, QR code), confirm with a first code (which
gives the recovery codes), turn off; a code checked (throttled, each one once) for a sign-in's second step and for
a step-up, which re-authenticates a login so that it may do what needs a recent authentication.

The secret is stored encrypted (AES-GCM) under a key derived from JWT_SECRET and bound to its user, so a copy of
the database alone does not give it away; the price is that a new JWT_SECRET makes the stored secrets unreadable
(their owners then sign in with a recovery code, turn 2FA off and enrol again).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert

from models import TwoFactor, User
from wallet import errors
from wallet.identity.auth import (
    Device,
    check_password_of,
    clear_attempts,
    methods,
    read_mfa_token,
    reauthenticated,
    reserve_attempt,
    start_session,
)
from wallet.platform import metrics
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

log = logging.getLogger("wallet.identity")

# What an authenticator app shows above the account's name.
ISSUER = "Wallet"
RECOVERY_CODES = 10
# 10 characters of 31 that cannot be mistaken for each other: about 50 bits each.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
# A code is taken for the time step of now and one either side: clocks differ, and a code is typed a little late.
_DRIFT = 1
_CONFIRMED = TwoFactor.confirmed_at.is_not(None)


def _key(rt: Runtime) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"wallet two-factor secret")
    return hkdf.derive(rt.settings.jwt_secret.encode())


def _seal(rt: Runtime, user_id: uuid.UUID, secret: str) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(_key(rt)).encrypt(nonce, secret.encode(), user_id.bytes)).decode()


def _unseal(rt: Runtime, user_id: uuid.UUID, sealed: str) -> str | None:
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(_key(rt)).decrypt(raw[:12], raw[12:], user_id.bytes).decode()
    except InvalidTag:
        log.error("a two-factor secret cannot be decrypted: was JWT_SECRET changed?", extra={"user_id": str(user_id)})
        return None


def _digest(recovery_code: str) -> str:
    return hashlib.sha256(recovery_code.replace("-", "").replace(" ", "").lower().encode()).hexdigest()


def _recovery_codes() -> list[str]:
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10)) for _ in range(RECOVERY_CODES)]
    return [f"{code[:5]}-{code[5:]}" for code in codes]


def _matching_step(secret: str, code: str) -> int | None:
    """The time step this code belongs to (now, or one either side), or None."""
    totp, now = pyotp.TOTP(secret), int(time.time()) // 30
    for step in range(now + _DRIFT, now - _DRIFT - 1, -1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


async def enrol(rt: Runtime, principal: Principal) -> dict[str, Any]:
    """A new secret, pending until a first code confirms it (a pending one is replaced)."""
    secret = pyotp.random_base32()
    async with rt.transaction() as conn:
        pending = (
            await conn.execute(
                insert(TwoFactor)
                .values(user_id=principal.user_id, secret=_seal(rt, principal.user_id, secret))
                .on_conflict_do_update(
                    index_elements=[TwoFactor.user_id],
                    set_={"secret": insert(TwoFactor).excluded.secret, "last_step": None, "recovery_hashes": []},
                    where=TwoFactor.confirmed_at.is_(None),
                )
                .returning(TwoFactor.user_id)
            )
        ).first()
        if pending is None:
            raise errors.AlreadyExists("Two-factor authentication is already on; turn it off first to enrol again.")
        username = (await conn.execute(select(User.username).where(User.id == principal.user_id))).scalar_one()
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)
    return {"secret": secret, "otpauth_uri": uri, "qr_code": segno.make_qr(uri).svg_data_uri(scale=5)}


async def _take_code(rt: Runtime, user_id: uuid.UUID, code: str, confirmed: bool, **then: Any) -> bool:
    """Whether `code` is right for the user's factor (confirmed, or pending) and later than any taken before; if so
    it is taken (with `then` written in the same statement), so it cannot be taken again."""
    state = _CONFIRMED if confirmed else TwoFactor.confirmed_at.is_(None)
    async with rt.transaction() as conn:
        row = (await conn.execute(select(TwoFactor.secret).where(TwoFactor.user_id == user_id, state))).first()
        secret = _unseal(rt, user_id, row.secret) if row else None
        step = _matching_step(secret, code) if secret else None
        if step is None:
            return False
        taken = await conn.execute(
            update(TwoFactor)
            .where(
                TwoFactor.user_id == user_id,
                state,
                TwoFactor.last_step.is_(None) | (TwoFactor.last_step < step),
            )
            .values(last_step=step, **then)
        )
        return taken.rowcount == 1


async def _take_recovery_code(rt: Runtime, user_id: uuid.UUID, recovery_code: str) -> bool:
    digest = _digest(recovery_code)
    async with rt.transaction() as conn:
        # One statement: of two uses of one code at once, one finds it and the other finds it gone.
        taken = await conn.execute(
            update(TwoFactor)
            .where(TwoFactor.user_id == user_id, _CONFIRMED, TwoFactor.recovery_hashes.any_() == digest)
            .values(recovery_hashes=func.array_remove(TwoFactor.recovery_hashes, digest))
        )
        return taken.rowcount == 1


@contextlib.asynccontextmanager
async def _throttled(rt: Runtime, user_id: uuid.UUID) -> AsyncIterator[None]:
    """Count a try at a user's codes before it is checked (so concurrent guesses cannot run past
    LOGIN_MAX_FAILURES in LOGIN_WINDOW), and forget the tries once one succeeds. Counted per account from any
    address: only someone who already had the first factor can try, and a code is short."""
    counter = f"login-fail:code:{user_id}"
    await reserve_attempt(rt, counter, rt.settings.login_max_failures)
    yield
    await clear_attempts(rt, (counter,))


async def check(rt: Runtime, user_id: uuid.UUID, code: str | None, recovery_code: str | None) -> str:
    """Take a code of the user's second factor, or one of their recovery codes (throttled): the method used, "otp"
    or "recovery"."""
    async with _throttled(rt, user_id):
        if code is not None:
            method, taken = "otp", await _take_code(rt, user_id, code, confirmed=True)
        else:
            assert recovery_code is not None
            method, taken = "recovery", await _take_recovery_code(rt, user_id, recovery_code)
        if not taken:
            metrics.login_failed()
            raise errors.InvalidCredentials("The code is wrong, expired or was already used.")
    return method


async def confirm(rt: Runtime, principal: Principal, code: str) -> dict[str, list[str]]:
    """Turn a pending enrolment on with a first code; the recovery codes are in this answer only."""
    async with rt.transaction() as conn:
        state = (
            await conn.execute(select(TwoFactor.confirmed_at).where(TwoFactor.user_id == principal.user_id))
        ).first()
    if state is None:
        raise errors.NotFound("No two-factor enrolment is pending: start one with POST /api/v1/users/me/2fa.")
    if state.confirmed_at is not None:
        raise errors.AlreadyExists("Two-factor authentication is already on.")
    codes = _recovery_codes()
    on = {"confirmed_at": func.now(), "recovery_hashes": [_digest(c) for c in codes]}
    async with _throttled(rt, principal.user_id):
        if not await _take_code(rt, principal.user_id, code, confirmed=False, **on):
            raise errors.InvalidCredentials("The code is wrong or expired: check the time of the device.")
    return {"recovery_codes": codes}


async def _factors(rt: Runtime, user_id: uuid.UUID) -> Any:
    """The user's password hash and whether two-factor sign-in is on."""
    on = exists().where(TwoFactor.user_id == User.id, _CONFIRMED)
    async with rt.transaction() as conn:
        return (await conn.execute(select(User.password_hash, on.label("two_factor")).where(User.id == user_id))).one()


async def disable(
    rt: Runtime, principal: Principal, password: str | None, code: str | None, recovery_code: str | None, ip: str
) -> None:
    """Turn two-factor sign-in off: the password (or, for an account without one, a recent authentication) and a
    code or a recovery code. The request itself is the step-up this needs."""
    factors = await _factors(rt, principal.user_id)
    if not factors.two_factor:
        raise errors.NotFound("Two-factor authentication is not on.")
    if factors.password_hash is None:
        principal.require_recent_authentication(rt.settings.step_up_window)
    elif password is None:
        raise errors.ValidationError({"password": ["Required to turn two-factor authentication off."]})
    else:
        await check_password_of(rt, principal.user_id, password, factors.password_hash, ip)
    await check(rt, principal.user_id, code, recovery_code)
    async with rt.transaction() as conn:
        await conn.execute(delete(TwoFactor).where(TwoFactor.user_id == principal.user_id))


async def login_mfa(rt: Runtime, mfa_token: str, code: str | None, recovery_code: str | None, device: Device) -> dict:
    """The second step of a sign-in that answered MFA_REQUIRED: its token and a code give the token pair."""
    user_id, session_id, first = read_mfa_token(rt, mfa_token)
    method = await check(rt, user_id, code, recovery_code)
    return await start_session(rt, user_id, methods(first, [method]), device, session_id)


async def step_up(rt: Runtime, principal: Principal, password: str | None, code: str | None, ip: str) -> dict:
    """Authenticate a login again: with a code when two-factor sign-in is on, else with the password. A fresh
    access token says when (auth_time) and how (amr)."""
    factors = await _factors(rt, principal.user_id)
    if factors.two_factor:
        if code is None:
            raise errors.ValidationError({"code": ["Two-factor authentication is on: step up with a code."]})
        return await reauthenticated(rt, principal, await check(rt, principal.user_id, code, None))
    if code is not None:
        raise errors.ValidationError({"code": ["Two-factor authentication is off: step up with the password."]})
    if factors.password_hash is None:
        raise errors.ValidationError(
            {"password": ["This account has no password: sign in with Google again, or set a password."]}
        )
    if password is None:
        raise errors.ValidationError({"password": ["Required."]})
    await check_password_of(rt, principal.user_id, password, factors.password_hash, ip)
    return await reauthenticated(rt, principal, "pwd")
