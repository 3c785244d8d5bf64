"""Authentication: password hashing, JWT access/refresh tokens, login sessions, revocation and throttling."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import bcrypt
import jwt
from sqlalchemy import ColumnElement, exists, func, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models import Session, TwoFactor, User
from settings import Settings
from wallet.errors import (
    AccountInactive,
    InvalidCredentials,
    InvalidToken,
    MfaRequired,
    RateLimited,
    TokenExpired,
    TokenRevoked,
)
from wallet.identity.identifiers import email_key
from wallet.identity.revocations import RevokedSessions
from wallet.identity.tokens import Verified, VerifiedTokens
from wallet.platform import metrics
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

ALGORITHM = "HS256"
# How long the second step of a two-factor sign-in may wait for its code.
MFA_TOKEN_TTL = 300
# Authentication methods (RFC 8176 names where there is one), in the order a token lists them. "mfa" is added once a
# login has used a first factor (password, Google) and a second (a TOTP code, a recovery code).
METHODS = ("pwd", "google", "otp", "recovery", "mfa")
_FIRST, _SECOND = {"pwd", "google"}, {"otp", "recovery"}


class Device(NamedTuple):
    """Where a sign-in comes from, as its owner will see it in their list of sessions."""

    ip: str
    user_agent: str


def methods(*used: Iterable[str]) -> list[str]:
    """The amr of a login that used these methods (in any number of steps)."""
    found = set().union(*used)
    if found & _FIRST and found & _SECOND:
        found.add("mfa")
    return [m for m in METHODS if m in found]


@functools.cache
def _dummy_hash(rounds: int) -> bytes:
    """Verified against when the user does not exist, so both failures cost the same time."""
    return bcrypt.hashpw(b"not-a-real-password", bcrypt.gensalt(rounds))


class _Known:
    """What this process knows of logins besides PostgreSQL: the access tokens it verified, the sessions revoked."""

    def __init__(self, settings: Settings) -> None:
        self.tokens = VerifiedTokens()
        self.revoked = RevokedSessions(settings.access_token_ttl)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def hash_password(rt: Runtime, password: str) -> str:
    salt = bcrypt.gensalt(rt.settings.bcrypt_rounds)
    hashed = await rt.run_cpu(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


def _check_password(password: str, password_hash: str | None, rounds: int) -> bool:
    secret = password.encode()
    # bcrypt refuses more than 72 bytes, and no stored password is longer: such a guess is simply wrong.
    usable = password_hash is not None and len(secret) <= 72
    candidate = password_hash.encode() if usable else _dummy_hash(rounds)
    return bcrypt.checkpw(secret[:72], candidate) and usable


async def verify_password(rt: Runtime, password: str, password_hash: str | None) -> bool:
    return await rt.run_cpu(_check_password, password, password_hash, rt.settings.bcrypt_rounds)


def _encode(rt: Runtime, claims: dict[str, object]) -> str:
    return jwt.encode(claims, rt.settings.jwt_secret, algorithm=ALGORITHM)


def _decode(rt: Runtime, token: str, token_type: str) -> dict[str, object]:
    """The claims of a token of ours of this type (access, refresh, or mfa: a sign-in waiting for its code)."""
    try:
        claims = jwt.decode(
            token,
            rt.settings.jwt_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "sid", "jti", "typ"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except jwt.PyJWTError:
        raise InvalidToken() from None
    if claims.get("typ") != token_type:
        raise InvalidToken(f"This is not an {token_type} token.")
    try:
        uuid.UUID(str(claims["sub"]))
        uuid.UUID(str(claims["sid"]))
        uuid.UUID(str(claims["jti"]))
    except ValueError:
        raise InvalidToken() from None
    return claims


def access_token(rt: Runtime, user_id: uuid.UUID, role: str, session_id: uuid.UUID, session: Any) -> dict:
    """A new access token of a login; `session` has its authenticated_at and amr (what the token says of them)."""
    now = _now()
    ttl = rt.settings.access_token_ttl
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "typ": "access",
        "role": role,
        "jti": str(uuid.uuid4()),
        "exp": now + dt.timedelta(seconds=ttl),
        "auth_time": int(session.authenticated_at.timestamp()),
        "amr": list(session.amr),
    }
    return {"access_token": _encode(rt, claims), "token_type": "Bearer", "expires_in": ttl}


def _token_pair(
    rt: Runtime, user_id: uuid.UUID, role: str, session_id: uuid.UUID, refresh_jti: uuid.UUID, session: Any
) -> dict:
    now = _now()
    common = {"sub": str(user_id), "sid": str(session_id), "iat": now}
    access = access_token(rt, user_id, role, session_id, session)
    refresh = _encode(
        rt,
        {
            **common,
            "typ": "refresh",
            "jti": str(refresh_jti),
            "exp": now + dt.timedelta(seconds=rt.settings.refresh_token_ttl),
        },
    )
    return {**access, "refresh_token": refresh}


def _revoked_key(session_id: uuid.UUID | str) -> str:
    return f"revoked-session:{session_id}"


async def authenticate(rt: Runtime, token: str) -> Principal:
    """Validate an access token: signature, expiry, type, and that its login was not revoked."""
    known = rt.per_process(_Known)
    verified = known.tokens.get(token)
    if verified is None:
        claims = _decode(rt, token, "access")
        role = str(claims.get("role"))
        # A token without them (issued before they existed) is as if its login authenticated long ago.
        auth_time, amr = claims.get("auth_time", 0), claims.get("amr", [])
        if not isinstance(auth_time, int | float) or not isinstance(amr, list):
            raise InvalidToken()
        user_id, session_id = uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims["sid"]))
        verified = Verified(float(claims["exp"]), user_id, session_id, role, float(auth_time), tuple(map(str, amr)))
        if role in ("user", "admin"):
            known.tokens.add(token, verified)
    # Per request, cached decode or not: this process's copy of PostgreSQL's revocations survives any restart of
    # Redis; the Redis flag tells every process at once, before their next poll.
    if verified.session_id in known.revoked or await rt.store.has_flag(_revoked_key(verified.session_id)):
        raise TokenRevoked()
    if verified.role not in ("user", "admin"):
        raise InvalidToken()
    return Principal(
        verified.user_id, verified.session_id, verified.role, auth_time=verified.auth_time, amr=verified.amr
    )


def watch_revocation(rt: Runtime, principal: Principal, on_revoked: Callable[[], None]) -> Callable[[], None]:
    """Call on_revoked soon after the principal's login is revoked, anywhere (RevokedSessions.watch); an API key has
    no login to watch (its stream checks it every EVENTS_PING_INTERVAL). Returns the call that stops watching."""
    if principal.session_id is None:
        return lambda: None
    return rt.per_process(_Known).revoked.watch(principal.session_id, on_revoked)


async def poll_revocations(rt: Runtime) -> None:
    """Bring this process's copy of the revoked sessions up to date with PostgreSQL."""
    async with rt.autocommit() as conn:
        await rt.per_process(_Known).revoked.poll(conn)


