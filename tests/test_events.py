"""The event outbox over HTTP: each change writes its events in its own commit; GET /events replays them in order."""

import random
import threading
import time

import httpx
import psycopg2
import pytest
from conftest import assert_audit_ok, assert_error, fund, in_parallel, log_in, make_user, scalar

from scripts.local_services import libpq_url
from wallet.platform.db import CLIENT_CHECK_MS


def events_of(server, user, after=0, limit=200):
    with server.client(user.token) as client:
        r = client.get("/events", params={"after": after, "limit": limit})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def transact(server, user, path, body):
    with server.client(user.token) as client:
        return client.post(path, json=body)


def test_a_transfer_tells_the_sender_and_the_recipient(server, database_url):
    alice, bob = make_user(server), make_user(server)
    fund(server, alice, "10.00")
    mark = events_of(server, alice)[-1]["id"]
    r = transact(
        server,
        alice,
        "/transfers",
        {"from_wallet_id": alice.wallet_id, "to_wallet_id": bob.wallet_id, "amount": "2.50"},
    )
    assert r.status_code == 201, r.text
    sent = events_of(server, alice, after=mark)
    assert [e["type"] for e in sent] == ["transaction.completed"]
    assert sent[0]["data"] == r.json()  # the Transaction exactly as the API answered it
    received = events_of(server, bob)
    assert [e["type"] for e in received] == ["transfer.received"]
    with server.client(bob.token) as client:
        assert received[0]["data"] == client.get(f"/transactions/{r.json()['id']}").json()
    assert received[0]["data"]["direction"] == "in"
    assert received[0]["data"]["counterparty"]["username"] == alice.username
    assert received[0]["created_at"] == received[0]["data"]["completed_at"]
    assert_audit_ok(database_url)


def test_a_refused_transfer_tells_only_the_sender(server):
    alice, bob = make_user(server), make_user(server)
    r = transact(
        server,
        alice,
        "/transfers",
        {"from_wallet_id": alice.wallet_id, "to_wallet_id": bob.wallet_id, "amount": "1.00"},
    )
    assert_error(r, 400, "INSUFFICIENT_FUNDS")
    (failed,) = events_of(server, alice)
    assert failed["type"] == "transaction.failed"
    assert failed["data"]["id"] == r.json()["transaction_id"]
    assert failed["data"]["status"] == "FAILED" and failed["data"]["failure_code"] == "INSUFFICIENT_FUNDS"
    assert events_of(server, bob) == []


def test_deposits_and_withdrawals(server):
    alice = make_user(server)
    fund(server, alice, "5.00")
    r = transact(server, alice, f"/wallets/{alice.wallet_id}/withdraw", {"amount": "1.00"})
    assert r.status_code == 201, r.text
    assert [(e["type"], e["data"]["type"]) for e in events_of(server, alice)] == [
        ("transaction.completed", "DEPOSIT"),
        ("deposit.completed", "DEPOSIT"),
        ("transaction.completed", "WITHDRAWAL"),
    ]


def test_an_admin_credit_and_status_changes_reach_the_user(server, admin):
    user = make_user(server)
    with server.client(admin.token) as client:
        r = client.post(f"/admin/wallets/{user.wallet_id}/deposit", json={"amount": "3.00", "reason": "goodwill"})
        assert r.status_code == 201, r.text
        for action in ("freeze", "freeze", "unfreeze", "deactivate", "activate"):
            assert client.post(f"/admin/users/{user.id}/{action}").status_code == 200
    found = events_of(server, log_in(server, user.username))  # deactivation ended the old login
    assert [e["type"] for e in found] == [
        "deposit.completed",
        "account.frozen",  # once: the repeated freeze changed nothing
        "account.unfrozen",
        "account.deactivated",
        "account.activated",
    ]
    assert found[0]["data"]["amount"] == "3.00" and found[0]["data"]["direction"] == "in"
    assert found[1]["data"] == {"user_id": user.id, "status": "frozen", "previous_status": "active"}
    assert [e["id"] for e in found] == sorted(e["id"] for e in found)


