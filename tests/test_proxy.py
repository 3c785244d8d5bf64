"""deploy/nginx.conf really in front: Debian's nginx terminates TLS (a certificate made here) for a server with two
worker processes and Redis; X-Forwarded-For is believed only from the proxy, so login throttling and the request
log see each real client, and a header a client forged is ignored; the event stream's WebSocket passes through, and
the access log holds no query string."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, assert_error, fund, make_user, unique_name, wait_for
from nginx import SKIP, Proxy
from test_event_stream import pay
from tornado import httpclient, websocket

pytestmark = pytest.mark.skipif(**SKIP)


@pytest.fixture(scope="module")
def backend(module_server):
    """Two workers and Redis, trusting only the proxy's address; three failed logins per address are allowed."""
    return module_server(
        PROCESSES="2",
        TRUSTED_PROXIES="127.0.0.1",
        LOGIN_IP_MAX_FAILURES="3",
        LOGIN_MAX_FAILURES="1000",
        LOG_LEVEL="INFO",
        REDIS_PREFIX=f"wallet-proxy-{uuid.uuid4().hex[:8]}:",
    )


@pytest.fixture(scope="module")
def proxy(backend, tmp_path_factory):
    proxy = Proxy(tmp_path_factory.mktemp("nginx"), backend.port)
    yield proxy
    proxy.stop()


def test_register_login_and_deposit_over_https_through_the_proxy(backend, proxy):
    workers = Path(f"/proc/{backend.proc.pid}/task/{backend.proc.pid}/children")
    if workers.exists():
        assert len(workers.read_text().split()) == 2
    username = unique_name("tls")
    with proxy.client("127.0.0.1") as client:
        registered = client.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        assert registered.headers["Strict-Transport-Security"].startswith("max-age=")
        assert registered.http_version == "HTTP/1.1" and registered.url.scheme == "https"
        wallet = registered.json()["wallet"]["id"]
        login = client.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for _ in range(2):  # the replay may land on the other worker: the answer is the same, the money moved once
            deposit = client.post(
                f"/wallets/{wallet}/deposit", json={"amount": "25.00"}, headers={"Idempotency-Key": "tls-1"}
            )
            assert deposit.status_code == 201, deposit.text
        assert deposit.headers["Idempotent-Replayed"] == "true"
        assert client.get(f"/wallets/{wallet}/balance").json()["balance"] == "25.00"
    plain = httpx.get(f"http://127.0.0.1:{proxy.http_port}/api/v1/wallets", follow_redirects=False)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def failed_login(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post(
        "/auth/login", json={"username": unique_name("nobody"), "password": "wrong-pass-1"}, headers=headers
    )


def test_throttling_and_the_request_log_see_the_real_client(backend, proxy):
    with proxy.client("127.0.0.3") as first, proxy.client("127.0.0.4") as second:
        # A client forging X-Forwarded-For gains nothing: nginx appends its real address, and that is what counts.
        for forged in ("198.51.100.1", "198.51.100.2", "127.0.0.4"):
            assert_error(failed_login(first, **{"X-Forwarded-For": forged}), 401, "INVALID_CREDENTIALS")
        assert_error(failed_login(first), 429, "RATE_LIMITED")
        # Another client behind the same proxy is counted on its own.
        assert_error(failed_login(second), 401, "INVALID_CREDENTIALS")

    # Straight to the server from an address that is not a trusted proxy: the header is not believed.
    direct = httpx.Client(
        base_url=f"{backend.url}/api/v1", transport=httpx.HTTPTransport(local_address="127.0.0.5"), timeout=30
    )
    with direct:
        for _ in range(3):
            assert_error(failed_login(direct, **{"X-Forwarded-For": "127.0.0.6"}), 401, "INVALID_CREDENTIALS")
        assert_error(failed_login(direct, **{"X-Forwarded-For": "127.0.0.7"}), 429, "RATE_LIMITED")
    with proxy.client("127.0.0.6") as spoofed_victim:
        assert_error(failed_login(spoofed_victim), 401, "INVALID_CREDENTIALS")

    expected = {
        ("127.0.0.3", "https", 401),
        ("127.0.0.3", "https", 429),
        ("127.0.0.4", "https", 401),
        ("127.0.0.5", "http", 401),
        ("127.0.0.5", "http", 429),
        ("127.0.0.6", "https", 401),
    }
    # The server writes a request's log line after the answer has left, so the last one may still be on its way.
    deadline = time.monotonic() + 5
    while True:
        logins = [
            line
            for line in map(json.loads, backend.log_path.read_text().splitlines())
            if line.get("msg") == "request" and line.get("path") == "/api/v1/auth/login" and line["status"] != 200
        ]
        seen = {(line["remote_ip"], line["scheme"], line["status"]) for line in logins}
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == expected


def test_the_event_stream_passes_through_and_its_token_is_not_logged(backend, proxy):
    alice, bob = make_user(backend), make_user(backend)
    fund(backend, alice, "5.00")
    stream = f"wss://localhost:{proxy.https_port}/api/v1/events/stream"

    async def scenario():
        # The way to send the token (a subprotocol), and the deprecated one (the query string), side by side.
        by_protocol = await websocket.websocket_connect(
            httpclient.HTTPRequest(stream, ssl_options=proxy.tls()), subprotocols=["bearer", bob.token]
        )
        by_query = await websocket.websocket_connect(
            httpclient.HTTPRequest(f"{stream}?after=0&access_token={bob.token}", ssl_options=proxy.tls())
        )
        sent = await asyncio.to_thread(pay, backend, alice, bob)
        events = [json.loads(await asyncio.wait_for(conn.read_message(), 10)) for conn in (by_protocol, by_query)]
        for conn in (by_protocol, by_query):
            conn.close()
        return sent, events

    sent, events = asyncio.run(scenario())
    assert [(event["type"], event["data"]["id"]) for event in events] == [("transfer.received", sent["id"])] * 2
    # nginx writes a stream's line when it ends: the path, without the query string.
    access_log = proxy.home / "access.log"
    wait_for(lambda: access_log.read_text().count('"GET /api/v1/events/stream HTTP/1.1" 101') == 2)
    assert bob.token not in access_log.read_text() and "access_token" not in access_log.read_text()
