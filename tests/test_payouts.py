"""Payouts to bank accounts (issue 24) end to end: the real server against the fake Paystack
(scripts/fake_paystack.py, a real local HTTP server speaking Paystack's Transfers API), the ledger audited after
every test."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
import test_paystack
from conftest import (
    JWT_SECRET,
    assert_error,
    balance,
    fund,
    in_parallel,
    kill_mid_execution,
    log_in,
    make_admin,
    make_user,
    scalar,
    unique_name,
    wait_for,
)

SECRET = test_paystack.SECRET
fake = test_paystack.fake  # the fake Paystack, as test_paystack starts it (a fixture, once per module)
Fake = test_paystack.Fake


@pytest.fixture(scope="module")
def pserver(module_server: Any, fake: Fake) -> Any:
    return module_server(**test_paystack.paystack_env(fake))


@pytest.fixture(scope="module")
def admin_name(pserver: Any, database_url: str) -> str:
    return make_admin(pserver, database_url).username


@pytest.fixture(autouse=True)
def audited(pserver: Any, fake: Fake, admin_name: str) -> Any:
    """Every test starts with the fake's default switches, webhooks going to pserver, and ends with a clean audit."""
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    yield
    admin = log_in(pserver, admin_name)
    with pserver.client(admin.token) as client:
        report = client.get("/admin/audit").json()
    assert report["ok"], report


