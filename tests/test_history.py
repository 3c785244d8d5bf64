"""History over HTTP: filters, direction and counterparty, owner-only access, and cursor paging under inserts."""

import datetime as dt
import uuid

import pytest
from conftest import assert_error, fund, make_user


def transactions(server, user, path="/transactions", **params):
    with server.client(user.token) as client:
        r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def ids(page):
    return [t["id"] for t in page["items"]]


def post(server, user, path, body):
    with server.client(user.token) as client:
        r = client.post(path, json=body)
    assert r.status_code in (201, 400), r.text
    return r.json()


@pytest.fixture(scope="module")
def story(server):
    """alice and bob with a history: deposits, a withdrawal, transfers both ways, an internal one, a failure."""
    alice, bob = make_user(server), make_user(server)
    with server.client(alice.token) as client:
        savings = client.post("/wallets", json={"currency": "USD", "name": "savings"}).json()
    fund(server, bob, "20")
    tx = {
        "deposit": post(server, alice, f"/wallets/{alice.wallet_id}/deposit", {"amount": "50"}),
        "withdrawal": post(server, alice, f"/wallets/{alice.wallet_id}/withdraw", {"amount": "5"}),
        "out": post(
            server, alice, "/transfers", {"from_wallet_id": alice.wallet_id, "to_username": bob.username, "amount": 10}
        ),
        "in": post(
            server, bob, "/transfers", {"from_wallet_id": bob.wallet_id, "to_wallet_id": alice.wallet_id, "amount": 3}
        ),
        "internal": post(
            server, alice, "/transfers", {"from_wallet_id": alice.wallet_id, "to_wallet_id": savings["id"], "amount": 7}
        ),
        "failed": post(
            server, alice, "/transfers", {"from_wallet_id": savings["id"], "to_username": bob.username, "amount": 99}
        ),
    }
    return alice, bob, savings, tx


def test_list_newest_first_with_direction_and_counterparty(server, story):
    alice, bob, _, tx = story
    page = transactions(server, alice)
    order = ["failed", "internal", "in", "out", "withdrawal", "deposit"]
    assert ids(page) == [tx[name]["transaction_id" if name == "failed" else "id"] for name in order]
    assert page["next_cursor"] is None
    seen = {t["id"]: t for t in page["items"]}
    assert [seen[tx[n]["id"]]["direction"] for n in ("deposit", "withdrawal", "out", "in", "internal")] == [
        "in",
        "out",
        "out",
        "in",
        "internal",
    ]
    assert seen[tx["deposit"]["id"]]["counterparty"] is None
    assert seen[tx["withdrawal"]["id"]]["counterparty"] is None
    assert seen[tx["out"]["id"]]["counterparty"] == {"username": bob.username, "wallet_number": bob.wallet_number}
    assert seen[tx["in"]["id"]]["counterparty"] == {"username": bob.username, "wallet_number": bob.wallet_number}
    assert seen[tx["internal"]["id"]]["counterparty"]["username"] == alice.username
    failed = seen[tx["failed"]["transaction_id"]]
    assert (failed["status"], failed["failure_code"], failed["direction"]) == ("FAILED", "INSUFFICIENT_FUNDS", "out")


def test_the_other_side_sees_completed_transfers_only(server, story):
    alice, bob, _, tx = story
    page = transactions(server, bob)
    # bob's own deposit, alice's transfer to him, his transfer to alice; never alice's failed attempt.
    assert len(page["items"]) == 3
    assert tx["failed"]["transaction_id"] not in ids(page)
    seen = {t["id"]: t for t in page["items"]}
    assert seen[tx["out"]["id"]]["direction"] == "in"
    assert seen[tx["out"]["id"]]["counterparty"] == {"username": alice.username, "wallet_number": alice.wallet_number}
    assert seen[tx["in"]["id"]]["direction"] == "out"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"type": "DEPOSIT"}, ["deposit"]),
        ({"type": "WITHDRAWAL"}, ["withdrawal"]),
        ({"type": "TRANSFER"}, ["failed", "internal", "in", "out"]),
        ({"status": "FAILED"}, ["failed"]),
        ({"status": "PENDING"}, []),
        ({"type": "TRANSFER", "status": "COMPLETED"}, ["internal", "in", "out"]),
    ],
)
def test_filters(server, story, params, expected):
    alice, _, _, tx = story
    names = {t.get("id") or t["transaction_id"]: n for n, t in tx.items()}
    assert [names[i] for i in ids(transactions(server, alice, **params))] == expected


def test_filter_by_wallet(server, story):
    alice, bob, savings, tx = story
    on_savings = ids(transactions(server, alice, wallet_id=savings["id"]))
    assert on_savings == [tx["failed"]["transaction_id"], tx["internal"]["id"]]
    assert ids(transactions(server, alice, path=f"/wallets/{savings['id']}/transactions")) == on_savings
    assert len(transactions(server, alice, path=f"/wallets/{alice.wallet_id}/transactions")["items"]) == 5
    with server.client(bob.token) as client:
        assert_error(client.get("/transactions", params={"wallet_id": savings["id"]}), 404, "NOT_FOUND")
        assert_error(client.get(f"/wallets/{savings['id']}/transactions"), 404, "NOT_FOUND")