def test_api_keys_and_closing_the_account_are_events(server, admin, db):
    """Creating, rolling over and revoking a key tell its owner (never the secret); so does closing one's own
    account, which the user reads afterwards through an admin's eyes."""
    user = make_user(server)
    with server.client(user.token) as client:
        r = client.post("/keys", json={"name": "ci", "scopes": ["read"], "expires_in": "1D"})
        assert r.status_code == 201, r.text
        first = r.json()
        r = client.post(f"/keys/{first['id']}/rollover", json={"grace_seconds": 60})
        assert r.status_code == 201, r.text
        second = r.json()
        for _ in range(2):  # revoking twice is one change, one event
            assert client.post(f"/keys/{second['id']}/revoke").status_code == 200
        found = events_of(server, user)
        assert client.delete("/users/me").status_code == 204
    assert [(e["type"], e["data"]["id"]) for e in found] == [
        ("api_key.created", first["id"]),
        ("api_key.revoked", first["id"]),  # rolled over: it stops when its grace ends (its revoked_at)
        ("api_key.created", second["id"]),
        ("api_key.revoked", second["id"]),
    ]
    assert found[1]["data"]["revoked_at"] > found[1]["created_at"]
    assert not any(first["key"] in str(e) or second["key"] in str(e) for e in found)
    closed = scalar(db, "SELECT data FROM events WHERE user_id = %s AND type = 'account.deactivated'", (user.id,))
    assert closed == {"user_id": user.id, "status": "inactive", "previous_status": "active"}


def test_pages_oldest_first_and_input_is_checked(server):
    alice = make_user(server)
    for _ in range(3):
        fund(server, alice, "1.00")
    everything = events_of(server, alice)
    assert len(everything) == 6
    seen, cursor = [], None
    with server.client(alice.token) as client:
        while True:
            page = client.get("/events", params={"limit": 4, **({"cursor": cursor} if cursor else {})}).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == everything
        assert client.get("/events", params={"after": everything[2]["id"]}).json()["items"] == everything[3:]
        for bad in (
            {"after": -1},
            {"after": "x"},
            {"after": 2**63},
            {"limit": 0},
            {"cursor": "nope"},
            {"after": 1, "cursor": page_cursor(client)},
            {"since": 1},
        ):
            assert_error(client.get("/events", params=bad), 400, "VALIDATION_ERROR")
        assert_error(httpx.get(f"{server.url}/api/v1/events"), 401, "AUTHENTICATION_REQUIRED")


def page_cursor(client):
    return client.get("/events", params={"limit": 1}).json()["next_cursor"]


def test_a_reader_following_after_misses_nothing_while_events_commit_concurrently(server, database_url):
    """Many senders pay one recipient at once, each into another of the recipient's wallets (so no wallet lock
    orders the recipient's events); a reader polling ?after= the last id it saw must see every event once."""
    payee = make_user(server)
    senders = [make_user(server) for _ in range(8)]
    with server.client(payee.token) as client:
        into = [payee.wallet_id] + [client.post("/wallets", json={"currency": "USD"}).json()["id"] for _ in range(7)]
    for s in senders:
        fund(server, s, "100.00")
    done, seen, after = threading.Event(), [], 0

    def follow():
        nonlocal after
        with server.client(payee.token) as client:
            while True:
                finished = done.is_set()
                items = client.get("/events", params={"after": after, "limit": 200}).json()["items"]
                seen.extend(items)
                if items:
                    after = items[-1]["id"]
                elif finished:
                    return

    reader = threading.Thread(target=follow)
    reader.start()

    def pay(i):
        rng = random.Random(i)
        with server.client(senders[i].token) as client:
            for _ in range(25):
                r = client.post(
                    "/transfers",
                    json={
                        "from_wallet_id": senders[i].wallet_id,
                        "to_wallet_id": into[i],
                        "amount": f"0.{rng.randint(1, 99):02d}",
                    },
                )
                assert r.status_code == 201, r.text

    in_parallel(len(senders), pay)
    done.set()
    reader.join(60)
    stored = events_of(server, payee, limit=200)
    assert len(stored) == 8 * 25
    assert [e["id"] for e in seen] == [e["id"] for e in stored]
    assert_audit_ok(database_url)


