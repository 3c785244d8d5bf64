"""A SIGTERM drops nothing: a server with two worker processes stops under load of POST /transfers, reached directly
and through deploy/nginx.conf, and no request it read goes unanswered. The only failure a client may see is a refused
connection (never read: a retry is the first attempt); every key retried afterwards replays its first answer."""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import User, fund, make_user, wait_for
from nginx import SKIP, Proxy
from test_event_stream import FAST, connect, pay, receive
from tornado import httpclient

# Small, so the test takes seconds: the defaults are 30 s and 5 s.
DRAIN = {"PROCESSES": "2", "SHUTDOWN_GRACE": "10", "DRAIN_DELAY": "2", "LOG_LEVEL": "INFO"}
CLIENTS = 8  # half keep one connection open, half connect for every request

pytestmark = pytest.mark.usefixtures("ledger_audited")


@dataclass
class Sent:
    """One POST /transfers and what became of it."""

    key: str
    body: dict[str, Any]
    after_signal: bool
    status: int | None = None
    answer: dict[str, Any] | None = None
    connection: str = ""  # the answer's Connection header
    failure: str = ""  # "refused", or what else went wrong


def refused(error: httpx.TransportError) -> bool:
    """The connection was refused: the server never saw the request (anything else may have reached it)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@dataclass
class Load:
    """CLIENTS threads sending transfers between `users` until `stop()`, or until the server refuses a connection:
    it has gone, and every later attempt would be refused the same way."""

    users: list[User]
    client: Any  # (keep_alive: bool) -> httpx.Client
    sent: list[Sent] = field(default_factory=list)
    signalled: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(CLIENTS):
            thread = threading.Thread(target=self._send, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive()

    def answered(self) -> list[Sent]:
        return [sent for sent in self.sent if sent.status is not None]

    def _send(self, i: int) -> None:
        sender, recipient = self.users[i], self.users[(i + 1) % len(self.users)]
        with self.client(i % 2 == 0) as client:
            while not self._stop.is_set():
                body = {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "0.01"}
                sent = Sent(f"drain-{uuid.uuid4()}", body, self.signalled.is_set())
                self.sent.append(sent)
                try:
                    r = client.post("/transfers", json=body, headers={**sender.headers, "Idempotency-Key": sent.key})
                except httpx.TransportError as error:
                    sent.failure = "refused" if refused(error) else f"{type(error).__name__}: {error}"
                    if sent.failure == "refused":
                        return
                    continue
                sent.status, sent.answer, sent.connection = r.status_code, r.json(), r.headers.get("Connection", "")


def replay(client: httpx.Client, users: list[User], load: Load) -> dict[str, int]:
    """Every key sent again: an answered one replays its first answer; a refused one is executed now, for the first
    time (proof that it was never read). Returns the figures of the run."""
    by_wallet = {user.wallet_id: user for user in users}

    def again(sent: Sent) -> bool:
        sender = by_wallet[sent.body["from_wallet_id"]]
        r = client.post("/transfers", json=sent.body, headers={**sender.headers, "Idempotency-Key": sent.key})
        if sent.status is None:
            assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers, (sent, r.text)
            return False
        assert (r.status_code, r.json()) == (sent.status, sent.answer), sent
        assert r.headers.get("Idempotent-Replayed") == "true", sent
        return True

    with ThreadPoolExecutor(CLIENTS) as pool:
        replayed = sum(pool.map(again, load.sent))
    return {
        "sent": len(load.sent),
        "answered": len(load.answered()),
        "refused": sum(sent.failure == "refused" for sent in load.sent),
        "replayed": replayed,
        "refused_then_executed_once": len(load.sent) - replayed,
    }


def funded_users(server: Any) -> list[User]:
    users = [make_user(server) for _ in range(CLIENTS)]
    for user in users:
        fund(server, user, "100.00")
    return users


def assert_nothing_read_was_dropped(load: Load) -> None:
    failures = [sent for sent in load.sent if sent.failure and sent.failure != "refused"]
    assert not failures, failures
    assert all(sent.status == 201 for sent in load.answered()), [s for s in load.answered() if s.status != 201]
    # Keep-alive clients were told to go, and went: answers after the signal said Connection: close.
    assert any(s.after_signal and s.connection == "close" for s in load.answered())


def test_sigterm_under_load_answers_every_request_it_read(own_server, record_property):
    server = own_server(**DRAIN)
    users = funded_users(server)

    def client(keep_alive: bool) -> httpx.Client:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        return httpx.Client(base_url=f"{server.url}/api/v1", limits=limits, timeout=30, verify=False)

    load = Load(users, client).start()
    wait_for(lambda: len(load.answered()) >= 40)
    load.signalled.set()
    server.proc.send_signal(signal.SIGTERM)
    # A balancer sees it at once: /ready answers 503 while the listener still takes connections.
    assert wait_for(lambda: httpx.get(f"{server.url}/ready", timeout=5).status_code == 503, timeout=2)
    assert server.proc.wait(45) == 0
    load.join()  # each client ends at its refusal

    assert_nothing_read_was_dropped(load)
    # Both workers drained, and all they had (connections, requests, background loops) ended within the grace.
    messages = [entry["msg"] for entry in server.log_entries()]
    assert messages.count("draining") == messages.count("listener closed") == messages.count("stopped") == 2
    assert not [message for message in messages if message.startswith("stopping now")]
    restarted = own_server(**DRAIN)
    with restarted.client() as again:
        figures = replay(again, users, load)
    print(f"direct: {figures}")
    record_property("figures", figures)
    assert figures["answered"] >= 40 and figures["refused"] == CLIENTS


@pytest.mark.skipif(**SKIP)
def test_sigterm_behind_nginx_loses_nothing(own_server, tmp_path, record_property):
    """Two server sets behind nginx; one stops under load. nginx passes what that one refuses to the other (a
    request never read may go to the next upstream), so clients see no failure at all, not one 502."""
    leaving, staying = own_server(**DRAIN), own_server(**DRAIN)
    proxy = Proxy(tmp_path, leaving.port, staying.port)
    try:
        users = funded_users(staying)

        def client(keep_alive: bool) -> httpx.Client:
            limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
            return proxy.client(limits=limits)

        load = Load(users, client).start()
        wait_for(lambda: len(load.answered()) >= 40)
        load.signalled.set()
        leaving.proc.send_signal(signal.SIGTERM)
        assert leaving.proc.wait(45) == 0
        answered = len(load.answered())
        wait_for(lambda: len(load.answered()) >= answered + 40)  # served on by the other set
        load.stop()

        assert not [sent for sent in load.sent if sent.failure], [sent for sent in load.sent if sent.failure]
        # nginx did meet the closed port, and passed those requests on: they were never read.
        assert "Connection refused" in (tmp_path / "error.log").read_text()
        assert all(sent.status == 201 for sent in load.answered()), [s for s in load.answered() if s.status != 201]
        with proxy.client() as again:
            figures = replay(again, users, load)
        print(f"through nginx: {figures}")
        record_property("figures", figures)
    finally:
        proxy.stop()


def test_a_stream_is_closed_with_reconnect_and_its_cursor_and_no_new_one_opens(own_server):
    server = own_server(PROCESSES="1", SHUTDOWN_GRACE="5", DRAIN_DELAY="2", **FAST)
    alice, bob = make_user(server), make_user(server)
    fund(server, alice, "5.00")

    async def scenario() -> tuple[dict[str, Any], Any, Any]:
        conn = await connect(server, bob.token, subprotocol=True)
        await asyncio.to_thread(pay, server, alice, bob)
        (event,) = await receive(conn, 1)
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(conn.read_message(), 5) is None
        # While the port is still open (DRAIN_DELAY), a new stream is refused: the client tries again elsewhere.
        with pytest.raises(httpclient.HTTPClientError) as refused:
            await connect(server, bob.token, subprotocol=True)
        return event, conn, refused.value.response

    event, conn, response = asyncio.run(scenario())
    assert conn.close_code == 1012
    assert conn.close_reason == f"The server is restarting; reconnect with ?after={event['id']}"
    assert response.code == 503 and json.loads(response.body)["code"] == "SERVICE_UNAVAILABLE"
    assert server.proc.wait(30) == 0


def test_an_idle_keep_alive_connection_is_closed_not_reset(own_server):
    server = own_server(PROCESSES="2", SHUTDOWN_GRACE="5", DRAIN_DELAY="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: wallet\r\n\r\n")
        answer = idle.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" not in answer
        server.proc.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b""  # a FIN (a reset would raise ConnectionResetError)
    assert server.proc.wait(30) == 0


def a_request_left_unfinished(server: Any) -> socket.socket:
    """A connection whose request has headers but only part of its body: it holds the drain open."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: wallet\r\nContent-Length: 100\r\n\r\n{")
    return sock


