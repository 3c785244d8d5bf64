"""Reversals through HTTP: an admin gives back all or part of a deposit, withdrawal or transfer; refusals, bad input,
racing partial reversals, idempotency, the action log, and a kill -9 mid-reversal."""

import threading
import time
import uuid

import psycopg2
import pytest
from conftest import (
    assert_error,
    balance,
    fund,
    in_parallel,
    kill_mid_execution,
    make_admin,
    make_user,
    recorded,
    resend_while_in_progress,
    scalar,
    unique_name,
)

RECOVERY = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "8"}


# The ledger audit (balances, entries, reversed amounts against their reversals) passes after every test.
pytestmark = pytest.mark.usefixtures("ledger_audited")


def reverse(server, admin, transaction_id, key=None, **body):
    with server.client(admin.token) as client:
        return client.post(
            f"/admin/transactions/{transaction_id}/reverse",
            json=body,
            headers={"Idempotency-Key": key} if key else {},
        )


def reversed_ok(server, admin, transaction_id, **body):
    r = reverse(server, admin, transaction_id, **body)
    assert r.status_code == 201, r.text
    reversal = r.json()
    assert (reversal["type"], reversal["status"], reversal["reverses"]) == ("REVERSAL", "COMPLETED", transaction_id)
    return reversal


def post(server, user, path, body):
    with server.client(user.token) as client:
        r = client.post(path, json=body)
        assert r.status_code == 201, r.text
        return r.json()


