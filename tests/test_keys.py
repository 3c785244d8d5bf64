"""API keys over HTTP: create/list/revoke/rollover, what each scope reaches, limits, races, owners' status, a crash."""

import contextlib
import datetime as dt
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg2
import pytest
from conftest import (
    assert_audit_ok,
    assert_error,
    balance,
    fund,
    make_admin,
    make_user,
    recorded,
    scalar,
    unique_name,
)

from wallet.platform.db import CLIENT_CHECK_MS

ALL = ["read", "deposit", "withdraw", "transfer"]


def create(server, user, scopes=("read",), expires_in="1D", name=None):
    with server.client(user.token) as client:
        r = client.post(
            "/keys", json={"name": name or unique_name("k"), "scopes": list(scopes), "expires_in": expires_in}
        )
    assert r.status_code == 201, r.text
    return r.json()


def keyed(server, secret):
    client = server.client()
    client.headers["X-API-Key"] = secret
    return client


def listing(server, user):
    with server.client(user.token) as client:
        r = client.get("/keys?limit=200")
    assert r.status_code == 200, r.text
    return {k["id"]: k for k in r.json()["items"]}


def test_create_shows_the_secret_once_and_stores_only_its_hash(server, user, db):
    before = dt.datetime.now(dt.UTC)
    key = create(server, user, ["transfer", "read", "read"], "1W", name="billing")
    assert re.fullmatch(r"wk_[0-9a-f]{12}[A-Za-z0-9_-]{43}", key["key"])
    assert key["prefix"] == key["key"][:15]
    assert key["name"] == "billing" and key["scopes"] == ["read", "transfer"] and key["status"] == "active"
    assert key["last_used_at"] is None and key["revoked_at"] is None
    expires = dt.datetime.fromisoformat(key["expires_at"])
    assert dt.timedelta(days=7) - dt.timedelta(minutes=1) < expires - before < dt.timedelta(days=7, minutes=1)
    # Never again: not in the list, and not in the database (only its SHA-256).
    listed = listing(server, user)[key["id"]]
    assert "key" not in listed and listed["prefix"] == key["prefix"]
    stored = scalar(db, "SELECT secret_hash FROM api_keys WHERE id = %s", (key["id"],))
    assert key["key"] not in stored and len(stored) == 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["read"], "expires_in": "1D"}, "name"),
        ({"name": "", "scopes": ["read"], "expires_in": "1D"}, "name"),
        ({"name": "x" * 65, "scopes": ["read"], "expires_in": "1D"}, "name"),
        ({"name": "a\u0000b", "scopes": ["read"], "expires_in": "1D"}, "name"),
        ({"name": "a", "scopes": [], "expires_in": "1D"}, "scopes"),
        ({"name": "a", "scopes": ["admin"], "expires_in": "1D"}, "scopes"),
        ({"name": "a", "scopes": "read", "expires_in": "1D"}, "scopes"),
        ({"name": "a", "scopes": ["read"], "expires_in": "2D"}, "expires_in"),
        ({"name": "a", "scopes": ["read"]}, "expires_in"),
        ({"name": "a", "scopes": ["read"], "expires_in": "1D", "role": "admin"}, "role"),
    ],
)
def test_bad_create_bodies_are_400_naming_the_field(server, user, body, field):
    with server.client(user.token) as client:
        body_ = assert_error(client.post("/keys", json=body), 400, "VALIDATION_ERROR")
    assert field in body_["details"], body_


