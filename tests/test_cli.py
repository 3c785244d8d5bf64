"""The command line: every start-up failure is one line naming the setting; create-admin follows the registration
rules and asks twice; options work after the subcommand; one-line commands print one line."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from conftest import JWT_SECRET, PASSWORD, ROOT, assert_one_line_naming, checkout_release, unique_name
from sqlalchemy.engine import make_url

from scripts.local_services import free_port, libpq_url, stop, wait_ready

# Settings a test sets itself are never inherited from the environment the suite runs in.
OWN = ("DATABASE_URL", "REDIS_URL", "HOST", "PORT", "PROCESSES", "WALLET_ADMIN_PASSWORD", "METRICS_TOKEN", "VAR_DIR")


def environment(**settings: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in OWN}
    return {**base, "JWT_SECRET": JWT_SECRET, "BCRYPT_ROUNDS": "4", **settings}


def run(*args: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        cwd=ROOT,
        env=environment(**settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_port_in_use_is_one_line(database_url):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert_one_line_naming(run("serve", DATABASE_URL=database_url, PORT=port), "PORT")


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.7"])
def test_bad_host_is_one_line(database_url, host):
    assert_one_line_naming(run("--port", "0", DATABASE_URL=database_url, HOST=host), "HOST")


def test_database_unreachable_or_missing_is_one_line(database_url):
    unreachable = f"postgresql://wallet:hunter2@127.0.0.1:{free_port()}/wallet"
    done = run("serve", DATABASE_URL=unreachable, PORT="0")
    assert_one_line_naming(done, "DATABASE_URL")
    missing = make_url(database_url).set(database="no_such_database").render_as_string(hide_password=False)
    for command in (["serve", "--port", "0"], ["migrate"], ["audit"], ["backup", "/nonexistent/x.dump"]):
        done = run(*command, DATABASE_URL=missing)
        assert_one_line_naming(done, "DATABASE_URL")
        assert "no_such_database" in done.stderr and "does not exist" in done.stderr


def test_redis_refusing_the_credentials_is_one_line(database_url, redis_url):
    """A Redis that refuses us is a setting to fix: one line, no start. (One that does not answer is an outage the
    server starts through: tests/test_outages.py.)"""
    wrong = make_url(redis_url).set(username="nobody", password="wrong").render_as_string(hide_password=False)
    done = run("serve", DATABASE_URL=database_url, PORT="0", REDIS_URL=wrong)
    assert_one_line_naming(done, "REDIS_URL")
    assert "wrong" not in done.stderr  # the password is not repeated


def test_no_terminal_for_the_admin_password_is_one_line(database_url):
    assert_one_line_naming(
        run("create-admin", unique_name("admin"), DATABASE_URL=database_url), "WALLET_ADMIN_PASSWORD"
    )


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("", PASSWORD, "username"),
        ("x", PASSWORD, "username"),
        ("bad name!", PASSWORD, "username"),
        ("a" * 300, PASSWORD, "username"),
        ("good_name_1", "x", "password"),
        ("good_name_2", "12345678901", "password"),
    ],
)
def test_create_admin_applies_the_registration_rules(database_url, db, username, password, field):
    done = run("create-admin", username, DATABASE_URL=database_url, WALLET_ADMIN_PASSWORD=password)
    assert done.returncode == 1 and done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line and f"{field}:" in line, done.stderr
    assert "SELECT" not in line and "INSERT" not in line and "$2b$" not in line
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE lower(username) = lower(%s)", (username,))
        assert cur.fetchone()[0] == 0


def prompted(database_url: str, username: str, answers: list[str]) -> tuple[int, str]:
    """Run create-admin on a terminal (a pty), answering each password prompt in turn; (exit code, what it printed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: server.py on the pty
        os.chdir(ROOT)
        os.execve(
            sys.executable,
            [sys.executable, "server.py", "create-admin", username],
            environment(DATABASE_URL=database_url),
        )
    out = b""
    answered = 0  # where the output after the last answer starts
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if pending and out[answered:].rstrip().endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
            answered = len(out)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_the_prompt_asks_twice_and_both_must_match(database_url, server):
    username = unique_name("admin")
    code, out = prompted(database_url, username, [PASSWORD, PASSWORD + "x"])
    assert code == 1 and "differ" in out and "again" in out, out  # asked twice, nothing made
    code, out = prompted(database_url, username, [PASSWORD, PASSWORD])
    assert code == 0 and f"admin {username}" in out, out
    with httpx.Client(base_url=f"{server.url}/api/v1") as api:
        r = api.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["access_token"]


def test_options_after_the_subcommand(database_url, tmp_path):
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment(DATABASE_URL=database_url),
            stdout=log,
            stderr=log,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_version_names_the_release_and_its_revision():
    version, revision = checkout_release()
    done = run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"wallet-server {version} (revision {revision})\n", "")
    # No git on this machine: the checkout's revision cannot be known, and nothing fails for it.
    done = run("--version", PATH=str(Path(sys.executable).parent))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"wallet-server {version} (revision unknown)\n", "")


