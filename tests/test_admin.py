"""Admin over HTTP: who may call each route, user search, status changes and their effect, credits, audit, the log."""

import base64
import datetime as dt
import re
import uuid

import psycopg2
import pytest
from conftest import assert_error, balance, fund, log_in, make_admin, make_user, recorded, scalar, unique_name
from tornado import web

from handlers.base import BaseHandler
from serving import ROUTES

# Stands for every id in a route's path: the admin routes must refuse before they look anything up.
SOME_ID = "6f1c0d3e-5a4b-4c2d-9e8f-7a6b5c4d3e2f"
VERBS = ("get", "post", "put", "patch", "delete", "head", "options")
# Routes anyone may call, on purpose.
PUBLIC = {
    "/health",
    "/ready",
    "/api/v1/config",  # what the server has turned on: no secret, asked before signing in
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/login/mfa",
    "/api/v1/auth/refresh",
    "/api/v1/auth/google",
    "/api/v1/auth/google/callback",
    "/openapi.json",
    "/api/v1/webhooks/paystack",  # authenticated by Paystack's signature of the body, not by a principal
    "/metrics",  # a scraper's METRICS_TOKEN, not a principal (404 when the server has none)
}
ADMIN_ENDPOINTS = {
    ("get", "/api/v1/admin/users"),
    ("get", "/api/v1/admin/users/{}"),
    ("post", "/api/v1/admin/users/{}/freeze"),
    ("get", "/api/v1/admin/users/{}/wallets"),
    ("get", "/api/v1/admin/users/{}/transactions"),
    ("post", "/api/v1/admin/wallets/{}/deposit"),
    ("get", "/api/v1/admin/audit"),
    ("get", "/api/v1/admin/actions"),
}


def _specs():
    """The API's routes (the web wallet's static files are public and not operations)."""
    for route in ROUTES:
        spec = route if isinstance(route, web.URLSpec) else web.URLSpec(*route)
        if issubclass(spec.handler_class, BaseHandler):
            yield spec.regex.pattern.removesuffix("$"), spec


def _is_public(pattern):
    path = re.sub(r"\\(.)", r"\1", pattern)  # the route's regex, unescaped
    return path in PUBLIC or path == "/docs" or path.startswith("/docs/")


def _example_path(pattern, spec, fill):
    """A concrete path the route matches: each group becomes `fill` (or the first of its alternatives)."""
    path = re.sub(r"\(([^()]*)\)", lambda m: m.group(1).split("|")[0] if "|" in m.group(1) else fill, pattern)
    assert spec.regex.match(path), (pattern, path)
    return path


def _verbs(spec):
    # BaseHandler.options (the CORS preflight) is the same on every route and needs no access by design.
    cls = spec.handler_class
    return [v for v in VERBS if getattr(cls, v) not in (getattr(web.RequestHandler, v), BaseHandler.options)]


ADMIN_ROUTES = [
    (verb, _example_path(pattern, spec, SOME_ID))
    for pattern, spec in _specs()
    for verb in _verbs(spec)
    if getattr(getattr(spec.handler_class, verb), "access", None) == "admin"
]


def test_every_verb_of_every_route_declares_who_may_call_it():
    for pattern, spec in _specs():
        assert _verbs(spec), pattern
        for verb in _verbs(spec):
            access = getattr(getattr(spec.handler_class, verb), "access", None)
            assert access or _is_public(pattern), f"{verb.upper()} {pattern} declares no access"
            if pattern.startswith("/api/v1/admin/"):
                assert access == "admin", f"{verb.upper()} {pattern} is under /admin but not admin-only"
    assert {(verb, path.replace(SOME_ID, "{}")) for verb, path in ADMIN_ROUTES} >= ADMIN_ENDPOINTS


