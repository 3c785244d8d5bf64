"""Money over HTTP: deposits, withdrawals, the operation endpoint, transfers, every refusal, and idempotency."""

import threading
import time
import uuid

import psycopg2
import pytest
from conftest import WALLET_KEYS, assert_error, balance, fund, make_user, recorded, scalar, unique_name, unique_phone


def initiated(db, user):
    return scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,))


def set_status(db, user, status):
    with db.cursor() as cur:
        cur.execute("UPDATE users SET status = %s WHERE id = %s", (status, user.id))


def open_wallet(server, user, currency):
    with server.client(user.token) as client:
        r = client.post("/wallets", json={"currency": currency})
    assert r.status_code == 201, r.text
    return r.json()


def post(server, user, path, body, key=None):
    headers = {"Idempotency-Key": key} if key is not None else {}
    with server.client(user.token) as client:
        return client.post(path, json=body, headers=headers)


def assert_refused(r, status, code, db=None):
    """A refusal in the contract's shape; with db, it was recorded FAILED with no entries, else not recorded."""
    body = assert_error(r, status, code)
    if db is None:
        assert "transaction_id" not in body
    else:
        assert recorded(db, body["transaction_id"]) == ("FAILED", code, 0, 0)
    return body


@pytest.fixture
def funded(server, user):
    fund(server, user, "100.00")
    return user


@pytest.fixture
def recipient(server):
    return make_user(server, phone=unique_phone())


# ---- deposits, withdrawals, operation -------------------------------------------------------------------------


def test_deposit(server, user, db):
    r = post(server, user, f"/wallets/{user.wallet_id}/deposit", {"amount": "10.50", "description": "salary"})
    assert r.status_code == 201, r.text
    tx = r.json()
    assert tx["type"] == "DEPOSIT" and tx["status"] == "COMPLETED"
    assert (tx["amount"], tx["currency"], tx["direction"], tx["counterparty"]) == ("10.50", "USD", "in", None)
    assert (tx["source_wallet_id"], tx["destination_wallet_id"]) == (None, user.wallet_id)
    assert tx["description"] == "salary" and tx["failure_code"] is None
    assert tx["reference"] and tx["created_at"].endswith("Z") and tx["completed_at"].endswith("Z")
    assert "Idempotent-Replayed" not in r.headers
    assert balance(server, user) == "10.50"
    assert recorded(db, tx["id"]) == ("COMPLETED", None, 2, 0)
    with db.cursor() as cur:  # the other leg is the USD system account, which keeps no stored balance
        cur.execute(
            "SELECT w.is_system, e.amount, e.balance_after FROM entries e JOIN wallets w ON w.id = e.wallet_id "
            "WHERE e.transaction_id = %s ORDER BY e.amount",
            (tx["id"],),
        )
        assert cur.fetchall() == [(True, -1050, None), (False, 1050, 1050)]


def test_deposit_in_currencies_with_zero_and_three_minor_digits(server, user):
    jpy, kwd = open_wallet(server, user, "JPY"), open_wallet(server, user, "KWD")
    r = post(server, user, f"/wallets/{jpy['id']}/deposit", {"amount": 1000})
    assert r.status_code == 201 and r.json()["amount"] == "1000"
    r = post(server, user, f"/wallets/{kwd['id']}/deposit", {"amount": "1.25"})
    assert r.status_code == 201 and r.json()["amount"] == "1.250"
    assert post(server, user, f"/wallets/{jpy['id']}/deposit", {"amount": "1.5"}).status_code == 400
    assert post(server, user, f"/wallets/{kwd['id']}/deposit", {"amount": "0.0001"}).status_code == 400
    assert (balance(server, user, jpy["id"]), balance(server, user, kwd["id"])) == ("1000", "1.250")