async def reserve_attempt(rt: Runtime, key: str, limit: int) -> None:
    """Count an attempt (a password, a code) before checking it, so concurrent guesses cannot run past the limit."""
    if await rt.store.hit(key, rt.settings.login_window) > limit:
        _, ttl = await rt.store.count(key)
        metrics.login_throttled(key.split(":")[1])  # login-fail:address|account|code:...
        raise RateLimited(ttl, "Too many failed attempts; try again later.")


async def _reserve_password_check(rt: Runtime, account: uuid.UUID | str, client_ip: str) -> tuple[str, str]:
    """Count a guess at an account's password from this address (the low LOGIN_MAX_FAILURES) and from anywhere
    (the high LOGIN_ACCOUNT_MAX_FAILURES): a stranger exhausts only their own allowance, not the owner's, unless
    they guess from very many addresses. The two counters, for clearing once the password proves right."""
    pair, anywhere = f"login-fail:account:{account}:address:{client_ip}", f"login-fail:account:{account}"
    await reserve_attempt(rt, pair, rt.settings.login_max_failures)
    await reserve_attempt(rt, anywhere, rt.settings.login_account_max_failures)
    return pair, anywhere


async def clear_attempts(rt: Runtime, keys: tuple[str, ...]) -> None:
    for key in keys:
        await rt.store.clear(key)