@pytest.mark.parametrize(("verb", "path"), ADMIN_ROUTES, ids=[f"{v.upper()} {p}" for v, p in ADMIN_ROUTES])
@pytest.mark.parametrize("caller", ["anonymous", "user", "admin"])
def test_admin_routes_refuse_everyone_but_admins(server, user, admin, verb, path, caller):
    token = {"anonymous": None, "user": user.token, "admin": admin.token}[caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {} if verb in ("post", "put", "patch") else None
    with server.client() as client:
        r = client.request(verb.upper(), f"{server.url}{path}", headers=headers, json=body)
    if caller == "anonymous":
        assert_error(r, 401, "AUTHENTICATION_REQUIRED")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    elif caller == "user":
        assert_error(r, 403, "FORBIDDEN")
    else:  # past the gate: the ids in the path are unknown and the body is empty
        assert r.status_code in (200, 400, 404), r.text
        assert r.json().get("code") not in ("FORBIDDEN", "AUTHENTICATION_REQUIRED")


def test_promotion_by_create_admin_takes_effect_at_the_next_login(server, database_url, user):
    # The role travels in the access token, so a token issued before the promotion stays a user's.
    promoted = make_admin(server, database_url, user.username)
    assert promoted.id == user.id
    with server.client(user.token) as client:
        assert_error(client.get("/admin/audit"), 403, "FORBIDDEN")
    with server.client(promoted.token) as client:
        assert client.get("/admin/audit").status_code == 200
        assert client.get("/users/me").json()["role"] == "admin"


# ---- helpers -------------------------------------------------------------------------------------------------------


def call(server, who, method, path, body=None, key=None):
    headers = {"Idempotency-Key": key} if key is not None else {}
    with server.client(who.token) as client:
        return client.request(method, path, json=body, headers=headers)


def set_status(server, admin, target, action, reason=None):
    r = call(server, admin, "POST", f"/admin/users/{target.id}/{action}", {"reason": reason} if reason else None)
    assert r.status_code == 200, r.text
    return r.json()


def actions(server, admin, **params):
    r = call(server, admin, "GET", "/admin/actions?" + "&".join(f"{k}={v}" for k, v in params.items()))
    assert r.status_code == 200, r.text
    return r.json()


def all_pages(server, admin, path):
    items, cursor = [], None
    while True:
        page = call(server, admin, "GET", path + (f"&cursor={cursor}" if cursor else "")).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# ---- users ---------------------------------------------------------------------------------------------------------


def test_search_users_by_part_of_username_email_or_phone_ignoring_case(server, admin):
    marker = unique_name("find")
    phone = f"+1555{uuid.uuid4().int % 10**7:07d}"
    by_name = make_user(server, username=f"{marker}_a")
    by_email = make_user(server, email=f"X{marker}@Example.com")
    by_phone = make_user(server, phone=phone)
    make_user(server)  # matches nothing

    def found(q):
        r = call(server, admin, "GET", f"/admin/users?q={q}&limit=200")
        assert r.status_code == 200, r.text
        return [u["username"] for u in r.json()["items"]]

    assert found(marker.upper()) == [by_email.username, by_name.username]  # newest first
    assert found(phone[2:]) == [by_phone.username]
    assert found("%25") == [] and found("%5F%5F%5F") == []  # LIKE wildcards are taken literally
    r = call(server, admin, "GET", f"/admin/users/{by_phone.id}")
    assert r.status_code == 200
    assert r.json() == {
        "id": by_phone.id,
        "username": by_phone.username,
        "email": None,
        "phone": phone,
        "role": "user",
        "status": "active",
        "auth_providers": ["password"],
        "two_factor": False,
        "created_at": r.json()["created_at"],
    }
    assert r.json()["created_at"].endswith("Z")


def test_user_list_pages_newest_first_without_gaps(server, admin):
    marker = unique_name("page")
    made = [make_user(server, username=f"{marker}_{i}").username for i in range(5)]
    paged = [u["username"] for u in all_pages(server, admin, f"/admin/users?q={marker}&limit=2")]
    assert paged == made[::-1]
    everyone = all_pages(server, admin, "/admin/users?limit=200")
    assert len({u["id"] for u in everyone}) == len(everyone) >= 5


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=x", "cursor=not-a-cursor", "cursor=", "colour=blue", f"q={'a' * 255}"]
)
def test_user_list_refuses_bad_parameters(server, admin, query):
    body = assert_error(call(server, admin, "GET", f"/admin/users?{query}"), 400, "VALIDATION_ERROR")
    assert set(body["details"]) <= {"limit", "cursor", "colour", "q"}


