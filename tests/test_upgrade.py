"""Upgrades (docs/operations.md#upgrades): `migrate --check` says where the database stands, MIGRATE_ON_START=false
serves only a database migrated for it, a migration waits for a busy table only so long, and a rolling upgrade of two
process sets behind the real nginx fails no request."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import psycopg2
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from conftest import Server, assert_one_line_naming, balance, fund, make_user, wait_for
from nginx import NGINX, Proxy, back_in_rotation
from test_cli import query, run

from scripts.local_services import fresh_database, libpq_url, stop
from wallet.platform.db import MIGRATION_LOCK_TIMEOUT, MIGRATIONS, alembic_config

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
# How long nginx sets aside an upstream server that refused a connection (its fail_timeout, the default).
NGINX_FAIL_TIMEOUT = 10


def execute(database_url: str, sql: str) -> None:
    with contextlib.closing(psycopg2.connect(libpq_url(database_url))) as conn, conn, conn.cursor() as cur:
        cur.execute(sql)


@pytest.mark.slow
def test_migrate_check_and_migrate_on_start(postgres_server_url, server_env, tmp_path):
    with fresh_database(postgres_server_url, migrated=False) as url:
        check = run("migrate", "--check", DATABASE_URL=url)
        assert (check.returncode, check.stdout.count("\n")) == (1, 1) and "behind" in check.stdout, check
        # Without MIGRATE_ON_START the server will not change the schema, nor serve one older than it needs.
        refused = run("serve", "--port", "0", DATABASE_URL=url, MIGRATE_ON_START="false")
        assert_one_line_naming(refused, "MIGRATE_ON_START")
        assert "behind" in refused.stderr and "wallet-server migrate" in refused.stderr
        assert query(url, "SELECT to_regclass('alembic_version')") is None

        assert run("migrate", DATABASE_URL=url).returncode == 0
        check = run("migrate", "--check", DATABASE_URL=url)
        assert (check.returncode, check.stdout) == (0, f"the database is at this release's head ({HEAD})\n")

        # A newer release migrated it: this one changes nothing, says so, and still serves it (as the hosts not yet
        # replaced do during a rolling upgrade, or a release rolled back to).
        execute(url, "UPDATE alembic_version SET version_num = '9999_a_newer_release'")
        check = run("migrate", "--check", DATABASE_URL=url)
        assert (check.returncode, check.stdout.count("\n")) == (1, 1) and "ahead" in check.stdout, check
        refused = run("migrate", DATABASE_URL=url)
        assert_one_line_naming(refused, "9999_a_newer_release")
        assert "nothing was changed" in refused.stderr
        server = Server({**server_env, "DATABASE_URL": url}, tmp_path / "server.log").start()
        try:
            warned = [e for e in server.log_entries() if e["msg"] == "serving a database a newer release migrated"]
            assert [(e["schema_revision"], e["head"]) for e in warned] == [("9999_a_newer_release", HEAD)]
        finally:
            server.stop()
        assert query(url, "SELECT version_num FROM alembic_version") == "9999_a_newer_release"

        # That release contracted the schema (dropped what this one reads): this one refuses to serve it.
        execute(url, "UPDATE schema_policy SET oldest_code = '9999_a_newer_release'")
        check = run("migrate", "--check", DATABASE_URL=url)
        assert check.returncode == 1 and "serves no release before 9999_a_newer_release" in check.stdout, check
        refused = run("serve", "--port", "0", DATABASE_URL=url)
        assert_one_line_naming(refused, "9999_a_newer_release")
        assert "deploy that release or a later one" in refused.stderr


ALTERS = "0019_delivery_lanes"


def test_a_migration_waits_for_a_busy_table_only_so_long(postgres_server_url):
    with fresh_database(postgres_server_url, migrated=False) as url:
        # The last migration that alters tables (0020_instances only creates one, which waits for no reader).
        before = ScriptDirectory(str(MIGRATIONS)).get_revision(ALTERS).down_revision
        command.upgrade(alembic_config(url), before)
        # A long transaction has read every table that migration alters: it has to wait for that one to end.
        reader = psycopg2.connect(libpq_url(url))
        try:
            tables = query(url, "SELECT string_agg(tablename, ', ') FROM pg_tables WHERE schemaname = 'public'")
            reader.cursor().execute(f"LOCK TABLE {tables} IN ACCESS SHARE MODE")
            started = time.monotonic()
            done = run("migrate", DATABASE_URL=url)
            waited = time.monotonic() - started
            assert_one_line_naming(done, "lock_timeout")
            assert waited < MIGRATION_LOCK_TIMEOUT + 30  # not until the reader ends
            check = run("migrate", "--check", DATABASE_URL=url)
            assert check.returncode == 1 and f"at {before}," in check.stdout, check  # undone
        finally:
            reader.close()
        assert run("migrate", DATABASE_URL=url).returncode == 0


class Load:
    """Clients sending transfers and balance reads through the proxy, a pair every PACE seconds each, until stopped (or
    a bound is reached); each outcome kept: the status answered, or the error of a request that got none."""

    PACE = 0.05

    def __init__(self, proxy: Proxy, users: list[Any]) -> None:
        self.proxy, self.users = proxy, users
        self.outcomes: list[tuple[str, str, int | str]] = []  # (method, path, status or the error)
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(len(users))]
        for thread in self.threads:
            thread.start()

    def client(self, number: int) -> None:
        payer, payee = self.users[number], self.users[(number + 1) % len(self.users)]
        deadline = time.monotonic() + 300
        with self.proxy.client("127.0.0.1") as client:
            client.headers["Authorization"] = f"Bearer {payer.token}"
            while not self.done.wait(self.PACE) and time.monotonic() < deadline and len(self.outcomes) < 20_000:
                key = f"rolling-{uuid.uuid4().hex}"
                body = {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "0.01"}
                self.send(client, "POST", "/transfers", json=body, headers={"Idempotency-Key": key})
                self.send(client, "GET", f"/wallets/{payer.wallet_id}/balance")

    def send(self, client: httpx.Client, method: str, path: str, **options: Any) -> None:
        try:
            outcome: int | str = client.request(method, path, **options).status_code
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        self.outcomes.append((method, path, outcome))

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(60)


def proxied_to(server: Server) -> bool:
    """The server has answered one of the load's requests (not only the probes of its start)."""
    return any(e["msg"] == "request" and e["path"].startswith("/api/v1/") for e in server.log_entries())


