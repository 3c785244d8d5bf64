"""API keys: create (at most a few active per user), list, revoke, roll over, and authenticate a presented secret."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
import uuid
from typing import Any

from sqlalchemy import func, select, text, update

from models import ApiKey
from models.keys import SCOPES as SCOPES
from wallet import errors
from wallet.notify import events
from wallet.platform.locks import lock_user
from wallet.platform.paging import created_page
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

MAX_ACTIVE_KEYS = 5
# 1M and 1Y are 30 and 365 days.
LIFETIMES = {
    "1H": dt.timedelta(hours=1),
    "1D": dt.timedelta(days=1),
    "1W": dt.timedelta(weeks=1),
    "1M": dt.timedelta(days=30),
    "1Y": dt.timedelta(days=365),
}
# wk_ + 12 hex digits (the stored, shown prefix) + 43 base64url characters (256 random bits).
_SECRET = re.compile(r"^wk_[0-9a-f]{12}[A-Za-z0-9_-]{43}\Z")
_PREFIX_LENGTH = 15
# last_used_at is written at most this often per key and process, so using a key is not a write per request.
_TOUCH_EVERY = 60.0
_touched: dict[uuid.UUID, float] = {}

_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.scopes,
    ApiKey.expires_at,
    ApiKey.last_used_at,
    ApiKey.created_at,
    ApiKey.revoked_at,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _status(row: Any, now: dt.datetime) -> str:
    if row.revoked_at is not None and row.revoked_at <= now:
        return "revoked"
    return "expired" if row.expires_at <= now else "active"


def render_key(row: Any) -> dict[str, Any]:
    return {**{c.key: getattr(row, c.key) for c in _COLUMNS}, "status": _status(row, _now())}


async def _check_limit(conn: Any, user_id: uuid.UUID, replacing: uuid.UUID | None = None) -> None:
    """Every key whose secret still works counts, one in its rollover grace too (else chained rollovers would make
    any number of them); `replacing` is a key that stops in the same transaction."""
    active = (
        await conn.execute(
            select(func.count()).where(
                ApiKey.user_id == user_id,
                ApiKey.revoked_at.is_(None) | (ApiKey.revoked_at > func.now()),
                ApiKey.expires_at > func.now(),
                ApiKey.id.is_distinct_from(replacing),
            )
        )
    ).scalar_one()
    if active >= MAX_ACTIVE_KEYS:
        raise errors.LimitReached(
            f"A user may have at most {MAX_ACTIVE_KEYS} working API keys, one in its rollover grace included; revoke "
            "one first, or roll over without a grace."
        )


async def _insert(conn: Any, user_id: uuid.UUID, name: str, scopes: list[str], lifetime: dt.timedelta) -> dict:
    secret = f"wk_{secrets.token_hex(6)}{secrets.token_urlsafe(32)}"
    row = (
        await conn.execute(
            ApiKey.__table__.insert()
            .values(
                id=uuid.uuid4(),
                user_id=user_id,
                name=name,
                prefix=secret[:_PREFIX_LENGTH],
                secret_hash=_digest(secret),
                scopes=scopes,
                expires_at=func.now() + lifetime,
            )
            .returning(*_COLUMNS)
        )
    ).one()
    rendered = render_key(row)
    await events.emit(conn, [events.NewEvent(user_id, "api_key.created", rendered)])
    return {**rendered, "key": secret}


async def create_key(rt: Runtime, principal: Principal, name: str, scopes: list[str], expires_in: str) -> dict:
    """A new key; its secret is in this answer only."""
    async with rt.transaction() as conn:
        await lock_user(conn, principal.user_id)
        await _check_limit(conn, principal.user_id)
        return await _insert(conn, principal.user_id, name, [s for s in SCOPES if s in scopes], LIFETIMES[expires_in])


async def list_keys(rt: Runtime, principal: Principal, *, limit: int, cursor: str | None) -> dict[str, Any]:
    query = select(*_COLUMNS).where(ApiKey.user_id == principal.user_id)
    return await created_page(rt, query, ApiKey, limit, cursor, render_key)


async def revoke_key(rt: Runtime, principal: Principal, key_id: uuid.UUID) -> dict[str, Any]:
    """Stop a key at once (also one in its rollover grace); revoking a revoked key changes nothing."""
    async with rt.transaction() as conn:
        revoked = await conn.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                ApiKey.user_id == principal.user_id,
                (ApiKey.revoked_at.is_(None)) | (ApiKey.revoked_at > func.now()),
            )
            .values(revoked_at=func.now())
        )
        row = (
            await conn.execute(select(*_COLUMNS).where(ApiKey.id == key_id, ApiKey.user_id == principal.user_id))
        ).first()
        if row is None:
            raise errors.NotFound("API key not found.")
        if revoked.rowcount:
            await _revoked_event(conn, principal.user_id, row)
    return render_key(row)


async def _revoked_event(conn: Any, user_id: uuid.UUID, row: Any) -> None:
    await events.emit(conn, [events.NewEvent(user_id, "api_key.revoked", render_key(row))])


async def revoke_all(conn: Any, user_id: uuid.UUID) -> None:
    """Stop every key of a user that still works (a password change does), in the caller's transaction."""
    revoked = await conn.execute(
        update(ApiKey)
        .where(
            ApiKey.user_id == user_id,
            (ApiKey.revoked_at.is_(None)) | (ApiKey.revoked_at > func.now()),
            ApiKey.expires_at > func.now(),
        )
        .values(revoked_at=func.now())
        .returning(*_COLUMNS)
    )
    await events.emit(conn, [events.NewEvent(user_id, "api_key.revoked", render_key(row)) for row in revoked])