async def check_password_of(rt: Runtime, user_id: uuid.UUID, password: str, password_hash: str, client_ip: str) -> None:
    """Verify a known user's password, throttled like logins are."""
    counters = await _reserve_password_check(rt, user_id, client_ip)
    if not await verify_password(rt, password, password_hash):
        raise InvalidCredentials("The current password is wrong.")
    await clear_attempts(rt, counters)


async def login(rt: Runtime, *, field: str, identifier: str, password: str, device: Device) -> dict:
    """Exchange credentials for a token pair (or MfaRequired); wrong user and wrong password look the same."""
    client_ip = device.ip
    s = rt.settings
    # Every attempt counts against its address before anything is checked (as many guesses may be in flight as
    # the limit, no more); a right password takes its count back, so the address counts failures only.
    address_key = f"login-fail:address:{client_ip}"
    await reserve_attempt(rt, address_key, s.login_ip_max_failures)

    # Each identifier is compared the way it is unique in the database (phones are stored in E.164 already).
    if field == "email":
        key, column = email_key(identifier), User.email_key
    elif field == "username":
        key, column = identifier.lower(), func.lower(User.username)
    else:
        key, column = identifier, User.phone
    async with rt.transaction() as conn:
        row = (await conn.execute(select(User.id, User.password_hash).where(column == key))).first()

    # Failures count per account whichever identifier names it; an unknown identifier counts on its own.
    counters = await _reserve_password_check(rt, row.id if row else f"{field}:{key}", client_ip)
    if not await verify_password(rt, password, row.password_hash if row else None) or row is None:
        metrics.login_failed()
        raise InvalidCredentials()
    await clear_attempts(rt, counters)
    await rt.store.release(address_key)

    return await start_session(rt, row.id, ["pwd"], device)


_HAS_TWO_FACTOR = exists().where(TwoFactor.user_id == User.id, TwoFactor.confirmed_at.is_not(None))


async def start_session(
    rt: Runtime, user_id: uuid.UUID, amr: list[str], device: Device, session_id: uuid.UUID | None = None
) -> dict:
    """A new login of a user whose credentials (`amr`) were checked: a session row and its token pair. A user with
    two-factor sign-in who has shown one factor only gets MfaRequired instead, with a token for the second step,
    which names the session it will start (`session_id`): that session can be started once."""
    refresh_jti = uuid.uuid4()
    async with rt.transaction() as conn:
        # Re-read the status under a share lock: a deactivation either commits first (and is seen here) or
        # waits for this session to exist, so its revocation sweep cannot miss it.
        user = (
            await conn.execute(
                select(User.role, User.status, _HAS_TWO_FACTOR.label("two_factor"))
                .where(User.id == user_id)
                .with_for_update(of=User, read=True)
            )
        ).one()
        if user.status == "inactive":
            raise AccountInactive("This account has been deactivated.")
        if user.two_factor and "mfa" not in amr:
            raise MfaRequired(_mfa_token(rt, user_id, amr), MFA_TOKEN_TTL)
        session = (
            await conn.execute(
                insert(Session)
                .values(
                    id=session_id or uuid.uuid4(),
                    user_id=user_id,
                    refresh_jti=refresh_jti,
                    expires_at=_now() + dt.timedelta(seconds=rt.settings.refresh_token_ttl),
                    amr=amr,
                    ip=device.ip[:64] or None,
                    user_agent=device.user_agent[:255] or None,
                )
                .on_conflict_do_nothing(index_elements=[Session.id])
                .returning(Session.id, Session.authenticated_at, Session.amr)
            )
        ).first()
    if session is None:
        raise InvalidCredentials("This sign-in was already completed; sign in again.")
    return _token_pair(rt, user_id, user.role, session.id, refresh_jti, session)


def _mfa_token(rt: Runtime, user_id: uuid.UUID, amr: list[str]) -> str:
    now = _now()
    claims = {
        "typ": "mfa",
        "sub": str(user_id),
        "sid": str(uuid.uuid4()),  # the session it will start
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + dt.timedelta(seconds=MFA_TOKEN_TTL),
        "amr": amr,
    }
    return _encode(rt, claims)