def transfer(server, payer, payee, amount):
    return post(
        server,
        payer,
        "/transfers",
        {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": amount},
    )


def deposit(server, user, amount):
    return post(server, user, f"/wallets/{user.wallet_id}/deposit", {"amount": amount})


def seen_by(server, user, transaction_id):
    with server.client(user.token) as client:
        r = client.get(f"/transactions/{transaction_id}")
        assert r.status_code == 200, r.text
        return r.json()


def history_ids(server, user):
    with server.client(user.token) as client:
        r = client.get("/transactions", params={"limit": 200})
        assert r.status_code == 200, r.text
        return {t["id"]: t for t in r.json()["items"]}


def test_a_deposit_is_reversed_in_parts_then_in_full_and_both_show_in_history(server, admin, db):
    user = make_user(server)
    original = deposit(server, user, "10.00")
    part = reversed_ok(server, admin, original["id"], amount="4.00", reason="duplicate payment")
    assert (part["amount"], part["direction"], part["source_wallet_id"]) == ("4.00", "out", user.wallet_id)
    assert part["destination_wallet_id"] is None and part["reversed_amount"] == "0.00"
    assert balance(server, user) == "6.00"
    assert seen_by(server, user, original["id"])["reversed_amount"] == "4.00"
    assert recorded(db, part["id"]) == ("COMPLETED", None, 2, 0)
    # The user's wallet gives back, the currency's system account takes back: the original's legs, mirrored.
    legs = "SELECT e.amount FROM entries e JOIN wallets w ON w.id = e.wallet_id WHERE transaction_id = %s AND is_system"
    assert scalar(db, legs, (part["id"],)) == 400

    rest = reversed_ok(server, admin, original["id"])  # the default: all not yet reversed
    assert rest["amount"] == "6.00" and balance(server, user) == "0.00"
    assert seen_by(server, user, original["id"])["reversed_amount"] == "10.00"
    listed = history_ids(server, user)
    assert {original["id"], part["id"], rest["id"]} <= set(listed)
    assert listed[rest["id"]]["reverses"] == original["id"] and listed[original["id"]]["reverses"] is None
    # Nothing is left: a new request is refused before anything is recorded; an amount is refused under the locks.
    assert_error(reverse(server, admin, original["id"]), 400, "REVERSAL_EXCEEDED")
    exceeded = assert_error(reverse(server, admin, original["id"], amount="0.01"), 400, "REVERSAL_EXCEEDED")
    assert recorded(db, exceeded["transaction_id"]) == ("FAILED", "REVERSAL_EXCEEDED", 0, 0)
    # The owner is told (transaction.completed, from their side).
    with server.client(user.token) as client:
        told = [
            e
            for e in client.get("/events", params={"limit": 200}).json()["items"]
            if e["data"].get("type") == "REVERSAL"
        ]
    assert [(e["type"], e["data"]["id"]) for e in told] == [
        ("transaction.completed", part["id"]),
        ("transaction.completed", rest["id"]),
    ]


def test_a_withdrawal_is_reversed_back_into_the_wallet(server, admin, db):
    user = make_user(server)
    fund(server, user, "10.00")
    original = post(server, user, f"/wallets/{user.wallet_id}/withdraw", {"amount": "7.00"})
    part = reversed_ok(server, admin, original["id"], amount="2.50")
    assert (part["direction"], part["destination_wallet_id"], part["source_wallet_id"]) == ("in", user.wallet_id, None)
    assert balance(server, user) == "5.50"
    rest = reversed_ok(server, admin, original["id"])
    assert rest["amount"] == "4.50" and balance(server, user) == "10.00"
    assert seen_by(server, user, original["id"])["reversed_amount"] == "7.00"
    assert {part["id"], rest["id"]} <= set(history_ids(server, user))
    assert recorded(db, rest["id"]) == ("COMPLETED", None, 2, 0)


def test_a_transfer_is_reversed_from_the_recipient_to_the_sender_even_when_frozen(server, admin, db):
    sender, recipient = make_user(server), make_user(server)
    fund(server, sender, "10.00")
    original = transfer(server, sender, recipient, "8.00")
    part = reversed_ok(server, admin, original["id"], amount="3.00")
    assert (part["source_wallet_id"], part["destination_wallet_id"]) == (recipient.wallet_id, sender.wallet_id)
    assert part["counterparty"]["username"] == sender.username  # shown from the recipient's side, who gives back
    assert (balance(server, sender), balance(server, recipient)) == ("5.00", "5.00")
    # Both see the reversal in their history, each from their side.
    assert history_ids(server, sender)[part["id"]]["direction"] == "in"
    assert history_ids(server, recipient)[part["id"]]["direction"] == "out"
    # A freeze does not stop an admin's correction (it is what a frozen account is most likely to need).
    with server.client(admin.token) as client:
        assert client.post(f"/admin/users/{recipient.id}/freeze", json={"reason": "fraud"}).status_code == 200
    rest = reversed_ok(server, admin, original["id"])
    assert rest["amount"] == "5.00"
    assert (balance(server, sender), balance(server, recipient)) == ("10.00", "0.00")
    assert seen_by(server, sender, original["id"])["reversed_amount"] == "8.00"
    with server.client(admin.token) as client:
        assert client.post(f"/admin/users/{recipient.id}/unfreeze").status_code == 200


def test_a_recipient_who_spent_the_money_fails_the_reversal_and_is_never_driven_negative(server, admin, db):
    sender, recipient = make_user(server), make_user(server)
    fund(server, sender, "10.00")
    original = transfer(server, sender, recipient, "10.00")
    post(server, recipient, f"/wallets/{recipient.wallet_id}/withdraw", {"amount": "7.00"})
    refused = assert_error(reverse(server, admin, original["id"]), 400, "INSUFFICIENT_FUNDS")
    assert "3.00 USD available" in refused["error"]
    assert recorded(db, refused["transaction_id"]) == ("FAILED", "INSUFFICIENT_FUNDS", 0, 0)
    reason = scalar(db, "SELECT failure_reason FROM transactions WHERE id = %s", (refused["transaction_id"],))
    assert "comes back from has 3.00 USD available" in reason
    # What a hold reserves is not available either.
    hold = post(
        server,
        recipient,
        "/holds",
        {"from_wallet_id": recipient.wallet_id, "to_wallet_id": sender.wallet_id, "amount": "2.50"},
    )
    assert_error(reverse(server, admin, original["id"], amount="1.00"), 400, "INSUFFICIENT_FUNDS")
    assert reversed_ok(server, admin, original["id"], amount="0.50")["amount"] == "0.50"
    assert (balance(server, sender), balance(server, recipient)) == ("0.50", "2.50")
    assert seen_by(server, sender, original["id"])["reversed_amount"] == "0.50"
    with server.client(recipient.token) as client:
        assert client.post(f"/holds/{hold['id']}/void").status_code == 200


def test_reversals_are_idempotent_by_key_and_logged_once(server, admin, db):
    user = make_user(server)
    original = deposit(server, user, "10.00")
    key = unique_name("reverse")
    once = reverse(server, admin, original["id"], key, amount="3.00", reason="chargeback")
    twice = reverse(server, admin, original["id"], key, amount="3.00", reason="chargeback")
    assert (once.status_code, twice.status_code) == (201, 201), twice.text
    assert twice.json() == once.json() and twice.headers["Idempotent-Replayed"] == "true"
    assert_error(
        reverse(server, admin, original["id"], key, amount="4.00", reason="chargeback"), 422, "IDEMPOTENCY_MISMATCH"
    )
    assert_error(
        reverse(server, admin, original["id"], key, amount="3.00", reason="other"), 422, "IDEMPOTENCY_MISMATCH"
    )
    assert balance(server, user) == "7.00"
    # The default amount is resolved once: a replay answers the first attempt even after more was reversed.
    default_key = unique_name("reverse")
    everything = reverse(server, admin, original["id"], default_key)
    assert everything.status_code == 201 and everything.json()["amount"] == "7.00"
    again = reverse(server, admin, original["id"], default_key)
    assert again.status_code == 201 and again.json()["id"] == everything.json()["id"]
    # A refusal replays as itself.
    failed_key = unique_name("reverse")
    first = assert_error(reverse(server, admin, original["id"], failed_key, amount="1.00"), 400, "REVERSAL_EXCEEDED")
    replay = reverse(server, admin, original["id"], failed_key, amount="1.00")
    assert replay.json() == first and replay.headers["Idempotent-Replayed"] == "true"

    with server.client(admin.token) as client:
        r = client.get("/admin/actions", params={"action": "reverse", "target_user_id": user.id})
    assert r.status_code == 200, r.text
    logged = {a["transaction_id"]: a for a in r.json()["items"]}
    assert set(logged) == {once.json()["id"], everything.json()["id"], first["transaction_id"]}
    entry = logged[once.json()["id"]]
    assert (entry["admin_id"], entry["reason"], entry["target_wallet_id"]) == (admin.id, "chargeback", user.wallet_id)
    assert entry["details"] == {
        "amount": "3.00",
        "currency": "USD",
        "status": "COMPLETED",
        "failure_code": None,
        "reverses": original["id"],
    }
    assert logged[first["transaction_id"]]["details"]["failure_code"] == "REVERSAL_EXCEEDED"


def test_refusals_and_bad_input(server, admin, db):
    user, other = make_user(server), make_user(server)
    original = deposit(server, user, "10.00")
    with server.client(user.token) as client:
        assert_error(client.post(f"/admin/transactions/{original['id']}/reverse", json={}), 403, "FORBIDDEN")
    for body in ({"amount": "-1"}, {"amount": "0"}, {"amount": "1.001"}, {"amount": "ten"}, {"amount": 1, "extra": 1}):
        assert_error(reverse(server, admin, original["id"], **body), 400, "VALIDATION_ERROR")
    assert_error(reverse(server, admin, "not-a-uuid"), 400, "VALIDATION_ERROR")
    assert_error(reverse(server, admin, str(uuid.uuid4())), 404, "NOT_FOUND")
    assert_error(reverse(server, admin, original["id"], amount="10.01"), 400, "REVERSAL_EXCEEDED")
    reversal = reversed_ok(server, admin, original["id"], amount="1.00")
    assert_error(reverse(server, admin, reversal["id"]), 409, "NOT_REVERSIBLE")
    # A FAILED original (a refused withdrawal) is not reversible.
    with server.client(other.token) as client:
        failed = assert_error(
            client.post(f"/wallets/{other.wallet_id}/withdraw", json={"amount": "1.00"}), 400, "INSUFFICIENT_FUNDS"
        )
    assert_error(reverse(server, admin, failed["transaction_id"]), 409, "NOT_REVERSIBLE")
    # Nor a PENDING one: a transfer waiting for its payer's wallet lock.
    fund(server, other, "5.00")
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (other.wallet_id,))
    waiting = threading.Thread(target=transfer, args=(server, other, user, "2.00"))
    waiting.start()
    pending = "SELECT id FROM transactions WHERE source_wallet_id = %s AND status = 'PENDING'"
    deadline = time.monotonic() + 30
    while scalar_or_none(db, pending, (other.wallet_id,)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        pending_id = scalar_or_none(db, pending, (other.wallet_id,))
        assert pending_id is not None, "the transfer was not recorded in time"
        assert_error(reverse(server, admin, str(pending_id)), 409, "NOT_REVERSIBLE")
    finally:
        blocker.rollback()
        blocker.close()
        waiting.join(30)
    assert (balance(server, user), balance(server, other)) == ("11.00", "3.00")


def scalar_or_none(db, sql, params):
    with db.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None


@pytest.mark.parametrize("racers", [2, 8])
def test_concurrent_partial_reversals_never_add_up_to_more_than_the_original(server, admin, db, racers):
    sender, recipient = make_user(server), make_user(server)
    fund(server, sender, "10.00")
    original = transfer(server, sender, recipient, "10.00")
    # Each asks for 3.00 of 10.00: exactly three fit, whatever the order.
    answers = in_parallel(racers, lambda i: reverse(server, admin, original["id"], amount="3.00"))
    succeeded = [r for r in answers if r.status_code == 201]
    assert len(succeeded) == min(racers, 3), [r.text for r in answers]
    for r in answers:
        if r.status_code != 201:
            assert_error(r, 400, "REVERSAL_EXCEEDED")
    moved = 300 * len(succeeded)
    assert scalar(db, "SELECT reversed_amount FROM transactions WHERE id = %s", (original["id"],)) == moved
    assert balance(server, sender) == f"{moved / 100:.2f}"
    # Racing for the remainder with the default amount: exactly one takes all of it.
    answers = in_parallel(racers, lambda i: reverse(server, admin, original["id"]))
    assert sum(r.status_code == 201 for r in answers) == 1, [r.text for r in answers]
    assert all(r.json()["code"] == "REVERSAL_EXCEEDED" for r in answers if r.status_code != 201)
    assert scalar(db, "SELECT reversed_amount FROM transactions WHERE id = %s", (original["id"],)) == 1000
    assert (balance(server, sender), balance(server, recipient)) == ("10.00", "0.00")


def test_a_reversal_cut_off_by_kill_9_runs_exactly_once_when_retried(own_server, database_url, db):
    doomed = own_server(**RECOVERY)
    admin = make_admin(doomed, database_url)
    sender, recipient = make_user(doomed), make_user(doomed)
    fund(doomed, sender, "20.00")
    original = transfer(doomed, sender, recipient, "7.00")
    key = unique_name("cut")

    # The reversal is recorded PENDING and waits for the recipient's wallet lock when the server is killed.
    pending = f"SELECT COUNT(*) FROM transactions WHERE reverses = '{original['id']}' AND status = 'PENDING'"
    kill_mid_execution(
        doomed, db, recipient.wallet_id, lambda: reverse(doomed, admin, original["id"], key, amount="5.00"), pending
    )

    restarted = own_server(**RECOVERY)
    r = resend_while_in_progress(lambda: reverse(restarted, admin, original["id"], key, amount="5.00"))
    assert r.status_code == 201 and r.json()["reverses"] == original["id"], r.text
    replay = reverse(restarted, admin, original["id"], key, amount="5.00")
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert recorded(db, r.json()["id"]) == ("COMPLETED", None, 2, 0)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE reverses = %s", (original["id"],)) == 1
    assert scalar(db, "SELECT reversed_amount FROM transactions WHERE id = %s", (original["id"],)) == 500
    assert scalar(db, "SELECT COUNT(*) FROM admin_actions WHERE transaction_id = %s", (r.json()["id"],)) == 1
    assert (balance(restarted, sender), balance(restarted, recipient)) == ("18.00", "2.00")


def test_the_database_guards_reversed_amounts_and_the_audit_reports_a_mismatch(server, admin, db):
    user = make_user(server)
    original = deposit(server, user, "10.00")
    reversed_ok(server, admin, original["id"], amount="4.00")
    # A finished row changes only by its reversed_amount growing, and never past its amount.
    for change in ("reversed_amount = 0", "amount = 500", "reversed_amount = 1001", "description = 'edited'"):
        with pytest.raises(psycopg2.Error), db.cursor() as cur:
            cur.execute(f"UPDATE transactions SET {change} WHERE id = %s", (original["id"],))

    set_reversed = "SET session_replication_role = replica; UPDATE transactions SET reversed_amount = %s WHERE id = %s"
    with db.cursor() as cur:  # the triggers off for this session only: a corruption the audit must find
        cur.execute(set_reversed, (500, original["id"]))
    try:
        with server.client(admin.token) as client:
            report = client.get("/admin/audit").json()
    finally:
        with db.cursor() as cur:
            cur.execute(set_reversed + "; SET session_replication_role = DEFAULT", (400, original["id"]))
    assert report["ok"] is False
    assert report["mismatches"] == [
        {
            "kind": "transaction_reversed",
            "transaction_id": original["id"],
            "amount_minor": 1000,
            "reversed_minor": 500,
            "reversals_total_minor": 400,
        }
    ]
