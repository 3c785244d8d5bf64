"""Backup and restore of the whole database with pg_dump -Fc / pg_restore of the database server's major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from settings import StartupError
from wallet.platform.db import libpq_url
from wallet.platform.embedded import embedded_bin


def _major(tool: Path) -> int | None:
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(found.group(1)) if found else None


def find_tool(name: str, server_major: int) -> Path:
    """pg_dump or pg_restore for a server of this major version: the same major (Debian's postgresql-client-N, the
    one on PATH, the wheel's), else the wheel's when newer (the tools read and write older servers)."""
    candidates = [Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")]
    if on_path := shutil.which(name):
        candidates.append(Path(on_path))
    wheel = embedded_bin()
    if wheel:
        candidates.append(wheel / name)
    majors = {tool: _major(tool) for tool in candidates if tool.is_file()}
    for tool, major in majors.items():
        if major == server_major:
            return tool
    if wheel and (majors.get(wheel / name) or 0) > server_major:
        return wheel / name
    raise StartupError(f"no {name} for PostgreSQL {server_major} found: install postgresql-client-{server_major}")


def _connect(database_url: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(libpq_url(database_url), connect_timeout=10)


def _server_major(database_url: str) -> int:
    with _connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version_num")
        return int(cur.fetchone()[0]) // 10000


def _run(tool: Path, args: list[str], database_url: str) -> None:
    # The password goes in the environment, not on a command line every local user can read.
    url = make_url(libpq_url(database_url))
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    dsn = url.set(password=None).render_as_string(hide_password=False)
    done = subprocess.run([str(tool), *args, "--dbname", dsn], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise StartupError(f"{tool.name} failed: {first}")


def backup(database_url: str, file: Path) -> str:
    """Dump the database into FILE (custom format; written whole or not at all, readable by its owner alone whatever
    the umask: it holds password hashes, e-mail addresses and webhook secrets); returns the tool used."""
    tool = find_tool("pg_dump", _server_major(database_url))
    draft = file.with_name(f".{file.name}.partial")
    try:
        # Made 0600 before pg_dump writes a byte (it truncates the file and keeps its mode), so no moment exposes it.
        os.close(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        draft.chmod(0o600)  # a leftover draft keeps its old mode through O_CREAT
        _run(tool, ["--format=custom", "--no-owner", "--no-privileges", "--file", str(draft)], database_url)
        draft.replace(file)
    finally:
        draft.unlink(missing_ok=True)
    return str(tool)


def tables_in(database_url: str) -> int:
    with _connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        return int(cur.fetchone()[0])


def readable_by_others(file: Path) -> bool:
    """Whether users other than its owner may read FILE (a backup should be 0600, as `backup` writes it)."""
    return bool(file.stat().st_mode & 0o044)


def restore(database_url: str, file: Path, force: bool) -> str:
    """Load FILE into the database, in one transaction: an empty database, or (force) replacing what is there."""
    if not file.is_file():
        raise StartupError(f"{file} is not a file")
    existing = tables_in(database_url)
    if existing and not force:
        raise StartupError(
            f"the database is not empty ({existing} tables): restore into a new, empty one, or --force to replace it"
        )
    tool = find_tool("pg_restore", _server_major(database_url))
    clean = ["--clean", "--if-exists"] if existing else []
    _run(
        tool,
        ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", *clean, str(file)],
        database_url,
    )
    return str(tool)