def read_mfa_token(rt: Runtime, token: str) -> tuple[uuid.UUID, uuid.UUID, list[str]]:
    """(user, the session it starts, the methods already used) of a sign-in waiting for its second factor."""
    claims = _decode(rt, token, "mfa")
    amr = claims.get("amr")
    if not isinstance(amr, list) or not set(amr) <= _FIRST:
        raise InvalidToken()
    return uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims["sid"])), amr


async def refresh(rt: Runtime, refresh_token: str) -> dict:
    """Rotate a refresh token. Presenting one that was already used revokes that whole login."""
    claims = _decode(rt, refresh_token, "refresh")
    session_id, jti = uuid.UUID(str(claims["sid"])), uuid.UUID(str(claims["jti"]))
    new_jti = uuid.uuid4()
    async with rt.transaction() as conn:
        rotated = (
            await conn.execute(
                update(Session)
                .where(
                    Session.id == session_id,
                    Session.refresh_jti == jti,
                    Session.revoked_at.is_(None),
                    Session.expires_at > _now(),
                )
                .values(refresh_jti=new_jti, last_used_at=func.now())
                .returning(Session.user_id, Session.authenticated_at, Session.amr)
            )
        ).first()
        user = None
        if rotated:
            user = (await conn.execute(select(User.role, User.status).where(User.id == rotated.user_id))).first()
    if rotated is None:
        await revoke_sessions(rt, [session_id])
        raise TokenRevoked("This refresh token was already used or revoked; the login has been ended.")
    if user is None or user.status == "inactive":
        await revoke_sessions(rt, [session_id])
        raise AccountInactive("This account has been deactivated.")
    return _token_pair(rt, rotated.user_id, user.role, session_id, new_jti, rotated)


async def reauthenticated(rt: Runtime, principal: Principal, method: str) -> dict:
    """A login whose user has just proved who they are again (a step-up with `method`): it is authenticated now,
    and a new access token says so."""
    async with rt.transaction() as conn:
        where = (Session.id == principal.session_id, Session.revoked_at.is_(None))
        before = (await conn.execute(select(Session.amr).where(*where).with_for_update())).scalar()
        if before is None:
            raise TokenRevoked()
        session = (
            await conn.execute(
                update(Session)
                .where(*where)
                .values(authenticated_at=func.now(), amr=methods(before, [method]), last_used_at=func.now())
                .returning(Session.id, Session.authenticated_at, Session.amr)
            )
        ).one()
    return access_token(rt, principal.user_id, principal.role, session.id, session)


Revoked = list[tuple[uuid.UUID, dt.datetime]]


async def end_logins(conn: AsyncConnection, *where: ColumnElement[bool]) -> Revoked:
    """Revoke the matching logins inside the caller's transaction, so they end in the same commit as the change
    that ends them (a deactivation, a password change). Pass the result to announce_revoked() after the commit."""
    revoked = await conn.execute(
        update(Session)
        .where(Session.revoked_at.is_(None), *where)
        .values(revoked_at=func.now())  # the database's clock, which every process polls by
        .returning(Session.id, Session.revoked_at)
    )
    return [(row.id, row.revoked_at) for row in revoked]


async def end_user_logins(conn: AsyncConnection, user_id: uuid.UUID, keep: uuid.UUID | None = None) -> Revoked:
    """end_logins() for every login of a user, but `keep`."""
    return await end_logins(conn, Session.user_id == user_id, Session.id != keep if keep else true())


async def announce_revoked(rt: Runtime, revoked: Revoked) -> None:
    """Tell this process at once, and every other through Redis before their next poll of PostgreSQL."""
    rt.per_process(_Known).revoked.add(revoked)
    for session_id, _ in revoked:
        # An access token outlives its session by at most its own lifetime.
        await rt.store.set_flag(_revoked_key(session_id), rt.settings.access_token_ttl + 60)


async def revoke_sessions(rt: Runtime, session_ids: list[uuid.UUID]) -> None:
    """End logins at once: their refresh tokens stop rotating and every process refuses their access tokens."""
    async with rt.transaction() as conn:
        revoked = await end_logins(conn, Session.id.in_(session_ids))
    await announce_revoked(rt, revoked)


async def logout(rt: Runtime, principal: Principal) -> None:
    await revoke_sessions(rt, [principal.session_id])
