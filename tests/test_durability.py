"""PostgreSQL crashing, restarting or hanging under the server: a refusal already answered survives the crash, the
server answers 503 with Retry-After (never a 500 or a hang), and a retry of the same key finishes the operation once.

Each test crashes or pauses a PostgreSQL of this module alone (postgres_server(private=True)), never a shared one.
"""

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from conftest import assert_audit_ok, assert_error, balance, make_user, scalar, unique_name

from scripts.local_services import PostgresProcesses, fresh_database, postgres_server

REFUSALS = 48


@pytest.fixture(scope="module")
def private_server_url():
    with postgres_server(private=True) as url:
        yield url


@pytest.fixture(scope="module")
def private_db(private_server_url):
    with fresh_database(private_server_url) as url:
        yield url


@pytest.fixture
def pg(private_server_url, private_db):
    processes = PostgresProcesses(private_server_url)
    yield processes
    processes.signal(signal.SIGCONT)  # whatever the test did, leave it running for the next one


def definite(send, deadline: float = 30):
    """Send until the answer is not 'try again' (503 while the database is away, 409 while the key is in flight)."""
    stop = time.monotonic() + deadline
    while True:
        r = send()
        if r.status_code not in (409, 503) or r.json()["code"] == "INTERRUPTED" or time.monotonic() > stop:
            return r
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1", r.headers
        time.sleep(0.2)


def test_a_refusal_answered_survives_a_database_crash_and_its_key_never_executes(own_server, private_db, pg):
    """The refusals' commits reach the disk before their 400s go out: after kill -9 of PostgreSQL right after the
    last 400, every key replays its refusal, even once the wallet could pay. (A commit that did not wait for the
    disk sits in PostgreSQL's WAL buffers for up to wal_writer_delay and dies with them.)"""
    server = own_server(DATABASE_URL=private_db, DB_POOL_SIZE="8")
    user = make_user(server)
    path = f"/wallets/{user.wallet_id}/withdraw"
    keys = [unique_name("refused") for _ in range(REFUSALS)]

    def withdraw(key):
        with server.client(user.token) as client:
            return client.post(path, json={"amount": "1.00"}, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(8) as pool:
        refusals = list(pool.map(withdraw, keys))
    pg.kill()  # the moment the last 400 is in
    pg.start()
    for r in refusals:
        assert_error(r, 400, "INSUFFICIENT_FUNDS")

    with server.client(user.token) as client:
        funding = lambda: client.post(  # noqa: E731
            f"/wallets/{user.wallet_id}/deposit", json={"amount": "100"}, headers={"Idempotency-Key": "fund"}
        )
        assert definite(funding).status_code == 201
        for key, first in zip(keys, refusals, strict=True):
            again = definite(
                lambda key=key: client.post(path, json={"amount": "1.00"}, headers={"Idempotency-Key": key})
            )
            assert (again.status_code, again.json(), again.headers.get("Idempotent-Replayed")) == (
                400,
                first.json(),
                "true",
            ), key
    assert balance(server, user) == "100.00"


def _client_backend(database_url: str) -> int:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' LIMIT 1"
        )
        return cur.fetchone()[0]


@pytest.mark.slow
def test_no_500_while_postgres_crashes_and_restarts(own_server, private_db, pg):
    """A backend killed -9 (PostgreSQL restarts every backend and replays its log: 'the database system is in
    recovery mode'), then the whole server killed -9 and started again, under a load of reads and keyed deposits:
    every answer is a success or a 503 with Retry-After, and every key, retried until definite, deposits once."""
    server = own_server(DATABASE_URL=private_db, DB_POOL_SIZE="4", PENDING_TIMEOUT="2")
    users = [make_user(server) for _ in range(4)]
    statuses, deposited, stop = Counter(), Counter(), threading.Event()

    def load(user):
        with server.client(user.token) as client:
            while not stop.is_set():
                r = client.get("/wallets")
                statuses[r.status_code if r.status_code != 503 or r.headers.get("Retry-After") else "bare 503"] += 1
                key = unique_name("dep")
                send = lambda key=key: client.post(  # noqa: E731
                    f"/wallets/{user.wallet_id}/deposit", json={"amount": "1.00"}, headers={"Idempotency-Key": key}
                )
                give_up = time.monotonic() + 30
                while (r := send()).status_code in (409, 503) and time.monotonic() < give_up:
                    statuses[r.status_code if r.headers.get("Retry-After") or r.status_code == 409 else "bare 503"] += 1
                    time.sleep(0.1)
                statuses[r.status_code] += 1
                if r.status_code != 201:
                    return
                deposited[user.id] += 100

    threads = [threading.Thread(target=load, args=(u,)) for u in users]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        os.kill(_client_backend(private_db), signal.SIGKILL)
        time.sleep(3)
        pg.kill()
        time.sleep(1)
        pg.start()
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    print(f"\npostgres crash and restart under load: {dict(statuses)}")
    assert set(statuses) <= {200, 201, 409, 503} and statuses[503] > 0 and statuses[201] > 0
    for user in users:
        assert balance(server, user) == f"{deposited[user.id] / 100:.2f}"
    assert_audit_ok(private_db)


def test_a_paused_database_answers_503_in_seconds_and_a_retry_finishes_the_operation_once(own_server, private_db, pg):
    """PostgreSQL stopped (kill -STOP of the postmaster and its backends) answers nothing: reads, deposits and the
    requests queued for a pool connection get 503 within the timeouts, and once it resumes the same keys deposit
    exactly once (a row left PENDING by the cut-off attempt is taken over when its claim expires)."""
    server = own_server(
        DATABASE_URL=private_db,
        DB_POOL_SIZE="2",
        DB_STATEMENT_TIMEOUT="1",
        DB_POOL_TIMEOUT="1",
        PENDING_TIMEOUT="2",
        RECOVERY_INTERVAL="1",
    )
    user = make_user(server)
    keys = [unique_name("paused") for _ in range(3)]

    def deposit(key):
        with server.client(user.token) as client:
            return client.post(
                f"/wallets/{user.wallet_id}/deposit", json={"amount": "2.00"}, headers={"Idempotency-Key": key}
            )

    def read(_):
        with server.client(user.token) as client:
            return client.get("/wallets")

    pg.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(deposit, keys)) + list(pool.map(read, range(3)))
        elapsed = time.monotonic() - started
    finally:
        pg.signal(signal.SIGCONT)
    print(
        f"\npaused database: {len(answers)} answers in {elapsed:.1f}s",
        [round(r.elapsed.total_seconds(), 2) for r in answers],
    )
    for r in answers:
        assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert r.headers["Retry-After"] == "1"
    assert elapsed < 10

    for key in keys:
        with server.client(user.token) as client:
            send = lambda key=key: client.post(  # noqa: E731
                f"/wallets/{user.wallet_id}/deposit", json={"amount": "2.00"}, headers={"Idempotency-Key": key}
            )
            assert definite(send).status_code == 201
    assert balance(server, user) == "6.00"
    with psycopg2.connect(private_db) as conn:
        per_key = scalar(
            conn,
            "SELECT COUNT(*) FROM transactions WHERE idempotency_key = ANY(%s) AND status = 'COMPLETED'",
            (keys,),
        )
    assert per_key == 3
