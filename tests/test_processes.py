"""`server.py --processes N`: N workers serve one port, a crashed one is replaced, and stopping the parent stops all."""

import os
import signal
from pathlib import Path

import httpx
import pytest
from conftest import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker ids from Linux's /proc")


def workers(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_workers_share_the_port_and_stop_with_the_parent(own_server):
    server = own_server(PROCESSES="2")
    parent = server.proc.pid
    first = wait_for(lambda: workers(parent) if len(workers(parent)) == 2 else None, timeout=20)

    crashed = min(first)
    os.kill(crashed, signal.SIGKILL)
    now = wait_for(
        lambda: workers(parent) if len(workers(parent)) == 2 and crashed not in workers(parent) else None, timeout=20
    )
    assert now - first and first - now == {crashed}  # the crashed worker was replaced, the other kept serving
    for _ in range(20):
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    # The parent waited for its workers (tornado's fork_processes left them serving on as orphans).
    assert not [pid for pid in now if Path(f"/proc/{pid}").exists()]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)
