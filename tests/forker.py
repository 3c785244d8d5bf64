"""The tests' servers, forked from one process that has imported server.py once.

A server started with `python server.py` spends about a second of CPU importing the application before it listens;
a test session starts hundreds of them on two cores. The forker imports it once per pytest worker, with what a
server reads its database's revision with (Alembic, and this release's migrations: wallet/platform/db.py), and forks
each server from that state: the child sets its own environment, working directory, output files and file limit,
then runs `server.main()` as `python server.py` would. `Forked` gives the test the part of `subprocess.Popen` the tests
use (pid, poll, wait, send_signal, terminate, kill, returncode); the forker reaps the child and reports its exit
status. `Forker.run` runs a one-line command (`create-admin`, which many tests' fixtures need) the same way, as
`subprocess.run` would: a second of CPU less each.

The command-line tests (tests/test_cli.py and others) still run `server.py` in a fresh interpreter.

Protocol, over a Unix socket: the test sends one JSON line {"argv", "env", "cwd", "stdout", "stderr", "nofile"} (the
two outputs are files, appended to); the forker answers {"pid"} at once and {"returncode"} when the child exits, then
closes the connection.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Forked:
    """A server process the forker started: the subset of subprocess.Popen that the tests use."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._reader = connection.makefile("r")
        self.pid: int = json.loads(self._reader.readline())["pid"]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait(0) if self._exited(0) else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited(timeout):
            raise subprocess.TimeoutExpired(["server.py"], timeout or 0)
        if self.returncode is None:
            line = self._reader.readline()
            if not line:
                raise RuntimeError(f"the forker went away before server {self.pid} exited")
            self.returncode = json.loads(line)["returncode"]
            self._reader.close()
            self._connection.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # once reaped, the pid may be another process's
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _exited(self, timeout: float | None) -> bool:
        """Whether the forker has said (or says within `timeout` seconds) how the process exited."""
        return self.returncode is not None or bool(select.select([self._connection], [], [], timeout)[0])


class Forker:
    """The forking process of one pytest worker, started at the first server and stopped with the session."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "forker.sock")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        assert self.proc.stdout and self.proc.stdout.readline() == b"ready\n", "the forker did not start"

    def start(
        self, argv: list[str], env: dict[str, str], log: Path, nofile: tuple[int, int] | None, err: Path | None = None
    ) -> Forked:
        """`python server.py ARGV` with its output in `log` (its errors in `err` when given)."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(self.path)
        request = {"argv": argv, "env": env, "cwd": str(ROOT), "stdout": str(log), "stderr": str(err or log)}
        connection.sendall(json.dumps({**request, "nofile": nofile}).encode() + b"\n")
        return Forked(connection)

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """`python server.py ARGV` to its end, as subprocess.run(..., capture_output=True, text=True) answers it."""
        with tempfile.TemporaryDirectory(prefix="wallet-run-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            child = self.start(argv, env, out, None, err)
            try:
                code = child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise
            return subprocess.CompletedProcess(["server.py", *argv], code, out.read_text(), err.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _child(request: dict[str, Any]) -> int:
    """In the forked child: become `python server.py ARGV` with the request's environment, and run it."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for descriptor, path in ((1, request["stdout"]), (2, request["stderr"])):
        output = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(output, descriptor)
        os.close(output)
    if request["nofile"]:
        resource.setrlimit(resource.RLIMIT_NOFILE, tuple(request["nofile"]))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [str(ROOT / "server.py"), *request["argv"]]
    import server

    try:
        code = server.main(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


def _serve(path: str) -> None:
    """The forker's loop: one thread (it forks), woken by new requests and by SIGCHLD; exits with its parent."""
    # The point: every child starts with the command line and the application imported, and with what its start
    # reads the schema's revision with.
    from alembic import migration  # noqa: F401

    import server  # noqa: F401
    import serving  # noqa: F401
    from wallet.platform.db import release_migrations

    release_migrations()

    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while os.getppid() == parent:
        for key, _ in selector.select(timeout=1):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                with connection.makefile("r") as reader:
                    request = json.loads(reader.readline())
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    for descriptor in (listener, connection, *children.values()):
                        descriptor.close()
                    os.close(wake_read)
                    os.close(wake_write)
                    code = 1
                    try:
                        code = _child(request)
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(code)
                children[pid] = connection
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            else:
                os.read(wake_read, 4096)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = children.pop(pid)
            with contextlib.suppress(OSError):  # the test may be gone
                connection.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            connection.close()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _serve(sys.argv[1])
