"""Cross-currency transfers through HTTP: rates (admin, history), quotes and their rounding, transfers of a quote
through the FX accounts, every refusal, a race for one quote, and a kill -9 mid-transfer."""

import contextlib
import threading
import time
from decimal import Decimal

import httpx
import psycopg2
import pytest
from conftest import (
    assert_error,
    balance,
    fund,
    in_parallel,
    log_in,
    make_user,
    recorded,
    scalar,
    unique_name,
)

# The ledger audit (FX accounts, per-currency sums, transfers against their quotes) passes after every test.
pytestmark = pytest.mark.usefixtures("ledger_audited")


def call(server, who, method, path, body=None, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    with server.client(who.token) as client:
        return client.request(method, path, json=body, headers=headers)


def set_rate(server, admin, base, quote, rate, **extra):
    r = call(server, admin, "PUT", f"/admin/fx-rates/{base}/{quote}", {"rate": rate, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def open_wallet(server, user, currency):
    r = call(server, user, "POST", "/wallets", {"currency": currency})
    assert r.status_code == 201, r.text
    return r.json()


def ask(server, user, from_wallet, to_wallet, **amount):
    return call(
        server, user, "POST", "/fx/quotes", {"from_wallet_id": from_wallet, "to_wallet_id": to_wallet, **amount}
    )


def quoted(server, user, from_wallet, to_wallet, **amount):
    r = ask(server, user, from_wallet, to_wallet, **amount)
    assert r.status_code == 201, r.text
    return r.json()


def send(server, user, quote, key=None, **override):
    body = {"from_wallet_id": quote["from_wallet_id"], "to_wallet_id": quote["to_wallet_id"], "quote_id": quote["id"]}
    return call(server, user, "POST", "/transfers", {**body, **override}, key)


def position(server, admin):
    r = call(server, admin, "GET", "/admin/fx/position")
    assert r.status_code == 200, r.text
    return {p["currency"]: p["balance"] for p in r.json()["items"]}


def entries_by_currency(db, transaction_id):
    with db.cursor() as cur:
        cur.execute(
            "SELECT currency, COUNT(*), SUM(amount) FROM entries WHERE transaction_id = %s GROUP BY 1 ORDER BY 1",
            (transaction_id,),
        )
        return cur.fetchall()


# ---- rates -----------------------------------------------------------------------------------------------------


def test_rates_are_set_by_admins_only_and_every_change_is_kept_with_its_author(server, admin, user):
    assert_error(call(server, user, "PUT", "/admin/fx-rates/EUR/CHF", {"rate": "0.95"}), 403, "FORBIDDEN")
    first = set_rate(server, admin, "EUR", "CHF", "0.95", spread="0.01")
    assert first["rate"] == "0.9500000000" and first["spread"] == "0.010000"
    assert (first["base"], first["quote"], first["updated_by"]) == ("EUR", "CHF", admin.id)
    second = set_rate(server, admin, "EUR", "CHF", 0.9612345678)  # a JSON number, parsed exactly
    assert (second["rate"], second["spread"]) == ("0.9612345678", "0.000000")

    listed = call(server, user, "GET", "/fx-rates").json()["items"]
    assert [r for r in listed if (r["base"], r["quote"]) == ("EUR", "CHF")] == [second]

    history = call(server, admin, "GET", "/admin/fx-rates/EUR/CHF/history?limit=1").json()
    assert [(h["rate"], h["spread"], h["set_by"]) for h in history["items"]] == [("0.9612345678", "0.000000", admin.id)]
    older = call(server, admin, "GET", f"/admin/fx-rates/EUR/CHF/history?cursor={history['next_cursor']}").json()
    assert next((h["rate"], h["spread"]) for h in older["items"]) == ("0.9500000000", "0.010000")
    assert_error(call(server, user, "GET", "/admin/fx-rates/EUR/CHF/history"), 403, "FORBIDDEN")
    assert_error(call(server, user, "GET", "/admin/fx/position"), 403, "FORBIDDEN")

    logged = call(server, admin, "GET", "/admin/actions?action=fx_rate&limit=1").json()["items"][0]
    assert logged["admin_id"] == admin.id
    assert logged["details"] == {
        "base": "EUR",
        "quote": "CHF",
        "rate": "0.9612345678",
        "spread": "0.000000",
        "previous_rate": "0.9500000000",
        "previous_spread": "0.010000",
    }


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("EUR/CHF", {"rate": "0"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "-1.5"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "abc"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "NaN"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "1.12345678901"}, "VALIDATION_ERROR"),  # 11 places
        ("EUR/CHF", {"rate": "1e13"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": True}, "VALIDATION_ERROR"),
        ("EUR/CHF", {}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "1", "spread": "0.11"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "1", "spread": "-0.01"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "1", "spread": "0.0000001"}, "VALIDATION_ERROR"),
        ("EUR/CHF", {"rate": "1", "margin": "0.01"}, "VALIDATION_ERROR"),
        ("EUR/EUR", {"rate": "1"}, "SAME_CURRENCY"),
        ("EUR/XYZ", {"rate": "1"}, "VALIDATION_ERROR"),
        ("eur/CHF", {"rate": "1"}, "VALIDATION_ERROR"),
    ],
)
def test_bad_rates_are_refused(server, admin, path, body, code):
    assert_error(call(server, admin, "PUT", f"/admin/fx-rates/{path}", body), 400, code)


# ---- quotes ----------------------------------------------------------------------------------------------------


def test_quotes_round_each_amount_in_the_house_favour(server, admin):
    set_rate(server, admin, "USD", "JPY", "151.2345", spread="0.005")
    set_rate(server, admin, "JPY", "USD", "0.0066")
    set_rate(server, admin, "USD", "KWD", "0.3071", spread="0.0015")
    payer, payee = make_user(server), make_user(server, currency="JPY")
    kwd = open_wallet(server, payee, "KWD")

    # 151.2345 * (1 - 0.005) = 150.4783275: the customer's rate. 10.01 USD buy 1506.288058275 JPY: 1506 (down).
    q = quoted(server, payer, payer.wallet_id, payee.wallet_id, source_amount="10.01")
    assert (q["rate"], q["market_rate"], q["spread"]) == ("150.4783275000", "151.2345000000", "0.005000")
    assert (q["source_amount"], q["source_currency"], q["destination_amount"], q["destination_currency"]) == (
        "10.01",
        "USD",
        "1506",
        "JPY",
    )
    assert q["fixed"] == "source"
    assert q["rounding"] == {
        "source": "up",
        "destination": "down",
        "unrounded_source_amount": "10.01000000000000000000",
        "unrounded_destination_amount": "1506.28805827500000000000",
    }
    assert q["expires_at"].endswith("Z") and q["expires_at"] > q["created_at"]
    # 1000 JPY cost 6.645475242938... USD: 6.65 (up).
    q = quoted(server, payer, payer.wallet_id, payee.wallet_id, destination_amount="1000")
    assert (q["source_amount"], q["destination_amount"], q["fixed"]) == ("6.65", "1000", "destination")
    assert q["rounding"]["unrounded_source_amount"] == "6.64547524293822311388"
    # Three minor digits: 1.00 USD buy 0.30663935 KWD: 0.306; 0.500 KWD cost 1.6305800282... USD: 1.64.
    q = quoted(server, payer, payer.wallet_id, kwd["id"], source_amount="1")
    assert (q["rate"], q["source_amount"], q["destination_amount"]) == ("0.3066393500", "1.00", "0.306")
    q = quoted(server, payer, payer.wallet_id, kwd["id"], destination_amount="0.5")
    assert (q["source_amount"], q["destination_amount"]) == ("1.64", "0.500")
    # Zero minor digits at the source: 1.00 USD cost 151.5151... JPY: 152; 999 JPY buy 6.5934 USD: 6.59.
    q = quoted(server, payee, payee.wallet_id, payer.wallet_id, destination_amount="1.00")
    assert (q["source_amount"], q["source_currency"], q["destination_amount"]) == ("152", "JPY", "1.00")
    q = quoted(server, payee, payee.wallet_id, payer.wallet_id, source_amount=999)
    assert (q["source_amount"], q["destination_amount"]) == ("999", "6.59")
    # 1 JPY buys 0.0066 USD: less than a cent, so there is nothing to quote.
    assert_error(ask(server, payee, payee.wallet_id, payer.wallet_id, source_amount="1"), 400, "VALIDATION_ERROR")


def test_quote_refusals(server, admin):
    set_rate(server, admin, "GBP", "SEK", "13.5")
    payer, payee, stranger = make_user(server, currency="GBP"), make_user(server, currency="SEK"), make_user(server)
    second_gbp = open_wallet(server, payer, "GBP")
    own_sek = open_wallet(server, payer, "SEK")

    def refused(status, code, who=payer, **body):
        r = call(server, who, "POST", "/fx/quotes", {"from_wallet_id": payer.wallet_id, **body})
        return assert_error(r, status, code)

    to = {"to_wallet_id": payee.wallet_id}
    refused(400, "SAME_CURRENCY", to_wallet_id=second_gbp["id"], source_amount="1")
    refused(400, "SAME_WALLET", to_wallet_id=payer.wallet_id, source_amount="1")
    # No inverse is derived: SEK -> GBP has no rate of its own.
    r = ask(server, payee, payee.wallet_id, own_sek["id"], source_amount="1")
    assert_error(r, 400, "SAME_CURRENCY")
    r = ask(server, payee, payee.wallet_id, payer.wallet_id, source_amount="10")
    assert_error(r, 400, "FX_RATE_UNAVAILABLE")
    refused(400, "FX_RATE_UNAVAILABLE", to_wallet_id=stranger.wallet_id, source_amount="1")  # GBP -> USD
    refused(400, "VALIDATION_ERROR", **to)  # neither amount
    refused(400, "VALIDATION_ERROR", **to, source_amount="1", destination_amount="13.5")
    refused(400, "VALIDATION_ERROR", source_amount="1")  # no recipient
    refused(400, "VALIDATION_ERROR", **to, to_wallet_number="1234567890", source_amount="1")
    refused(400, "VALIDATION_ERROR", **to, source_amount="1.001")  # GBP has 2 minor digits
    refused(400, "VALIDATION_ERROR", **to, destination_amount="-5")
    refused(400, "VALIDATION_ERROR", **to, source_amount="1", rate="99")
    refused(404, "NOT_FOUND", who=stranger, **to, source_amount="1")  # not the caller's wallet
    refused(404, "NOT_FOUND", to_wallet_number="0000000000", source_amount="1")
    refused(404, "NOT_FOUND", to_wallet_id="00000000-0000-4000-8000-000000000000", source_amount="1")
    ok = call(
        server,
        payer,
        "POST",
        "/fx/quotes",
        {"from_wallet_id": payer.wallet_id, "to_wallet_number": own_sek["number"], "source_amount": "2"},
    )
    assert ok.status_code == 201 and ok.json()["destination_amount"] == "27.00", ok.text


# ---- transfers -----------------------------------------------------------------------------------------------


def test_a_transfer_moves_the_quoted_amounts_through_the_fx_accounts(server, admin, db):
    set_rate(server, admin, "USD", "JPY", "151.2345", spread="0.005")
    payer, payee = make_user(server), make_user(server, currency="JPY")
    fund(server, payer, "100.00")
    before = position(server, admin)
    q = quoted(server, payer, payer.wallet_id, payee.wallet_id, source_amount="10.01")
    key = unique_name("fx")

    r = send(server, payer, q, key, description="rent")
    assert r.status_code == 201, r.text
    tx = r.json()
    assert (tx["type"], tx["status"], tx["amount"], tx["currency"], tx["direction"]) == (
        "TRANSFER",
        "COMPLETED",
        "10.01",
        "USD",
        "out",
    )
    assert tx["fx"] == {
        "quote_id": q["id"],
        "rate": "150.4783275000",
        "source_amount": "10.01",
        "source_currency": "USD",
        "destination_amount": "1506",
        "destination_currency": "JPY",
    }
    assert balance(server, payer) == "89.99" and balance(server, payee) == "1506"
    assert entries_by_currency(db, tx["id"]) == [("JPY", 2, 0), ("USD", 2, 0)]
    after = position(server, admin)
    assert int(after["JPY"]) == int(before.get("JPY", "0")) - 1506
    assert Decimal(after["USD"]) - Decimal(before.get("USD", "0")) == Decimal("10.01")

    # The payee sees it arrive, with the conversion; a replay of the key answers the same.
    seen = call(server, payee, "GET", f"/transactions/{tx['id']}").json()
    assert seen["direction"] == "in" and seen["fx"] == tx["fx"]
    replay = send(server, payer, q, key, description="rent")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == tx
    assert_error(send(server, payer, q, key, description="other"), 422, "IDEMPOTENCY_MISMATCH")
    # Used: a new request (another key, or none) is refused before anything is recorded.
    assert_error(send(server, payer, q, unique_name("again")), 400, "QUOTE_EXPIRED")
    assert_error(send(server, payer, q), 400, "QUOTE_EXPIRED")
    assert balance(server, payer) == "89.99"
    # Its rate has moved on: an admin does not reverse it (the money goes back with a new quote).
    r = call(server, admin, "POST", f"/admin/transactions/{tx['id']}/reverse", {"reason": "test"}, unique_name("rev"))
    assert_error(r, 409, "NOT_REVERSIBLE")
    assert balance(server, payee) == "1506"
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE fx_quote_id = %s", (q["id"],)) == 1


def test_transfer_refusals(server, admin, db):
    set_rate(server, admin, "USD", "EUR", "0.9137")
    payer, payee, stranger = make_user(server), make_user(server, currency="EUR"), make_user(server)
    other_usd = open_wallet(server, payer, "USD")
    q = quoted(server, payer, payer.wallet_id, payee.wallet_id, source_amount="5.00")

    # Someone else's quote does not exist for them; the quote's own wallets must be named.
    fund(server, stranger, "10.00")
    assert_error(send(server, stranger, q, from_wallet_id=stranger.wallet_id), 404, "NOT_FOUND")
    assert_error(send(server, payer, q, from_wallet_id=other_usd["id"]), 400, "QUOTE_MISMATCH")
    assert_error(send(server, payer, q, to_wallet_id=stranger.wallet_id), 400, "QUOTE_MISMATCH")
    body = {"from_wallet_id": payer.wallet_id, "quote_id": q["id"]}
    mismatch = call(server, payer, "POST", "/transfers", {**body, "to_wallet_number": stranger.wallet_number})
    assert_error(mismatch, 400, "QUOTE_MISMATCH")
    by_name = call(server, payer, "POST", "/transfers", {**body, "to_username": stranger.username})
    assert_error(by_name, 400, "VALIDATION_ERROR")
    both = call(server, payer, "POST", "/transfers", {**body, "to_wallet_id": payee.wallet_id, "amount": "5"})
    assert_error(both, 400, "VALIDATION_ERROR")
    unknown = {**body, "to_wallet_id": payee.wallet_id, "quote_id": "00000000-0000-4000-8000-000000000000"}
    assert_error(call(server, payer, "POST", "/transfers", unknown), 404, "NOT_FOUND")
    assert_error(call(server, payer, "POST", "/transfers", {**body, "quote_id": "nope"}), 400, "VALIDATION_ERROR")

    # No funds: recorded FAILED, and the quote stays usable.
    poor = assert_error(send(server, payer, q, unique_name("poor")), 400, "INSUFFICIENT_FUNDS")
    assert recorded(db, poor["transaction_id"]) == ("FAILED", "INSUFFICIENT_FUNDS", 0, 0)
    # A frozen payee cannot receive.
    fund(server, payer, "20.00")
    assert call(server, admin, "POST", f"/admin/users/{payee.id}/freeze", {}).status_code == 200
    frozen = assert_error(send(server, payer, q, unique_name("frozen")), 403, "ACCOUNT_FROZEN")
    assert recorded(db, frozen["transaction_id"]) == ("FAILED", "ACCOUNT_FROZEN", 0, 0)
    assert call(server, admin, "POST", f"/admin/users/{payee.id}/unfreeze", {}).status_code == 200
    r = send(server, payer, q, unique_name("finally"))
    assert r.status_code == 201 and r.json()["fx"]["destination_amount"] == "4.56", r.text  # 5 * 0.9137 = 4.5685
    assert balance(server, payer) == "15.00" and balance(server, payee) == "4.56"


def test_an_expired_quote_is_refused(own_server, admin_username):
    brief = own_server(FX_QUOTE_TTL="1")
    admin = log_in(brief, admin_username)
    set_rate(brief, admin, "USD", "EUR", "0.9137")
    payer, payee = make_user(brief), make_user(brief, currency="EUR")
    fund(brief, payer, "10.00")
    q = quoted(brief, payer, payer.wallet_id, payee.wallet_id, source_amount="1.00")
    time.sleep(1.2)
    assert_error(send(brief, payer, q, unique_name("late")), 400, "QUOTE_EXPIRED")
    assert balance(brief, payer) == "10.00"


def test_the_daily_limit_counts_the_source_amount(own_server, admin_username):
    limited = own_server(DAILY_TRANSFER_LIMIT="20.00")
    admin = log_in(limited, admin_username)
    set_rate(limited, admin, "USD", "EUR", "0.9137")
    payer, payee, friend = make_user(limited), make_user(limited, currency="EUR"), make_user(limited)
    fund(limited, payer, "50.00")
    q = quoted(limited, payer, payer.wallet_id, payee.wallet_id, source_amount="15.00")
    assert send(limited, payer, q).status_code == 201
    plain = {"from_wallet_id": payer.wallet_id, "to_wallet_id": friend.wallet_id, "amount": "6.00"}
    assert_error(call(limited, payer, "POST", "/transfers", plain), 400, "DAILY_LIMIT_EXCEEDED")
    q = quoted(limited, payer, payer.wallet_id, payee.wallet_id, source_amount="5.01")
    assert_error(send(limited, payer, q), 400, "DAILY_LIMIT_EXCEEDED")
    assert balance(limited, payer) == "35.00"


def test_concurrent_transfers_of_one_quote_complete_once(server, admin, db):
    set_rate(server, admin, "USD", "JPY", "151.2345", spread="0.005")
    payer, payee = make_user(server), make_user(server, currency="JPY")
    fund(server, payer, "100.00")
    q = quoted(server, payer, payer.wallet_id, payee.wallet_id, source_amount="10.01")
    answers = in_parallel(6, lambda i: send(server, payer, q, unique_name(f"race{i}")))
    assert sorted(r.status_code for r in answers) == [201] + [400] * 5, [r.text for r in answers]
    for r in answers:
        if r.status_code == 400:
            assert_error(r, 400, "QUOTE_EXPIRED")
    assert balance(server, payer) == "89.99" and balance(server, payee) == "1506"
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE fx_quote_id = %s", (q["id"],)) == 1


@pytest.mark.slow
def test_a_transfer_cut_off_by_kill_9_runs_exactly_once_when_retried(own_server, admin_username, db):
    settings = {"PENDING_TIMEOUT": "1", "RECOVERY_INTERVAL": "1", "FX_QUOTE_TTL": "300"}
    doomed = own_server(**settings)
    admin = log_in(doomed, admin_username)
    set_rate(doomed, admin, "USD", "JPY", "151.2345", spread="0.005")
    payer, payee = make_user(doomed), make_user(doomed, currency="JPY")
    fund(doomed, payer, "20.00")
    q = quoted(doomed, payer, payer.wallet_id, payee.wallet_id, source_amount="10.01")
    key = unique_name("cut")

    # Hold the payee's wallet lock as an execution does: the transfer is recorded PENDING and waits mid-execution.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (payee.wallet_id,))

    def first_attempt():
        with contextlib.suppress(httpx.HTTPError):  # killed under it
            send(doomed, payer, q, key)

    sender = threading.Thread(target=first_attempt)
    sender.start()
    pending = "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s AND status = 'PENDING'"
    deadline = time.monotonic() + 30
    while scalar(db, pending, (key,)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scalar(db, pending, (key,)) == 1, "the transfer was not recorded in time"
    doomed.kill()
    blocker.rollback()
    blocker.close()
    sender.join(30)

    restarted = own_server(**settings)
    stop = time.monotonic() + 30
    while True:  # a careful client resends the key while told "in progress"
        r = send(restarted, payer, q, key)
        if r.status_code != 409 or r.json()["code"] != "IDEMPOTENCY_IN_PROGRESS":
            break
        assert time.monotonic() < stop, r.text
        time.sleep(0.2)
    assert r.status_code == 201 and r.json()["fx"]["destination_amount"] == "1506", r.text
    replay = send(restarted, payer, q, key)
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert entries_by_currency(db, r.json()["id"]) == [("JPY", 2, 0), ("USD", 2, 0)]
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE fx_quote_id = %s", (q["id"],)) == 1
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE idempotency_key = %s", (key,)) == 1
    assert balance(restarted, payer) == "9.99" and balance(restarted, payee) == "1506"