async def rollover_key(
    rt: Runtime, principal: Principal, key_id: uuid.UUID, expires_in: str | None, grace_seconds: int
) -> dict[str, Any]:
    """A new secret with the same name and scopes; the old key stops after the grace (at once by default).

    Without expires_in the new key lives as long as the old one was made to. An expired key may be rolled over;
    a revoked or already rolled-over one may not (409).
    """
    async with rt.transaction() as conn:
        await lock_user(conn, principal.user_id)
        old = (
            await conn.execute(
                select(ApiKey.name, ApiKey.scopes, ApiKey.revoked_at, ApiKey.created_at, ApiKey.expires_at).where(
                    ApiKey.id == key_id, ApiKey.user_id == principal.user_id
                )
            )
        ).first()
        if old is None:
            raise errors.NotFound("API key not found.")
        if old.revoked_at is not None:
            raise errors.ApiKeyRevoked()
        # Without a grace the new key takes the old one's place; with one, both work for a while and both count.
        await _check_limit(conn, principal.user_id, replacing=None if grace_seconds else key_id)
        retired = (
            await conn.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(revoked_at=func.now() + dt.timedelta(seconds=grace_seconds))
                .returning(*_COLUMNS)
            )
        ).one()
        await _revoked_event(conn, principal.user_id, retired)  # its revoked_at says when it stops
        lifetime = LIFETIMES[expires_in] if expires_in else old.expires_at - old.created_at
        return await _insert(conn, principal.user_id, old.name, old.scopes, lifetime)


_LOOKUP = text("""
SELECT k.id, k.user_id, k.secret_hash, k.scopes, k.expires_at, k.revoked_at, u.role, u.status
FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.prefix = :prefix
""")


async def authenticate(rt: Runtime, secret: str) -> Principal:
    """The principal of a presented key: found by its prefix, its hash compared in constant time."""
    async with rt.autocommit() as conn:
        row = (
            (await conn.execute(_LOOKUP, {"prefix": secret[:_PREFIX_LENGTH]})).first()
            if _SECRET.match(secret)
            else None
        )
        if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
            raise errors.InvalidApiKey()
        status = _status(row, _now())
        if status != "active":
            raise errors.InvalidApiKey(f"This API key is {status}.")
        if row.status == "inactive":
            raise errors.AccountInactive("The account that owns this API key has been deactivated.")
        if time.monotonic() - _touched.get(row.id, float("-inf")) >= _TOUCH_EVERY:
            _touched[row.id] = time.monotonic()
            await conn.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now()))
    return Principal(row.user_id, None, row.role, row.id, frozenset(row.scopes))
