"""Group commit (wallet/ledger/batch.py): the transfers that queue for step 2 while a batch is in flight go together
as one statement, each with its own outcome; one on a busy wallet is deferred without holding up the others; a
batch that fails or dies commits nothing, and each retry executes once; a batch whose commit the server does not hear
is answered as it committed, and an operation whose record was lost before step 2 is a 503 that its retry finishes.

Each test makes the batch certain: a row lock held here keeps a first transfer in flight (it waits past the batch's
lock wait, then alone, outside the queue), the others are recorded PENDING and queue behind its batch, and they go
together once it is done."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import psycopg2
import pytest
from conftest import (
    assert_audit_ok,
    assert_error,
    balance,
    fund,
    make_user,
    recorded,
    resend_while_in_progress,
    scalar,
)
from test_metrics import TOKEN, scrape, value
from test_outages import Relay

from wallet.platform.db import CLIENT_CHECK_MS

pytestmark = pytest.mark.usefixtures("ledger_audited")

QUEUED = 12


@contextmanager
def row_lock(db: Any, wallet_id: str, table: str = "wallets") -> Iterator[Callable[[], None]]:
    """Hold a wallet's row lock as an execution would (or its user's events head, `table` event_heads, as a writer of
    their events would); the yielded function releases it early."""
    blocker = psycopg2.connect(db.dsn)
    column = "user_id" if table == "event_heads" else "id"
    blocker.cursor().execute(f"SELECT 1 FROM {table} WHERE {column} = %s FOR NO KEY UPDATE", (wallet_id,))
    try:
        yield blocker.rollback
    finally:
        blocker.close()


def wait_for(db: Any, sql: str, count: int, params: Any = None) -> None:
    deadline = time.monotonic() + 30
    while scalar(db, sql, params) < count:
        assert time.monotonic() < deadline, f"not reached in time: {sql}"
        time.sleep(0.05)


class Sender:
    """Transfers sent on threads, keyed, with their answers."""

    def __init__(self, server: Any) -> None:
        self.server, self.threads, self.answers = server, {}, {}

    def send(self, user: Any, key: str, body: dict[str, Any]) -> None:
        def post() -> None:
            try:
                with self.server.client(user.token) as client:
                    self.answers[key] = client.post("/transfers", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError as error:  # a killed server
                self.answers[key] = error

        self.threads[key] = threading.Thread(target=post)
        self.threads[key].start()

    def join(self, *keys: str) -> dict[str, Any]:
        """The answers, once those to `keys` (or all) are in."""
        for key in keys or self.threads:
            self.threads[key].join(60)
        return self.answers


def pending(db: Any, prefix: str) -> int:
    return scalar(
        db, "SELECT count(*) FROM transactions WHERE status = 'PENDING' AND idempotency_key LIKE %s", (prefix + "%",)
    )


def batch_sizes(url: str) -> float:
    """The operations executed by step-2 statements of more than one (the histogram's sum beyond its first bucket)."""
    samples = scrape(url)
    return value(samples, "wallet_ledger_statement_operations_sum") - value(
        samples, "wallet_ledger_statement_operations_bucket", le="1.0"
    )


def batch_waiting(db: Any) -> None:
    """Until a batch is in flight, waiting for a row lock."""
    in_flight = "query LIKE '%%ledger_execute_batch(%%' AND wait_event_type = 'Lock'"
    wait_for(db, f"SELECT count(*) FROM pg_stat_activity WHERE {in_flight}", 1)


def transfer(payer: Any, to: Any, amount: str = "1.00") -> dict[str, str]:
    return {"from_wallet_id": payer.wallet_id, "to_wallet_id": to.wallet_id, "amount": amount}


def hold_first_batch(db: Any, sender: Sender, first: Any, to: Any, key: str) -> None:
    """A transfer from `first`, whose events head the caller locked: its batch waits in flight for that lock, and
    the transfers sent next queue behind it."""
    sender.send(first, key, transfer(first, to))
    batch_waiting(db)


def test_queued_transfers_go_as_one_batch_and_each_gets_its_own_outcome(own_server, db):
    server = own_server(DB_POOL_SIZE="24", METRICS_TOKEN=TOKEN)
    first, payer, rich, slow = (make_user(server) for _ in range(4))
    recipients = [make_user(server) for _ in range(3)]
    fund(server, first, "1.00")  # also gives first an events head to lock
    fund(server, payer, "5.00")  # enough for 5 of the payer's 8 transfers of 1.00
    fund(server, rich, "100.00")
    before = batch_sizes(server.url)
    sender = Sender(server)
    keys = [f"gc-{i}" for i in range(QUEUED)]
    with row_lock(db, first.id, "event_heads") as release_first, row_lock(db, slow.wallet_id) as release_slow:
        hold_first_batch(db, sender, first, rich, "gc-first")
        for i, key in enumerate(keys):
            who = payer if i < 8 else rich
            sender.send(who, key, transfer(who, recipients[i % 3]))
        sender.send(rich, "gc-slow", transfer(rich, slow))  # to a wallet another transaction holds
        wait_for(db, "SELECT count(*) FROM transactions WHERE idempotency_key LIKE 'gc-%%'", QUEUED + 2)
        # Recorded, and on their way to step 2's queue, which nothing outside the server shows: on a loaded CI machine
        # 0.3 s once let one of them arrive after the others had gone as a batch.
        time.sleep(1.0)
        release_first()
        answers = sender.join("gc-first", *keys)  # not held up by the one on the busy wallet
        assert "gc-slow" not in answers and pending(db, "gc-slow") == 1
        release_slow()
        answers = sender.join("gc-slow")
    assert answers["gc-first"].status_code == 201 and answers["gc-slow"].status_code == 201
    statuses = sorted(answers[key].status_code for key in keys)
    assert statuses == [201] * 9 + [400] * 3, statuses  # the payer's last three, whichever they were
    for key in keys[:8]:
        if answers[key].status_code == 400:
            assert_error(answers[key], 400, "INSUFFICIENT_FUNDS")
    assert batch_sizes(server.url) - before >= QUEUED  # the queued transfers went together, not one by one
    assert balance(server, payer) == "0.00" and balance(server, rich) == "96.00" and balance(server, slow) == "1.00"
    assert sum(float(balance(server, r)) for r in recipients) == 9.0
    # Each completed transfer told its recipient, and each refusal was recorded FAILED.
    received = sum(
        1
        for r in recipients
        for e in server.client(r.token).get("/events", params={"limit": 200}).json()["items"]
        if e["type"] == "transfer.received"
    )
    assert received == 9
    assert scalar(db, "SELECT count(*) FROM transactions WHERE idempotency_key LIKE 'gc-%%' AND status = 'FAILED'") == 3


def test_a_batch_that_fails_as_a_whole_commits_nothing_and_each_goes_alone(own_server, db):
    # A 2-second statement timeout: a batch waiting past it for a lock is cancelled as a whole.
    server = own_server(DB_POOL_SIZE="24", METRICS_TOKEN=TOKEN, DB_STATEMENT_TIMEOUT="2")
    first, a, b, stuck, to, busy = (make_user(server) for _ in range(6))
    for u in (first, a, b, stuck, busy):
        fund(server, u, "10.00")  # each gets an events head
    sender = Sender(server)
    with row_lock(db, first.id, "event_heads") as release_first, row_lock(db, busy.id, "event_heads") as release:
        hold_first_batch(db, sender, first, to, "gf-first")
        for key, who, recipient in (("gf-a", a, to), ("gf-b", b, to), ("gf-stuck", stuck, busy)):
            sender.send(who, key, transfer(who, recipient))
        wait_for(db, "SELECT count(*) FROM transactions WHERE idempotency_key LIKE 'gf-%%'", 4)
        time.sleep(0.3)
        release_first()
        # The batch of three waits for busy's events head (its transfer.received) until the timeout; then each alone.
        answers = sender.join()
        release()
    assert answers["gf-first"].status_code == 201
    assert answers["gf-a"].status_code == 201 and answers["gf-b"].status_code == 201
    assert_error(answers["gf-stuck"], 503, "SERVICE_UNAVAILABLE")
    assert balance(server, to) == "3.00" and balance(server, busy) == "10.00"
    assert value(scrape(server.url), "wallet_ledger_batch_failures_total") == 1  # they did go as one batch first
    # The attempt cut off moved nothing and released its claim: the retry executes it, once.
    with server.client(stuck.token) as client:
        headers = {"Idempotency-Key": "gf-stuck"}
        retry = resend_while_in_progress(lambda: client.post("/transfers", json=transfer(stuck, busy), headers=headers))
    assert retry.status_code == 201, retry.text
    assert balance(server, busy) == "11.00" and balance(server, stuck) == "9.00"


@pytest.mark.slow
def test_a_batch_cut_off_by_kill_9_commits_nothing_and_each_retry_executes_once(own_server, db, database_url):
    settings = {"DB_POOL_SIZE": "24", "PENDING_TIMEOUT": "2", "RECOVERY_INTERVAL": "60"}
    doomed = own_server(**settings)
    first, friend, merchant = (make_user(doomed) for _ in range(3))
    payers = [make_user(doomed) for _ in range(QUEUED)]
    for u in (first, merchant, *payers):
        fund(doomed, u, "10.00")  # each gets an events head
    sender = Sender(doomed)
    with row_lock(db, first.id, "event_heads") as release_first, row_lock(db, merchant.id, "event_heads") as release:
        hold_first_batch(db, sender, first, friend, "gk-first")
        for i, payer in enumerate(payers):
            sender.send(payer, f"gk-{i}", transfer(payer, merchant, "2.50"))
        wait_for(db, "SELECT count(*) FROM transactions WHERE idempotency_key LIKE 'gk-%%'", QUEUED + 1)
        time.sleep(0.3)
        release_first()
        sender.join("gk-first")
        # The batch of the payers has moved their money in its transaction and waits for the merchant's events
        # head (their transfer.received) to commit: kill the server there.
        batch_waiting(db)
        doomed.kill()
        time.sleep(3 * CLIENT_CHECK_MS / 1000)  # PostgreSQL notices the dead client and cancels the statement
        release()
        answers = sender.join()
    assert answers["gk-first"].status_code == 201
    assert pending(db, "gk-") == QUEUED  # the batch committed nothing
    assert scalar(db, "SELECT balance FROM wallets WHERE id = %s", (merchant.wallet_id,)) == 1000
    server = own_server(**settings)
    with server.client() as client:

        def retry(who: Any, key: str, amount: str) -> httpx.Response:
            headers = {**who.headers, "Idempotency-Key": key}
            body = transfer(who, merchant, amount)
            return resend_while_in_progress(lambda: client.post("/transfers", json=body, headers=headers))

        for i, payer in enumerate(payers):
            assert retry(payer, f"gk-{i}", "2.50").status_code == 201
            assert retry(payer, f"gk-{i}", "2.50").status_code == 201  # a replay
    assert balance(server, merchant) == f"{10 + 2.5 * QUEUED:.2f}"
    assert pending(db, "gk-") == 0
    assert_audit_ok(database_url)


class AnswerLosingRelay(Relay):
    """A Relay that, once, closes the wallet server's connection just after forwarding step 2 of the transfer whose
    description is `marker` (the first message holding it and the events of it COMPLETED): PostgreSQL has the whole
    statement and commits it, and the server never hears so, as when a failover or a pooler cuts a connection at
    its commit."""

    def __init__(self, database_url: str, marker: str) -> None:
        super().__init__(database_url)
        self.marker = marker.encode()
        self.dropped = threading.Event()

    def sent(self, connection: socket.socket, data: bytes) -> None:
        if not self.dropped.is_set() and self.marker in data and b'"COMPLETED"' in data:
            self.dropped.set()
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def test_a_transfer_whose_commit_is_not_heard_is_answered_as_it_committed(own_server, db, database_url):
    """The group commit executes a batch whose connection failed again, alone; when the lost batch had committed, the
    second try is refused (the funds moved already) and the transfer must be answered as the row says, once."""
    marker = f"lost answer {uuid.uuid4().hex}"
    relay = AnswerLosingRelay(database_url, marker)
    relay.start()
    try:
        server = own_server(DATABASE_URL=relay.url)
        alice, bob = make_user(server), make_user(server)
        fund(server, alice, "10.00")
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {
            "from_wallet_id": alice.wallet_id,
            "to_wallet_id": bob.wallet_id,
            "amount": "10.00",
            "description": marker,
        }
        with server.client(alice.token) as api:
            r = api.post("/transfers", json=body, headers=key)
            assert relay.dropped.is_set()
            assert r.status_code == 201, r.text
            assert r.json()["status"] == "COMPLETED" and r.json()["description"] == marker
            assert recorded(db, r.json()["id"]) == ("COMPLETED", None, 2, 0)
            again = api.post("/transfers", json=body, headers=key)
            assert again.status_code == 201 and again.json()["id"] == r.json()["id"], again.text
        assert (balance(server, alice), balance(server, bob)) == ("0.00", "10.00")
    finally:
        relay.cut()


def test_a_record_lost_before_step_2_is_a_503_and_its_retry_moves_the_money_once(own_server, db):
    """Step 1 commits without waiting for the disk, so a crash or a failover between the two steps can lose the
    PENDING row (here it is deleted while step 2 waits for the payer's lock). Nothing happened: 503 with Retry-After,
    never a 500, and the keyed retry records the transfer again and moves the money once."""
    server = own_server()
    alice, bob = make_user(server), make_user(server)
    fund(server, alice, "10.00")
    key, sender = f"lost-{uuid.uuid4().hex}", Sender(server)
    with row_lock(db, alice.wallet_id) as release:
        sender.send(alice, key, transfer(alice, bob, "4.00"))
        wait_for(db, "SELECT count(*) FROM transactions WHERE idempotency_key = %s", 1, (key,))
        with db.cursor() as cur:
            cur.execute(  # the row and its entry in the PENDING list, written in one commit and lost together
                "WITH gone AS (DELETE FROM transactions WHERE idempotency_key = %s RETURNING id) "
                "DELETE FROM pending_transactions WHERE transaction_id IN (SELECT id FROM gone)",
                (key,),
            )
        release()
    answer = sender.join(key)[key]
    assert_error(answer, 503, "SERVICE_UNAVAILABLE")
    assert answer.headers["Retry-After"] == "1"
    with server.client(alice.token) as api:
        again = api.post("/transfers", json=transfer(alice, bob, "4.00"), headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.json()["status"] == "COMPLETED", again.text
    assert recorded(db, again.json()["id"]) == ("COMPLETED", None, 2, 0)
    assert (balance(server, alice), balance(server, bob)) == ("6.00", "4.00")
