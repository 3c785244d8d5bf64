"""A local OpenID Connect provider speaking Google's protocol over real HTTP, for tests: discovery, authorize
(redirects back with a code), token (PKCE-checked, an RS256 ID token signed with a key made here) and JWKS.

Tests set who signs in next (`user`), and how the next ID token is spoiled (`claims`, `forge`, `token_status`);
with `consent_page` authorize shows a page whose "Continue" link goes back, instead of redirecting at once.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "wallet-test.apps.example"
CLIENT_SECRET = "test-client-secret"
REDIRECT_URL = "http://app.example/signed-in"


class OidcProvider:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        self.user: dict[str, Any] = {"sub": "1", "email": "someone@example.com"}
        self.claims: dict[str, Any] = {}  # merged into the next ID tokens (None removes a claim)
        self.forge = False  # sign with a key the JWKS does not hold, under the published kid
        self.token_status = 200  # the token endpoint's answer (e.g. 500 for an outage)
        self.consent_page = False
        self.codes: dict[str, dict[str, Any]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OidcProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def reset(self) -> None:
        self.claims, self.forge, self.token_status, self.consent_page = {}, False, 200, False

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": grant["user"]["sub"],
            "email": grant["user"]["email"],
            "email_verified": True,
            "nonce": grant["nonce"],
            "iat": now,
            "exp": now + 3600,
            **self.claims,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if self.forge else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self._json(
                        200,
                        {
                            "issuer": provider.url,
                            "authorization_endpoint": f"{provider.url}/authorize",
                            "token_endpoint": f"{provider.url}/token",
                            "jwks_uri": f"{provider.url}/jwks",
                            "code_challenge_methods_supported": ["S256"],
                        },
                    )
                elif url.path == "/jwks":
                    self._json(200, provider.jwks())
                elif url.path == "/authorize":
                    required = ("client_id", "redirect_uri", "state", "nonce", "code_challenge")
                    if (
                        query.get("response_type") != "code"
                        or query.get("code_challenge_method") != "S256"
                        or "openid" not in query.get("scope", "").split()
                        or not all(query.get(k) for k in required)
                    ):
                        self._json(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {**query, "user": dict(provider.user)}
                    back = urllib.parse.urlencode({"code": code, "state": query["state"], "scope": "openid email"})
                    location = f"{query['redirect_uri']}?{back}"
                    if provider.consent_page:
                        page = f'<!doctype html><title>Consent</title><a href="{html.escape(location)}">Continue</a>'
                        self.send_response(200)
                        self.send_header("Content-Type", "text/html; charset=utf-8")
                        self.send_header("Content-Length", str(len(page.encode())))
                        self.end_headers()
                        self.wfile.write(page.encode())
                        return
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                if provider.token_status != 200:
                    self._json(provider.token_status, {"error": "server_error"})
                    return
                grant = provider.codes.pop(form.get("code", ""), None)  # a code works once
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (
                    grant is None
                    or form.get("grant_type") != "authorization_code"
                    or (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET)
                    or form.get("redirect_uri") != grant["redirect_uri"]
                    or challenge != grant["code_challenge"]
                ):
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, {"access_token": "at", "token_type": "Bearer", "id_token": provider.id_token(grant)})

        return Handler
