"""Payouts to bank accounts (issue 24) end to end: the real server against the fake Paystack
(scripts/fake_paystack.py, a real local HTTP server speaking Paystack's Transfers API), the ledger audited after
every test."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
import test_paystack
from conftest import JWT_SECRET, assert_error, in_parallel, log_in, make_admin, make_user, scalar, unique_name

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
    transfer events as Paystack does; the wallet ignores them until payouts handle them."""
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