def test_withdraw(server, funded, db):
    r = post(server, funded, f"/wallets/{funded.wallet_id}/withdraw", {"amount": 30})
    assert r.status_code == 201, r.text
    tx = r.json()
    assert (tx["type"], tx["status"], tx["amount"], tx["direction"]) == ("WITHDRAWAL", "COMPLETED", "30.00", "out")
    assert (tx["source_wallet_id"], tx["destination_wallet_id"]) == (funded.wallet_id, None)
    assert balance(server, funded) == "70.00"
    assert recorded(db, tx["id"]) == ("COMPLETED", None, 2, 0)


def test_withdraw_insufficient_funds_is_recorded(server, funded, db):
    r = post(server, funded, f"/wallets/{funded.wallet_id}/withdraw", {"amount": "100.01"})
    assert_refused(r, 400, "INSUFFICIENT_FUNDS", db)
    assert balance(server, funded) == "100.00"


def test_operation_answers_the_updated_wallet(server, user, db):
    path = f"/wallets/{user.wallet_id}/operation"
    r = post(server, user, path, {"operation_type": "DEPOSIT", "amount": "25"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user.wallet_id and r.json()["balance"] == "25.00"
    assert set(r.json()) == WALLET_KEYS
    r = post(server, user, path, {"operation_type": "WITHDRAW", "amount": "5.5"})
    assert r.status_code == 200 and r.json()["balance"] == "19.50"
    assert_refused(
        post(server, user, path, {"operation_type": "WITHDRAW", "amount": "20"}), 400, "INSUFFICIENT_FUNDS", db
    )
    for bad in ("WITHDRAWAL", "deposit", None, 1):
        r = post(server, user, path, {"operation_type": bad, "amount": "1"})
        assert r.status_code == 400 and "operation_type" in r.json()["details"]
    assert balance(server, user) == "19.50"


def test_self_deposit_can_be_turned_off(own_server, user, db):
    no_deposits = own_server(ALLOW_SELF_DEPOSIT="false")
    before = initiated(db, user)
    for path, body in (("deposit", {"amount": "1"}), ("operation", {"operation_type": "DEPOSIT", "amount": "1"})):
        assert_refused(post(no_deposits, user, f"/wallets/{user.wallet_id}/{path}", body), 403, "FORBIDDEN")
    assert initiated(db, user) == before
    # Withdrawals still go through (and are refused only for funds).
    r = post(no_deposits, user, f"/wallets/{user.wallet_id}/withdraw", {"amount": "1"})
    assert_refused(r, 400, "INSUFFICIENT_FUNDS", db)


# ---- transfers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["to_wallet_id", "to_wallet_number", "to_username", "to_phone"])
def test_transfer_by_every_recipient_kind(server, funded, recipient, db, how):
    with server.client(recipient.token) as client:
        phone = client.get("/users/me").json()["phone"]
    to = {
        "to_wallet_id": recipient.wallet_id,
        "to_wallet_number": recipient.wallet_number,
        "to_username": recipient.username.upper(),
        "to_phone": phone,
    }[how]
    r = post(server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, how: to, "amount": "12.34"})
    assert r.status_code == 201, r.text
    tx = r.json()
    assert (tx["type"], tx["status"], tx["amount"], tx["direction"]) == ("TRANSFER", "COMPLETED", "12.34", "out")
    assert (tx["source_wallet_id"], tx["destination_wallet_id"]) == (funded.wallet_id, recipient.wallet_id)
    assert tx["counterparty"] == {"username": recipient.username, "wallet_number": recipient.wallet_number}
    assert (balance(server, funded), balance(server, recipient)) == ("87.66", "12.34")
    assert recorded(db, tx["id"]) == ("COMPLETED", None, 2, 0)
    with server.client(recipient.token) as client:
        seen = client.get(f"/transactions/{tx['id']}").json()
    assert seen["direction"] == "in"
    assert seen["counterparty"] == {"username": funded.username, "wallet_number": funded.wallet_number}


def test_a_refused_transfer_never_tells_the_sender_whose_phone_it_was(server, user, recipient):
    """A transfer that never completed shows the sender no counterparty: otherwise a refused transfer to a phone
    number (no money needed) would say who owns it. Its answer, the transaction and the sender's event agree."""
    with server.client(recipient.token) as client:
        phone = client.get("/users/me").json()["phone"]
    r = post(server, user, "/transfers", {"from_wallet_id": user.wallet_id, "to_phone": phone, "amount": "1.00"})
    body = assert_error(r, 400, "INSUFFICIENT_FUNDS")
    assert recipient.username not in r.text
    with server.client(user.token) as client:
        tx = client.get(f"/transactions/{body['transaction_id']}").json()
        listed = client.get("/transactions", params={"status": "FAILED"}).json()["items"]
        failed = [e for e in client.get("/events").json()["items"] if e["type"] == "transaction.failed"]
    assert (tx["status"], tx["direction"], tx["counterparty"]) == ("FAILED", "out", None)
    assert [t["counterparty"] for t in listed] == [None]
    assert [e["data"]["counterparty"] for e in failed] == [None]
    assert recipient.username not in str([tx, listed, failed]) and recipient.wallet_number not in str(
        [tx, listed, failed]
    )


def test_transfer_by_username_picks_the_wallet_in_the_source_currency(server, user, recipient):
    eur = open_wallet(server, user, "EUR")
    their_eur = open_wallet(server, recipient, "EUR")
    fund(server, user, "10", eur["id"])
    r = post(server, user, "/transfers", {"from_wallet_id": eur["id"], "to_username": recipient.username, "amount": 4})
    assert r.status_code == 201, r.text
    assert r.json()["destination_wallet_id"] == their_eur["id"]
    assert (balance(server, recipient, their_eur["id"]), balance(server, recipient)) == ("4.00", "0.00")


def test_transfer_to_a_user_without_a_wallet_in_that_currency(server, user, recipient, db):
    gbp = open_wallet(server, user, "GBP")
    fund(server, user, "10", gbp["id"])
    before = initiated(db, user)
    r = post(server, user, "/transfers", {"from_wallet_id": gbp["id"], "to_username": recipient.username, "amount": 1})
    assert_refused(r, 400, "CURRENCY_MISMATCH")
    assert initiated(db, user) == before


def test_same_wallet(server, funded, db):
    before = initiated(db, funded)
    for to in ({"to_wallet_id": funded.wallet_id}, {"to_wallet_number": funded.wallet_number}):
        r = post(server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "amount": "1", **to})
        assert_refused(r, 400, "SAME_WALLET")
    assert initiated(db, funded) == before
    assert balance(server, funded) == "100.00"