def test_unknown_and_malformed_user_ids(server, admin):
    for path in (
        "/admin/users/{}",
        "/admin/users/{}/wallets",
        "/admin/users/{}/transactions",
        "/admin/users/{}/freeze",
    ):
        method = "POST" if path.endswith("freeze") else "GET"
        assert_error(call(server, admin, method, path.format(uuid.uuid4())), 404, "NOT_FOUND")
        assert_error(call(server, admin, method, path.format("nope")), 400, "VALIDATION_ERROR")


def test_a_users_wallets_read_as_they_do_for_them(server, admin, user):
    with server.client(user.token) as client:
        assert client.post("/wallets", json={"currency": "EUR", "name": "travel"}).status_code == 201
        own = client.get("/wallets").json()
    fund(server, user, "2.50")
    seen = call(server, admin, "GET", f"/admin/users/{user.id}/wallets").json()
    assert [w["currency"] for w in seen["items"]] == ["USD", "EUR"]
    assert seen["items"][1] == own["items"][1] and seen["items"][0]["balance"] == "2.50"
    assert seen["totals"] == [{"currency": "EUR", "balance": "0.00"}, {"currency": "USD", "balance": "2.50"}]


# ---- status changes ------------------------------------------------------------------------------------------------


def test_freeze_blocks_every_money_operation_in_and_out_and_unfreeze_restores_them(server, admin, db):
    frozen, other = make_user(server), make_user(server)
    fund(server, frozen, "50.00")
    fund(server, other, "50.00")
    assert set_status(server, admin, frozen, "freeze", "chargeback investigation")["status"] == "frozen"

    wallet = f"/wallets/{frozen.wallet_id}"
    attempts = [
        (frozen, f"{wallet}/deposit", {"amount": "1"}),
        (frozen, f"{wallet}/withdraw", {"amount": "1"}),
        (frozen, f"{wallet}/operation", {"operation_type": "DEPOSIT", "amount": "1"}),
        (frozen, f"{wallet}/operation", {"operation_type": "WITHDRAW", "amount": "1"}),
        (frozen, "/transfers", {"from_wallet_id": frozen.wallet_id, "to_wallet_id": other.wallet_id, "amount": "1"}),
        (other, "/transfers", {"from_wallet_id": other.wallet_id, "to_wallet_id": frozen.wallet_id, "amount": "1"}),
        (admin, f"/admin{wallet}/deposit", {"amount": "1"}),
    ]
    for caller, path, body in attempts:
        refused = assert_error(call(server, caller, "POST", path, body), 403, "ACCOUNT_FROZEN")
        assert recorded(db, refused["transaction_id"]) == ("FAILED", "ACCOUNT_FROZEN", 0, 0), path
    assert (balance(server, frozen), balance(server, other)) == ("50.00", "50.00")
    with server.client(frozen.token) as client:  # frozen is not logged out: reading still works
        assert client.get("/users/me").json()["status"] == "frozen"

    assert set_status(server, admin, frozen, "unfreeze")["status"] == "active"
    for caller, path, body in attempts:
        r = call(server, caller, "POST", path, body)
        assert r.status_code in (200, 201), (path, r.text)
    # +1 deposit -1 withdraw +1 -1 operation -1 out +1 in +1 credit
    assert (balance(server, frozen), balance(server, other)) == ("51.00", "50.00")


