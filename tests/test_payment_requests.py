"""Payment requests through HTTP: ask, list, pay, decline, cancel, expire; refusals, races, and a kill -9 mid-pay."""

import email
import email.policy
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    assert_error,
    balance,
    fund,
    in_parallel,
    kill_mid_execution,
    make_user,
    recorded,
    resend_while_in_progress,
    scalar,
    shared_link,
    unique_name,
    unique_phone,
    wait_for,
)

RECOVERY = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "8"}

# The ledger audit (balances, entries, and each paid request's one transfer) passes after every test.
pytestmark = pytest.mark.usefixtures("ledger_audited")


def ask(server, payee, payer, amount, currency="USD", **extra):
    body = {"to_username": payer.username, "amount": amount, "currency": currency, **extra}
    with server.client(payee.token) as client:
        return client.post("/payment-requests", json=body)


def asked(server, payee, payer, amount, **extra):
    r = ask(server, payee, payer, amount, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def pay(server, payer, request_id, key=None, wallet_id=None):
    with server.client(payer.token) as client:
        return client.post(
            f"/payment-requests/{request_id}/pay",
            json={"from_wallet_id": wallet_id or payer.wallet_id},
            headers={"Idempotency-Key": key} if key else {},
        )


def act(server, who, request_id, action):
    with server.client(who.token) as client:
        return client.post(f"/payment-requests/{request_id}/{action}")


def get_request(server, who, request_id):
    with server.client(who.token) as client:
        r = client.get(f"/payment-requests/{request_id}")
        assert r.status_code == 200, r.text
        return r.json()


def paid_transfers(db, request_id):
    """The COMPLETED transfers linked to the request (exactly one once it is PAID)."""
    return scalar(
        db,
        "SELECT COUNT(*) FROM transactions t JOIN payment_requests r ON r.transaction_id = t.id "
        "WHERE r.id = %s AND t.status = 'COMPLETED'",
        (request_id,),
    )


def completed_between(db, payer, payee):
    return scalar(
        db,
        "SELECT COUNT(*) FROM transactions WHERE source_wallet_id = %s AND destination_wallet_id = %s "
        "AND status = 'COMPLETED'",
        (payer.wallet_id, payee.wallet_id),
    )


def test_a_request_is_asked_listed_and_paid_once_with_its_events(server, db):
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "20.00")
    request = asked(server, payee, payer, "7.50", description="dinner")
    assert request["status"] == "OPEN" and request["transaction_id"] is None
    assert request["payee"] == {"username": payee.username, "wallet_number": payee.wallet_number}
    assert (request["payer"], request["amount"], request["currency"]) == ({"username": payer.username}, "7.50", "USD")

    with server.client(payer.token) as client:
        listed = client.get("/payment-requests", params={"role": "payer", "status": "OPEN"}).json()["items"]
        assert [r["id"] for r in listed] == [request["id"]]
        assert client.get("/payment-requests", params={"role": "payee"}).json()["items"] == []

    key = unique_name("pay")
    first, again = pay(server, payer, request["id"], key), pay(server, payer, request["id"], key)
    assert (first.status_code, again.status_code) == (201, 201), first.text
    tx = first.json()
    assert (tx["type"], tx["amount"], tx["payment_request_id"], tx["description"]) == (
        "TRANSFER",
        "7.50",
        request["id"],
        "dinner",
    )
    assert again.json()["id"] == tx["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert_error(pay(server, payer, request["id"], key, wallet_id=payee.wallet_id), 404, "NOT_FOUND")
    # Another key: the request is no longer open, and nothing is recorded.
    assert_error(pay(server, payer, request["id"], unique_name("pay")), 409, "REQUEST_NOT_OPEN")
    shown = get_request(server, payee, request["id"])
    assert (shown["status"], shown["transaction_id"]) == ("PAID", tx["id"])
    with server.client(payee.token) as client:  # the transfer names the request wherever it is read
        assert client.get(f"/transactions/{tx['id']}").json()["payment_request_id"] == request["id"]
        assert client.get("/transactions").json()["items"][0]["payment_request_id"] == request["id"]
    assert (balance(server, payer), balance(server, payee)) == ("12.50", "7.50")
    assert paid_transfers(db, request["id"]) == 1 and completed_between(db, payer, payee) == 1

    for user in (payer, payee):
        with server.client(user.token) as client:
            seen = [
                (e["type"], e["data"]["id"]) for e in client.get("/events").json()["items"] if "request" in e["type"]
            ]
        assert seen == [("payment_request.created", request["id"]), ("payment_request.paid", request["id"])]


def test_the_payer_is_named_by_phone_email_or_wallet_number_and_lists_page(server):
    phone, email = unique_phone(), f"{unique_name()}@example.com"
    payee, payer = make_user(server), make_user(server, phone=phone, email=email)
    names = ({"to_phone": phone}, {"to_email": email.upper()}, {"to_wallet_number": payer.wallet_number})
    made = []
    for name in names:
        with server.client(payee.token) as client:
            r = client.post("/payment-requests", json={**name, "amount": "1", "currency": "usd"})
        assert r.status_code == 201 and r.json()["payer"]["username"] == payer.username, r.text
        made.append(r.json()["id"])
    with server.client(payer.token) as client:
        page = client.get("/payment-requests", params={"limit": 2}).json()
        rest = client.get("/payment-requests", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in page["items"] + rest["items"]] == made[::-1] and rest["next_cursor"] is None


def test_decline_and_cancel_close_a_request_for_good(server, db):
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    declined, cancelled = asked(server, payee, payer, "1.00"), asked(server, payee, payer, "2.00")
    assert_error(act(server, payee, declined["id"], "decline"), 403, "FORBIDDEN")  # only the payer declines
    assert_error(act(server, payer, cancelled["id"], "cancel"), 403, "FORBIDDEN")  # only the payee cancels
    r = act(server, payer, declined["id"], "decline")
    assert r.status_code == 200 and r.json()["status"] == "DECLINED", r.text
    r = act(server, payee, cancelled["id"], "cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
    for request in (declined, cancelled):
        assert_error(pay(server, payer, request["id"], unique_name("pay")), 409, "REQUEST_NOT_OPEN")
        assert_error(act(server, payer, request["id"], "decline"), 409, "REQUEST_NOT_OPEN")
        assert_error(act(server, payee, request["id"], "cancel"), 409, "REQUEST_NOT_OPEN")
    assert balance(server, payer) == "10.00" and completed_between(db, payer, payee) == 0
    with server.client(payer.token) as client:
        events = [e["type"] for e in client.get("/events").json()["items"] if "request" in e["type"]]
    assert events == [
        "payment_request.created",
        "payment_request.created",
        "payment_request.declined",
        "payment_request.cancelled",
    ]


def test_refusals_and_bad_input(server, db):
    payee, payer, stranger = make_user(server), make_user(server), make_user(server)
    fund(server, payer, "5.00")
    with server.client(payee.token) as client:
        for body in (
            {"amount": "1", "currency": "USD"},
            {"to_username": payer.username, "to_phone": "+15551234567", "amount": "1", "currency": "USD"},
            {"to_username": payer.username, "amount": "1.001", "currency": "USD"},
            {"to_username": payer.username, "amount": "0", "currency": "USD"},
            {"to_username": payer.username, "amount": "1", "currency": "US"},
            {"to_username": payer.username, "amount": "1", "currency": "USD", "expires_in": 59},
            {"to_username": payer.username, "amount": "1", "currency": "USD", "extra": 1},
            {"to_username": payee.username, "amount": "1", "currency": "USD"},
            {"to_email": "not-an-address", "amount": "1", "currency": "USD"},
        ):
            assert_error(client.post("/payment-requests", json=body), 400, "VALIDATION_ERROR")
        unknown = {"to_username": unique_name(), "amount": "1", "currency": "USD"}
        assert_error(client.post("/payment-requests", json=unknown), 404, "NOT_FOUND")
        no_wallet = {"to_username": payer.username, "amount": "1", "currency": "EUR"}
        assert_error(client.post("/payment-requests", json=no_wallet), 400, "CURRENCY_MISMATCH")
        assert_error(client.get("/payment-requests", params={"role": "both"}), 400, "VALIDATION_ERROR")
        assert_error(client.get("/payment-requests/not-a-uuid"), 400, "VALIDATION_ERROR")

    request = asked(server, payee, payer, "8.00")
    assert_error(pay(server, stranger, request["id"]), 404, "NOT_FOUND")  # not theirs to see
    assert_error(pay(server, payee, request["id"]), 403, "FORBIDDEN")  # the payee cannot pay their own request
    with server.client(stranger.token) as client:
        assert_error(client.get(f"/payment-requests/{request['id']}"), 404, "NOT_FOUND")
    with server.client(payer.token) as client:
        assert_error(client.post(f"/payment-requests/{request['id']}/pay", json={}), 400, "VALIDATION_ERROR")
    refused = assert_error(pay(server, payer, request["id"]), 400, "INSUFFICIENT_FUNDS")
    assert recorded(db, refused["transaction_id"]) == ("FAILED", "INSUFFICIENT_FUNDS", 0, 0)
    assert get_request(server, payer, request["id"])["status"] == "OPEN"  # a refused pay leaves it open
    with server.client(payer.token) as client:  # a wallet in another currency cannot pay it
        euros = client.post("/wallets", json={"currency": "EUR"}).json()["id"]
    assert_error(pay(server, payer, request["id"], wallet_id=euros), 400, "CURRENCY_MISMATCH")
    fund(server, payer, "3.00")
    assert pay(server, payer, request["id"]).status_code == 201
    assert balance(server, payer) == "0.00"


def test_a_request_s_link_and_qr_code_name_its_page_on_this_server(server):
    """GET /payment-requests/{id}/link: the request's page in the web wallet, on this server as it was reached, and
    that link's QR code drawn by the server (the same SVG segno draws for it); payer and payee only; no other text."""
    payee, payer, stranger = make_user(server), make_user(server), make_user(server)
    request = asked(server, payee, payer, "2.00")
    path = f"/payment-requests/{request['id']}/link"
    shared = shared_link(server, payee, path, f"{server.url}/#/pay/{request['id']}")
    assert shared["qr_code"].startswith("data:image/svg+xml;")
    with server.client(payee.token) as client:
        assert_error(client.get("/payment-requests/not-a-uuid/link"), 400, "VALIDATION_ERROR")
        assert_error(client.get(f"/payment-requests/{uuid.uuid4()}/link"), 404, "NOT_FOUND")
        # The link names this server by its Host: one that is no plain host[:port] makes no link.
        assert_error(client.get(path, headers={"Host": "x'y"}), 400, "VALIDATION_ERROR")
        # Nothing the caller sends is encoded.
        assert client.get(path, params={"link": "https://evil.example"}).json() == shared
    with server.client(payer.token) as client:
        assert client.get(path).json() == shared
    with server.client(stranger.token) as client:
        assert_error(client.get(path), 404, "NOT_FOUND")
    with server.client() as client:
        assert_error(client.get(path), 401, "AUTHENTICATION_REQUIRED")


def test_an_expired_request_is_refused_at_once_and_the_sweep_marks_it(own_server, db):
    server = own_server(**RECOVERY)
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    request = asked(server, payee, payer, "4.00", expires_in=60)
    with db.cursor() as cur:  # a minute is the shortest expiry the API takes: move this one's into the past
        cur.execute(
            "UPDATE payment_requests SET expires_at = now() - interval '1 second' WHERE id = %s", (request["id"],)
        )
    assert get_request(server, payer, request["id"])["status"] == "EXPIRED"  # shown so before the sweep runs
    assert_error(pay(server, payer, request["id"], unique_name("pay")), 409, "REQUEST_NOT_OPEN")
    assert_error(act(server, payer, request["id"], "decline"), 409, "REQUEST_NOT_OPEN")
    with server.client(payer.token) as client:
        listed = client.get("/payment-requests", params={"status": "EXPIRED"}).json()["items"]
        assert [r["id"] for r in listed] == [request["id"]]
        assert client.get("/payment-requests", params={"status": "OPEN"}).json()["items"] == []
    sweep = "SELECT status FROM payment_requests WHERE id = %s"
    deadline = time.monotonic() + 15
    while scalar(db, sweep, (request["id"],)) == "OPEN" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scalar(db, sweep, (request["id"],)) == "EXPIRED"
    with server.client(payee.token) as client:
        events = [e["type"] for e in client.get("/events").json()["items"] if "request" in e["type"]]
    assert events == ["payment_request.created", "payment_request.expired"]
    assert balance(server, payer) == "10.00"


def test_the_payer_is_mailed_the_request(alone, tmp_path):
    server = alone(EVENTS_POLL_MS="50", VAR_DIR=str(tmp_path))
    payee, payer = make_user(server), make_user(server, email=f"{unique_name()}@example.com")
    request = asked(server, payee, payer, "12.00", description="bike <repair>")
    with server.client(payer.token) as client:
        (event_id,) = [e["id"] for e in client.get("/events").json()["items"] if e["type"] == "payment_request.created"]
    path = Path(tmp_path) / "mail" / f"event-{event_id}.eml"
    wait_for(path.exists)
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == f"{payee.username} asks you for 12.00 USD"
    text = message.get_body(("plain",)).get_content()
    assert payee.wallet_number in text and "bike <repair>" in text and request["expires_at"][:10] in text
    assert "bike &lt;repair&gt;" in message.get_body(("html",)).get_content()


# ---- races ----------------------------------------------------------------------------------------------------


def test_concurrent_pays_with_different_keys_end_in_one_transfer(server, db):
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    for _ in range(4):
        request = asked(server, payee, payer, "5.00")
        answers = in_parallel(4, lambda i, r=request: pay(server, payer, r["id"], unique_name(f"race{i}")))
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 201 and codes[1:] == [409, 409, 409], [a.text for a in answers]
        assert {a.json()["code"] for a in answers if a.status_code == 409} == {"REQUEST_NOT_OPEN"}
        assert paid_transfers(db, request["id"]) == 1
    assert completed_between(db, payer, payee) == 4
    assert (balance(server, payer), balance(server, payee)) == ("30.00", "20.00")


def test_a_pay_racing_a_decline_and_a_cancel_wins_or_loses_whole(server, db):
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "50.00")
    for _ in range(4):
        request = asked(server, payee, payer, "2.00")
        r_pay, r_decline, r_cancel = in_parallel(
            3,
            lambda i, r=request: [
                lambda: pay(server, payer, r["id"]),
                lambda: act(server, payer, r["id"], "decline"),
                lambda: act(server, payee, r["id"], "cancel"),
            ][i](),
        )
        winners = [a for a in (r_pay, r_decline, r_cancel) if a.status_code in (200, 201)]
        assert len(winners) == 1, [a.text for a in (r_pay, r_decline, r_cancel)]
        status = get_request(server, payee, request["id"])["status"]
        assert (status == "PAID") == (r_pay.status_code == 201) == (paid_transfers(db, request["id"]) == 1)
    paid = completed_between(db, payer, payee)
    assert balance(server, payee) == f"{2 * paid}.00"


# ---- crash --------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pay_cut_off_by_kill_9_runs_exactly_once_when_retried(own_server, db):
    doomed = own_server(**RECOVERY)
    payee, payer = make_user(doomed), make_user(doomed)
    fund(doomed, payer, "20.00")
    request = asked(doomed, payee, payer, "6.00")
    key = unique_name("cut")

    # The pay is recorded PENDING and waits for the payer's wallet lock when the server is killed.
    pending = (
        f"SELECT COUNT(*) FROM transactions WHERE source_wallet_id = '{payer.wallet_id}' "
        f"AND type = 'TRANSFER' AND status = 'PENDING'"
    )
    kill_mid_execution(doomed, db, payer.wallet_id, lambda: pay(doomed, payer, request["id"], key), pending)

    restarted = own_server(**RECOVERY)
    r = resend_while_in_progress(lambda: pay(restarted, payer, request["id"], key))
    assert r.status_code == 201 and r.json()["payment_request_id"] == request["id"], r.text
    replay = pay(restarted, payer, request["id"], key)
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert recorded(db, r.json()["id"]) == ("COMPLETED", None, 2, 0)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE source_wallet_id = %s", (payer.wallet_id,)) == 1
    assert get_request(restarted, payee, request["id"])["transaction_id"] == r.json()["id"]
    assert (balance(restarted, payer), balance(restarted, payee)) == ("14.00", "6.00")
