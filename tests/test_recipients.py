"""Recipients through HTTP: GET /recipients answers a masked name and wallet number for a username, phone, e-mail or
wallet number (404 for anyone else, 400 for a malformed one, 429 past the per-caller limit); transfers and holds
reach a recipient by e-mail, and a keyed transfer by e-mail runs once under a race and after a kill -9."""

import uuid

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
    unique_name,
    unique_phone,
)

from wallet.identity.recipients import LOOKUP_WINDOW, LOOKUPS

pytestmark = pytest.mark.usefixtures("ledger_audited")

RECOVERY = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "DB_POOL_SIZE": "8"}


def look_up(server, caller, **query):
    with server.client(caller.token) as client:
        return client.get("/recipients", params=query)


def with_email(server, **extra):
    name = unique_name("r")
    return make_user(server, username=name, email=f"{name}@Example.com", **extra), f"{name}@example.com"


def test_a_recipient_by_each_name_is_masked(server):
    caller = make_user(server)
    phone = unique_phone()
    recipient, address = with_email(server, phone=phone)
    masked = {
        "display_name": f"{recipient.username[:2]}\u2022\u2022\u2022{recipient.username[-1]}",
        "wallet_number_masked": f"\u2022\u2022\u2022\u2022{recipient.wallet_number[-4:]}",
        "currency": "USD",
    }
    for query in (
        {"username": recipient.username.upper()},
        {"phone": phone},
        {"email": address.upper()},
        {"wallet_number": recipient.wallet_number},
        {"username": recipient.username, "currency": "USD"},
    ):
        r = look_up(server, caller, **query)
        assert r.status_code == 200, (query, r.text)
        assert r.json() == masked
        assert recipient.username not in r.text and recipient.wallet_number not in r.text

    # By name, the wallet a transfer from that currency would reach: a EUR wallet opened later.
    with server.client(recipient.token) as client:
        euro = client.post("/wallets", json={"currency": "EUR"}).json()
    r = look_up(server, caller, username=recipient.username, currency="EUR")
    assert r.json()["wallet_number_masked"].endswith(euro["number"][-4:]) and r.json()["currency"] == "EUR"
    assert_error(look_up(server, caller, username=recipient.username, currency="NGN"), 404, "NOT_FOUND")


def test_unknown_or_frozen_is_not_found_and_a_bad_format_is_400(server, admin):
    caller = make_user(server)
    assert_error(look_up(server, caller, username=unique_name("nobody")), 404, "NOT_FOUND")
    assert_error(look_up(server, caller, wallet_number="0000000000"), 404, "NOT_FOUND")
    assert_error(look_up(server, caller, email=f"{uuid.uuid4().hex}@example.com"), 404, "NOT_FOUND")
    frozen = make_user(server)
    with server.client(admin.token) as client:
        assert client.post(f"/admin/users/{frozen.id}/freeze", json={"reason": "test"}).status_code == 200
    assert_error(look_up(server, caller, username=frozen.username), 404, "NOT_FOUND")

    for query, field in (
        ({"wallet_number": "12ab"}, "wallet_number"),
        ({"phone": "555"}, "phone"),
        ({"email": "not-an-address"}, "email"),
        ({"username": "a b"}, "username"),
        ({"username": "bob", "currency": "EURO"}, "currency"),
    ):
        body = assert_error(look_up(server, caller, **query), 400, "VALIDATION_ERROR")
        assert field in body["details"], body
    assert_error(look_up(server, caller), 400, "VALIDATION_ERROR")
    assert_error(look_up(server, caller, username="bob", phone="+15551234567"), 400, "VALIDATION_ERROR")
    assert_error(look_up(server, caller, username="bob", color="red"), 400, "VALIDATION_ERROR")
    with server.client() as client:
        assert_error(client.get("/recipients", params={"username": "bob"}), 401, "AUTHENTICATION_REQUIRED")