def test_deactivate_ends_every_login_and_refuses_login_until_activated(server, admin, db):
    target, other = make_user(server), make_user(server)
    second = log_in(server, target.username)
    fund(server, other, "5.00")
    assert set_status(server, admin, target, "deactivate", "closed at the customer's request")["status"] == "inactive"

    for session in (target, second):
        with server.client(session.token) as client:
            assert_error(client.get("/users/me"), 401, "TOKEN_REVOKED")
    with server.client() as client:
        assert_error(client.post("/auth/refresh", json={"refresh_token": second.refresh_token}), 401, "TOKEN_REVOKED")
        r = client.post("/auth/login", json={"username": target.username, "password": target.password})
        assert_error(r, 403, "ACCOUNT_INACTIVE")
    incoming = {"from_wallet_id": other.wallet_id, "to_wallet_id": target.wallet_id, "amount": "1"}
    refused = assert_error(call(server, other, "POST", "/transfers", incoming), 403, "ACCOUNT_INACTIVE")
    assert recorded(db, refused["transaction_id"]) == ("FAILED", "ACCOUNT_INACTIVE", 0, 0)

    # A deactivated account comes back only through activate.
    for action in ("freeze", "unfreeze"):
        assert_error(call(server, admin, "POST", f"/admin/users/{target.id}/{action}"), 400, "VALIDATION_ERROR")
    assert set_status(server, admin, target, "activate", "identity confirmed")["status"] == "active"
    back = log_in(server, target.username)
    with server.client(back.token) as client:
        assert client.get("/users/me").json()["status"] == "active"
    with server.client(target.token) as client:  # the old logins stay ended
        assert_error(client.get("/users/me"), 401, "TOKEN_REVOKED")
    assert call(server, other, "POST", "/transfers", incoming).status_code == 201


def test_a_frozen_account_is_unfrozen_not_activated(server, admin, user):
    set_status(server, admin, user, "freeze")
    assert_error(call(server, admin, "POST", f"/admin/users/{user.id}/activate"), 400, "VALIDATION_ERROR")
    assert set_status(server, admin, user, "freeze")["status"] == "frozen"  # repeating is harmless, and not logged
    assert [a["action"] for a in actions(server, admin, target_user_id=user.id)["items"]] == ["freeze"]
    assert set_status(server, admin, user, "unfreeze")["status"] == "active"
    assert set_status(server, admin, user, "activate")["status"] == "active"


def test_an_admin_cannot_change_their_own_status(server, admin, db):
    for action in ("freeze", "deactivate", "unfreeze", "activate"):
        body = assert_error(call(server, admin, "POST", f"/admin/users/{admin.id}/{action}"), 400, "VALIDATION_ERROR")
        assert "user_id" in body["details"]
    with server.client(admin.token) as client:
        assert client.get(f"/admin/users/{admin.id}").json()["status"] == "active"
    with db.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM admin_actions WHERE target_user_id = %s", (admin.id,))
        assert cur.fetchone() == (0,)


def test_an_admin_can_deactivate_another_admin(server, admin, database_url):
    other = make_admin(server, database_url)
    assert set_status(server, admin, other, "deactivate")["role"] == "admin"
    with server.client(other.token) as client:
        assert_error(client.get("/admin/audit"), 401, "TOKEN_REVOKED")
    set_status(server, admin, other, "activate")
    with server.client(log_in(server, other.username).token) as client:
        assert client.get("/admin/audit").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "x" * 256}, "reason"),
        ({"reason": 5}, "reason"),
        ({"why": "no"}, "why"),
        ({"reason": "a\x00"}, "reason"),
    ],
)
def test_status_change_body_is_validated(server, admin, user, body, field):
    r = call(server, admin, "POST", f"/admin/users/{user.id}/freeze", body)
    assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    with server.client(admin.token) as client:
        assert client.get(f"/admin/users/{user.id}").json()["status"] == "active"
        r = client.post(f"/admin/users/{user.id}/freeze", content=b"{not json")
        assert_error(r, 400, "INVALID_JSON")
    assert set_status(server, admin, user, "freeze", "x" * 255)["status"] == "frozen"


# ---- credit --------------------------------------------------------------------------------------------------------