def test_a_key_authenticates_only_within_its_scopes(server, user):
    fund(server, user, "50")
    other = make_user(server)
    reader = create(server, user, ["read"])["key"]
    mover = create(server, user, ["deposit", "withdraw", "transfer"])["key"]
    wallet = f"/wallets/{user.wallet_id}"
    reads = ["/wallets", wallet, f"{wallet}/balance", f"{wallet}/transactions", "/transactions"]
    money = [
        ("deposit", f"{wallet}/deposit", {"amount": "1"}),
        ("withdraw", f"{wallet}/withdraw", {"amount": "1"}),
        ("deposit", f"{wallet}/operation", {"operation_type": "DEPOSIT", "amount": "1"}),
        ("withdraw", f"{wallet}/operation", {"operation_type": "WITHDRAW", "amount": "1"}),
        ("transfer", "/transfers", {"from_wallet_id": user.wallet_id, "to_wallet_id": other.wallet_id, "amount": "1"}),
    ]
    with keyed(server, reader) as client:
        for path in reads:
            assert client.get(path).status_code == 200, path
        for _, path, body in money:
            assert_error(client.post(path, json=body), 403, "FORBIDDEN")
    with keyed(server, mover) as client:
        for path in reads:
            assert_error(client.get(path), 403, "FORBIDDEN")
        for _, path, body in money:
            assert client.post(path, json=body).status_code in (200, 201), path
    # One scope each: the operation endpoint follows its operation_type.
    for scope, path, body in money:
        for granted in ALL:
            if granted == "read":
                continue
            with keyed(server, create(server, user, [granted], "1H")["key"]) as client:
                r = client.post(path, json=body)
            if granted == scope:
                assert r.status_code in (200, 201), (granted, path, r.text)
            else:
                assert_error(r, 403, "FORBIDDEN")
            revoke_all(server, user)


def revoke_all(server, user):
    with server.client(user.token) as client:
        for key_id, key in listing(server, user).items():
            if key["status"] == "active":
                assert client.post(f"/keys/{key_id}/revoke").status_code == 200


def test_a_key_never_reaches_key_management_account_changes_logout_or_admin(server, database_url):
    admin = make_admin(server, database_url)
    key = create(server, admin, ALL)
    with keyed(server, key["key"]) as client:
        for method, path, body in [
            ("POST", "/keys", {"name": "more", "scopes": ["read"], "expires_in": "1D"}),
            ("GET", "/keys", None),
            ("POST", f"/keys/{key['id']}/revoke", None),
            ("POST", f"/keys/{key['id']}/rollover", {}),
            ("GET", "/users/me", None),
            ("PATCH", "/users/me", {"email": "x@example.com"}),
            ("DELETE", "/users/me", None),
            ("POST", "/auth/logout", None),
            ("POST", "/wallets", {"currency": "EUR"}),
            ("GET", "/admin/audit", None),
            ("GET", "/admin/users", None),
            ("POST", f"/admin/users/{admin.id}/freeze", {}),
        ]:
            assert_error(client.request(method, path, json=body), 403, "FORBIDDEN")
    assert listing(server, admin)[key["id"]]["status"] == "active"


