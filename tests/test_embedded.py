"""The embedded PostgreSQL under VAR_DIR: a server killed with SIGKILL leaves it running, and the next start adopts and
later stops it; `make stop` stops an orphan; a second `make run` refuses and leaves var/server.pid alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import JWT_SECRET, ROOT, Server, log_in, make_user

from scripts.local_services import free_port, wait_ready

OWN = ("DATABASE_URL", "REDIS_URL", "PORT", "PROCESSES", "METRICS_TOKEN", "VAR_DIR")


def postmaster(var_dir: Path) -> int | None:
    """The embedded PostgreSQL's pid while it runs."""
    pid_file = var_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    return pid if Path(f"/proc/{pid}").exists() else None


def wait_stopped(var_dir: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while postmaster(var_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert postmaster(var_dir) is None, "the embedded PostgreSQL is still running"


def environment(var_dir: Path, port: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in OWN}
    return {**base, "VAR_DIR": str(var_dir), "PORT": str(port), "JWT_SECRET": JWT_SECRET, "BCRYPT_ROUNDS": "4"}


@pytest.mark.slow
def test_a_killed_server_leaves_nothing_stuck(var_dir, tmp_path):
    # Empty DATABASE_URL and REDIS_URL count as unset: the embedded PostgreSQL under VAR_DIR.
    env = {
        "VAR_DIR": str(var_dir),
        "JWT_SECRET": JWT_SECRET,
        "BCRYPT_ROUNDS": "4",
        "DATABASE_URL": "",
        "REDIS_URL": "",
    }
    first = Server(env, tmp_path / "first.log").start(timeout=60)
    username = make_user(first).username
    first.kill()
    running = postmaster(var_dir)
    assert running, "SIGKILL leaves the embedded PostgreSQL running"

    second = Server(first.env, tmp_path / "second.log").start(timeout=60)
    assert postmaster(var_dir) == running  # adopted, with its data, and said so
    adopted = [e for e in second.log_entries() if e["msg"].startswith("adopting the embedded postgresql")]
    assert [(e["level"], e["postgres_pid"]) for e in adopted] == [("warning", running)]
    assert not [e for e in first.log_entries() if e["msg"].startswith("adopting")]  # a fresh start adopts nothing
    log_in(second, username)
    second.stop()
    assert second.proc.returncode == 0
    wait_stopped(var_dir)  # the last server out stops it, though the killed one never signed off

    third = Server(first.env, tmp_path / "third.log").start(timeout=60)
    third.kill()
    assert postmaster(var_dir)
    stop = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "stop-embedded"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stderr
    wait_stopped(var_dir)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads process ids from Linux's /proc")
@pytest.mark.slow
def test_a_second_make_run_refuses_and_make_stop_stops_all(var_dir, tmp_path):
    port = free_port()
    env = environment(var_dir, port)
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", run, timeout=90)
        pid_file = var_dir / "server.pid"
        serving = pid_file.read_text()

        second = subprocess.run(
            ["make", "--no-print-directory", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0
        assert second.stderr.splitlines()[0] == f"make run: already running (pid {serving.strip()}); make stop first"
        assert pid_file.read_text() == serving

        # The server dies hard, and `make clean` removes .venv (PY names no python): `make stop` still leaves no
        # PostgreSQL behind (with .venv it is server.py stop-embedded: test_a_killed_server_leaves_nothing_stuck).
        os.kill(int(serving), signal.SIGKILL)
        run.wait(30)
        assert postmaster(var_dir)
        stop = subprocess.run(
            ["make", "--no-print-directory", "stop", f"PY={tmp_path}/cleaned/bin/python"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert stop.returncode == 0, stop.stderr
        assert "stopped the embedded PostgreSQL (pid " in stop.stdout  # by its pid file, without server.py
        wait_stopped(var_dir)
        assert not pid_file.exists()
    finally:
        if run.poll() is None:
            subprocess.run(["make", "--no-print-directory", "stop"], cwd=ROOT, env=env, timeout=60)
            run.wait(30)