@pytest.mark.slow
def test_every_subcommand_has_help():
    for command in ([], ["serve"], ["migrate"], ["create-admin"], ["audit"], ["backup"], ["restore"]):
        done = run(*command, "--help")
        assert done.returncode == 0 and done.stdout.startswith("usage: server.py"), done
    assert "--force" in done.stdout  # restore's


def query(database_url: str, sql: str) -> Any:
    with psycopg2.connect(libpq_url(database_url)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.mark.slow
def test_one_line_commands_print_one_line_on_the_embedded_database(var_dir):
    """No INFO chatter of the embedded PostgreSQL or Alembic, no XDG_RUNTIME_DIR warning; the database is kept."""
    env = {"VAR_DIR": str(var_dir), "XDG_RUNTIME_DIR": ""}
    for command, line in ((["migrate"], "migrated to head"), (["audit"], "ledger audit: OK")):
        done = run(*command, **env)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        assert done.stdout.splitlines()[0] == line
    done = run("create-admin", "root", WALLET_ADMIN_PASSWORD=PASSWORD, **env)
    assert (done.returncode, done.stderr) == (0, "") and len(done.stdout.splitlines()) == 1
    assert (var_dir / "pgdata" / "log").is_file()  # PostgreSQL's own log, where the README says


def test_the_audit_command_waits_past_the_statement_timeout(database_url):
    """The audit's statements take as long as the ledger is big (a minute at ten million entries): `server.py
    audit` is not cut off at DB_STATEMENT_TIMEOUT, which bounds a request's. A lock held 3 s stands in for that."""
    locker, watcher = psycopg2.connect(libpq_url(database_url)), psycopg2.connect(libpq_url(database_url))
    watcher.autocommit = True  # pg_stat_activity afresh on each read, not as the transaction first saw it
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    try:
        with locker.cursor() as cur, watcher.cursor() as watch:
            cur.execute("LOCK TABLE wallets IN ACCESS EXCLUSIVE MODE")
            audit = subprocess.Popen(
                [sys.executable, str(ROOT / "server.py"), "audit"],
                cwd=ROOT,
                env=environment(DATABASE_URL=database_url, DB_STATEMENT_TIMEOUT="1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 60
            while watch.execute(waiting) or watch.fetchone()[0] == 0:
                assert time.monotonic() < deadline and audit.poll() is None, audit.poll()
                time.sleep(0.1)
            time.sleep(3)  # past the statement timeout (1 s) and the driver's own (a second more)
        locker.commit()
        out, err = audit.communicate(timeout=60)
        assert audit.returncode == 0, out + err
        assert out.splitlines()[0] == "ledger audit: OK"
    finally:
        locker.close()
        watcher.close()
