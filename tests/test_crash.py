"""kill -9 during a load of transfers: after a restart the ledger balances, nothing stays PENDING, no 201 is lost."""

import random
import threading
import time

import httpx
import psycopg2
from conftest import assert_audit_ok, balance, fund, make_user, scalar, wait_for

from wallet.platform.db import CLIENT_CHECK_MS

RECOVERY = {"PENDING_TIMEOUT": "2", "RECOVERY_INTERVAL": "1"}
USERS = 10
CLIENTS = 12
STUCK_CLIENTS = 3
SUCCESSES_BEFORE_KILL = 60


def test_kill_during_transfers_then_restart(own_server, database_url, db):
    # Its own recovery must not fail the stuck transfers before the kill (a slow machine takes seconds to get there).
    doomed = own_server(**{**RECOVERY, "PENDING_TIMEOUT": "600"})
    users = [make_user(doomed) for _ in range(USERS)]
    for u in users:
        fund(doomed, u, "100")
    wallet_ids = tuple(u.wallet_id for u in users)
    hot = users[0]

    # Hold one wallet's row lock the way an execution does, so deposits to it are recorded PENDING and then wait
    # mid-execution: the kill is certain to catch some operations half done. A few clients send those; the others
    # keep transferring among the remaining wallets.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (hot.wallet_id,))

    succeeded, stop = [], threading.Event()

    def load(i):
        rng = random.Random(i)
        with doomed.client() as client:
            while not stop.is_set():
                sender, recipient = rng.sample(users[1:], 2)
                path, body = "/transfers", {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id}
                if i < STUCK_CLIENTS:
                    sender, path, body = hot, f"/wallets/{hot.wallet_id}/deposit", {}
                amount = f"{rng.randint(1, 500) / 100:.2f}"
                try:
                    r = client.post(path, json={**body, "amount": amount}, headers=sender.headers)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    succeeded.append(r.json()["id"])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(succeeded) < SUCCESSES_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.05)
    doomed.kill()
    stop.set()
    for t in threads:
        t.join(30)
    touching = "(source_wallet_id IN %(w)s OR destination_wallet_id IN %(w)s)"
    pending_at_kill = scalar(
        db, f"SELECT COUNT(*) FROM transactions WHERE status = 'PENDING' AND {touching}", {"w": wallet_ids}
    )
    time.sleep(3 * CLIENT_CHECK_MS / 1000)  # PostgreSQL notices the killed server's connections are gone
    blocker.rollback()
    blocker.close()
    assert len(succeeded) >= SUCCESSES_BEFORE_KILL, "the load did not get going before the kill"
    assert pending_at_kill >= STUCK_CLIENTS

    restarted = own_server(**RECOVERY)
    # Recovery settles what the kill left PENDING within the timeout, one recovery interval, and a margin.
    pending = f"SELECT COUNT(*) FROM transactions WHERE status = 'PENDING' AND {touching}"
    wait_for(lambda: scalar(db, pending, {"w": wallet_ids}) == 0, timeout=2 + 1 + 1)
    with db.cursor() as cur:
        cur.execute(
            f"SELECT status, failure_code, COUNT(*) FROM transactions WHERE {touching} GROUP BY 1, 2", {"w": wallet_ids}
        )
        by_outcome = {(status, code): n for status, code, n in cur.fetchall()}
        cur.execute("SELECT id::text FROM transactions WHERE id::text = ANY(%s) AND status = 'COMPLETED'", (succeeded,))
        completed = {row[0] for row in cur.fetchall()}
    print(f"\ncrash: {len(succeeded)} transfers seen to succeed, {pending_at_kill} PENDING at the kill: {by_outcome}")
    assert by_outcome[("FAILED", "INTERRUPTED")] >= pending_at_kill
    assert completed == set(succeeded)
    # Transfers only move money between these wallets, and the hot wallet's deposits never completed.
    assert scalar(db, "SELECT SUM(balance) FROM wallets WHERE id IN %(w)s", {"w": wallet_ids}) == USERS * 100_00
    assert_audit_ok(database_url)

    # The restarted server serves the wallet whose executions were cut off.
    before = balance(restarted, hot)
    with restarted.client(hot.token) as client:
        assert client.post(f"/wallets/{hot.wallet_id}/deposit", json={"amount": "1.00"}).status_code == 201
    assert float(balance(restarted, hot)) == float(before) + 1


def test_a_slow_execution_without_a_key_failed_by_recovery_moves_no_money(own_server, db):
    """An execution without a key that outlives the timeout is failed INTERRUPTED by the sweep (nothing could ever
    retry it); when it resumes it must not move money, and its client gets a definite 409, not a 5xx."""
    impatient = own_server(PENDING_TIMEOUT="1", RECOVERY_INTERVAL="1")
    user = make_user(impatient)
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (user.wallet_id,))
    first = []
    with impatient.client(user.token) as client:
        sender = threading.Thread(
            target=lambda: first.append(client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "5"}))
        )
        sender.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not scalar(
            db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s AND status = 'FAILED'", (user.id,)
        ):
            time.sleep(0.1)
        blocker.rollback()
        blocker.close()
        sender.join(30)
    body = first[0].json()
    assert (first[0].status_code, body["code"]) == (409, "INTERRUPTED"), body
    assert scalar(db, "SELECT failure_code FROM transactions WHERE id = %s", (body["transaction_id"],)) == "INTERRUPTED"
    assert scalar(db, "SELECT COUNT(*) FROM entries WHERE transaction_id = %s", (body["transaction_id"],)) == 0
    assert balance(impatient, user) == "0.00"