def test_admin_credit_is_a_deposit_by_that_admin_and_idempotent(server, admin, user, db):
    path, key = f"/admin/wallets/{user.wallet_id}/deposit", str(uuid.uuid4())
    body = {"amount": "12.34", "description": "goodwill", "reason": "ticket 42"}
    first = call(server, admin, "POST", path, body, key)
    assert first.status_code == 201, first.text
    tx = first.json()
    assert (tx["type"], tx["status"], tx["amount"], tx["currency"]) == ("DEPOSIT", "COMPLETED", "12.34", "USD")
    assert (tx["source_wallet_id"], tx["destination_wallet_id"], tx["direction"]) == (None, user.wallet_id, "in")
    assert tx["description"] == "goodwill" and "Idempotent-Replayed" not in first.headers
    with db.cursor() as cur:
        cur.execute("SELECT initiator_id, type FROM transactions WHERE id = %s", (tx["id"],))
        assert cur.fetchone() == (admin.id, "DEPOSIT")
    assert recorded(db, tx["id"]) == ("COMPLETED", None, 2, 0)

    replay = call(server, admin, "POST", path, body, key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == tx
    for changed in ({**body, "amount": "12.35"}, {**body, "description": "other"}, {**body, "reason": "other"}):
        assert_error(call(server, admin, "POST", path, changed, key), 422, "IDEMPOTENCY_MISMATCH")
    assert balance(server, user) == "12.34"

    with server.client(user.token) as client:  # the owner sees it in their own history
        assert [t["id"] for t in client.get("/transactions").json()["items"]] == [tx["id"]]
    logged = actions(server, admin, target_user_id=user.id, action="credit")["items"]
    assert len(logged) == 1
    assert logged[0]["transaction_id"] == tx["id"] and logged[0]["admin_id"] == admin.id
    assert logged[0]["target_wallet_id"] == user.wallet_id and logged[0]["reason"] == "ticket 42"
    assert logged[0]["details"] == {"amount": "12.34", "currency": "USD", "status": "COMPLETED", "failure_code": None}


def test_a_refused_credit_is_logged_once_and_replayed(server, admin, user):
    set_status(server, admin, user, "freeze")
    path, key = f"/admin/wallets/{user.wallet_id}/deposit", str(uuid.uuid4())
    first = assert_error(call(server, admin, "POST", path, {"amount": "3"}, key), 403, "ACCOUNT_FROZEN")
    replay = call(server, admin, "POST", path, {"amount": "3"}, key)
    assert assert_error(replay, 403, "ACCOUNT_FROZEN") == first and replay.headers["Idempotent-Replayed"] == "true"
    logged = actions(server, admin, target_user_id=user.id, action="credit")["items"]
    assert [(a["transaction_id"], a["details"]["status"]) for a in logged] == [(first["transaction_id"], "FAILED")]
    assert logged[0]["details"]["failure_code"] == "ACCOUNT_FROZEN"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": 1e30}, "amount"),
        ({}, "amount"),
        ({"amount": "1", "reason": "r" * 256}, "reason"),
        ({"amount": "1", "description": "d" * 256}, "description"),
        ({"amount": "1", "to": "me"}, "to"),
    ],
)
def test_credit_body_is_validated(server, admin, user, body, field):
    r = call(server, admin, "POST", f"/admin/wallets/{user.wallet_id}/deposit", body)
    assert field in assert_error(r, 400, "VALIDATION_ERROR")["details"]
    assert balance(server, user) == "0.00"


def test_credit_reaches_user_wallets_only(server, admin, user, db):
    fund(server, user, "1.00")  # so the USD system account (the outside world's side of deposits) exists
    with db.cursor() as cur:
        cur.execute("SELECT id FROM wallets WHERE is_system AND NOT is_fx AND currency = 'USD'")
        (system,) = cur.fetchone()
    for wallet_id in (system, uuid.uuid4()):
        assert_error(
            call(server, admin, "POST", f"/admin/wallets/{wallet_id}/deposit", {"amount": "1"}), 404, "NOT_FOUND"
        )
    assert_error(call(server, admin, "POST", "/admin/wallets/nope/deposit", {"amount": "1"}), 400, "VALIDATION_ERROR")