def test_unknown_malformed_expired_and_revoked_keys_are_401(server, user, db):
    key = create(server, user)
    forged = key["key"][:15] + ("A" if key["key"][15] != "A" else "B") + key["key"][16:]
    for secret in ["wk_nonsense", "", "x" * 5000, forged, "wk_" + "0" * 12 + "a" * 43, key["key"] + "x"]:
        with keyed(server, secret) as client:
            r = client.get("/wallets")
        assert_error(r, 401, "INVALID_API_KEY")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    with db.cursor() as cur:
        cur.execute("UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = %s", (key["id"],))
    with keyed(server, key["key"]) as client:
        assert "expired" in assert_error(client.get("/wallets"), 401, "INVALID_API_KEY")["error"]
    assert listing(server, user)[key["id"]]["status"] == "expired"

    live = create(server, user)
    with keyed(server, live["key"]) as client:
        assert client.get("/wallets").status_code == 200
        with server.client(user.token) as owner:
            revoked = owner.post(f"/keys/{live['id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
            again = owner.post(f"/keys/{live['id']}/revoke")  # repeating changes nothing
            assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
        assert_error(client.get("/wallets"), 401, "INVALID_API_KEY")


def test_both_credentials_at_once_are_a_400(server, user):
    key = create(server, user)
    with keyed(server, key["key"]) as client:
        r = client.get("/wallets", headers=user.headers)
    assert_error(r, 400, "VALIDATION_ERROR")


def test_keys_of_others_are_not_found(server, user):
    key = create(server, user)
    stranger = make_user(server)
    with server.client(stranger.token) as client:
        assert_error(client.post(f"/keys/{key['id']}/revoke"), 404, "NOT_FOUND")
        assert_error(client.post(f"/keys/{key['id']}/rollover", json={}), 404, "NOT_FOUND")
        assert_error(client.post("/keys/not-a-uuid/revoke"), 400, "VALIDATION_ERROR")
    assert key["id"] not in listing(server, stranger)


def test_at_most_five_active_keys_and_a_revoked_or_expired_one_frees_a_place(server, user, db):
    keys = [create(server, user) for _ in range(5)]
    with server.client(user.token) as client:
        body = {"name": "sixth", "scopes": ["read"], "expires_in": "1D"}
        assert_error(client.post("/keys", json=body), 409, "LIMIT_REACHED")
        assert client.post(f"/keys/{keys[0]['id']}/revoke").status_code == 200
        assert client.post("/keys", json=body).status_code == 201
        with db.cursor() as cur:
            cur.execute("UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = %s", (keys[1]["id"],))
        assert client.post("/keys", json=body).status_code == 201
        assert_error(client.post("/keys", json=body), 409, "LIMIT_REACHED")
        # Rolling an expired key over would make a sixth active one.
        assert_error(client.post(f"/keys/{keys[1]['id']}/rollover", json={}), 409, "LIMIT_REACHED")


def test_six_concurrent_creates_make_exactly_five(server, user):
    def one(i):
        with server.client(user.token) as client:
            return client.post("/keys", json={"name": f"race{i}", "scopes": ["read"], "expires_in": "1H"}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(one, range(6)))
    assert statuses == [201] * 5 + [409]
    assert sum(k["status"] == "active" for k in listing(server, user).values()) == 5


def test_listing_pages_newest_first(server, user):
    made = [create(server, user)["id"] for _ in range(3)]
    seen, cursor = [], None
    with server.client(user.token) as client:
        while True:
            page = client.get("/keys", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [k["id"] for k in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert_error(client.get("/keys?limit=0"), 400, "VALIDATION_ERROR")
        assert_error(client.get("/keys?cursor=bogus"), 400, "VALIDATION_ERROR")
    assert seen == made[::-1]


def test_last_used_at_is_set_on_use_and_not_written_on_every_request(server, user, db):
    key = create(server, user)
    with keyed(server, key["key"]) as client:
        assert client.get("/wallets").status_code == 200
        first = listing(server, user)[key["id"]]["last_used_at"]
        assert first is not None
        for _ in range(5):
            assert client.get("/wallets").status_code == 200
    assert listing(server, user)[key["id"]]["last_used_at"] == first


def test_rollover_keeps_name_and_scopes_and_stops_the_old_key_at_once_by_default(server, user):
    old = create(server, user, ["read", "deposit"], "1H", name="svc")
    with server.client(user.token) as client:
        r = client.post(f"/keys/{old['id']}/rollover", json={})
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["key"] != old["key"] and new["id"] != old["id"]
    assert (new["name"], new["scopes"], new["status"]) == ("svc", ["read", "deposit"], "active")
    lifetime = dt.datetime.fromisoformat(new["expires_at"]) - dt.datetime.fromisoformat(new["created_at"])
    assert abs(lifetime - dt.timedelta(hours=1)) < dt.timedelta(seconds=5)
    with keyed(server, old["key"]) as client:
        assert_error(client.get("/wallets"), 401, "INVALID_API_KEY")
    with keyed(server, new["key"]) as client:
        assert client.get("/wallets").status_code == 200
    assert listing(server, user)[old["id"]]["status"] == "revoked"
    with server.client(user.token) as client:
        assert_error(client.post(f"/keys/{old['id']}/rollover", json={}), 409, "API_KEY_REVOKED")


def test_rollover_with_grace_keeps_the_old_key_until_the_grace_ends(server, user):
    old = create(server, user)
    with server.client(user.token) as client:
        r = client.post(f"/keys/{old['id']}/rollover", json={"grace_seconds": 2, "expires_in": "1Y"})
        assert r.status_code == 201, r.text
        for bad in [{"grace_seconds": -1}, {"grace_seconds": 86401}, {"grace_seconds": "5"}, {"expires_in": "1X"}]:
            assert_error(client.post(f"/keys/{r.json()['id']}/rollover", json=bad), 400, "VALIDATION_ERROR")
    new = r.json()
    assert dt.datetime.fromisoformat(new["expires_at"]) > dt.datetime.now(dt.UTC) + dt.timedelta(days=364)
    with keyed(server, old["key"]) as client:
        assert client.get("/wallets").status_code == 200
        assert listing(server, user)[old["id"]]["status"] == "active"
        # In its grace the old key cannot be rolled over twice.
        with server.client(user.token) as owner:
            assert_error(owner.post(f"/keys/{old['id']}/rollover", json={}), 409, "API_KEY_REVOKED")
        time.sleep(2.2)
        assert_error(client.get("/wallets"), 401, "INVALID_API_KEY")
    assert listing(server, user)[old["id"]]["status"] == "revoked"


def test_keys_in_their_rollover_grace_count_towards_the_limit(server, user):
    """Chained rollovers with a grace never make more than five secrets that work: a rollover with a grace needs a
    free place for the new key beside the old one; without a grace the new key takes the old one's place."""
    made = [create(server, user) for _ in range(4)]
    with server.client(user.token) as client:
        first = client.post(f"/keys/{made[0]['id']}/rollover", json={"grace_seconds": 3600})
        assert first.status_code == 201, first.text  # 3 others, the old one in its grace, the new one: 5
        assert_error(
            client.post(f"/keys/{first.json()['id']}/rollover", json={"grace_seconds": 3600}), 409, "LIMIT_REACHED"
        )
        assert_error(
            client.post("/keys", json={"name": "sixth", "scopes": ["read"], "expires_in": "1D"}), 409, "LIMIT_REACHED"
        )
        second = client.post(f"/keys/{first.json()['id']}/rollover", json={})
        assert second.status_code == 201, second.text
    statuses = []
    for secret in [*(k["key"] for k in made), first.json()["key"], second.json()["key"]]:
        with keyed(server, secret) as client:
            statuses.append(client.get("/wallets").status_code)
    assert statuses.count(200) == 5, statuses  # made[0] in its grace, made[1:], and the last rollover's key


def test_revoke_during_the_grace_stops_the_old_key_at_once(server, user):
    old = create(server, user)
    with server.client(user.token) as client:
        assert client.post(f"/keys/{old['id']}/rollover", json={"grace_seconds": 3600}).status_code == 201
        assert client.post(f"/keys/{old['id']}/revoke").json()["status"] == "revoked"
    with keyed(server, old["key"]) as client:
        assert_error(client.get("/wallets"), 401, "INVALID_API_KEY")


def test_money_moved_with_a_key_records_it_and_replays_through_the_owners_token(server, user, database_url, db):
    other = make_user(server)
    key = create(server, user, ["deposit", "transfer"])
    with keyed(server, key["key"]) as client:
        r = client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "10"}, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        assert r.json()["api_key_id"] == key["id"]
        sent = client.post(
            "/transfers", json={"from_wallet_id": user.wallet_id, "to_wallet_id": other.wallet_id, "amount": "3"}
        ).json()
    # The idempotency scope is the owner: the same key through the owner's token replays the key's deposit.
    with server.client(user.token) as client:
        again = client.post(
            f"/wallets/{user.wallet_id}/deposit", json={"amount": "10"}, headers={"Idempotency-Key": "k1"}
        )
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == r.json()["id"] and again.json()["api_key_id"] == key["id"]
        history = {t["id"]: t for t in client.get("/transactions").json()["items"]}
        assert history[sent["id"]]["api_key_id"] == key["id"]
        plain = client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "1"}).json()
        assert plain["api_key_id"] is None
    # The recipient does not see the sender's key.
    with server.client(other.token) as client:
        assert client.get(f"/transactions/{sent['id']}").json()["api_key_id"] is None
    assert scalar(db, "SELECT api_key_id::text FROM transactions WHERE id = %s", (sent["id"],)) == key["id"]
    assert balance(server, user) == "8.00"
    assert_audit_ok(database_url)


