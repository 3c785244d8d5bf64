"""A retry with the same Idempotency-Key takes over an operation whose attempt died, and executes it exactly once,
however many retries race each other and the recovery sweep."""

import contextlib
import threading
import time
from collections import Counter

import httpx
import psycopg2
from conftest import assert_audit_ok, balance, fund, in_parallel, make_user, scalar, unique_name

from wallet.platform.db import CLIENT_CHECK_MS

# Small pools (room for the KEYS executions held on a lock, and two more): these servers run beside the session's
# others on one PostgreSQL of a hundred connections.
RECOVERY = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "8"}
KEYS = 6
RETRIES_PER_KEY = 4


def until_definite(client: httpx.Client, path: str, body: dict, key: str, deadline: float = 30) -> httpx.Response:
    """What a careful client does: resend the same key while the answer is 'in progress' or 'unavailable'."""
    stop = time.monotonic() + deadline
    while True:
        r = client.post(path, json=body, headers={"Idempotency-Key": key})
        if r.status_code not in (409, 503) or r.json()["code"] not in (
            "IDEMPOTENCY_IN_PROGRESS",
            "SERVICE_UNAVAILABLE",
        ):
            return r
        assert time.monotonic() < stop, r.text
        time.sleep(0.1)


def test_retries_racing_the_sweep_take_over_operations_cut_off_by_a_server_kill_exactly_once(
    own_server, database_url, db
):
    doomed = own_server(**RECOVERY)
    payer, payee = make_user(doomed), make_user(doomed)
    fund(doomed, payer, "100")
    keys = [unique_name("cut") for _ in range(KEYS)]
    amounts = {key: f"{i + 1}.00" for i, key in enumerate(keys)}

    def body(key):
        return {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": amounts[key]}

    # Hold the payer's wallet lock as an execution does: every transfer is recorded PENDING and waits mid-execution.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (payer.wallet_id,))

    def first_attempt(key):
        with doomed.client(payer.token) as client, contextlib.suppress(httpx.HTTPError):  # killed under it
            client.post("/transfers", json=body(key), headers={"Idempotency-Key": key})

    senders = [threading.Thread(target=first_attempt, args=(key,)) for key in keys]
    for t in senders:
        t.start()
    pending = "SELECT COUNT(*) FROM transactions WHERE idempotency_key = ANY(%s) AND status = 'PENDING'"
    deadline = time.monotonic() + 30  # generous: a busy machine may take its time to record them
    while scalar(db, pending, (keys,)) < KEYS and time.monotonic() < deadline:
        time.sleep(0.05)
    with db.cursor() as cur:
        cur.execute("SELECT status, failure_code FROM transactions WHERE idempotency_key = ANY(%s)", (keys,))
        assert cur.fetchall() == [("PENDING", None)] * KEYS, "the first attempts were not all recorded in time"
    doomed.kill()
    time.sleep(3 * CLIENT_CHECK_MS / 1000)  # PostgreSQL notices the killed server's connections are gone
    blocker.rollback()
    blocker.close()
    for t in senders:
        t.join(30)
    assert scalar(db, pending, (keys,)) == KEYS

    # A new server sweeps every second and counts a claim older than a second as abandoned; several clients retry
    # each key at once, across sweeps, until each gets a definite answer.
    restarted = own_server(**RECOVERY)

    def retry(i):
        key = keys[i % KEYS]
        with restarted.client(payer.token) as client:
            r = until_definite(client, "/transfers", body(key), key)
        return key, r.status_code, r.headers.get("Idempotent-Replayed"), r.json()

    answers = in_parallel(KEYS * RETRIES_PER_KEY, retry)
    for key in keys:
        mine = [(status, replayed, answer) for k, status, replayed, answer in answers if k == key]
        assert {status for status, _, _ in mine} == {201}, mine
        assert len({answer["id"] for _, _, answer in mine}) == 1  # the same operation for every retry
        assert Counter(replayed for _, replayed, _ in mine) == {None: 1, "true": RETRIES_PER_KEY - 1}
        assert mine[0][2]["amount"] == amounts[key] and mine[0][2]["status"] == "COMPLETED"
    with db.cursor() as cur:
        cur.execute(
            "SELECT t.status, COUNT(DISTINCT t.id), COUNT(e.id) FROM transactions t "
            "LEFT JOIN entries e ON e.transaction_id = t.id WHERE idempotency_key = ANY(%s) GROUP BY 1",
            (keys,),
        )
        assert cur.fetchall() == [("COMPLETED", KEYS, 2 * KEYS)]
    moved = sum(range(1, KEYS + 1))
    assert (balance(restarted, payer), balance(restarted, payee)) == (f"{100 - moved:.2f}", f"{moved:.2f}")
    assert_audit_ok(database_url)


def test_a_slow_attempt_and_the_retry_that_took_it_over_move_money_once(own_server, db):
    """The first attempt waits on a lock past the timeout; a retry takes the operation over and waits too. When the
    lock goes, whichever marks the row first moves the money, and the other replays that answer."""
    impatient = own_server(**RECOVERY)
    user = make_user(impatient)
    path, key = f"/wallets/{user.wallet_id}/deposit", unique_name("slow")
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (user.wallet_id,))
    answers = []

    def send():
        with impatient.client(user.token) as client:
            answers.append(client.post(path, json={"amount": "5"}, headers={"Idempotency-Key": key}))

    first = threading.Thread(target=send)
    first.start()
    time.sleep(1.5)  # past the one-second claim: the retry takes it over
    retry = threading.Thread(target=send)
    retry.start()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and scalar(
            db, "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        < 2
    ):
        time.sleep(0.05)
    blocker.rollback()
    blocker.close()
    first.join(30)
    retry.join(30)
    assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
    assert answers[0].json() == answers[1].json()
    assert sorted(str(r.headers.get("Idempotent-Replayed")) for r in answers) == ["None", "true"]
    assert balance(impatient, user) == "5.00"
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s", (key,)) == 1
