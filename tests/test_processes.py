"""`server.py --processes N`: N workers serve one port, a crashed one is replaced, and stopping the parent stops all;
every log line says which process, and which worker, wrote it."""

import os
import signal
from pathlib import Path

import httpx
import pytest
from conftest import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker ids from Linux's /proc")


def workers(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def listening(server) -> dict[int, int]:
    """{pid: worker number} of each worker that has logged that it listens."""
    return {e["pid"]: e["worker"] for e in server.log_entries() if e["msg"] == "listening"}


def test_workers_share_the_port_and_stop_with_the_parent(own_server):
    server = own_server(PROCESSES="2", LOG_LEVEL="INFO")
    parent = server.proc.pid
    first = wait_for(lambda: listening(server) if len(listening(server)) == 2 else None, timeout=20)
    assert workers(parent) == set(first) and sorted(first.values()) == [1, 2]

    crashed = min(first)
    os.kill(crashed, signal.SIGKILL)
    now = wait_for(lambda: listening(server) if len(listening(server)) == 3 else None, timeout=20)
    assert workers(parent) == set(now) - {crashed}  # the crashed worker was replaced, the other kept serving
    for _ in range(20):
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    # The parent waited for its workers (tornado's fork_processes left them serving on as orphans).
    assert not [pid for pid in now if Path(f"/proc/{pid}").exists()]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)

    # Every line names its process and worker: the parent is worker 0; the worker started in place of the crashed one
    # took its number.
    entries = server.log_entries()
    assert entries and all(type(e["pid"]) is int and type(e["worker"]) is int for e in entries)
    assert {(e["pid"], e["worker"]) for e in entries if e["pid"] == parent} == {(parent, 0)}
    (replacement,) = set(now) - set(first)
    assert now[replacement] == first[crashed]
    (died,) = [e for e in entries if e["msg"] == "worker died; starting another"]
    assert (died["worker_pid"], died["worker_number"]) == (crashed, first[crashed])
