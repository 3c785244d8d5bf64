"""HTTP conventions around the API: CORS for allowed origins only, the /docs/ redirect, a newline after JSON."""

from __future__ import annotations

import httpx
import pytest
from conftest import assert_error

from handlers.base import client_address
from settings import load_settings

APP = "https://app.example.com"
EXPOSED = {"X-Request-ID", "Idempotent-Replayed", "Retry-After", "ETag"}
ALLOWED_HEADERS = {"Authorization", "Content-Type", "Idempotency-Key", "X-API-Key", "X-Request-ID"}


def names(header: str) -> set[str]:
    return {part.strip() for part in header.split(",")}


@pytest.fixture(scope="module")
def cors_server(module_server):
    return module_server(CORS_ORIGINS=f"{APP}, http://localhost:5173")


def preflight(server, path: str, origin: str, method: str = "POST") -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    return httpx.options(f"{server.url}{path}", headers=headers)


def test_preflight_from_an_allowed_origin(cors_server, user):
    r = preflight(cors_server, f"/api/v1/wallets/{user.wallet_id}/deposit", APP)
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert names(r.headers["Access-Control-Allow-Methods"]) == {"POST", "OPTIONS"}
    assert names(r.headers["Access-Control-Allow-Headers"]) == ALLOWED_HEADERS
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    assert r.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in r.headers
    # The actual request then carries the origin and exposes the headers a client reads.
    deposit = httpx.post(
        f"{cors_server.url}/api/v1/wallets/{user.wallet_id}/deposit",
        json={"amount": "1.00"},
        headers={**user.headers, "Origin": APP, "Idempotency-Key": "cors-1"},
    )
    assert deposit.status_code == 201, deposit.text
    assert deposit.headers["Access-Control-Allow-Origin"] == APP
    assert names(deposit.headers["Access-Control-Expose-Headers"]) == EXPOSED
    # An error answer is readable by the page too.
    refused = httpx.get(f"{cors_server.url}/api/v1/users/me", headers={"Origin": APP})
    assert_error(refused, 401, "AUTHENTICATION_REQUIRED")
    assert refused.headers["Access-Control-Allow-Origin"] == APP


def test_a_disallowed_origin_gets_no_cors_headers(cors_server):
    for origin in ("https://evil.example.com", "https://app.example.com.evil.com", "null", APP + "/"):
        r = preflight(cors_server, "/api/v1/auth/login", origin)
        assert r.status_code == 204
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], (origin, r.headers)
        r = httpx.post(f"{cors_server.url}/api/v1/auth/login", json={}, headers={"Origin": origin})
        assert r.status_code == 400
        assert "Access-Control-Allow-Origin" not in r.headers


def test_without_cors_origins_nobody_is_allowed(server):
    r = preflight(server, "/api/v1/auth/login", APP)
    assert r.status_code == 204
    assert r.headers["Allow"] == "POST, OPTIONS"
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Vary" not in r.headers


def test_options_on_an_unknown_path_is_404(cors_server):
    assert_error(preflight(cors_server, "/api/v1/nope", APP), 404, "NOT_FOUND")


def test_docs_slash_leads_to_the_docs(server):
    r = httpx.get(f"{server.url}/docs/", follow_redirects=True)
    assert r.status_code == 200
    assert str(r.url) == f"{server.url}/docs"
    assert "<title>Wallet API - Swagger UI</title>" in r.text


@pytest.mark.parametrize("path", ["/", "/web/js/app.js", "/docs", "/docs/", "/docs/swagger-ui.css", "/openapi.json"])
def test_writing_to_a_page_or_a_file_is_the_api_s_405(server, path):
    """The web wallet's files, the docs and their assets answer a write like the API does: its JSON error shape
    and the methods that would work, never an HTML error page."""
    r = httpx.post(f"{server.url}{path}", content=b"x")
    body = assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert set(body) == {"error", "code"} and r.headers["X-Request-ID"]
    assert "GET" in names(r.headers["Allow"]) and "POST" not in names(r.headers["Allow"])


def test_json_answers_end_with_a_newline(server, user):
    with server.client(user.token) as client:
        for r in (client.get("/users/me"), client.get("/nope"), client.post("/transfers", json={})):
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.content.endswith(b"}\n"), r.content[-20:]
    assert httpx.get(f"{server.url}/openapi.json").content.endswith(b"}\n")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),  # the proxy says who connected to it
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client prepended is not believed
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", "198.51.100.1"),  # proxies in a chain are skipped
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", "10.0.0.4"),  # all trusted: the farthest one
        ("10.0.0.2", "198.51.100.1, not-an-ip", "10.0.0.2"),  # garbage ends the walk at the last trusted hop
        ("10.0.0.2", "", "10.0.0.2"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_the_client_address_is_the_rightmost_untrusted_hop(peer, forwarded_for, client):
    trusted = load_settings({"JWT_SECRET": "x" * 32, "TRUSTED_PROXIES": "10.0.0.0/24, ::1"}).trusted_proxies
    assert client_address(peer, forwarded_for, trusted) == client