def test_transfer_between_own_wallets_is_internal(server, funded):
    second = open_wallet(server, funded, "USD")
    r = post(
        server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "to_wallet_id": second["id"], "amount": 1}
    )
    assert r.status_code == 201, r.text
    assert r.json()["direction"] == "internal"
    assert balance(server, funded, second["id"]) == "1.00"


def test_currency_mismatch(server, funded, recipient, db):
    their_eur = open_wallet(server, recipient, "EUR")
    before = initiated(db, funded)
    r = post(
        server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "to_wallet_id": their_eur["id"], "amount": 1}
    )
    assert_refused(r, 400, "CURRENCY_MISMATCH")
    assert initiated(db, funded) == before
    assert balance(server, funded) == "100.00"


@pytest.mark.parametrize(
    "to",
    [
        {"to_wallet_id": str(uuid.uuid4())},
        {"to_wallet_number": "0000000001"},
        {"to_username": "nobody_here_at_all"},
        {"to_phone": "+15550000000"},
    ],
)
def test_unknown_recipient_is_404(server, funded, db, to):
    before = initiated(db, funded)
    r = post(server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "amount": 1, **to})
    assert_refused(r, 404, "NOT_FOUND")
    assert initiated(db, funded) == before


def test_system_accounts_cannot_be_reached(server, funded, recipient, db):
    with db.cursor() as cur:
        cur.execute("SELECT id, number FROM wallets WHERE is_system AND NOT is_fx AND currency = 'USD'")
        system_id, system_number = cur.fetchone()
    for to in ({"to_wallet_id": str(system_id)}, {"to_wallet_number": system_number}):
        r = post(server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "amount": 1, **to})
        assert_refused(r, 404, "NOT_FOUND")
    for path in ("deposit", "withdraw"):
        assert_refused(post(server, funded, f"/wallets/{system_id}/{path}", {"amount": 1}), 404, "NOT_FOUND")