def test_filter_by_time(server, story):
    alice, _, _, tx = story
    everything = transactions(server, alice)["items"]
    middle = next(t for t in everything if t["id"] == tx["out"]["id"])["created_at"]
    since = ids(transactions(server, alice, **{"from": middle}))
    until = ids(transactions(server, alice, to=middle))
    assert since[-1] == tx["out"]["id"]  # from is inclusive
    assert tx["out"]["id"] not in until  # to is exclusive
    assert sorted(since + until) == sorted(ids({"items": everything}))


def test_filter_by_dates_covers_whole_days(server, story):
    alice = story[0]
    days = sorted(dt.date.fromisoformat(t["created_at"][:10]) for t in transactions(server, alice)["items"])
    first, last, one = days[0], days[-1], dt.timedelta(days=1)
    assert len(transactions(server, alice, **{"from": first.isoformat(), "to": last.isoformat()})["items"]) == 6
    assert transactions(server, alice, to=(first - one).isoformat())["items"] == []
    assert transactions(server, alice, **{"from": (last + one).isoformat()})["items"] == []


def test_one_transaction_is_for_its_parties_only(server, story):
    alice, _, _, tx = story
    stranger = make_user(server)
    with server.client(alice.token) as client:
        r = client.get(f"/transactions/{tx['out']['id']}")
        assert r.status_code == 200 and r.json()["direction"] == "out"
    with server.client(stranger.token) as client:
        for name in ("deposit", "out", "in"):
            assert_error(client.get(f"/transactions/{tx[name]['id']}"), 404, "NOT_FOUND")
        assert_error(client.get(f"/transactions/{uuid.uuid4()}"), 404, "NOT_FOUND")
        assert transactions(server, stranger)["items"] == []


def test_limits(server, story):
    alice = story[0]
    assert len(transactions(server, alice, limit=200)["items"]) == 6
    first = transactions(server, alice, limit=1)
    assert len(first["items"]) == 1 and first["next_cursor"]


def test_cursor_paging_under_concurrent_inserts(server):
    """Pages fetched while new transactions arrive neither skip nor repeat the rows that existed at the start."""
    user = make_user(server)
    with server.client(user.token) as client:
        deposit = f"/wallets/{user.wallet_id}/deposit"
        existing = [client.post(deposit, json={"amount": n}).json()["id"] for n in range(1, 56)]
        default_page = client.get("/transactions").json()
        assert ids(default_page) == existing[::-1][:50]  # the default limit is 50

        seen, cursor, arrived = [], None, []
        while True:
            params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
            page = client.get("/transactions", params=params).json()
            seen += ids(page)
            # Newer rows arrive between page fetches, and so do refusals recorded as FAILED.
            arrived.append(client.post(deposit, json={"amount": "0.01"}).json()["id"])
            arrived.append(
                client.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": 10**6}).json()["transaction_id"]
            )
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == existing[::-1]
    assert not set(arrived) & set(seen)
    assert ids(transactions(server, user, limit=200))[: len(arrived)] == arrived[::-1]


def test_cursor_of_the_wallet_listing(server, story):
    alice = story[0]
    path = f"/wallets/{alice.wallet_id}/transactions"
    first = transactions(server, alice, path=path, limit=3)
    rest = transactions(server, alice, path=path, limit=3, cursor=first["next_cursor"])
    assert len(ids(first) + ids(rest)) == 5 and rest["next_cursor"] is None
    assert not set(ids(first)) & set(ids(rest))


EDGE_DATES = [
    {"to": "9999-12-31"},
    {"from": "9999-12-31T23:59:59-05:00"},
    {"to": "0001-01-01T00:00:00+05:00"},
    {"from": "0001-01-01T00:00:00+05:00", "to": "9999-12-31"},
]


@pytest.mark.parametrize("params", EDGE_DATES)
def test_dates_outside_the_calendar_once_in_utc_are_a_400(server, story, params):
    alice = story[0]
    with server.client(alice.token) as client:
        for path in ("/transactions", f"/wallets/{alice.wallet_id}/transactions"):
            body = assert_error(client.get(path, params=params), 400, "VALIDATION_ERROR")
            assert body["details"] and set(body["details"]) <= set(params), body


def test_dates_at_the_very_edges_still_work(server, story):
    alice = story[0]
    page = transactions(server, alice, **{"from": "0001-01-01T00:00:00Z", "to": "9999-12-30"})
    assert len(page["items"]) == 6
    assert transactions(server, alice, **{"from": "9999-12-31T23:59:59Z"})["items"] == []


def test_a_refused_deposit_is_readable_by_the_caller_who_got_its_id(server, admin):
    """A deposit's source is the system account: the caller sees it as the one who asked for it."""
    user = make_user(server)
    with server.client(admin.token) as client:
        assert client.post(f"/admin/users/{user.id}/freeze", json={}).status_code == 200
    with server.client(user.token) as client:
        refused = assert_error(
            client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "5"}), 403, "ACCOUNT_FROZEN"
        )
        shown = client.get(f"/transactions/{refused['transaction_id']}")
    assert shown.status_code == 200, shown.text
    assert (shown.json()["status"], shown.json()["failure_code"], shown.json()["direction"]) == (
        "FAILED",
        "ACCOUNT_FROZEN",
        "in",
    )
    assert ids(transactions(server, user, status="FAILED")) == [refused["transaction_id"]]
    assert ids(transactions(server, user, wallet_id=user.wallet_id, status="FAILED")) == [refused["transaction_id"]]
    stranger = make_user(server)
    with server.client(stranger.token) as client:
        assert_error(client.get(f"/transactions/{refused['transaction_id']}"), 404, "NOT_FOUND")