# ---- any user's history --------------------------------------------------------------------------------------------


def test_a_users_history_reads_as_it_does_for_them(server, admin, db):
    target, other = make_user(server), make_user(server)
    fund(server, target, "10.00")
    fund(server, other, "10.00")
    for caller, body in (
        (target, {"from_wallet_id": target.wallet_id, "to_wallet_id": other.wallet_id, "amount": "2"}),
        (other, {"from_wallet_id": other.wallet_id, "to_wallet_id": target.wallet_id, "amount": "3"}),
        (target, {"from_wallet_id": target.wallet_id, "to_wallet_id": other.wallet_id, "amount": "99"}),  # FAILED
    ):
        call(server, caller, "POST", "/transfers", body)
    call(server, target, "POST", f"/wallets/{target.wallet_id}/withdraw", {"amount": "1"})

    queries = [
        "",
        "type=TRANSFER",
        "status=FAILED",
        "status=COMPLETED&type=DEPOSIT",
        f"wallet_id={target.wallet_id}",
        "from=2000-01-01&to=2999-01-01",
        "to=2000-01-01",
        "limit=2",
    ]
    for query in queries:
        own = call(server, target, "GET", f"/transactions?{query}")
        seen = call(server, admin, "GET", f"/admin/users/{target.id}/transactions?{query}")
        assert own.status_code == seen.status_code == 200, (query, seen.text)
        assert seen.json() == own.json(), query
    assert len(call(server, admin, "GET", f"/admin/users/{target.id}/transactions").json()["items"]) == 5
    paged = all_pages(server, admin, f"/admin/users/{target.id}/transactions?limit=2")
    assert paged == call(server, target, "GET", "/transactions").json()["items"]

    path = f"/admin/users/{target.id}/transactions"
    assert_error(call(server, admin, "GET", f"{path}?wallet_id={other.wallet_id}"), 404, "NOT_FOUND")
    for bad in ("type=GIFT", "limit=500", "from=yesterday", "cursor=zzz", "sort=asc"):
        assert_error(call(server, admin, "GET", f"{path}?{bad}"), 400, "VALIDATION_ERROR")


# ---- audit ---------------------------------------------------------------------------------------------------------


def test_audit_reports_a_balance_corrupted_in_the_database(server, admin, db):
    report = call(server, admin, "GET", "/admin/audit").json()
    assert report["ok"] is True and report["mismatches"] == [] and report["wallets_checked"] >= 1

    victim = make_user(server)
    fund(server, victim, "5.00")
    with db.cursor() as cur:
        cur.execute("UPDATE wallets SET balance = balance + 1 WHERE id = %s", (victim.wallet_id,))
    try:
        report = call(server, admin, "GET", "/admin/audit").json()
    finally:
        with db.cursor() as cur:
            cur.execute("UPDATE wallets SET balance = balance - 1 WHERE id = %s", (victim.wallet_id,))
    assert report["ok"] is False
    assert report["mismatches"] == [
        {
            "kind": "wallet_balance",
            "wallet_id": victim.wallet_id,
            "currency": "USD",
            "balance": "5.01",
            "entries_total": "5.00",
        }
    ]
    assert call(server, admin, "GET", "/admin/audit").json()["ok"] is True