def test_exactly_one_recipient(server, funded, recipient):
    for to in ({}, {"to_wallet_id": recipient.wallet_id, "to_username": recipient.username}):
        r = post(server, funded, "/transfers", {"from_wallet_id": funded.wallet_id, "amount": 1, **to})
        assert_refused(r, 400, "VALIDATION_ERROR")


def test_sending_from_someone_elses_wallet_is_404(server, funded, recipient, db):
    before = initiated(db, recipient)
    r = post(
        server,
        recipient,
        "/transfers",
        {"from_wallet_id": funded.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": 1},
    )
    assert_refused(r, 404, "NOT_FOUND")
    for path in ("deposit", "withdraw"):
        assert_refused(post(server, recipient, f"/wallets/{funded.wallet_id}/{path}", {"amount": 1}), 404, "NOT_FOUND")
    assert initiated(db, recipient) == before
    assert balance(server, funded) == "100.00"


def test_transfer_insufficient_funds_is_recorded_and_shown_to_the_sender_only(server, funded, recipient, db):
    body = {"from_wallet_id": funded.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "100.01"}
    refused = assert_refused(post(server, funded, "/transfers", body), 400, "INSUFFICIENT_FUNDS", db)
    assert (balance(server, funded), balance(server, recipient)) == ("100.00", "0.00")
    tx_id = refused["transaction_id"]
    with server.client(funded.token) as client:
        seen = client.get(f"/transactions/{tx_id}").json()
        assert (seen["status"], seen["failure_code"], seen["direction"]) == ("FAILED", "INSUFFICIENT_FUNDS", "out")
        assert seen["failure_reason"] and seen["completed_at"]
        assert tx_id in [t["id"] for t in client.get("/transactions", params={"status": "FAILED"}).json()["items"]]
    with server.client(recipient.token) as client:
        assert client.get(f"/transactions/{tx_id}").status_code == 404
        assert client.get("/transactions").json()["items"] == []
        assert client.get(f"/wallets/{recipient.wallet_id}/transactions").json()["items"] == []


@pytest.mark.parametrize(("status", "code"), [("frozen", "ACCOUNT_FROZEN"), ("inactive", "ACCOUNT_INACTIVE")])
def test_blocked_sender_is_refused_and_recorded(server, funded, recipient, db, status, code):
    set_status(db, funded, status)
    transfer = {"from_wallet_id": funded.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": 1}
    assert_refused(post(server, funded, "/transfers", transfer), 403, code, db)
    for path in ("deposit", "withdraw"):
        assert_refused(post(server, funded, f"/wallets/{funded.wallet_id}/{path}", {"amount": 1}), 403, code, db)
    set_status(db, funded, "active")
    assert (balance(server, funded), balance(server, recipient)) == ("100.00", "0.00")


@pytest.mark.parametrize(("status", "code"), [("frozen", "ACCOUNT_FROZEN"), ("inactive", "ACCOUNT_INACTIVE")])
def test_blocked_recipient_is_refused_and_recorded(server, funded, recipient, db, status, code):
    set_status(db, recipient, status)
    transfer = {"from_wallet_id": funded.wallet_id, "to_username": recipient.username, "amount": 1}
    assert_refused(post(server, funded, "/transfers", transfer), 403, code, db)
    set_status(db, recipient, "active")
    assert (balance(server, funded), balance(server, recipient)) == ("100.00", "0.00")


def test_daily_limits(own_server, db):
    limited = own_server(DAILY_WITHDRAW_LIMIT="100.00", DAILY_TRANSFER_LIMIT="50.00")
    user, other = make_user(limited), make_user(limited)
    jpy = open_wallet(limited, user, "JPY")
    fund(limited, user, "500")
    fund(limited, user, "1000", jpy["id"])
    withdraw = f"/wallets/{user.wallet_id}/withdraw"
    assert post(limited, user, withdraw, {"amount": "60"}).status_code == 201
    assert post(limited, user, withdraw, {"amount": "40"}).status_code == 201
    refused = assert_refused(post(limited, user, withdraw, {"amount": "0.01"}), 400, "DAILY_LIMIT_EXCEEDED", db)
    assert "100.00 USD" in refused["error"]
    # Transfers have their own allowance; a refusal does not use any of it.
    transfer = {"from_wallet_id": user.wallet_id, "to_wallet_id": other.wallet_id}
    assert_refused(post(limited, user, "/transfers", {**transfer, "amount": "50.01"}), 400, "DAILY_LIMIT_EXCEEDED", db)
    assert post(limited, user, "/transfers", {**transfer, "amount": "50"}).status_code == 201
    assert_refused(post(limited, user, "/transfers", {**transfer, "amount": "0.01"}), 400, "DAILY_LIMIT_EXCEEDED", db)
    # The limit is per currency, in that currency's major units.
    jpy_withdraw = f"/wallets/{jpy['id']}/withdraw"
    assert post(limited, user, jpy_withdraw, {"amount": "100"}).status_code == 201
    assert_refused(post(limited, user, jpy_withdraw, {"amount": "1"}), 400, "DAILY_LIMIT_EXCEEDED", db)
    # Another user's allowance is untouched, and deposits are never limited.
    fund(limited, other, "200")
    assert post(limited, other, f"/wallets/{other.wallet_id}/withdraw", {"amount": "100"}).status_code == 201
    assert balance(limited, user) == "350.00"


def test_money_needs_authentication(api, user):
    r = api.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "1"})
    assert r.status_code == 401
    assert r.json()["code"] == "AUTHENTICATION_REQUIRED"