def test_deactivated_owners_keys_stop_at_once_and_frozen_owners_keys_only_read(server, user, database_url):
    admin = make_admin(server, database_url)
    fund(server, user, "5")
    key = create(server, user, ALL)["key"]
    with server.client(admin.token) as client:
        assert client.post(f"/admin/users/{user.id}/freeze", json={}).status_code == 200
    with keyed(server, key) as client:
        assert client.get(f"/wallets/{user.wallet_id}/balance").json()["balance"] == "5.00"
        r = client.post(f"/wallets/{user.wallet_id}/withdraw", json={"amount": "1"})
        assert_error(r, 403, "ACCOUNT_FROZEN")
        with server.client(admin.token) as admin_client:
            assert admin_client.post(f"/admin/users/{user.id}/deactivate", json={}).status_code == 200
        assert_error(client.get("/wallets"), 403, "ACCOUNT_INACTIVE")
        with server.client(admin.token) as admin_client:
            assert admin_client.post(f"/admin/users/{user.id}/activate", json={}).status_code == 200
        assert client.get("/wallets").status_code == 200  # reactivation brings the unrevoked keys back
    assert_audit_ok(database_url)


def test_concurrent_idempotent_requests_through_a_key_move_money_once(server, user, database_url, db):
    key = create(server, user, ["deposit"])["key"]

    def one(_):
        with keyed(server, key) as client:
            r = client.post(
                f"/wallets/{user.wallet_id}/deposit", json={"amount": "2"}, headers={"Idempotency-Key": "c"}
            )
            return r.status_code, r.json().get("id")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    ids = {tx for status, tx in results if status == 201}
    assert len(ids) == 1 and {s for s, _ in results} <= {201, 409}
    assert balance(server, user) == "2.00"
    assert_audit_ok(database_url)


