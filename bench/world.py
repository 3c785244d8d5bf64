"""The bench's world: a fresh, migrated and seeded database for one source tree, the server of that tree in a
subprocess, the rows the bench prints and the ledger audit at the end."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.large import grow
from bench.seed import seed
from scripts.local_services import PgBouncer, free_port, fresh_database, stop, wait_ready
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WALLETS = 1000
ACCESS_TOKEN_TTL = 7200  # the seeded tokens must outlive the whole run


@dataclass
class Row:
    scenario: str
    processes: str
    connections: int
    rps: float
    p50: float  # milliseconds
    p99: float
    max: float
    answers: dict[str, int]
    note: str = ""
    server_cpu: float | None = None  # CPU milliseconds per answered request: the server's processes
    db_cpu: float | None = None  # and the database backends serving them
    rss: list[float] | None = None  # MiB resident at the scenario's end, per server process (the supervisor first)


@dataclass
class World:
    tree: Path  # the source tree whose server, migrations and bench/transfer.sql run (ROOT, or --against's)
    database_url: str
    env: dict[str, str]  # the server's environment (production mode)
    users_file: Path
    users: list[list[str]]  # token, wallet id, username
    merchant_wallet: str
    merchant_token: str
    workdir: Path
    log: IO[bytes]


@contextmanager
def world(
    tree: Path, server_url: str, redis_url: str, workdir: Path, size: tuple[int, int] | None = None
) -> Iterator[World]:
    """A fresh database on `server_url` migrated by `tree`'s own migrations and seeded (the small world, or with
    `size` the large world of that many wallets and entries: bench/large.py); dropped afterwards."""
    secret = secrets.token_urlsafe(48)
    settings = Settings(jwt_secret=secret, access_token_ttl=ACCESS_TOKEN_TTL)  # production defaults (bcrypt cost 12)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"wallet-bench-{secrets.token_hex(4)}:",
        "JWT_SECRET": secret,
        "ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL),
        "LOG_LEVEL": "WARNING",
        # A bench server is stopped once its scenarios are measured and answered, with no balancer to drain from:
        # the default DRAIN_DELAY's 5 s at each stop would only lengthen the run.
        "DRAIN_DELAY": "0",
    }
    for name in ("BCRYPT_ROUNDS", "DAILY_TRANSFER_LIMIT", "PROCESSES", "DB_POOL_SIZE"):
        env.pop(name, None)  # production defaults, whatever the calling shell has set
    with ExitStack() as stack:
        env["DATABASE_URL"] = database_url = stack.enter_context(fresh_database(server_url, migrated=False))
        done = subprocess.run([sys.executable, "server.py", "migrate"], cwd=tree, env=env, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: server.py migrate failed:\n{done.stdout.decode()}{done.stderr.decode()}")
        if size:
            users_file, merchant, token = grow(database_url, settings, *size, WALLETS, workdir)
        else:
            users_file, merchant, token = seed(database_url, settings, WALLETS, workdir)
        log = stack.enter_context(open(ROOT / "var" / "bench-server.log", "ab"))
        users = [line.split("\t") for line in users_file.read_text().splitlines()]
        yield World(tree, database_url, env, users_file, users, merchant, token, workdir, log)


@contextmanager
def pooled(world: World) -> Iterator[dict[str, str]]:
    """A PgBouncer in transaction mode in front of the world's database, and the settings of a server that reaches
    the database through it (docs/operations.md#pgbouncer): the session settings come from the pooler, the jobs'
    leader locks go around it."""
    defaults = Settings()
    timeout = defaults.db_statement_timeout * 1000
    session = f"SET statement_timeout = {timeout}; SET client_connection_check_interval = 500"
    home = Path(tempfile.mkdtemp(prefix="wallet-pgbouncer-"))  # pgbouncer may run as another user: not in workdir
    bouncer = PgBouncer(home, world.database_url, session, pool_size=defaults.db_pool_size)
    try:
        yield {
            "DATABASE_URL": bouncer.url,
            "DB_POOLER": "transaction",
            "DATABASE_SESSION_URL": world.database_url,
            "MIGRATE_ON_START": "false",
        }
    finally:
        bouncer.stop()
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def serving(world: World, processes: int, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python server.py --processes N` of the world's tree (with `env` over its settings), ready; stopped with
    SIGTERM as `make stop` does."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--processes", str(processes)],
        cwd=world.tree,
        env={**world.env, **env, "PORT": str(port)},
        stdout=world.log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; see {world.log.name}") from None
        yield url, proc
    finally:
        stop(proc)


def audit(world: World) -> str:
    done = subprocess.run(
        [sys.executable, "server.py", "audit"],
        cwd=world.tree,
        env=world.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return f"server.py audit: exit {done.returncode}: " + " | ".join(done.stdout.strip().splitlines()[:3])
