"""File descriptors and slow clients: at a low `ulimit -n` with hundreds of idle sockets open, new clients still get
an answer or a fast 503 and the log is not flooded; idle connections, headers and bodies dribbled slowly are cut
off after their timeouts; the soft limit of open files is raised to the hard one at start."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import httpx


def open_files_limit(pid: int) -> tuple[int, int]:
    line = next(li for li in Path(f"/proc/{pid}/limits").read_text().splitlines() if li.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_idle_sockets_at_a_low_ulimit_leave_new_clients_an_answer_and_the_log_quiet(own_server):
    server = own_server(nofile=(256, 256), DB_POOL_SIZE="4", LOG_LEVEL="INFO")
    idle = []
    try:
        for _ in range(400):  # far more than the process could hold
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        answers = []
        for _ in range(20):
            started = time.monotonic()
            with contextlib.suppress(httpx.TransportError):  # a refusal may also reach the client as a reset
                answers.append(httpx.get(f"{server.url}/health", timeout=5).status_code)
            assert time.monotonic() - started < 2, "a new client waited instead of getting an answer"
        assert answers and set(answers) <= {200, 503}, answers
        refusal = httpx.get(f"{server.url}/health", timeout=5)
        if refusal.status_code == 503:
            assert refusal.json()["code"] == "SERVICE_UNAVAILABLE" and refusal.headers["Retry-After"] == "1"
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "service did not resume once the idle sockets left"
        time.sleep(0.1)

    text = server.log_path.read_text()
    assert "Too many open files" not in text
    listening = next(line for line in server.log_entries() if line["msg"] == "listening")
    assert 0 < listening["max_connections"] < 256 - 4, listening
    warnings = [line for line in server.log_entries() if line["level"] == "warning"]
    assert 1 <= len(warnings) <= 4, warnings  # the overload, once per interval: not once per connection
    assert warnings[0]["times"] >= 1


def test_idle_connections_slow_headers_and_slow_bodies_are_cut_off(own_server):
    server = own_server(nofile=(300, 1024), DB_POOL_SIZE="4", IDLE_TIMEOUT="2", BODY_TIMEOUT="2")
    assert open_files_limit(server.proc.pid) == (1024, 1024)  # raised to the hard limit at start

    def closed_within(sock: socket.socket, seconds: float, dribble: bytes = b"") -> bool:
        """Whether the server closes the connection within `seconds`, while a byte of `dribble` is sent each
        0.3 s."""
        deadline = time.monotonic() + seconds
        sock.settimeout(0.3)
        for byte in dribble or b"\0" * 1000:
            if time.monotonic() > deadline:
                return False
            try:
                if dribble:
                    sock.sendall(bytes([byte]))
                if sock.recv(4096) == b"":
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        assert closed_within(idle, 5)
    with socket.create_connection(("127.0.0.1", server.port)) as slow_headers:
        assert closed_within(slow_headers, 5, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)
    with socket.create_connection(("127.0.0.1", server.port)) as slow_body:
        slow_body.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n"
        )
        assert closed_within(slow_body, 5, b'{"username": "' + b"a" * 150)
    assert httpx.get(f"{server.url}/health").status_code == 200