# ---- idempotency ----------------------------------------------------------------------------------------------


def test_replay_returns_the_first_response(server, user, db):
    key = unique_name("key")
    path = f"/wallets/{user.wallet_id}/deposit"
    first = post(server, user, path, {"amount": "7"}, key)
    again = post(server, user, path, {"amount": "7.00"}, key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert balance(server, user) == "7.00"
    assert initiated(db, user) == 1


def test_replay_of_a_recorded_failure(server, user, recipient, db):
    key = unique_name("key")
    body = {"from_wallet_id": user.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": 5}
    first = post(server, user, "/transfers", body, key)
    assert_refused(first, 400, "INSUFFICIENT_FUNDS", db)
    fund(server, user, "50")  # even with the funds now there, the key answers as it did the first time
    again = post(server, user, "/transfers", body, key)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert balance(server, recipient) == "0.00"


def test_replay_of_the_operation_endpoint(server, user):
    key = unique_name("key")
    path = f"/wallets/{user.wallet_id}/operation"
    first = post(server, user, path, {"operation_type": "DEPOSIT", "amount": "3"}, key)
    fund(server, user, "1")
    again = post(server, user, path, {"operation_type": "DEPOSIT", "amount": "3"}, key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json() and again.json()["balance"] == "3.00"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert balance(server, user) == "4.00"


def test_key_in_flight_is_409(server, user, db):
    key = unique_name("key")
    path = f"/wallets/{user.wallet_id}/deposit"
    # Hold the wallet's row lock the way an execution does, so the first request stays PENDING mid-execution.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (user.wallet_id,))
    first = []
    sender = threading.Thread(target=lambda: first.append(post(server, user, path, {"amount": "5"}, key)))
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while initiated(db, user) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        again = post(server, user, path, {"amount": "5"}, key)
        assert_refused(again, 409, "IDEMPOTENCY_IN_PROGRESS")
        assert "Idempotent-Replayed" not in again.headers
    finally:
        blocker.rollback()
        blocker.close()
        sender.join(30)
    assert first[0].status_code == 201
    later = post(server, user, path, {"amount": "5"}, key)
    assert (later.status_code, later.json(), later.headers["Idempotent-Replayed"]) == (201, first[0].json(), "true")
    assert balance(server, user) == "5.00"


def test_key_reused_with_different_parameters(server, funded, recipient):
    key = unique_name("key")
    assert post(server, funded, f"/wallets/{funded.wallet_id}/withdraw", {"amount": "1"}, key).status_code == 201
    transfer = {"from_wallet_id": funded.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "1"}
    for path, body in (
        (f"/wallets/{funded.wallet_id}/withdraw", {"amount": "2"}),
        (f"/wallets/{funded.wallet_id}/withdraw", {"amount": "1", "description": "other"}),
        (f"/wallets/{funded.wallet_id}/deposit", {"amount": "1"}),
        ("/transfers", transfer),
    ):
        assert_refused(post(server, funded, path, body, key), 422, "IDEMPOTENCY_MISMATCH")
    assert (balance(server, funded), balance(server, recipient)) == ("99.00", "0.00")


def test_keys_are_scoped_to_the_caller(server, user, recipient):
    key = unique_name("shared")
    for who in (user, recipient):
        r = post(server, who, f"/wallets/{who.wallet_id}/deposit", {"amount": "2"}, key)
        assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert (balance(server, user), balance(server, recipient)) == ("2.00", "2.00")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9", "\u00a0nbsp"])
def test_bad_idempotency_keys(server, user, db, key):
    with server.client(user.token) as client:
        r = client.post(
            f"/wallets/{user.wallet_id}/deposit",
            json={"amount": "1"},
            headers={"Idempotency-Key": key.encode("latin-1")},
        )
    assert_refused(r, 400, "VALIDATION_ERROR")
    assert "Idempotency-Key" in r.json()["details"]
    assert initiated(db, user) == 0


def test_longest_idempotency_key(server, user):
    key = "k" * 254 + "~"
    first = post(server, user, f"/wallets/{user.wallet_id}/deposit", {"amount": "1"}, key)
    again = post(server, user, f"/wallets/{user.wallet_id}/deposit", {"amount": "1"}, key)
    assert (first.status_code, again.status_code, again.headers["Idempotent-Replayed"]) == (201, 201, "true")
    assert balance(server, user) == "1.00"


def test_the_database_itself_guards_the_ledger(server, user, db):
    """Even SQL that bypasses the server cannot edit history, unbalance a transaction or overdraw a wallet."""
    fund(server, user, "10.00")
    tx = scalar(db, "SELECT id FROM transactions WHERE destination_wallet_id = %s", (user.wallet_id,))
    for statement, message in (
        ("UPDATE entries SET amount = amount * 2 WHERE transaction_id = %(tx)s", "append-only"),
        ("DELETE FROM entries WHERE transaction_id = %(tx)s", "append-only"),
        ("TRUNCATE entries CASCADE", "append-only"),
        ("UPDATE transactions SET amount = 1 WHERE id = %(tx)s", "cannot change"),
        (
            "INSERT INTO entries (transaction_id, wallet_id, amount, currency) VALUES (%(tx)s, %(wallet)s, 5, 'USD')",
            "do not sum to zero",
        ),
        ("UPDATE wallets SET balance = -1 WHERE id = %(wallet)s", "balance_not_negative"),
    ):
        with pytest.raises(psycopg2.Error, match=message), db.cursor() as cur:
            cur.execute(statement, {"tx": tx, "wallet": user.wallet_id})
    assert recorded(db, tx) == ("COMPLETED", None, 2, 0)
    assert balance(server, user) == "10.00"