def test_audit_reports_a_pending_list_out_of_step_with_the_rows(server, admin, db):
    payer, payee = make_user(server), make_user(server)
    with server.client(payer.token) as client:
        body = {"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "1.00"}
        refused = client.post("/transfers", json=body)
    assert_error(refused, 400, "INSUFFICIENT_FUNDS")
    failed = refused.json()["transaction_id"]
    assert scalar(db, "SELECT count(*) FROM pending_transactions WHERE transaction_id = %s", (failed,)) == 0
    with db.cursor() as cur:
        cur.execute("INSERT INTO pending_transactions VALUES (%s)", (failed,))
    try:
        report = call(server, admin, "GET", "/admin/audit").json()
    finally:
        with db.cursor() as cur:
            cur.execute("DELETE FROM pending_transactions WHERE transaction_id = %s", (failed,))
    assert report["ok"] is False
    assert report["mismatches"] == [{"kind": "pending_list", "transaction_id": failed}]
    assert call(server, admin, "GET", "/admin/audit").json()["ok"] is True


# ---- the action log ------------------------------------------------------------------------------------------------


def test_the_action_log_records_who_what_when_and_why(server, admin, user):
    steps = [("freeze", "suspicious logins"), ("unfreeze", None), ("deactivate", "fraud confirmed"), ("activate", "x")]
    for action, reason in steps:
        set_status(server, admin, user, action, reason)
    logged = actions(server, admin, target_user_id=user.id)["items"]
    assert [(a["action"], a["reason"]) for a in logged] == steps[::-1]  # newest first
    assert [a["details"] for a in logged] == [
        {"from": "inactive", "to": "active"},
        {"from": "active", "to": "inactive"},
        {"from": "frozen", "to": "active"},
        {"from": "active", "to": "frozen"},
    ]
    assert {a["admin_id"] for a in logged} == {admin.id}
    assert {a["target_user_id"] for a in logged} == {user.id}
    assert {(a["admin_username"], a["target_username"]) for a in logged} == {(admin.username, user.username)}
    assert all(a["created_at"].endswith("Z") and a["transaction_id"] is None for a in logged)
    times = [dt.datetime.fromisoformat(a["created_at"]) for a in logged]
    assert times == sorted(times, reverse=True)

    assert [a["id"] for a in actions(server, admin, target_user_id=user.id, action="freeze")["items"]] == [
        logged[-1]["id"]
    ]
    assert all_pages(server, admin, f"/admin/actions?target_user_id={user.id}&limit=1") == logged
    newest = actions(server, admin, limit=200)["items"]
    assert newest[0]["id"] == logged[0]["id"]


@pytest.mark.parametrize("query", ["action=delete", "target_user_id=nope", "limit=0", "cursor=abc", "admin=me"])
def test_action_log_refuses_bad_parameters(server, admin, query):
    assert_error(call(server, admin, "GET", f"/admin/actions?{query}"), 400, "VALIDATION_ERROR")


def test_the_action_log_is_append_only_in_the_database(server, admin, user, db):
    set_status(server, admin, user, "freeze", "to be tampered with")
    for statement in (
        "UPDATE admin_actions SET reason = 'nothing happened' WHERE target_user_id = %s",
        "DELETE FROM admin_actions WHERE target_user_id = %s",
        "TRUNCATE admin_actions",
    ):
        with pytest.raises(psycopg2.Error, match="append-only"), db.cursor() as cur:
            cur.execute(statement, (user.id,))
    assert actions(server, admin, target_user_id=user.id)["items"][0]["reason"] == "to be tampered with"


def _cursor(*parts):
    return base64.urlsafe_b64encode("|".join(["v1", *parts]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_dates_outside_the_calendar_once_in_utc_are_a_400(server, admin, moment):
    cursor = _cursor(moment, SOME_ID)
    for path in ("/admin/users", "/admin/actions"):
        body = assert_error(call(server, admin, "GET", f"{path}?cursor={cursor}"), 400, "VALIDATION_ERROR")
        assert set(body["details"]) == {"cursor"}
    for query in ("to=9999-12-31", f"from={moment}", "to=0001-01-01T00:00:00%2B05:00"):
        path = f"/admin/users/{admin.id}/transactions?{query.replace('+', '%2B')}"
        assert_error(call(server, admin, "GET", path), 400, "VALIDATION_ERROR")
    # The first and last moments themselves are fine.
    assert (
        call(server, admin, "GET", f"/admin/users?cursor={_cursor('9999-12-31T23:59:59+00:00', SOME_ID)}").status_code
        == 200
    )
