"""deploy/nginx.conf really in front: Debian's nginx terminates TLS (a certificate made here) for a server with two
worker processes and Redis; X-Forwarded-For is believed only from the proxy, so login throttling and the request
log see each real client, and a header a client forged is ignored."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, ROOT, assert_error, free_port, unique_name

from scripts.local_services import stop

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    not NGINX or not shutil.which("openssl"),
    reason="needs Debian's nginx and the openssl CLI (apt-get install -y nginx; .ci/run installs it)",
)


class Proxy:
    """nginx with deploy/nginx.conf rendered for this machine: its ports, the server's port, files under `home`."""

    def __init__(self, home: Path, *upstream_ports: int) -> None:
        self.home = home
        self.https_port, self.http_port = free_port(), free_port()
        certificate = "-x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost"
        subprocess.run(
            [
                *("openssl", "req", *certificate.split(), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                *("-keyout", str(home / "key.pem"), "-out", str(home / "cert.pem")),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        config = (ROOT / "deploy" / "nginx.conf").read_text()
        for shipped, here in {
            "server wallet:8000;": " ".join(f"server 127.0.0.1:{port};" for port in upstream_ports),
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;",
            "/etc/nginx/tls/": f"{home}/",
            "access_log /dev/stdout;": f"access_log {home}/access.log;",
        }.items():
            assert shipped in config, f"deploy/nginx.conf no longer has {shipped!r}: update this test with it"
            config = config.replace(shipped, here)
        (home / "nginx.conf").write_text(config)
        self.proc = subprocess.Popen(
            [
                *(NGINX, "-p", str(home), "-e", str(home / "error.log"), "-c", str(home / "nginx.conf")),
                *("-g", f"daemon off; pid {home}/nginx.pid;"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                break
            except OSError:
                log = (home / "error.log").read_text() if (home / "error.log").exists() else ""
                assert self.proc.poll() is None and time.monotonic() < deadline, f"nginx did not start: {log}"
                time.sleep(0.05)

    def client(self, source: str) -> httpx.Client:
        """An HTTPS client that connects from `source` (any 127.0.0.0/8 address is this machine's)."""
        context = ssl.create_default_context(cafile=str(self.home / "cert.pem"))
        transport = httpx.HTTPTransport(verify=context, local_address=source)
        return httpx.Client(base_url=f"https://localhost:{self.https_port}/api/v1", transport=transport, timeout=30)


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
    stop(proxy.proc, timeout=10)


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