@pytest.mark.slow
def test_events_commit_with_their_change_through_a_kill(alone):
    """kill -9 while transfers run: afterwards every finished transaction has exactly its events, a transaction
    left PENDING gets its transaction.failed when recovery fails it, and no event exists without its change."""
    # Its own recovery must not fail the stuck deposits before the kill (a slow machine takes seconds to send 80).
    doomed = alone(PENDING_TIMEOUT="600", RECOVERY_INTERVAL="1")
    db = psycopg2.connect(libpq_url(alone.database_url))
    db.autocommit = True
    users = [make_user(doomed) for _ in range(6)]
    for u in users:
        fund(doomed, u, "50.00")
    stuck = users[0]
    # Hold one wallet's row lock as an execution does: deposits to it are recorded PENDING and wait there.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (stuck.wallet_id,))
    stop, started = threading.Event(), []

    def load(i):
        rng = random.Random(i)
        with doomed.client() as client:
            while not stop.is_set():
                sender, recipient = rng.sample(users[1:], 2)
                path, body = "/transfers", {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id}
                if i < 2:
                    sender, path, body = stuck, f"/wallets/{stuck.wallet_id}/deposit", {}
                try:
                    client.post(
                        path, headers=sender.headers, json={**body, "amount": f"{rng.randint(1, 3000) / 100:.2f}"}
                    )
                    started.append(i)
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(started) < 80 and time.monotonic() < deadline:
        time.sleep(0.02)
    doomed.kill()
    stop.set()
    for t in threads:
        t.join(30)
    time.sleep(3 * CLIENT_CHECK_MS / 1000)  # PostgreSQL notices the killed server's connections are gone
    blocker.rollback()
    blocker.close()
    scope = {"u": tuple(u.id for u in users)}
    touching = "(initiator_id IN %(u)s OR destination_user_id IN %(u)s)"
    assert scalar(db, f"SELECT COUNT(*) FROM transactions WHERE status = 'PENDING' AND {touching}", scope) >= 2
    alone(PENDING_TIMEOUT="2", RECOVERY_INTERVAL="1")
    time.sleep(4)  # the timeout, a recovery interval, a margin
    assert scalar(db, f"SELECT COUNT(*) FROM transactions WHERE status = 'PENDING' AND {touching}", scope) == 0
    assert (
        scalar(db, f"SELECT COUNT(*) FROM transactions WHERE failure_code = 'INTERRUPTED' AND {touching}", scope) >= 2
    )
    # The events each transaction must have produced, derived from the transactions; then what the outbox holds.
    with db.cursor() as cur:
        cur.execute(
            f"""
            SELECT id::text, 'transaction.' || lower(status), initiator_id::text FROM transactions WHERE {touching}
            UNION ALL
            SELECT id::text, CASE type WHEN 'DEPOSIT' THEN 'deposit.completed' ELSE 'transfer.received' END,
                destination_user_id::text FROM transactions
            WHERE {touching} AND status = 'COMPLETED' AND (type = 'DEPOSIT' OR destination_user_id <> initiator_id)
            """,
            scope,
        )
        expected = sorted(cur.fetchall())
        cur.execute("SELECT data->>'id', type, user_id::text FROM events WHERE user_id IN %(u)s", scope)
        written = sorted(cur.fetchall())
    assert written == expected
    assert len(expected) > 80
    assert_audit_ok(alone.database_url)
    db.close()
