"""Upgrades (docs/operations.md#upgrades): `migrate --check` says where the database stands, MIGRATE_ON_START=false
serves only a database migrated for it, and a migration waits for a busy table only so long."""

from __future__ import annotations

import contextlib
import time

import psycopg2
from alembic import command
from alembic.script import ScriptDirectory
from conftest import Server, assert_one_line_naming
from test_cli import query, run

from scripts.local_services import fresh_database, libpq_url
from wallet.platform.db import MIGRATION_LOCK_TIMEOUT, MIGRATIONS, alembic_config

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def execute(database_url: str, sql: str) -> None:
    with contextlib.closing(psycopg2.connect(libpq_url(database_url))) as conn, conn, conn.cursor() as cur:
        cur.execute(sql)


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


def test_a_migration_waits_for_a_busy_table_only_so_long(postgres_server_url):
    with fresh_database(postgres_server_url, migrated=False) as url:
        before = ScriptDirectory(str(MIGRATIONS)).get_revision(HEAD).down_revision
        command.upgrade(alembic_config(url), before)
        # A long transaction has read every table the last migration alters: it has to wait for that one to end.
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
