"""Google sign-in: start a flow (state, nonce, PKCE), sign in or create the account by the provider's subject,
and link Google to an account that has a password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from models import User, UserIdentity
from settings import Settings
from wallet import errors
from wallet.identity import accounts
from wallet.identity.auth import Device, start_session
from wallet.identity.identifiers import email_key
from wallet.ledger.wallets import open_wallet
from wallet.platform.runtime import Runtime
from wallet.principal import Principal
from wallet.providers import google

PROVIDER = "google"
# A flow must come back within this many seconds, and only once.
STATE_TTL = 600
# <flow id>.<expiry, Unix seconds>.<HMAC of both and what the flow is bound to>
_STATE = re.compile(r"^([A-Za-z0-9_-]{32})\.([0-9]{10})\.([A-Za-z0-9_-]{43})\Z")


def configured(settings: Settings) -> bool:
    """Whether Google sign-in can be used here: its client id, secret and redirect URL are all set."""
    return bool(settings.google_client_id and settings.google_client_secret and settings.google_redirect_url)


def _client(rt: Runtime) -> google.Client:
    s = rt.settings
    if not configured(s):
        raise errors.ProviderNotConfigured("Google sign-in is not configured on this server.")
    return google.Client(s.google_client_id, s.google_client_secret, s.google_discovery_url, s.google_redirect_url)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _secret_derived(rt: Runtime, purpose: str, state: str) -> str:
    key = rt.settings.jwt_secret.encode()
    return _b64(hmac.new(key, f"google-{purpose}:{state}".encode(), hashlib.sha256).digest())


def _state_mac(rt: Runtime, flow: str, expires: str, bound_to: str) -> str:
    return _secret_derived(rt, "state", f"{flow}.{expires}:{bound_to}")


def _bound_to_user(user_id: uuid.UUID) -> str:
    """A link flow is bound to the user who started it."""
    return f"user:{user_id}"


def _bound_to_browser(binding_challenge: str) -> str:
    """A sign-in flow is bound to the browser (the tab) that started it: it keeps a secret, gives its SHA-256
    (binding_challenge, as PKCE's S256) to start and the secret itself (binding_verifier) to the callback. Someone
    else's flow, sent as a link to a signed-in person (login CSRF), cannot come back with that person's secret."""
    return f"browser:{binding_challenge}"


def _s256(secret: str) -> str:
    """PKCE's S256: base64url(SHA-256(secret))."""
    return _b64(hashlib.sha256(secret.encode()).digest())


async def _start(rt: Runtime, bound_to: str) -> str:
    """The provider's authorization URL for a new flow. The state is signed, not stored: starting a flow writes
    nothing, so no one can fill the store by starting flows."""
    client = _client(rt)
    flow, expires = secrets.token_urlsafe(24), str(int(time.time()) + STATE_TTL)
    state = f"{flow}.{expires}.{_state_mac(rt, flow, expires, bound_to)}"
    challenge = _s256(_secret_derived(rt, "verifier", state))
    return await google.authorization_url(client, state, _secret_derived(rt, "nonce", state), challenge)


async def start_sign_in(rt: Runtime, binding_challenge: str) -> str:
    """A sign-in flow, bound to the browser that sent `binding_challenge`."""
    return await _start(rt, _bound_to_browser(binding_challenge))


async def start_link(rt: Runtime, principal: Principal) -> str:
    """A flow linking Google to the caller's account."""
    return await _start(rt, _bound_to_user(principal.user_id))


async def _identity(rt: Runtime, code: str | None, state: str, bound_to: str) -> dict[str, Any]:
    """The verified claims of a flow's ID token; its state works once, before it expires, for the flow it was issued
    to and what that flow was bound to."""
    client = _client(rt)
    if not code:
        raise errors.InvalidCredentials("The sign-in was not completed at the provider; start again.")
    unknown = errors.InvalidCredentials(
        "The sign-in state is unknown, expired, already used or not this browser's; start again."
    )
    found = _STATE.match(state)
    if not found or int(found[2]) < time.time():
        raise unknown
    flow, expires, mac = found.groups()
    if not hmac.compare_digest(mac, _state_mac(rt, flow, expires, bound_to)):
        raise unknown
    if await rt.store.hit(f"oidc-used:{flow}", STATE_TTL) != 1:
        raise unknown
    verifier = _secret_derived(rt, "verifier", state)
    return await google.verified_identity(client, code, verifier, _secret_derived(rt, "nonce", state))


def _username_base(email: str) -> str:
    local = re.sub(r"[^A-Za-z0-9_.-]", "", email.split("@", 1)[0])[:24]
    return local if len(local) >= 3 else f"user{local}"


async def _find(conn: Any, subject: str) -> uuid.UUID | None:
    return (
        await conn.execute(
            select(UserIdentity.user_id).where(UserIdentity.provider == PROVIDER, UserIdentity.subject == subject)
        )
    ).scalar()


async def _create_account(rt: Runtime, claims: dict[str, Any]) -> uuid.UUID:
    """A new account (no password) with a default wallet and the identity, under a free username."""
    base = _username_base(claims["email"])
    for attempt in range(5):
        username = base if attempt == 0 else f"{base}-{secrets.token_hex(3)}"
        try:
            async with rt.transaction() as conn:
                user_id = (
                    await conn.execute(
                        User.__table__.insert()
                        .values(
                            id=uuid.uuid4(),
                            username=username,
                            email=claims["email"],
                            email_key=email_key(claims["email"]),
                            password_hash=None,
                        )
                        .returning(User.id)
                    )
                ).scalar_one()
                await open_wallet(conn, user_id, rt.settings.default_currency, None)
                await conn.execute(
                    UserIdentity.__table__.insert().values(
                        provider=PROVIDER, subject=claims["sub"], user_id=user_id, email=claims["email"]
                    )
                )
            return user_id
        except IntegrityError as error:
            constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", "")
            if constraint in ("pk_user_identities", "uq_users_email_key"):
                # The same Google account signing in twice at once made it first (the other transaction has
                # committed, or this one would still be waiting); otherwise the e-mail is someone else's.
                async with rt.transaction() as conn:
                    user_id = await _find(conn, claims["sub"])
                if user_id is None:
                    raise _use_your_password() from None
                return user_id
            if constraint != "uq_users_username_lower":
                raise
    raise errors.AlreadyExists("Could not find a free username; try again.")


def _use_your_password() -> errors.AlreadyExists:
    return errors.AlreadyExists(
        "An account with this e-mail address already exists. Log in with its password, then link Google with "
        "POST /api/v1/users/me/google/start and POST /api/v1/users/me/google.",
        details={"email": ["Already taken."]},
    )


async def sign_in(rt: Runtime, code: str | None, state: str, binding_verifier: str, device: Device) -> dict[str, Any]:
    """The token pair of the account linked to this Google account, made on the first sign-in (or MfaRequired, when
    the account has two-factor sign-in on).

    An existing account with the same e-mail is never signed into by e-mail alone (our e-mails are not verified,
    so someone could have registered a victim's address first): its owner links Google from the account.
    """
    claims = await _identity(rt, code, state, _bound_to_browser(_s256(binding_verifier)))
    async with rt.transaction() as conn:
        # One statement, one snapshot: a concurrent first sign-in is seen whole (account and identity) or not at all.
        found = (
            await conn.execute(
                select(
                    select(UserIdentity.user_id)
                    .where(UserIdentity.provider == PROVIDER, UserIdentity.subject == claims["sub"])
                    .scalar_subquery()
                    .label("linked"),
                    exists().where(User.email_key == email_key(claims["email"])).label("taken"),
                )
            )
        ).one()
    user_id = found.linked
    if user_id is None:
        if found.taken:
            raise _use_your_password()
        user_id = await _create_account(rt, claims)
    return await start_session(rt, user_id, ["google"], device)


async def link(rt: Runtime, principal: Principal, code: str, state: str) -> dict[str, Any]:
    """Link the Google account of a flow this user started (POST /users/me/google/start) to their account."""
    claims = await _identity(rt, code, state, _bound_to_user(principal.user_id))
    async with rt.transaction() as conn:
        linked = (
            await conn.execute(
                insert(UserIdentity)
                .values(provider=PROVIDER, subject=claims["sub"], user_id=principal.user_id, email=claims["email"])
                .on_conflict_do_nothing()
                .returning(UserIdentity.user_id)
            )
        ).first()
        if linked is None and await _find(conn, claims["sub"]) != principal.user_id:
            raise errors.AlreadyExists(
                "This account is already linked to another Google account, or that Google account to another of ours."
            )
    return await accounts.get_user(rt, principal.user_id)