def paystack(fake: Fake, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call to the fake as the wallet makes it (Bearer secret key)."""
    return httpx.request(method, f"{fake.url}{path}", headers={"Authorization": f"Bearer {SECRET}"}, **kwargs)


def add_account(server: Any, user: Any, token: str | None = None, **body: Any) -> httpx.Response:
    body = {"bank_code": "058", "account_number": "0123456789", "currency": "NGN", **body}
    with server.client(token or user.token) as client:
        return client.post("/payout-accounts", json=body)


# ---- the fake Paystack's Transfers API ------------------------------------------------------------------------


def test_fake_lists_banks_resolves_accounts_and_registers_recipients(fake):
    banks = paystack(fake, "GET", "/bank", params={"currency": "NGN"}).json()["data"]
    assert {"code": "058", "name": "Guaranty Trust Bank"}.items() <= banks[1].items()
    assert paystack(fake, "GET", "/bank", params={"currency": "USD"}).json()["data"] == []
    assert httpx.get(f"{fake.url}/bank").status_code == 401  # the secret key is required, as at Paystack

    resolved = paystack(fake, "GET", "/bank/resolve", params={"account_number": "0123456789", "bank_code": "058"})
    assert resolved.json()["data"] == {"account_number": "0123456789", "account_name": "TEST ACCOUNT 6789"}
    for number, bank in (("0000000000", "058"), ("12345", "058"), ("0123456789", "999")):
        unknown = paystack(fake, "GET", "/bank/resolve", params={"account_number": number, "bank_code": bank})
        assert unknown.status_code == 422 and unknown.json()["status"] is False

    body = {"type": "nuban", "name": "TEST ACCOUNT 1111", "account_number": "1000001111", "bank_code": "044"}
    first = paystack(fake, "POST", "/transferrecipient", json=body)
    assert first.status_code == 201
    recipient = first.json()["data"]
    assert recipient["recipient_code"].startswith("RCP_") and recipient["details"]["bank_name"] == "Access Bank"
    again = paystack(fake, "POST", "/transferrecipient", json=body)  # Paystack answers a known account's recipient
    assert again.status_code == 200 and again.json()["data"]["recipient_code"] == recipient["recipient_code"]


def recipient_code(fake: Fake, number: str = "2000002222") -> str:
    body = {"type": "nuban", "name": "X", "account_number": number, "bank_code": "057", "currency": "NGN"}
    return paystack(fake, "POST", "/transferrecipient", json=body).json()["data"]["recipient_code"]


def send(fake: Fake, reference: str, recipient: str, amount: int = 5000, timeout: float = 10) -> httpx.Response:
    body = {"source": "balance", "amount": amount, "recipient": recipient, "reference": reference, "currency": "NGN"}
    return paystack(fake, "POST", "/transfer", json=body, timeout=timeout)


def transfer(fake: Fake, reference: str) -> dict[str, Any]:
    return httpx.get(f"{fake.url}/_fake/transfers/{reference}").json()


@pytest.mark.parametrize("outcome", ["success", "failed", "reversed"])
def test_fake_transfer_ends_as_configured_with_a_signed_webhook(fake, outcome):
    fake.configure(transfer_outcome=outcome, webhook=False)
    reference = f"PO{unique_name()}"
    queued = send(fake, reference, recipient_code(fake))
    assert queued.status_code == 200 and queued.json()["data"]["status"] == "pending"
    assert transfer(fake, reference)["status"] == outcome
    verified = paystack(fake, "GET", f"/transfer/verify/{reference}").json()["data"]
    assert (verified["status"], verified["amount"], verified["reference"]) == (outcome, 5000, reference)
    assert transfer(fake, reference)["verify_calls"] == 1


def test_fake_transfer_webhooks_are_signed_and_sent_to_the_wallet(fake, pserver):
    """The wallet's webhook checks Paystack's signature (401 if wrong): a 200 for every copy proves the fake signs
    transfer events as Paystack does (a reference that is no payout of the wallet's is acknowledged and ignored)."""
    fake.configure(transfer_outcome="pending", duplicates=2, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    reference = f"PO{unique_name()}"
    assert send(fake, reference, recipient_code(fake)).status_code == 200
    assert transfer(fake, reference)["status"] == "pending"
    ended = httpx.post(f"{fake.url}/_fake/transfers/{reference}", params={"outcome": "success"}, timeout=30).json()
    assert ended == {"status": "success", "reference": reference, "webhook_statuses": [200, 200]}
    reversed_ = httpx.post(f"{fake.url}/_fake/transfers/{reference}", params={"outcome": "reversed"}, timeout=30)
    assert reversed_.json()["webhook_statuses"] == [200, 200] and transfer(fake, reference)["status"] == "reversed"


def test_fake_refuses_a_reference_twice_and_simulates_failures_and_timeouts(fake):
    recipient = recipient_code(fake)
    reference = f"PO{unique_name()}"
    assert send(fake, reference, recipient).status_code == 200
    duplicate = send(fake, reference, recipient)
    assert duplicate.status_code == 400 and "Duplicate" in duplicate.json()["message"]
    assert transfer(fake, reference)["transfer_calls"] == 2
    assert paystack(fake, "GET", "/transfer/verify/PO-unknown").status_code == 404
    assert send(fake, f"PO{unique_name()}", "RCP_unknown").status_code == 400

    fake.configure(transfer_status=500)
    failed = f"PO{unique_name()}"
    assert send(fake, failed, recipient).status_code == 500
    assert httpx.get(f"{fake.url}/_fake/transfers/{failed}").status_code == 404  # nothing was queued

    # A timeout: the client gives up, and the transfer is queued all the same once the delay is over.
    fake.configure(delay=1.5)
    late = f"PO{unique_name()}"
    with pytest.raises(httpx.TimeoutException):
        send(fake, late, recipient, timeout=0.5)
    fake.configure()
    deadline = time.monotonic() + 10
    while httpx.get(f"{fake.url}/_fake/transfers/{late}").status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert transfer(fake, late)["status"] == "success"
    assert httpx.post(f"{fake.url}/_fake/config", json={"transfer_outcome": "lost"}).status_code == 400


def test_fake_ends_a_transfer_whose_webhook_finds_no_wallet(fake):
    """The wallet down: the webhook is lost (599), and the transfer ends all the same (verify tells)."""
    fake.configure(transfer_outcome="pending", webhook_url="http://127.0.0.1:9/api/v1/webhooks/paystack")
    reference = f"PO{unique_name()}"
    assert send(fake, reference, recipient_code(fake)).status_code == 200
    ended = httpx.post(f"{fake.url}/_fake/transfers/{reference}", params={"outcome": "failed"}, timeout=30)
    assert ended.status_code == 200 and ended.json()["webhook_statuses"] == [599]
    assert transfer(fake, reference)["status"] == "failed"


# ---- banks and payout accounts --------------------------------------------------------------------------------


def calls(fake: Fake, path: str) -> int:
    return httpx.get(f"{fake.url}/_fake/calls").json().get(path, 0)


def test_banks_are_listed_and_kept(pserver, fake):
    user = make_user(pserver, "NGN")
    with pserver.client(user.token) as client:
        first = client.get("/banks", params={"currency": "ghs"})
        assert first.status_code == 200, first.text
        assert first.json() == {
            "items": [{"code": "280100", "name": "Access Bank Ghana"}, {"code": "300304", "name": "GCB Bank"}]
        }
        asked = calls(fake, "/bank")
        for _ in range(3):
            assert client.get("/banks", params={"currency": "GHS"}).json() == first.json()
        assert calls(fake, "/bank") == asked  # kept by the server: Paystack is not asked again
        assert_error(client.get("/banks", params={"currency": "USD"}), 400, "CURRENCY_NOT_SUPPORTED")
        assert_error(client.get("/banks"), 400, "VALIDATION_ERROR")
        assert_error(client.get("/banks", params={"currency": "N1"}), 400, "VALIDATION_ERROR")
    assert_error(httpx.get(f"{pserver.url}/api/v1/banks?currency=NGN"), 401, "AUTHENTICATION_REQUIRED")


def test_a_payout_account_is_resolved_registered_listed_and_deleted(pserver, fake, db):
    user = make_user(pserver, "NGN")
    r = add_account(pserver, user, account_number="0123454321")
    assert r.status_code == 201, r.text
    account = r.json()
    assert account == {
        "id": account["id"],
        "bank_code": "058",
        "bank_name": "Guaranty Trust Bank",
        "account_number_masked": "******4321",
        "account_name": "TEST ACCOUNT 4321",
        "currency": "NGN",
        "created_at": account["created_at"],
    }
    code = scalar(db, "SELECT recipient_code FROM payout_accounts WHERE id = %s", (account["id"],))
    assert code.startswith("RCP_")  # Paystack's transfer recipient, what a transfer names
    # Adding it again answers the one there is.
    assert add_account(pserver, user, account_number="0123454321").json()["id"] == account["id"]
    other = make_user(pserver, "NGN")
    with pserver.client(other.token) as client:
        assert client.get("/payout-accounts").json() == {"items": []}
        assert_error(client.delete(f"/payout-accounts/{account['id']}"), 404, "NOT_FOUND")
    with pserver.client(user.token) as client:
        assert client.get("/payout-accounts").json() == {"items": [account]}
        assert client.delete(f"/payout-accounts/{account['id']}").status_code == 204
        assert client.get("/payout-accounts").json() == {"items": []}
        assert_error(client.delete(f"/payout-accounts/{account['id']}"), 404, "NOT_FOUND")
    again = add_account(pserver, user, account_number="0123454321")  # a deleted account may be added anew
    assert again.status_code == 201 and again.json()["id"] != account["id"]


def test_payout_account_refusals(pserver, fake, db):
    user = make_user(pserver, "NGN")
    assert_error(add_account(pserver, user, account_number="0000000000"), 400, "PAYOUT_ACCOUNT_INVALID")
    body = assert_error(add_account(pserver, user, bank_code="999"), 400, "PAYOUT_ACCOUNT_INVALID")
    assert "GET /banks" in body["error"]
    assert_error(add_account(pserver, user, currency="USD"), 400, "CURRENCY_NOT_SUPPORTED")
    # Money leaves to it: a login that authenticated over STEP_UP_WINDOW ago steps up first.
    claims = jwt.decode(user.token, options={"verify_signature": False})
    stale = jwt.encode({**claims, "auth_time": int(time.time()) - 600}, JWT_SECRET, algorithm="HS256")
    assert_error(add_account(pserver, user, token=stale), 403, "STEP_UP_REQUIRED")
    fake.configure(recipient_status=500, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    assert_error(add_account(pserver, user), 502, "PROVIDER_ERROR")
    assert scalar(db, "SELECT COUNT(*) FROM payout_accounts WHERE user_id = %s", (user.id,)) == 0


BAD_ACCOUNTS = [
    {},
    {"bank_code": "058", "account_number": "0123456789"},
    {"bank_code": "058", "account_number": "01234-6789", "currency": "NGN"},
    {"bank_code": "058", "account_number": 123456789, "currency": "NGN"},
    {"bank_code": "05 8", "account_number": "0123456789", "currency": "NGN"},
    {"bank_code": "058", "account_number": "0123456789", "currency": "NAIRA"},
    {"bank_code": "058\u0000", "account_number": "0123456789", "currency": "NGN"},
    {"bank_code": "058", "account_number": "0123456789", "currency": "NGN", "extra": 1},
]


def test_payout_account_bad_input_is_400(pserver, db):
    user = make_user(pserver, "NGN")
    with pserver.client(user.token) as client:
        for body in BAD_ACCOUNTS:
            assert_error(client.post("/payout-accounts", json=body), 400, "VALIDATION_ERROR")
        for raw in (b"{", b"[]"):
            sent = client.post("/payout-accounts", content=raw, headers={"Content-Type": "application/json"})
            assert_error(sent, 400, "INVALID_JSON")
        assert_error(client.delete("/payout-accounts/not-a-uuid"), 400, "VALIDATION_ERROR")
    assert scalar(db, "SELECT COUNT(*) FROM payout_accounts WHERE user_id = %s", (user.id,)) == 0


def test_concurrent_adds_of_one_account_keep_one(pserver, db):
    user = make_user(pserver, "NGN")
    answers = in_parallel(6, lambda _: add_account(pserver, user, account_number="0987654321"))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    assert scalar(db, "SELECT COUNT(*) FROM payout_accounts WHERE user_id = %s", (user.id,)) == 1


def test_at_most_twenty_live_payout_accounts(pserver):
    user = make_user(pserver, "NGN")
    for i in range(20):
        assert add_account(pserver, user, account_number=f"31000000{i:02d}").status_code == 201
    assert_error(add_account(pserver, user, account_number="3100000099"), 409, "LIMIT_REACHED")
    with pserver.client(user.token) as client:
        first = client.get("/payout-accounts").json()["items"][0]
        assert first["account_number_masked"] == "******0000"  # oldest first
        assert client.delete(f"/payout-accounts/{first['id']}").status_code == 204
    assert add_account(pserver, user, account_number="3100000099").status_code == 201


def test_without_paystack_the_routes_that_need_it_answer_503(server):
    """A server without PAYSTACK_SECRET_KEY: what asks Paystack is 503, the rest works."""
    user = make_user(server, "NGN")
    assert_error(add_account(server, user), 503, "PROVIDER_NOT_CONFIGURED")
    with server.client(user.token) as client:
        assert_error(client.get("/banks", params={"currency": "NGN"}), 503, "PROVIDER_NOT_CONFIGURED")
        assert client.get("/payout-accounts").json() == {"items": []}


# ---- payouts ----------------------------------------------------------------------------------------------------


def account_for(server: Any, user: Any, number: str | None = None) -> str:
    r = add_account(server, user, account_number=number or f"4{time.time_ns() % 10**9:09d}")
    assert r.status_code == 201, r.text
    return r.json()["id"]


def pay_out(
    server: Any,
    user: Any,
    account_id: str,
    amount: str = "30.00",
    key: str | None = None,
    token: str | None = None,
    wallet_id: str | None = None,
    **body: Any,
) -> httpx.Response:
    headers = {"Idempotency-Key": key or unique_name("po")}
    with server.client(token or user.token) as client:
        return client.post(
            f"/wallets/{wallet_id or user.wallet_id}/payouts",
            json={"payout_account_id": account_id, "amount": amount, **body},
            headers=headers,
        )


def payout_of(server: Any, user: Any, payout_id: str) -> dict[str, Any]:
    with server.client(user.token) as client:
        r = client.get(f"/payouts/{payout_id}")
        assert r.status_code == 200, r.text
        return r.json()


def settled(server: Any, user: Any, payout_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    """The payout once it reaches `status` (Paystack's word arrives by webhook or by the sweep)."""
    return wait_for(lambda: (p := payout_of(server, user, payout_id))["status"] == status and p, timeout)


def held(server: Any, user: Any) -> str:
    """What holds reserve of the user's wallet (its balance less what is available)."""
    with server.client(user.token) as client:
        wallet = client.get(f"/wallets/{user.wallet_id}").json()
    return f"{Decimal(wallet['balance']) - Decimal(wallet['available_balance']):.2f}"


def event_types(server: Any, user: Any) -> list[str]:
    with server.client(user.token) as client:
        return [e["type"] for e in client.get("/events", params={"limit": 200}).json()["items"]]


def funded(server: Any, amount: str = "100.00") -> Any:
    user = make_user(server, "NGN")
    fund(server, user, amount)
    return user


def test_a_payout_is_held_sent_and_captured_once_paystack_succeeds(pserver, fake, db, admin_name):
    user = funded(pserver)
    account_id = account_for(pserver, user)
    r = pay_out(pserver, user, account_id, "30.00", description="rent", metadata={"order": "42"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] in ("PENDING", "COMPLETED") and created["amount"] == "30.00"
    assert created["provider_reference"].startswith("PO") and created["metadata"] == {"order": "42"}
    done = settled(pserver, user, created["id"], "COMPLETED")
    assert done["transaction_id"] and done["failure_code"] is None and done["completed_at"]
    assert balance(pserver, user) == "70.00" and held(pserver, user) == "0.00"
    with pserver.client(user.token) as client:
        tx = client.get(f"/transactions/{done['transaction_id']}").json()
        assert (tx["type"], tx["status"], tx["amount"], tx["hold_id"]) == (
            "WITHDRAWAL",
            "COMPLETED",
            "30.00",
            done["hold_id"],
        )
        hold = client.get(f"/holds/{done['hold_id']}").json()
        assert (hold["status"], hold["captured_amount"]) == ("CAPTURED", "30.00")
        assert client.get("/payouts").json()["items"] == [done]
        assert client.get("/payouts", params={"status": "FAILED"}).json()["items"] == []
    sent = transfer(fake, created["provider_reference"])
    assert (sent["transfer_calls"], sent["amount"], sent["reason"]) == (1, 3000, "rent")
    code = scalar(db, "SELECT recipient_code FROM payout_accounts WHERE id = %s", (account_id,))
    assert sent["recipient"] == code
    types = event_types(pserver, user)
    types = types[types.index("hold.created") :]  # after the funding deposit's
    for kind in ("hold.created", "payout.pending", "transaction.completed", "hold.captured", "payout.completed"):
        assert types.count(kind) == 1, (kind, types)
    admin = log_in(pserver, admin_name)
    with pserver.client(admin.token) as client:
        listed = client.get("/admin/payouts", params={"user_id": user.id}).json()["items"]
    assert [(p["id"], p["provider_status"], p["transfer_code"]) for p in listed] == [
        (done["id"], "success", sent["transfer_code"])
    ]
    with pserver.client(user.token) as client:  # an admin's list is an admin's
        assert_error(client.get("/admin/payouts"), 403, "FORBIDDEN")


@pytest.mark.parametrize("outcome, code", [("failed", "PROVIDER_FAILED"), ("reversed", "PROVIDER_REVERSED")])
def test_a_failed_payout_releases_its_hold(pserver, fake, db, outcome, code):
    fake.configure(transfer_outcome=outcome, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    failed = settled(pserver, user, created["id"], "FAILED")
    assert failed["failure_code"] == code and failed["transaction_id"] is None
    assert balance(pserver, user) == "100.00" and held(pserver, user) == "0.00"
    assert scalar(db, "SELECT status FROM holds WHERE id = %s", (failed["hold_id"],)) == "VOIDED"
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE hold_id = %s", (failed["hold_id"],)) == 0
    assert "payout.failed" in event_types(pserver, user)


def end_by_hand(fake: Fake, reference: str, outcome: str) -> None:
    ended = httpx.post(f"{fake.url}/_fake/transfers/{reference}", params={"outcome": outcome}, timeout=60).json()
    assert set(ended["webhook_statuses"]) == {200}, ended


def test_a_payout_returned_after_success_is_credited_back_as_a_linked_reversal(pserver, fake):
    fake.configure(transfer_outcome="pending", webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    assert created["status"] == "PENDING" and held(pserver, user) == "30.00"
    end_by_hand(fake, created["provider_reference"], "success")
    done = settled(pserver, user, created["id"], "COMPLETED")
    end_by_hand(fake, created["provider_reference"], "reversed")
    back = settled(pserver, user, created["id"], "REVERSED")
    assert back["transaction_id"] == done["transaction_id"] and back["reversal_transaction_id"]
    assert balance(pserver, user) == "100.00"
    with pserver.client(user.token) as client:
        reversal = client.get(f"/transactions/{back['reversal_transaction_id']}").json()
        original = client.get(f"/transactions/{done['transaction_id']}").json()
    assert (reversal["type"], reversal["status"], reversal["amount"]) == ("REVERSAL", "COMPLETED", "30.00")
    assert reversal["reverses"] == done["transaction_id"] and original["reversed_amount"] == "30.00"
    end_by_hand(fake, created["provider_reference"], "reversed")  # said again: nothing more
    assert balance(pserver, user) == "100.00" and "payout.reversed" in event_types(pserver, user)


def test_duplicate_and_concurrent_webhooks_capture_once(pserver, fake, db):
    fake.configure(transfer_outcome="pending", webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    reference = created["provider_reference"]
    body = json.dumps(
        {"event": "transfer.success", "data": {**transfer(fake, reference), "status": "success"}}
    ).encode()
    answers = in_parallel(8, lambda _: test_paystack.signed(pserver, body))
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    fake.configure(duplicates=4, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    end_by_hand(fake, reference, "success")  # and Paystack's own copies, later
    done = settled(pserver, user, created["id"], "COMPLETED")
    assert balance(pserver, user) == "70.00"
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE hold_id = %s", (done["hold_id"],)) == 1
    assert event_types(pserver, user).count("payout.completed") == 1
    # A failure said after the success changes nothing.
    fail = json.dumps({"event": "transfer.failed", "data": {**transfer(fake, reference), "status": "failed"}}).encode()
    assert test_paystack.signed(pserver, fail).status_code == 200
    assert payout_of(pserver, user, created["id"])["status"] == "COMPLETED"


def test_concurrent_success_and_failure_settle_one_way(pserver, fake, db):
    fake.configure(transfer_outcome="pending", webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    data = transfer(fake, created["provider_reference"])
    bodies = [
        json.dumps({"event": f"transfer.{s}", "data": {**data, "status": s}}).encode()
        for s in ("success", "failed") * 4
    ]
    answers = in_parallel(8, lambda i: test_paystack.signed(pserver, bodies[i]))
    assert {r.status_code for r in answers} == {200}
    final = payout_of(pserver, user, created["id"])
    assert final["status"] in ("COMPLETED", "FAILED")
    assert balance(pserver, user) == ("70.00" if final["status"] == "COMPLETED" else "100.00")
    assert held(pserver, user) == "0.00"


def test_concurrent_payouts_hold_no_more_than_the_balance(pserver, fake, db):
    user = funded(pserver, "100.00")
    account_id = account_for(pserver, user)
    answers = in_parallel(8, lambda _: pay_out(pserver, user, account_id, "20.00"))
    made = [r.json() for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code != 201]
    assert len(made) == 5 and all(r.json()["code"] == "INSUFFICIENT_FUNDS" for r in refused), [r.text for r in answers]
    for p in made:
        settled(pserver, user, p["id"], "COMPLETED")
    assert balance(pserver, user) == "0.00"
    assert sum(transfer(fake, p["provider_reference"])["transfer_calls"] for p in made) == 5


def test_a_payout_key_replays_and_is_sent_once(pserver, fake, db):
    user = funded(pserver)
    account_id = account_for(pserver, user)
    answers = in_parallel(6, lambda _: pay_out(pserver, user, account_id, "30.00", key="same-payout"))
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 5
    reference = answers[0].json()["provider_reference"]
    settled(pserver, user, answers[0].json()["id"], "COMPLETED")
    assert transfer(fake, reference)["transfer_calls"] == 1 and balance(pserver, user) == "70.00"
    again = pay_out(pserver, user, account_id, "30.00", key="same-payout")
    assert again.status_code == 201 and again.json()["status"] == "COMPLETED"
    assert_error(pay_out(pserver, user, account_id, "31.00", key="same-payout"), 422, "IDEMPOTENCY_MISMATCH")


def test_payout_refusals(pserver, fake, db, admin_name):
    user = funded(pserver, "100.00")
    account_id = account_for(pserver, user)
    assert_error(pay_out(pserver, user, account_id, "100.01"), 400, "INSUFFICIENT_FUNDS")
    # Another user's wallet, another user's account, an unknown account: not found.
    other = funded(pserver)
    others = account_for(pserver, other)
    assert_error(pay_out(pserver, user, account_id, "1.00", wallet_id=other.wallet_id), 404, "NOT_FOUND")
    assert_error(pay_out(pserver, user, others), 404, "NOT_FOUND")
    assert_error(pay_out(pserver, user, "00000000-0000-4000-8000-000000000000"), 404, "NOT_FOUND")
    # A deleted account.
    gone = account_for(pserver, user)
    with pserver.client(user.token) as client:
        assert client.delete(f"/payout-accounts/{gone}").status_code == 204
        ghs = client.post("/wallets", json={"currency": "GHS"}).json()["id"]
    assert_error(pay_out(pserver, user, gone), 404, "NOT_FOUND")
    # A wallet in another currency than the account's.
    fund(pserver, user, "50.00", ghs)
    assert_error(pay_out(pserver, user, account_id, "1.00", wallet_id=ghs), 400, "CURRENCY_MISMATCH")
    # Step-up above STEP_UP_AMOUNT (1000 by default) with a login older than STEP_UP_WINDOW.
    fund(pserver, user, "5000.00")
    claims = jwt.decode(user.token, options={"verify_signature": False})
    stale = jwt.encode({**claims, "auth_time": int(time.time()) - 600}, JWT_SECRET, algorithm="HS256")
    assert_error(pay_out(pserver, user, account_id, "1000.01", token=stale), 403, "STEP_UP_REQUIRED")
    # Frozen.
    admin = log_in(pserver, admin_name)
    with pserver.client(admin.token) as client:
        assert client.post(f"/admin/users/{user.id}/freeze", json={"reason": "review"}).status_code == 200
    assert_error(pay_out(pserver, user, account_id, "1.00"), 403, "ACCOUNT_FROZEN")
    with pserver.client(admin.token) as client:
        assert client.post(f"/admin/users/{user.id}/unfreeze").status_code == 200
    # Paystack refuses the transfer: the payout FAILED at once, its hold released.
    fake.configure(transfer_status=400, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    refused = pay_out(pserver, user, account_id, "1.00")
    assert refused.status_code == 201 and refused.json()["status"] == "FAILED", refused.text
    assert refused.json()["failure_code"] == "PROVIDER_REFUSED"
    assert balance(pserver, user) == "5100.00" and held(pserver, user) == "0.00"
    assert scalar(db, "SELECT COUNT(*) FROM payouts WHERE user_id = %s", (user.id,)) == 1


BAD_PAYOUTS = [
    {},
    {"amount": "1.00"},
    {"payout_account_id": "not-a-uuid", "amount": "1.00"},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000"},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "-1"},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "0"},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "1.001"},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": True},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "1", "metadata": {"k": 1}},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "1", "description": "x" * 256},
    {"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "1", "extra": True},
]


def test_payout_bad_input_is_400(pserver, db):
    user = funded(pserver)
    account_for(pserver, user)
    with pserver.client(user.token) as client:
        for body in BAD_PAYOUTS:
            sent = client.post(
                f"/wallets/{user.wallet_id}/payouts", json=body, headers={"Idempotency-Key": unique_name()}
            )
            assert_error(sent, 400, "VALIDATION_ERROR")
        for raw in (b"{", b"[]"):
            sent = client.post(
                f"/wallets/{user.wallet_id}/payouts", content=raw, headers={"Content-Type": "application/json"}
            )
            assert_error(sent, 400, "INVALID_JSON")
        assert_error(client.post("/wallets/nope/payouts", json={}), 400, "VALIDATION_ERROR")
        assert_error(client.get("/payouts/nope"), 400, "VALIDATION_ERROR")
        assert_error(client.get("/payouts", params={"status": "DONE"}), 400, "VALIDATION_ERROR")
        assert_error(client.get("/payouts/00000000-0000-4000-8000-000000000000"), 404, "NOT_FOUND")
    for event in ({"event": "transfer.success", "data": {}}, {"event": "transfer.failed", "data": {"reference": "x"}}):
        assert_error(test_paystack.signed(pserver, json.dumps(event).encode()), 400, "VALIDATION_ERROR")
    unknown = {
        "event": "transfer.success",
        "data": {"reference": "PO" + "0" * 16, "status": "success", "amount": 1, "currency": "NGN"},
    }
    assert test_paystack.signed(pserver, json.dumps(unknown).encode()).status_code == 200  # not ours: ignored
    assert scalar(db, "SELECT COUNT(*) FROM payouts WHERE user_id = %s", (user.id,)) == 0


def test_a_payouts_hold_is_ended_only_by_paystack(pserver, fake):
    fake.configure(transfer_outcome="pending", webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    with pserver.client(user.token) as client:
        assert_error(client.post(f"/holds/{created['hold_id']}/void"), 409, "HOLD_NOT_ACTIVE")
        capture = client.post(
            f"/holds/{created['hold_id']}/capture", json={}, headers={"Idempotency-Key": unique_name()}
        )
        assert_error(capture, 409, "HOLD_NOT_ACTIVE")
        # Nor is its amount available to a withdrawal meanwhile.
        assert_error(
            client.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": "70.01"}), 400, "INSUFFICIENT_FUNDS"
        )
    end_by_hand(fake, created["provider_reference"], "failed")
    settled(pserver, user, created["id"], "FAILED")


def test_a_lost_webhook_is_made_up_by_the_sweep(pserver, fake):
    fake.configure(webhook=False)
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    done = settled(pserver, user, created["id"], "COMPLETED")  # PENDING_TIMEOUT=2, RECOVERY_INTERVAL=1
    assert transfer(fake, created["provider_reference"])["verify_calls"] >= 1 and balance(pserver, user) == "70.00"
    assert done["transaction_id"]


def test_a_provider_timeout_leaves_the_payout_pending_and_it_is_verified_never_resent(pserver, fake):
    """Paystack answers after the client's 10 s: the payout stays PENDING; once its send claim expired (10 s +
    PENDING_TIMEOUT) the sweep asks Paystack, finds the transfer, and applies its word: sent once."""
    user = funded(pserver)
    account_id = account_for(pserver, user)
    fake.configure(delay=11, webhook=False)
    started = time.monotonic()
    created = pay_out(pserver, user, account_id, "30.00")
    assert created.status_code == 201 and created.json()["status"] == "PENDING", created.text
    assert time.monotonic() - started >= 10
    fake.configure(webhook=False)
    done = settled(pserver, user, created.json()["id"], "COMPLETED", timeout=40)
    sent = transfer(fake, done["provider_reference"])
    assert sent["transfer_calls"] == 1 and sent["verify_calls"] >= 1
    assert balance(pserver, user) == "70.00"


def test_a_paystack_error_leaves_the_payout_pending_and_the_sweep_sends_it_once(pserver, fake):
    """A 5xx from /transfer may or may not have queued it: the payout stays PENDING; once its send claim expired the
    sweep asks Paystack, which knows no such transfer, and sends it: one transfer."""
    user = funded(pserver)
    account_id = account_for(pserver, user)
    fake.configure(transfer_status=500, webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    created = pay_out(pserver, user, account_id, "30.00").json()
    assert created["status"] == "PENDING" and held(pserver, user) == "30.00"
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    done = settled(pserver, user, created["id"], "COMPLETED", timeout=40)
    reference = done["provider_reference"]
    assert transfer(fake, reference)["transfer_calls"] == 1 and balance(pserver, user) == "70.00"
    assert calls(fake, f"/transfer/verify/{reference}") >= 1  # asked (and told "not found") before it was sent again


def test_a_server_killed_during_the_transfer_call_sends_it_once(pserver, fake, db):
    """kill -9 while Paystack is answering /transfer (the payout committed, its acknowledgement never recorded):
    after the restart the sweep verifies the reference before sending, finds the transfer, and captures once; the
    keyed retry answers the payout."""
    fake.configure(delay=3, webhook=False)
    user = funded(pserver)
    account_id = account_for(pserver, user)
    before = calls(fake, "/transfer")
    first = threading.Thread(target=lambda: _suppressed(lambda: pay_out(pserver, user, account_id, key="killed")))
    first.start()
    wait_for(lambda: calls(fake, "/transfer") > before)
    pserver.kill()
    first.join(30)
    pserver.start()
    payout_id = scalar(db, "SELECT id FROM payouts WHERE user_id = %s", (user.id,))
    fake.configure(webhook=False)
    done = settled(pserver, user, str(payout_id), "COMPLETED", timeout=40)
    assert transfer(fake, done["provider_reference"])["transfer_calls"] == 1
    retry = pay_out(pserver, user, account_id, key="killed")
    assert retry.status_code == 201 and retry.json()["id"] == str(payout_id)
    assert retry.headers["Idempotent-Replayed"] == "true" and balance(pserver, user) == "70.00"


def _suppressed(call: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):  # killed under it
        call()


def test_a_server_killed_mid_capture_captures_once_after_restart(pserver, fake, db):
    """kill -9 while the capture waits for the wallet's lock (its WITHDRAWAL recorded PENDING): after the restart the
    sweep verifies, and the capture's key takes the abandoned row over and completes it once."""
    fake.configure(transfer_outcome="pending", webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    hold = created["hold_id"]
    reference = created["provider_reference"]
    ended = lambda: httpx.post(f"{fake.url}/_fake/transfers/{reference}", params={"outcome": "success"}, timeout=60)  # noqa: E731
    pending = f"SELECT COUNT(*) FROM transactions WHERE hold_id = '{hold}' AND status = 'PENDING'"
    kill_mid_execution(pserver, db, user.wallet_id, ended, pending)
    pserver.start()
    done = settled(pserver, user, created["id"], "COMPLETED", timeout=40)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE hold_id = %s", (hold,)) == 1
    assert scalar(db, "SELECT status FROM transactions WHERE id = %s", (done["transaction_id"],)) == "COMPLETED"
    assert balance(pserver, user) == "70.00" and transfer(fake, reference)["transfer_calls"] == 1


def test_the_daily_withdrawal_limit_counts_payouts(own_server, fake, db):
    server = own_server(**test_paystack.paystack_env(fake), DAILY_WITHDRAW_LIMIT="50")
    fake.configure(transfer_outcome="pending", webhook_url=f"{server.url}/api/v1/webhooks/paystack")
    user = funded(server, "200.00")
    account_id = account_for(server, user)
    first = pay_out(server, user, account_id, "40.00").json()
    assert first["status"] == "PENDING"
    assert_error(pay_out(server, user, account_id, "10.01"), 400, "DAILY_LIMIT_EXCEEDED")
    with server.client(user.token) as client:  # a withdrawal shares the day's limit
        assert_error(
            client.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": "10.01"}), 400, "DAILY_LIMIT_EXCEEDED"
        )
    # A failed payout gives its share of the day back.
    end_by_hand(fake, first["provider_reference"], "failed")
    settled(server, user, first["id"], "FAILED")
    second = pay_out(server, user, account_id, "50.00")
    assert second.status_code == 201, second.text
    end_by_hand(fake, second.json()["provider_reference"], "success")
    settled(server, user, second.json()["id"], "COMPLETED")
    assert balance(server, user) == "150.00"
    fake.configure(webhook_url=f"{server.url}/api/v1/webhooks/paystack")


def test_without_paystack_a_payout_answers_503(server, db):
    user = make_user(server, "NGN")
    fund(server, user, "10.00")
    with server.client(user.token) as client:
        sent = client.post(
            f"/wallets/{user.wallet_id}/payouts",
            json={"payout_account_id": "00000000-0000-4000-8000-000000000000", "amount": "1.00"},
            headers={"Idempotency-Key": unique_name()},
        )
        assert_error(sent, 503, "PROVIDER_NOT_CONFIGURED")
        assert client.get("/payouts").json() == {"items": [], "next_cursor": None}
    assert Decimal(balance(server, user)) == Decimal("10.00")


def test_the_audit_checks_each_payout_against_its_hold_and_transactions(pserver, fake, db, admin_name):
    user = funded(pserver)
    created = pay_out(pserver, user, account_for(pserver, user), "30.00").json()
    settled(pserver, user, created["id"], "COMPLETED")
    admin = log_in(pserver, admin_name)
    with db.cursor() as cur:
        cur.execute("UPDATE payouts SET amount = amount + 1 WHERE id = %s", (created["id"],))

    try:
        with pserver.client(admin.token) as client:
            report = client.get("/admin/audit").json()
        assert not report["ok"] and {"kind": "payout", "payout_id": created["id"]} in report["mismatches"]
    finally:
        with db.cursor() as cur:
            cur.execute("UPDATE payouts SET amount = amount - 1 WHERE id = %s", (created["id"],))
