"""Dependencies going away at run time. The database: 503 SERVICE_UNAVAILABLE (never a 500 or a hang), and service
resumes when it is back; the server reaches PostgreSQL through a TCP relay that the test cuts and restores. Redis:
nothing answers 503, throttling counts in PostgreSQL meanwhile; the test stops and restarts a redis-server of its
own."""

import contextlib
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from conftest import (
    PASSWORD,
    Server,
    assert_audit_ok,
    assert_error,
    fund,
    in_parallel,
    make_user,
    unique_name,
    wait_for,
)
from sqlalchemy.engine import make_url

from scripts.local_services import free_port, start_redis

LOOPS = ("revocation poll", "dispatch webhook", "dispatch email")


class Relay:
    """Forwards 127.0.0.1:port to PostgreSQL (TCP, or the Unix socket of an embedded server) until cut."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        if url.host:
            self.upstream: tuple = (socket.AF_INET, (url.host, url.port or 5432))
        else:  # the embedded server listens on a Unix socket in the folder named by ?host=
            self.upstream = (socket.AF_UNIX, f"{url.query['host']}/.s.PGSQL.{url.port or 5432}")
        self.port = free_port()
        self.url = url.set(host="127.0.0.1", port=self.port, query={}).render_as_string(hide_password=False)
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            family, address = self.upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(address)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, a is client), daemon=True).start()

    def sent(self, connection: socket.socket, data: bytes) -> None:
        """What the relay's client (the wallet server) sent on one connection, as forwarded; for subclasses."""

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if from_client:
                    self.sent(source, data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        # shutdown() wakes the thread blocked in accept() (close() alone would not) and ends every relayed connection.
        for s in (self.listener, *self.sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()


@pytest.fixture
def relay(database_url: str) -> Iterator[Relay]:
    relay = Relay(database_url)
    relay.start()
    yield relay
    relay.cut()


def test_database_outage_is_503_and_service_resumes(own_server, relay):
    server = own_server(DATABASE_URL=relay.url, DB_POOL_SIZE="2", LOG_LEVEL="INFO")
    username = unique_name()
    with server.client() as api:
        assert api.post("/auth/register", json={"username": username, "password": PASSWORD}).status_code == 201
        token = api.post("/auth/login", json={"username": username, "password": PASSWORD}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    relay.cut()
    with server.client(token) as api:
        assert_error(api.get("/users/me"), 503, "SERVICE_UNAVAILABLE")
        assert_error(api.get("/wallets"), 503, "SERVICE_UNAVAILABLE")
        r = api.post("/auth/register", json={"username": unique_name(), "password": PASSWORD})
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert "postgres" not in r.text.lower() and "Traceback" not in r.text
    ready = assert_error(httpx.get(f"{server.url}/ready"), 503, "SERVICE_UNAVAILABLE")
    assert ready["details"] == {"database": "down", "redis": "ok"}
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"  # liveness: the process runs
    warnings = [e for e in server.log_entries() if e["msg"].startswith("not ready")]
    assert warnings and warnings[-1]["msg"] == "not ready: database down" and warnings[-1]["level"] == "warning"
    # The background loops (the revocation poll every second, the two delivery lanes every 250 ms) say the outage once
    # each, without a traceback, however many laps run into it; and once more when they pass again.
    wait_for(lambda: _job_lines(server, "revocation poll"))
    time.sleep(2.5)
    for job in LOOPS:
        lines = _job_lines(server, job)
        assert [e["level"] for e in lines] == ["warning"], lines
        assert lines[0]["msg"] == f"{job} failed, retrying: The database is not answering; try again shortly."
    assert [e for e in server.log_entries() if "job" in e and "exc" in e] == []

    relay.start()  # the database is back on the same address
    with server.client(token) as api:
        wallets = api.get("/wallets")
        assert wallets.status_code == 200, wallets.text
        wallet_id = wallets.json()["items"][0]["id"]
        r = api.post(f"/wallets/{wallet_id}/deposit", json={"amount": "5.00"}, headers=headers)
        assert r.status_code == 201 and r.json()["status"] == "COMPLETED", r.text
    assert httpx.get(f"{server.url}/ready").status_code == 200
    for job in LOOPS:
        recovered = wait_for(lambda job=job: _job_lines(server, job)[1:])
        assert [(e["level"], e["msg"]) for e in recovered] == [("info", f"{job} recovered")]


def _job_lines(server, job: str) -> list[dict]:
    return [e for e in server.log_entries() if e.get("job") == job]


def test_redis_restart_under_load_degrades_and_never_answers_503(own_server, database_url):
    """Logins, reads and transfers keep going through a Redis stop and restart on two processes; while Redis is away
    the login throttle still holds (its counters in PostgreSQL) and a logout still ends the token everywhere."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wallet-redis-") as workdir:
        redis = start_redis(port, workdir)
        try:
            server = own_server(
                REDIS_URL=f"redis://127.0.0.1:{port}/0", PROCESSES="2", LOG_LEVEL="INFO", LOGIN_MAX_FAILURES="3"
            )
            payer, payee = make_user(server), make_user(server)
            fund(server, payer, "1000.00")
            statuses: Counter[tuple[str, int]] = Counter()
            running = threading.Event()
            running.set()

            def load(i: int) -> None:
                with server.client(payer.token) as api:
                    # A connection a request, so that both processes serve the load (a kept-alive one stays with one).
                    api.headers["Connection"] = "close"
                    while running.is_set():
                        login = api.post("/auth/login", json={"username": payer.username, "password": PASSWORD})
                        statuses["login", login.status_code] += 1
                        body = {"from_wallet_id": payer.wallet_id, "to_username": payee.username, "amount": "0.01"}
                        moved = api.post("/transfers", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
                        statuses["transfer", moved.status_code] += 1
                        statuses["me", api.get("/users/me").status_code] += 1

            threads = [
                threading.Thread(target=load, args=(i,)) for i in range(3)
            ]  # 3 logins in flight: within LOGIN_MAX_FAILURES
            for thread in threads:
                thread.start()
            wait_for(lambda: statuses["transfer", 201] >= 8)

            redis.terminate()
            redis.wait(10)
            wait_for(lambda: _store_lines(server, "redis down") and statuses["transfer", 201] >= 30)
            assert_error(httpx.get(f"{server.url}/ready"), 503, "SERVICE_UNAVAILABLE")  # it names Redis as down
            guessed = make_user(server).username

            def guess(i: int) -> httpx.Response:
                with server.client() as api:  # a connection each: the guesses spread over both processes
                    return api.post("/auth/login", json={"username": guessed, "password": "wrong-" + PASSWORD})

            # Eight guesses at once against LOGIN_MAX_FAILURES=3: the count in PostgreSQL is one for all processes.
            wrong = in_parallel(8, guess)
            assert sorted(r.status_code for r in wrong) == [401] * 3 + [429] * 5, [r.text for r in wrong]
            assert all(int(r.headers["Retry-After"]) > 0 for r in wrong if r.status_code == 429)
            leaving = make_user(server)
            with server.client(leaving.token) as api:
                assert api.post("/auth/logout").status_code == 204
                # Both processes refuse it: the other learns it from its poll of PostgreSQL, not from Redis.
                wait_for(lambda: all(api.get("/users/me").status_code == 401 for _ in range(6)))

            redis = start_redis(port, workdir)  # back on the same port, empty
            wait_for(
                lambda: len(_store_lines(server, "redis recovered")) == 2 and statuses["transfer", 201] >= 60,
                timeout=30,
            )
            assert httpx.get(f"{server.url}/ready").status_code == 200
            running.clear()
            for thread in threads:
                thread.join()
        finally:
            redis.terminate()
            redis.wait(10)
    assert {status for (_, status) in statuses} == {200, 201}, statuses
    # One warning and one recovery per process, however many requests ran into the outage.
    assert [e["level"] for e in _store_lines(server, "redis down")] == ["warning", "warning"]
    assert [e for e in server.log_entries() if e["level"] == "error"] == []
    assert_audit_ok(database_url)


def test_a_server_starts_while_redis_is_down_and_uses_it_once_it_answers(server_env, tmp_path):
    """A restart during a Redis outage must not stop the service: the server starts, says so once, serves logins, and
    takes Redis up when it answers."""
    port = free_port()
    env = {**server_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "LOG_LEVEL": "INFO"}
    server = Server(env, tmp_path / "server.log").start(probe="/health")  # not ready: it names Redis as down
    try:
        warning = [e for e in server.log_entries() if e["msg"].startswith("redis does not answer at start")]
        assert [e["level"] for e in warning] == ["warning"] and "REDIS_URL" in warning[0]["msg"]
        assert_error(httpx.get(f"{server.url}/ready"), 503, "SERVICE_UNAVAILABLE")
        user = make_user(server)  # registers and logs in
        with tempfile.TemporaryDirectory(prefix="wallet-redis-") as workdir:
            redis = start_redis(port, workdir)
            try:
                wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 200)
                with server.client(user.token) as api:
                    wait_for(
                        lambda: api.get("/users/me").status_code == 200 and _store_lines(server, "redis recovered")
                    )
            finally:
                redis.terminate()
                redis.wait(10)
    finally:
        server.stop()


def _store_lines(server, start: str) -> list[dict]:
    return [e for e in server.log_entries() if e["msg"].startswith(start)]