def test_the_grace_running_out_cuts_off_what_is_left_and_says_so(own_server):
    server = own_server(PROCESSES="1", SHUTDOWN_GRACE="2", DRAIN_DELAY="0", BODY_TIMEOUT="60")
    with a_request_left_unfinished(server):
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert 2 <= time.monotonic() - started < 5
    (cut,) = [entry for entry in server.log_entries() if entry["msg"].startswith("stopping now")]
    assert cut["msg"] == "stopping now (SHUTDOWN_GRACE ran out): cutting off what is left"
    assert cut["level"] == "warning" and cut["requests"] == 1


def test_a_second_sigterm_stops_at_once_through_the_parent(own_server):
    server = own_server(PROCESSES="2", SHUTDOWN_GRACE="60", DRAIN_DELAY="1", BODY_TIMEOUT="60", LOG_LEVEL="INFO")
    # /ready answered from one worker; on a busy machine the other may still be starting (and would stop before it
    # listens, closing no listener): both listen first.
    wait_for(lambda: server.log_path.read_text().count('"msg":"listening"') == 2, timeout=30)
    with a_request_left_unfinished(server):
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: server.log_path.read_text().count('"listener closed"') == 2)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - started < 20  # far below SHUTDOWN_GRACE (60)
    messages = [entry["msg"] for entry in server.log_entries()]
    assert "second stop signal: the workers stop now" in messages
    assert "stopping now (a second signal): cutting off what is left" in messages
