"""Webhooks to clients: endpoints, where their URLs may point, and one signed POST (Standard Webhooks)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import secrets
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import case, delete, func, insert, select, tuple_, update
from standardwebhooks import Webhook

from models import Delivery, Event, WebhookEndpoint
from wallet import errors
from wallet.notify import Attempt, events
from wallet.platform.locks import lock_user
from wallet.platform.paging import decode_cursor, encode_cursor
from wallet.platform.runtime import Runtime

MAX_ENDPOINTS = 10
E = WebhookEndpoint.__table__
D = Delivery.__table__

ENDPOINT_COLUMNS = (
    E.c.id,
    E.c.url,
    E.c.event_types,
    E.c.description,
    E.c.status,
    case((E.c.breaker_until > func.now(), E.c.breaker_until)).label("paused_until"),
    E.c.created_at,
)
DELIVERY_COLUMNS = (
    D.c.id,
    D.c.event_id,
    Event.type.label("event_type"),
    D.c.status,
    D.c.attempts,
    D.c.last_status_code,
    D.c.last_error,
    D.c.next_attempt_at,
    D.c.created_at,
    D.c.delivered_at,
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def render_endpoint(row: Any, secret: str | None = None) -> dict[str, Any]:
    rendered = dict(row._mapping)
    rendered["events"] = rendered.pop("event_types")
    if secret is not None:
        rendered["secret"] = secret
    return rendered


# ---- where a URL may point ------------------------------------------------------------------------------------


# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at (translated or tunnelled): IPv4-compatible
# (::/96, deprecated), IPv4-mapped, IPv4-translated (SIIT) and NAT64's well-known prefix. Python calls most of them
# global whatever IPv4 address they carry.
_EMBEDS_IPV4 = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Where the IPv4 address sits depends on the network's own choices (NAT64's local-use prefix), or is obfuscated
# (Teredo): refused, whatever they carry.
_TUNNELS = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "2001::/32"))


def _forbidden(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _TUNNELS):
            return True
        if any(ip in net for net in _EMBEDS_IPV4):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:  # 2002::/16, 6to4: the IPv4 address follows the prefix
            ip = ip.sixtofour
    # Link-local covers the cloud metadata address 169.254.169.254; private covers fd00:ec2::254.
    return not ip.is_global or ip.is_multicast


async def resolve(rt: Runtime, url: str) -> tuple[str, str]:
    """The URL's (host, one address it resolves to); refused (400 on `url`) when any of its addresses is not a
    public one, unless WEBHOOK_ALLOW_PRIVATE. Checked at registration and again before each delivery (DNS can change
    between the two), and the delivery then connects to the address checked here."""
    parts = urlsplit(url)
    allowed = ("https", "http") if rt.settings.webhook_allow_private else ("https",)
    if parts.scheme not in allowed or not parts.hostname or parts.username or parts.password:
        raise _bad_url(f"Must be an {' or '.join(allowed)} URL with a host and no credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        raise _bad_url("The host does not resolve.") from None
    addresses = [info[4][0] for info in found]
    if not rt.settings.webhook_allow_private and any(_forbidden(a) for a in addresses):
        raise _bad_url("The host resolves to a private, loopback, link-local or otherwise non-public address.")
    return parts.hostname, addresses[0]


def _bad_url(message: str) -> errors.ValidationError:
    return errors.ValidationError({"url": [message]}, message)


# ---- endpoints ------------------------------------------------------------------------------------------------


async def create_endpoint(
    rt: Runtime, user_id: uuid.UUID, url: str, event_types: list[str], description: str | None
) -> dict[str, Any]:
    await resolve(rt, url)
    secret = new_secret()
    async with rt.transaction() as conn:
        # Counted under the user's row lock, so concurrent registrations cannot pass the limit together.
        await lock_user(conn, user_id)
        count = (await conn.execute(select(func.count()).where(E.c.user_id == user_id))).scalar_one()
        if count >= MAX_ENDPOINTS:
            raise errors.LimitReached(f"At most {MAX_ENDPOINTS} webhook endpoints per user.")
        row = (
            await conn.execute(
                insert(E)
                .values(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    url=url,
                    event_types=event_types,
                    description=description,
                    secret=secret,
                )
                .returning(*ENDPOINT_COLUMNS)
            )
        ).one()
    return render_endpoint(row, secret)


async def list_endpoints(rt: Runtime, user_id: uuid.UUID) -> dict[str, Any]:
    """All of the caller's endpoints (there are at most MAX_ENDPOINTS), oldest first."""
    async with rt.autocommit() as conn:
        rows = (
            await conn.execute(select(*ENDPOINT_COLUMNS).where(E.c.user_id == user_id).order_by(E.c.created_at, E.c.id))
        ).all()
    return {"items": [render_endpoint(r) for r in rows], "next_cursor": None}


async def get_endpoint(rt: Runtime, user_id: uuid.UUID, endpoint_id: uuid.UUID) -> dict[str, Any]:
    async with rt.autocommit() as conn:
        row = (
            await conn.execute(select(*ENDPOINT_COLUMNS).where(E.c.id == endpoint_id, E.c.user_id == user_id))
        ).first()
    if row is None:
        raise errors.NotFound("Webhook endpoint not found.")
    return render_endpoint(row)


