"""deploy/nginx.conf run by Debian's nginx for a test: its own ports, a certificate made here, the server's port."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import free_port

from scripts.local_services import nginx_config, self_signed_certificate, stop

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
SKIP = dict(
    condition=not NGINX or not shutil.which("openssl"),
    reason="needs Debian's nginx and the openssl CLI (apt-get install -y nginx; .ci/run installs it)",
)


def back_in_rotation(fail_timeout: int) -> int:
    """Seconds to wait once a restarted upstream host is back before stopping the next (docs/operations.md#upgrades):
    nginx's fail_timeout, a second for its clock (whole seconds: a host refused at :48.9 is tried again from :59.0),
    and two for the one request each nginx worker then sends to try it, the host counted out until it is answered. A
    CI run that waited the timeout alone had a worker's try under way as the other host stopped: "no live
    upstreams", two 502s."""
    return fail_timeout + 3


class Proxy:
    """nginx with deploy/nginx.conf rendered for this machine: its ports, the server's port, files under `home`."""

    def __init__(self, home: Path, *upstream_ports: int) -> None:
        self.home = home
        self.https_port, self.http_port = free_port(), free_port()
        self_signed_certificate(home)
        config = nginx_config(home, [f"127.0.0.1:{port}" for port in upstream_ports], self.https_port, self.http_port)
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

    def tls(self) -> ssl.SSLContext:
        """A client's TLS context that trusts this proxy's certificate."""
        return ssl.create_default_context(cafile=str(self.home / "cert.pem"))

    def client(self, source: str = "127.0.0.1", **options: Any) -> httpx.Client:
        """An HTTPS client that connects from `source` (any 127.0.0.0/8 address is this machine's)."""
        transport = httpx.HTTPTransport(verify=self.tls(), local_address=source, **options)
        return httpx.Client(base_url=f"https://localhost:{self.https_port}/api/v1", transport=transport, timeout=30)

    def stop(self) -> None:
        stop(self.proc, timeout=10)