@pytest.mark.slow
def test_kill_9_with_a_key_payment_pending_then_restart(own_server, database_url, db):
    recovery = {"PENDING_TIMEOUT": "2", "RECOVERY_INTERVAL": "1"}
    doomed = own_server(**recovery)
    owner = make_user(doomed)
    key = create(doomed, owner, ["deposit"])
    # Hold the wallet's row lock as an execution would, so the deposit is recorded and then waits mid-way.
    blocker = psycopg2.connect(db.dsn)
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (owner.wallet_id,))

    def pay():
        with keyed(doomed, key["key"]) as client, contextlib.suppress(httpx.HTTPError):  # the server dies under it
            client.post(
                f"/wallets/{owner.wallet_id}/deposit", json={"amount": "4"}, headers={"Idempotency-Key": "crash"}
            )

    thread = threading.Thread(target=pay, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    sql = "SELECT id::text FROM transactions WHERE api_key_id = %s"
    while scalar(db, f"SELECT COUNT(*) FROM ({sql}) t", (key["id"],)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    tx_id = scalar(db, sql, (key["id"],))
    doomed.kill()
    time.sleep(3 * CLIENT_CHECK_MS / 1000)  # PostgreSQL notices the killed server's connections are gone
    blocker.rollback()
    blocker.close()
    thread.join(10)

    restarted = own_server(**recovery)
    time.sleep(2 + 1 + 1)  # the pending timeout, one recovery interval, a margin
    # A keyed operation is not given up by the sweep: its retry takes it over (the key lives in PostgreSQL).
    assert recorded(db, tx_id)[:3] == ("PENDING", None, 0)
    with keyed(restarted, key["key"]) as client:
        for _ in range(2):  # the take-over executes it; the second retry replays that answer
            r = client.post(
                f"/wallets/{owner.wallet_id}/deposit", json={"amount": "4"}, headers={"Idempotency-Key": "crash"}
            )
            assert r.status_code == 201, r.text
            assert r.json()["id"] == tx_id and r.json()["api_key_id"] == key["id"]
        assert r.headers["Idempotent-Replayed"] == "true"
    assert recorded(db, tx_id)[:3] == ("COMPLETED", None, 2)
    assert balance(restarted, owner) == "4.00"
    restarted.stop()
    assert_audit_ok(database_url)


# Where a key is accepted, and with which scopes: the contract's list, as the OpenAPI document must declare it.
KEY_ROUTES = {
    ("get", "/api/v1/wallets"): ["read"],
    ("get", "/api/v1/wallets/{wallet_id}"): ["read"],
    ("get", "/api/v1/wallets/{wallet_id}/balance"): ["read"],
    ("get", "/api/v1/wallets/{wallet_id}/balances"): ["read"],
    ("get", "/api/v1/wallets/{wallet_id}/transactions"): ["read"],
    ("get", "/api/v1/wallets/{wallet_id}/statement"): ["read"],
    ("get", "/api/v1/transactions"): ["read"],
    ("get", "/api/v1/transactions/{transaction_id}"): ["read"],
    ("post", "/api/v1/wallets/{wallet_id}/deposit"): ["deposit"],
    ("post", "/api/v1/wallets/{wallet_id}/withdraw"): ["withdraw"],
    ("post", "/api/v1/wallets/{wallet_id}/operation"): ["deposit", "withdraw"],
    ("post", "/api/v1/transfers"): ["transfer"],
    ("get", "/api/v1/recipients"): ["transfer"],
    ("post", "/api/v1/transfers/batch"): ["transfer"],
    ("get", "/api/v1/holds"): ["read"],
    ("get", "/api/v1/holds/{hold_id}"): ["read"],
    ("post", "/api/v1/holds"): ["transfer"],
    ("post", "/api/v1/holds/{hold_id}/capture"): ["transfer"],
    ("post", "/api/v1/holds/{hold_id}/void"): ["transfer"],
    ("post", "/api/v1/wallets/{wallet_id}/deposits/paystack"): ["deposit"],
    ("get", "/api/v1/deposits/{reference}"): ["read"],
    ("get", "/api/v1/events"): ["read"],
    ("get", "/api/v1/fx-rates"): ["read"],
    ("post", "/api/v1/fx/quotes"): ["transfer"],
    ("get", "/api/v1/scheduled-transfers"): ["read"],
    ("get", "/api/v1/scheduled-transfers/{schedule_id}"): ["read"],
    ("post", "/api/v1/scheduled-transfers"): ["transfer"],
    ("post", "/api/v1/scheduled-transfers/{schedule_id}/pause"): ["transfer"],
    ("post", "/api/v1/scheduled-transfers/{schedule_id}/resume"): ["transfer"],
    ("post", "/api/v1/scheduled-transfers/{schedule_id}/cancel"): ["transfer"],
    ("get", "/api/v1/payment-requests"): ["read"],
    ("get", "/api/v1/payment-requests/{request_id}"): ["read"],
    ("post", "/api/v1/payment-requests"): ["transfer"],
    ("post", "/api/v1/payment-requests/{request_id}/pay"): ["transfer"],
    ("post", "/api/v1/payment-requests/{request_id}/decline"): ["transfer"],
    ("post", "/api/v1/payment-requests/{request_id}/cancel"): ["transfer"],
    ("get", "/api/v1/banks"): ["read"],
    ("get", "/api/v1/payout-accounts"): ["read"],
    ("post", "/api/v1/wallets/{wallet_id}/payouts"): ["withdraw"],
    ("get", "/api/v1/payouts"): ["read"],
    ("get", "/api/v1/payouts/{payout_id}"): ["read"],
}


def test_every_route_answers_a_key_as_the_openapi_document_declares(server, user):
    """Keys reach exactly the declared routes: elsewhere even a key with every scope is 403; on a declared route a
    key without its scopes is 403, and one with them gets past the gate (to a 2xx, 400 or 404 of the route)."""
    with server.client() as client:
        spec = client.get(f"{server.url}/openapi.json").json()
    declared = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for alternative in operation["security"]:
                if "apiKey" in alternative:
                    declared[(method, path)] = alternative["apiKey"]
    assert declared == KEY_ROUTES
    everything = create(server, user, ALL)["key"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not operation["security"]:
                continue
            url = server.url + path
            for parameter in operation["parameters"]:
                if parameter.get("in") == "path":  # an id that is not a UUID: a 400 once past the gate
                    value = parameter["schema"].get("enum", ["not-an-id"])[0]
                    url = url.replace("{" + parameter["name"] + "}", value)
            body = {} if "requestBody" in operation else None
            scopes = declared.get((method, path))
            if scopes is None:
                with keyed(server, everything) as client:
                    assert_error(client.request(method.upper(), url, json=body), 403, "FORBIDDEN")
                continue
            others = [s for s in ALL if s not in scopes]
            with keyed(server, create(server, user, others, "1H")["key"]) as client:
                assert_error(client.request(method.upper(), url, json=body), 403, "FORBIDDEN")
            with keyed(server, create(server, user, scopes, "1H")["key"]) as client:
                r = client.request(method.upper(), url, json=body)
            assert r.status_code in (200, 400, 404), (method, path, r.text)
            revoke_all(server, user)
            everything = create(server, user, ALL)["key"]
