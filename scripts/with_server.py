"""Run a command against a live server on a free port and a brand-new database, then stop both.

Usage: .venv/bin/python -m scripts.with_server COMMAND [ARG...]

The database is created on the DATABASE_URL server (and dropped afterwards) or, when DATABASE_URL is unset,
in a throwaway embedded PostgreSQL. The command runs with WALLET_URL (the server's base URL), DATABASE_URL
and JWT_SECRET in its environment; the exit code is the command's.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.local_services import free_port, fresh_database, postgres_server, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent


def main(command: list[str]) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        postgres_server() as server_url,
        fresh_database(server_url) as database_url,
        tempfile.NamedTemporaryFile(prefix="wallet-server-", suffix=".log") as log,
    ):
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
            stop(server, timeout=20)
        if code != 0 or server.returncode not in (0, -signal.SIGTERM):
            print(f"---- server log (exit {server.returncode}) ----", file=sys.stderr)
            print(Path(log.name).read_text()[-20000:], file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