@pytest.mark.slow
@pytest.mark.skipif(not NGINX, reason="needs Debian's nginx (apt-get install -y nginx; .ci/run installs it)")
@pytest.mark.usefixtures("ledger_audited")
def test_a_rolling_upgrade_behind_nginx_fails_no_request(own_server, database_url, tmp_path):
    # Two hosts' process sets on one database; the release being replaced is this same tree, started as a host of
    # several is (MIGRATE_ON_START=false). The proxy is deploy/nginx.conf with both in its upstream.
    # DRAIN_DELAY as deployed (the tests' 0 closes idle connections at the SIGTERM, and a POST nginx sent on one at
    # that instant was answered 502): above nginx's keepalive_timeout, so nginx has dropped them all by then.
    host = {"PROCESSES": "2", "MIGRATE_ON_START": "false", "DB_POOL_SIZE": "4", "LOG_LEVEL": "INFO", "DRAIN_DELAY": "5"}
    old = [own_server(**host), own_server(**host)]
    (tmp_path / "nginx").mkdir()
    proxy = Proxy(tmp_path / "nginx", *(server.port for server in old))
    users = [make_user(old[0]) for _ in range(4)]
    for user in users:
        fund(old[0], user, "100.00")
    load = Load(proxy, users)
    try:
        wait_for(lambda: len(load.outcomes) >= 20, timeout=60)
        # 1. The new release's migrations first, the expand step (here already applied): the old hosts run on it.
        assert run("migrate", DATABASE_URL=database_url).stdout == "migrated to head\n"
        # 2. One host at a time: stop it (SIGTERM), start the new release in its place, see the proxy send it requests,
        # and let nginx's fail_timeout pass before the next: each nginx worker that was refused a connection by the
        # stopped host set it aside that long, and with every host set aside it would answer 502 to everything.
        back = 0.0
        for replaced in old:
            time.sleep(max(0.0, back + back_in_rotation(NGINX_FAIL_TIMEOUT) - time.monotonic()))  # nothing to poll
            stop(replaced.proc, timeout=60)
            new = own_server(port=replaced.port, **host)
            back = time.monotonic()  # its port refuses no connection from here on
            wait_for(functools.partial(proxied_to, new), timeout=60)
        sent = len(load.outcomes)
        wait_for(lambda: len(load.outcomes) >= sent + 20, timeout=60)
    finally:
        load.stop()
        stop(proxy.proc, timeout=10)

    failed = [outcome for outcome in load.outcomes if outcome[2] not in (200, 201)]
    transfers = [outcome for outcome in load.outcomes if outcome[0] == "POST"]
    figures = f"{len(load.outcomes)} requests ({len(transfers)} transfers), {len(failed)} failed: {failed[:10]}"
    # What nginx said of its upstreams on the way (the refusals it passed on to the other host among them).
    said = [line for line in (tmp_path / "nginx" / "error.log").read_text().splitlines() if "[error]" in line]
    assert not failed, f"{figures}; nginx's errors: {said[-10:]}"
    # No money was made or lost on the way: what the users hold together is what they were given.
    assert sum(Decimal(balance(new, user)) for user in users) == Decimal("400.00")
