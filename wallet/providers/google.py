"""Google's OpenID Connect, as a client: discovery, the authorization URL, the code exchange, ID token checks."""

from __future__ import annotations

import hmac
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from email_validator import EmailNotValidError, validate_email

from wallet.errors import InvalidCredentials, ServiceUnavailable

TIMEOUT = httpx.Timeout(10.0)
# Discovery documents and key sets change rarely; an unknown key id fetches the set again at once.
CACHE_SECONDS = 300.0
_cache: dict[str, tuple[float, dict[str, Any]]] = {}


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    discovery_url: str
    redirect_url: str


async def _get_json(url: str, fresh: bool = False) -> dict[str, Any]:
    cached = _cache.get(url)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.get(url)
            response.raise_for_status()
            document = response.json()
    except (httpx.HTTPError, ValueError):
        raise ServiceUnavailable("The sign-in provider is not answering; try again shortly.") from None
    _cache[url] = (time.monotonic(), document)
    return document


async def _discovery(client: Client) -> dict[str, Any]:
    document = await _get_json(client.discovery_url)
    if not all(
        isinstance(document.get(k), str) for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    ):
        raise ServiceUnavailable("The sign-in provider's discovery document is incomplete.")
    return document


async def authorization_url(client: Client, state: str, nonce: str, code_challenge: str) -> str:
    """Where to send the browser: the provider's consent page, coming back to our redirect URL with a code."""
    discovery = await _discovery(client)
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_url,
        "scope": "openid email profile",
        "state": state,
        "nonce": nonce,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    return f"{discovery['authorization_endpoint']}?{urllib.parse.urlencode(query)}"


async def _exchange(client: Client, discovery: dict[str, Any], code: str, code_verifier: str) -> str:
    """The ID token for an authorization code; a refused code is bad credentials, an outage a 503."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_url,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "code_verifier": code_verifier,
    }
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.post(discovery["token_endpoint"], data=form)
    except httpx.HTTPError:
        raise ServiceUnavailable("The sign-in provider is not answering; try again shortly.") from None
    if response.status_code >= 500:
        raise ServiceUnavailable("The sign-in provider is not answering; try again shortly.")
    try:
        id_token = response.json()["id_token"] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        id_token = None
    if not isinstance(id_token, str):
        raise InvalidCredentials("The sign-in provider refused the authorization code.")
    return id_token


async def _signing_key(discovery: dict[str, Any], token: str) -> Any:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise InvalidCredentials("The ID token is malformed.") from None
    for fresh in (False, True):
        document = await _get_json(discovery["jwks_uri"], fresh=fresh)
        try:
            keys = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError:
            raise ServiceUnavailable("The sign-in provider's keys are unusable.") from None
        for key in keys.keys:
            if key.key_id == kid:
                return key.key
    raise InvalidCredentials("The ID token is not signed by the provider's keys.")


async def verified_identity(client: Client, code: str, code_verifier: str, nonce: str) -> dict[str, Any]:
    """Exchange the code and return the ID token's claims once its signature (the provider's JWKS), issuer,
    audience and authorized party, expiry, nonce and verified e-mail are checked."""
    discovery = await _discovery(client)
    token = await _exchange(client, discovery, code, code_verifier)
    key = await _signing_key(discovery, token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=client.client_id,
            issuer=discovery["issuer"],
            options={"require": ["iss", "aud", "sub", "exp", "iat", "nonce"]},
            leeway=30,
        )
    except jwt.PyJWTError as error:
        raise InvalidCredentials(f"The ID token is not valid: {error}.") from None
    # PyJWT compares int(exp): "9999999999" would pass as a time.
    if any(type(claims[name]) not in (int, float) for name in ("exp", "iat")):
        raise InvalidCredentials("The ID token's exp and iat must be numbers.")
    # OpenID Connect Core 3.1.3.7: with several audiences the party it was issued to (azp) must be us, and so must
    # an azp given with one.
    several = isinstance(claims["aud"], list) and len(claims["aud"]) > 1
    if (several or "azp" in claims) and claims.get("azp") != client.client_id:
        raise InvalidCredentials("The ID token was issued to another party (azp).")
    if not hmac.compare_digest(str(claims["nonce"]), nonce):
        raise InvalidCredentials("The ID token was not issued for this sign-in (nonce).")
    if claims.get("email_verified") not in (True, "true") or not isinstance(claims.get("email"), str):
        raise InvalidCredentials("The Google account has no verified e-mail address.")
    if not isinstance(claims["sub"], str) or not 1 <= len(claims["sub"]) <= 255:
        raise InvalidCredentials("The ID token's subject is not usable.")
    try:  # normalised as registration does, so the same address compares equal
        claims["email"] = validate_email(claims["email"], check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidCredentials("The Google account's e-mail address is not usable.") from None
    return claims
