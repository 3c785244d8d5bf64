"""Sessions a user can see: the list (device, address, created, last used, current), signing one out, signing out
everywhere else, and "last used" moving at sign-in, refresh and step-up only, never per request."""

import pytest
from conftest import PASSWORD, assert_error, log_in, make_user, scalar
from test_step_up import bearer

pytestmark = pytest.mark.usefixtures("ledger_audited")


def sign_in_from(server, username, agent):
    with server.client() as api:
        r = api.post("/auth/login", json={"username": username, "password": PASSWORD}, headers={"User-Agent": agent})
    assert r.status_code == 200, r.text
    return r.json()


def listing(server, token):
    with server.client(token) as api:
        r = api.get("/users/me/sessions")
    assert r.status_code == 200, r.text
    return r.json()


def test_the_list_shows_each_login_and_which_is_asking(server):
    user = make_user(server)
    sign_in_from(server, user.username, "WalletPhone/2.0 (Android 14)")
    laptop = sign_in_from(server, user.username, "Mozilla/5.0 (X11; Linux x86_64) Chromium/130")
    page = listing(server, laptop["access_token"])
    assert page["next_cursor"] is None
    sessions = page["items"]
    assert len(sessions) == 3  # make_user's, the phone's, the laptop's: newest first
    assert [s["user_agent"] for s in sessions[:2]] == [
        "Mozilla/5.0 (X11; Linux x86_64) Chromium/130",
        "WalletPhone/2.0 (Android 14)",
    ]
    assert [s["current"] for s in sessions] == [True, False, False]
    assert {s["ip"] for s in sessions} == {"127.0.0.1"}
    assert set(sessions[0]) == {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
    # Paged like every list.
    with server.client(laptop["access_token"]) as api:
        first = api.get("/users/me/sessions", params={"limit": 2}).json()
        rest = api.get("/users/me/sessions", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [s["id"] for s in first["items"] + rest["items"]] == [s["id"] for s in sessions]
    # Another user sees only their own.
    assert len(listing(server, make_user(server).token)["items"]) == 1


def test_sign_out_one_session_or_everywhere_else(server):
    user = make_user(server)
    phone = sign_in_from(server, user.username, "phone")
    laptop = sign_in_from(server, user.username, "laptop")
    sessions = {s["user_agent"]: s["id"] for s in listing(server, laptop["access_token"])["items"]}
    with server.client(laptop["access_token"]) as api:
        assert api.delete(f"/users/me/sessions/{sessions['phone']}").status_code == 204
        # Gone from the list, and its tokens stop working at once.
        assert sessions["phone"] not in {s["id"] for s in api.get("/users/me/sessions").json()["items"]}
        assert_error(api.delete(f"/users/me/sessions/{sessions['phone']}"), 404, "NOT_FOUND")
    with server.client(phone["access_token"]) as api:
        assert_error(api.get("/users/me"), 401, "TOKEN_REVOKED")
        assert_error(api.post("/auth/refresh", json={"refresh_token": phone["refresh_token"]}), 401, "TOKEN_REVOKED")
    # Someone else's session is not found (and not ended).
    other = make_user(server)
    other_session = listing(server, other.token)["items"][0]["id"]
    with server.client(laptop["access_token"]) as api:
        assert_error(api.delete(f"/users/me/sessions/{other_session}"), 404, "NOT_FOUND")
        assert_error(api.delete("/users/me/sessions/not-a-uuid"), 400, "VALIDATION_ERROR")
    with server.client(other.token) as api:
        assert api.get("/users/me").status_code == 200
    # Everywhere else: only the laptop is left, and it still works.
    with server.client(laptop["access_token"]) as api:
        assert api.post("/users/me/sessions/revoke-others").status_code == 204
        assert [s["user_agent"] for s in api.get("/users/me/sessions").json()["items"]] == ["laptop"]
    with server.client(user.token) as api:
        assert_error(api.get("/users/me"), 401, "TOKEN_REVOKED")


def test_last_used_moves_at_refresh_and_step_up_not_per_request(server, db):
    user = make_user(server)
    session = listing(server, user.token)["items"][0]["id"]

    def last_used():
        return scalar(db, "SELECT last_used_at FROM sessions WHERE id = %s", (session,))

    signed_in = last_used()
    with server.client(user.token) as api:
        for _ in range(20):
            assert api.get(f"/wallets/{user.wallet_id}/balance").status_code == 200
    assert last_used() == signed_in
    with server.client() as api:
        r = api.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text
    refreshed = last_used()
    assert refreshed > signed_in
    with server.client() as api:
        r = api.post("/auth/step-up", json={"password": PASSWORD}, headers=bearer(r.json()["access_token"]))
    assert r.status_code == 200, r.text
    assert last_used() > refreshed


def test_a_revoked_login_is_not_listed_and_the_list_needs_a_login(server):
    user = make_user(server)
    again = log_in(server, user.username)
    with server.client(again.token) as api:
        assert api.post("/auth/logout").status_code == 204
    assert [s["current"] for s in listing(server, user.token)["items"]] == [True]
    with server.client(user.token) as api:
        key = api.post("/keys", json={"name": "k", "scopes": ["read"], "expires_in": "1H"}).json()["key"]
    with server.client() as api:
        assert_error(api.get("/users/me/sessions", headers={"X-API-Key": key}), 403, "FORBIDDEN")
        assert_error(api.get("/users/me/sessions"), 401, "AUTHENTICATION_REQUIRED")