async def delete_endpoint(rt: Runtime, user_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """Remove an endpoint and its deliveries; nothing more is sent to it."""
    async with rt.transaction() as conn:
        gone = await conn.execute(delete(E).where(E.c.id == endpoint_id, E.c.user_id == user_id))
    if gone.rowcount == 0:
        raise errors.NotFound("Webhook endpoint not found.")


async def rotate_secret(rt: Runtime, user_id: uuid.UUID, endpoint_id: uuid.UUID, grace_seconds: int) -> dict[str, Any]:
    """A new secret; for grace_seconds the old one signs too, so receivers can switch without losing a delivery."""
    secret = new_secret()
    async with rt.transaction() as conn:
        row = (
            await conn.execute(
                update(E)
                .where(E.c.id == endpoint_id, E.c.user_id == user_id)
                .values(
                    previous_secret=E.c.secret if grace_seconds else None,
                    previous_secret_until=func.now() + dt.timedelta(seconds=grace_seconds) if grace_seconds else None,
                    secret=secret,
                )
                .returning(*ENDPOINT_COLUMNS)
            )
        ).first()
    if row is None:
        raise errors.NotFound("Webhook endpoint not found.")
    return render_endpoint(row, secret)


# ---- deliveries -----------------------------------------------------------------------------------------------


async def list_deliveries(
    rt: Runtime, user_id: uuid.UUID, endpoint_id: uuid.UUID, *, limit: int = 50, cursor: str | None = None
) -> dict[str, Any]:
    """An endpoint's deliveries, newest first."""
    await get_endpoint(rt, user_id, endpoint_id)
    query = select(*DELIVERY_COLUMNS).join(Event, Event.id == D.c.event_id).where(D.c.endpoint_id == endpoint_id)
    if cursor is not None:
        query = query.where(
            tuple_(D.c.created_at, D.c.id) < tuple_(*decode_cursor(cursor, dt.datetime.fromisoformat, uuid.UUID))
        )
    query = query.order_by(D.c.created_at.desc(), D.c.id.desc()).limit(limit + 1)
    async with rt.autocommit() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [dict(r._mapping) for r in rows],
        "next_cursor": encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more else None,
    }


async def retry_delivery(
    rt: Runtime, user_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> dict[str, Any]:
    """Send a delivery again as soon as a dispatcher is free, whatever its state (a redelivery on request). One in
    flight finishes first (its lease); an endpoint whose breaker is open is probed with it at once."""
    await get_endpoint(rt, user_id, endpoint_id)
    async with rt.transaction() as conn:
        found = (
            await conn.execute(
                update(D)
                .where(D.c.id == delivery_id, D.c.endpoint_id == endpoint_id)
                .values(status="pending", next_attempt_at=func.greatest(D.c.leased_until, func.now()))
                .returning(D.c.id)
            )
        ).first()
        if found is None:
            raise errors.NotFound("Delivery not found.")
        await conn.execute(
            update(E).where(E.c.id == endpoint_id, E.c.breaker_until > func.now()).values(breaker_until=func.now())
        )
        row = (
            await conn.execute(
                select(*DELIVERY_COLUMNS).join(Event, Event.id == D.c.event_id).where(D.c.id == delivery_id)
            )
        ).one()
    return dict(row._mapping)


# ---- one delivery ---------------------------------------------------------------------------------------------


def event_body(row: Any) -> str:
    """The Event JSON, as GET /events shows it."""
    return events.to_json({"id": row.event_id, "type": row.type, "created_at": row.event_created_at, "data": row.data})


def sign(keys: list[str], event_id: str, at: dt.datetime, body: str) -> str:
    """webhook-signature: one `v1,<base64>` per secret in force, space-separated (Standard Webhooks)."""
    return " ".join(Webhook(key).sign(event_id, at, body) for key in keys)


async def post(rt: Runtime, client: httpx.AsyncClient, row: Any) -> Attempt:
    """POST one claimed delivery (a row of dispatch.CLAIM)."""
    try:
        host, address = await resolve(rt, row.url)
    except errors.ValidationError as refused:
        return Attempt(None, refused.message)
    body = event_body(row)
    now = dt.datetime.now(dt.UTC)
    parts = urlsplit(row.url)
    # Connect to the address just checked (not a fresh lookup an attacker's DNS could answer differently), still
    # naming the host in Host and TLS (SNI and certificate).
    pinned = f"[{address}]" if ":" in address else address
    netloc = pinned + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = {
        "Host": parts.netloc,
        "Content-Type": "application/json",
        "User-Agent": "wallet-webhooks/1",
        "webhook-id": str(row.event_id),
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign([s for s in (row.secret, row.previous_secret) if s], str(row.event_id), now, body),
    }
    try:
        response = await client.post(target, content=body, headers=headers, extensions={"sni_hostname": host})
    except httpx.HTTPError as error:
        return Attempt(None, f"{type(error).__name__}: {error}")
    if 200 <= response.status_code < 300:
        return Attempt(response.status_code)
    return Attempt(response.status_code, f"HTTP {response.status_code}")
