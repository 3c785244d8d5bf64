"""`server.py backup FILE` and `restore FILE`: a restored database serves the same balances and history, and audits."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from conftest import JWT_SECRET, ROOT, Server, balance, fund, log_in, make_user, run_audit

from scripts.local_services import fresh_database


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
