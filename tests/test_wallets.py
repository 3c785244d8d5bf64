"""Wallets over HTTP: several per user in any ISO 4217 currency, numbers, totals, and owner-only access."""

import re
import uuid

from conftest import assert_error, fund, make_user, shared_link


def open_wallet(server, user, currency, **extra):
    with server.client(user.token) as client:
        r = client.post("/wallets", json={"currency": currency, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_several_wallets_in_different_currencies(server, user):
    jpy = open_wallet(server, user, "JPY", name="travel")
    kwd = open_wallet(server, user, "kwd")
    assert (jpy["currency"], jpy["name"], jpy["balance"], jpy["status"]) == ("JPY", "travel", "0", "active")
    assert (kwd["currency"], kwd["name"], kwd["balance"]) == ("KWD", None, "0.000")
    assert jpy["created_at"].endswith("Z") and jpy["updated_at"].endswith("Z")

    fund(server, user, "1000", jpy["id"])
    fund(server, user, "1.25", kwd["id"])
    with server.client(user.token) as client:
        assert client.get(f"/wallets/{jpy['id']}/balance").json() == {
            "wallet_id": jpy["id"],
            "currency": "JPY",
            "balance": "1000",
            "available_balance": "1000",
            "at": None,  # now (a past moment is asked with ?at=)
        }
        assert client.get(f"/wallets/{kwd['id']}").json()["balance"] == "1.250"


def test_wallet_numbers_are_unique_ten_digits(server, user):
    numbers = [open_wallet(server, user, "EUR")["number"] for _ in range(5)] + [user.wallet_number]
    assert all(re.fullmatch(r"[0-9]{10}", n) for n in numbers)
    assert len(set(numbers)) == len(numbers)


def test_list_wallets_with_totals_per_currency(server, user):
    second_usd = open_wallet(server, user, "USD", name="savings")
    jpy = open_wallet(server, user, "JPY")
    fund(server, user, "10.50", user.wallet_id)
    fund(server, user, "0.75", second_usd["id"])
    fund(server, user, "300", jpy["id"])
    with server.client(user.token) as client:
        r = client.get("/wallets")
    assert r.status_code == 200
    body = r.json()
    assert [w["id"] for w in body["items"]] == [user.wallet_id, second_usd["id"], jpy["id"]]
    assert body["totals"] == [{"currency": "JPY", "balance": "300"}, {"currency": "USD", "balance": "11.25"}]


def test_wallet_and_balance_of_the_owner(server, user):
    fund(server, user, "5")
    with server.client(user.token) as client:
        wallet = client.get(f"/wallets/{user.wallet_id}")
        assert wallet.status_code == 200
        assert wallet.json()["number"] == user.wallet_number
        assert wallet.json()["balance"] == "5.00"
        assert client.get(f"/wallets/{user.wallet_id}/balance").json()["balance"] == "5.00"


def test_other_users_wallet_is_not_found(server, user):
    other = make_user(server)
    with server.client(other.token) as client:
        for path in ("", "/balance", "/transactions"):
            r = client.get(f"/wallets/{user.wallet_id}{path}")
            assert r.status_code == 404, path
            assert r.json()["code"] == "NOT_FOUND"
        missing = client.get(f"/wallets/{uuid.uuid4()}")
    assert missing.status_code == 404
    # The same answer for someone else's wallet and for no wallet at all: nothing is revealed.
    assert missing.json() == r.json()


def test_unknown_currency_or_bad_name_is_400(server, user):
    with server.client(user.token) as client:
        for body in (
            {"currency": "XXQ"},
            {"currency": "XAU"},
            {"currency": "HRK"},
            {"currency": 840},
            {},
            {"currency": None},
        ):
            r = client.post("/wallets", json=body)
            assert r.status_code == 400, body
            assert r.json()["code"] == "VALIDATION_ERROR"
            assert "currency" in r.json()["details"]
        r = client.post("/wallets", json={"currency": "USD", "name": "x" * 65})
        assert r.status_code == 400
        assert "name" in r.json()["details"]
        r = client.post("/wallets", json={"currency": "USD", "colour": "red"})
        assert r.status_code == 400


def test_wallets_need_authentication(api):
    r = api.get("/wallets")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_wallet_s_link_and_qr_code_open_the_send_form_with_its_number(server):
    """GET /wallets/{id}/link: the web wallet's send form with this wallet's number filled in, and its QR code drawn
    by the server; the owner's wallets only."""
    owner, other = make_user(server), make_user(server)
    link = f"{server.url}/#/transfer?to_wallet_number={owner.wallet_number}"
    shared_link(server, owner, f"/wallets/{owner.wallet_id}/link", link)
    with server.client(owner.token) as client:
        assert_error(client.get("/wallets/not-a-uuid/link"), 400, "VALIDATION_ERROR")
        assert_error(client.get(f"/wallets/{other.wallet_id}/link"), 404, "NOT_FOUND")