def test_lookups_are_throttled_per_caller(server):
    caller, other, recipient = make_user(server), make_user(server), make_user(server)
    for i in range(LOOKUPS):
        # Found or not, every lookup counts: guessing names costs the same as finding one.
        query = {"username": recipient.username} if i % 2 else {"username": unique_name("guess")}
        assert look_up(server, caller, **query).status_code in (200, 404)
    r = look_up(server, caller, username=recipient.username)
    assert_error(r, 429, "RATE_LIMITED")
    assert 0 < int(r.headers["Retry-After"]) <= LOOKUP_WINDOW
    assert look_up(server, other, username=recipient.username).status_code == 200  # another caller is not held back


# ---- to_email ----------------------------------------------------------------------------------------------------


def send(server, sender, key=None, **body):
    headers = {"Idempotency-Key": key} if key else {}
    with server.client(sender.token) as client:
        return client.post("/transfers", json={"from_wallet_id": sender.wallet_id, **body}, headers=headers)


def test_a_transfer_and_a_hold_by_e_mail(server):
    sender = make_user(server)
    recipient, address = with_email(server)
    fund(server, sender, "10.00")
    r = send(server, sender, to_email=address.upper(), amount="2.50")
    assert r.status_code == 201, r.text
    assert r.json()["counterparty"]["username"] == recipient.username
    assert balance(server, recipient) == "2.50"
    assert_error(send(server, sender, to_email=f"{uuid.uuid4().hex}@example.com", amount="1.00"), 404, "NOT_FOUND")
    body = assert_error(send(server, sender, to_email="nope", amount="1.00"), 400, "VALIDATION_ERROR")
    assert "to_email" in body["details"]
    both = send(server, sender, to_email=address, to_username=recipient.username, amount="1.00")
    assert_error(both, 400, "VALIDATION_ERROR")
    _, euro_address = with_email(server, currency="EUR")
    assert_error(send(server, sender, to_email=euro_address, amount="1.00"), 400, "CURRENCY_MISMATCH")

    with server.client(sender.token) as client:
        hold = client.post("/holds", json={"from_wallet_id": sender.wallet_id, "to_email": address, "amount": "1.00"})
    assert hold.status_code == 201, hold.text
    assert hold.json()["to_wallet_id"] == recipient.wallet_id


def test_concurrent_keyed_transfers_by_e_mail_pay_once(server):
    sender = make_user(server)
    recipient, address = with_email(server)
    fund(server, sender, "10.00")
    key = unique_name("race")
    answers = in_parallel(6, lambda _: send(server, sender, key, to_email=address, amount="3.00"))
    done = [r for r in answers if r.status_code == 201]
    assert done and len({r.json()["id"] for r in done}) == 1, [r.text for r in answers]
    assert all(r.status_code == 201 or r.json()["code"] == "IDEMPOTENCY_IN_PROGRESS" for r in answers)
    assert (balance(server, sender), balance(server, recipient)) == ("7.00", "3.00")


@pytest.mark.slow
def test_a_transfer_by_e_mail_cut_off_by_kill_9_runs_exactly_once_when_retried(own_server, db):
    doomed = own_server(**RECOVERY)
    sender = make_user(doomed)
    recipient, address = with_email(doomed)
    fund(doomed, sender, "20.00")
    key = unique_name("cut")
    pending = (
        f"SELECT COUNT(*) FROM transactions WHERE source_wallet_id = '{sender.wallet_id}' "
        f"AND type = 'TRANSFER' AND status = 'PENDING'"
    )
    kill_mid_execution(
        doomed, db, sender.wallet_id, lambda: send(doomed, sender, key, to_email=address, amount="6.00"), pending
    )

    restarted = own_server(**RECOVERY)
    r = resend_while_in_progress(lambda: send(restarted, sender, key, to_email=address, amount="6.00"))
    assert r.status_code == 201, r.text
    replay = send(restarted, sender, key, to_email=address, amount="6.00")
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert recorded(db, r.json()["id"]) == ("COMPLETED", None, 2, 0)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE source_wallet_id = %s", (sender.wallet_id,)) == 1
    assert (balance(restarted, sender), balance(restarted, recipient)) == ("14.00", "6.00")
