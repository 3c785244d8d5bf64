"""The caller's account over HTTP: GET/PATCH/DELETE /users/me and the uniqueness of usernames, e-mails, phones."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import PASSWORD, assert_error, make_user, unique_name, unique_phone

USER_KEYS = {"id", "username", "email", "phone", "role", "status", "auth_providers", "two_factor", "created_at"}
NEW_PASSWORD = "battery-staple-42"


def login(api: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return api.post("/auth/login", json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def count(db, sql: str, *args: object) -> int:
    cur = db.cursor()
    cur.execute(sql, args)
    return cur.fetchone()[0]


def test_get_me(api, user):
    r = api.get("/users/me", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_KEYS
    assert (body["id"], body["username"], body["email"], body["phone"]) == (user.id, user.username, None, None)
    assert (body["role"], body["status"]) == ("user", "active")
    assert body["created_at"].endswith("Z")


def test_me_needs_a_token(api):
    r = api.get("/users/me")
    assert_error(r, 401, "AUTHENTICATION_REQUIRED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_patch_email_and_phone(api, user, db):
    name = unique_name()
    phone = unique_phone()
    r = api.patch("/users/me", headers=user.headers, json={"email": f"{name}@EXAMPLE.com", "phone": phone})
    assert r.status_code == 200, r.text
    assert set(r.json()) == USER_KEYS
    assert (r.json()["email"], r.json()["phone"]) == (f"{name}@example.com", phone)
    cur = db.cursor()
    cur.execute("SELECT email, phone FROM users WHERE id = %s", (user.id,))
    assert cur.fetchone() == (f"{name}@example.com", phone)

    r = api.patch("/users/me", headers=user.headers, json={"email": None})
    assert r.status_code == 200, r.text
    assert (r.json()["email"], r.json()["phone"]) == (None, phone)
    assert api.get("/users/me", headers=user.headers).json()["email"] is None


def test_patch_needs_something_to_change(api, user):
    body = assert_error(api.patch("/users/me", headers=user.headers, json={}), 400, "VALIDATION_ERROR")
    assert body["details"]


def test_username_and_role_cannot_be_patched(api, user, db):
    for field, value in (("username", unique_name()), ("role", "admin"), ("status", "active"), ("id", user.id)):
        body = assert_error(api.patch("/users/me", headers=user.headers, json={field: value}), 400, "VALIDATION_ERROR")
        assert field in body["details"]
    assert count(db, "SELECT count(*) FROM users WHERE id = %s AND role = 'user'", user.id) == 1


def test_password_change_needs_the_current_password(api, user):
    body = assert_error(
        api.patch("/users/me", headers=user.headers, json={"password": NEW_PASSWORD}), 400, "VALIDATION_ERROR"
    )
    assert "current_password" in body["details"]
    r = api.patch(
        "/users/me", headers=user.headers, json={"password": NEW_PASSWORD, "current_password": "wrong-password-1"}
    )
    assert_error(r, 401, "INVALID_CREDENTIALS")
    assert login(api, user.username).status_code == 200
    assert_error(login(api, user.username, NEW_PASSWORD), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("weak", ["short1", "1234567890", "<USERNAME>", "x" * 73, "é" * 37])
def test_password_change_keeps_the_policy(api, user, weak):
    weak = weak.replace("<USERNAME>", user.username.upper())
    r = api.patch("/users/me", headers=user.headers, json={"password": weak, "current_password": PASSWORD})
    body = assert_error(r, 400, "VALIDATION_ERROR")
    assert "password" in body["details"]
    assert login(api, user.username).status_code == 200


def test_password_change_ends_the_other_sessions_but_not_this_one(api, server, user):
    other = make_user(server)  # a bystander keeps their session
    second = login(api, user.username).json()
    r = api.patch("/users/me", headers=user.headers, json={"password": NEW_PASSWORD, "current_password": PASSWORD})
    assert r.status_code == 200, r.text
    assert set(r.json()) == USER_KEYS

    assert api.get("/users/me", headers=user.headers).status_code == 200
    rotated = api.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert rotated.status_code == 200, rotated.text
    assert_error(api.get("/users/me", headers=bearer(second["access_token"])), 401, "TOKEN_REVOKED")
    assert_error(api.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401, "TOKEN_REVOKED")
    assert api.get("/users/me", headers=other.headers).status_code == 200

    assert_error(login(api, user.username), 401, "INVALID_CREDENTIALS")
    assert login(api, user.username, NEW_PASSWORD).status_code == 200


def test_delete_me_deactivates_the_account(api, user, db):
    second = login(api, user.username).json()
    fund_r = api.post(f"/wallets/{user.wallet_id}/deposit", headers=user.headers, json={"amount": "5.00"})
    assert fund_r.status_code == 201, fund_r.text

    r = api.delete("/users/me", headers=user.headers)
    assert r.status_code == 204 and r.content == b""

    for token in (user.token, second["access_token"]):
        assert_error(api.get("/users/me", headers=bearer(token)), 401, "TOKEN_REVOKED")
    for token in (user.refresh_token, second["refresh_token"]):
        assert_error(api.post("/auth/refresh", json={"refresh_token": token}), 401, "TOKEN_REVOKED")
    assert_error(login(api, user.username), 403, "ACCOUNT_INACTIVE")
    # A wrong password on a deactivated account says nothing about the account.
    assert_error(login(api, user.username, "wrong-password-1"), 401, "INVALID_CREDENTIALS")

    # Deactivated, not erased: the user, the wallet and its ledger stay.
    assert count(db, "SELECT count(*) FROM users WHERE id = %s AND status = 'inactive'", user.id) == 1
    assert count(db, "SELECT count(*) FROM wallets WHERE id = %s AND balance = 500", user.wallet_id) == 1
    assert count(db, "SELECT count(*) FROM entries WHERE wallet_id = %s", user.wallet_id) == 1
    # The username stays taken.
    r = api.post("/auth/register", json={"username": user.username, "password": PASSWORD})
    assert_error(r, 409, "ALREADY_EXISTS")


# ---- uniqueness ----------------------------------------------------------------------------------------------


def test_duplicate_username_email_and_phone_are_409(api, db):
    name = unique_name("Dup")
    phone = unique_phone()
    email = f"{name}@example.com"
    r = api.post("/auth/register", json={"username": name, "password": PASSWORD, "email": email, "phone": phone})
    assert r.status_code == 201, r.text
    users_before = count(db, "SELECT count(*) FROM users")
    wallets_before = count(db, "SELECT count(*) FROM wallets")
    national = f"{phone[:2]} ({phone[2:5]}) {phone[5:8]}-{phone[8:]}"
    for field, fields in (
        ("username", {"username": name.upper()}),
        ("username", {"username": name.lower()}),
        ("email", {"username": unique_name(), "email": email.upper()}),
        ("phone", {"username": unique_name(), "phone": phone}),
        ("phone", {"username": unique_name(), "phone": national}),
    ):
        body = assert_error(api.post("/auth/register", json={"password": PASSWORD, **fields}), 409, "ALREADY_EXISTS")
        assert list(body["details"]) == [field], body
        assert field in body["error"]
    assert count(db, "SELECT count(*) FROM users") == users_before
    assert count(db, "SELECT count(*) FROM wallets") == wallets_before


def test_patch_to_a_taken_email_or_phone_is_409(api, server, db):
    taken_email = f"{unique_name()}@example.com"
    taken_phone = unique_phone()
    make_user(server, email=taken_email, phone=taken_phone)
    user = make_user(server)
    for field, value in (("email", taken_email.upper()), ("phone", taken_phone)):
        body = assert_error(api.patch("/users/me", headers=user.headers, json={field: value}), 409, "ALREADY_EXISTS")
        assert list(body["details"]) == [field]
    cur = db.cursor()
    cur.execute("SELECT email, phone FROM users WHERE id = %s", (user.id,))
    assert cur.fetchone() == (None, None)


def test_concurrent_registrations_of_one_name_make_one_user(server, db):
    name = unique_name("Race")

    def register(i: int) -> httpx.Response:
        with server.client() as api:
            return api.post("/auth/register", json={"username": name if i % 2 else name.upper(), "password": PASSWORD})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(register, range(8)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 7, [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert list(assert_error(r, 409, "ALREADY_EXISTS")["details"]) == ["username"]
    assert count(db, "SELECT count(*) FROM users WHERE lower(username) = lower(%s)", name) == 1
    wallets = "SELECT count(*) FROM wallets w JOIN users u ON u.id = w.user_id WHERE lower(u.username) = lower(%s)"
    assert count(db, wallets, name) == 1


def full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF41 for a)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def test_e_mail_look_alikes_are_the_same_address_or_refused(api, server, db):
    tag = unique_name("").strip("_")  # hex: Latin letters and digits only
    taken = {
        "plain": f"office{tag}@example.com",
        "ligature source": f"fi{tag}@example.com",
        "sharp s": f"stra\u00dfe{tag}@example.com",
    }
    for address in taken.values():
        make_user(server, email=address)
    register = lambda email: api.post(  # noqa: E731
        "/auth/register", json={"username": unique_name(), "password": PASSWORD, "email": email}
    )
    for same in (
        full_width(f"office{tag}") + "@example.com",  # full-width letters
        f"o\ufb03ce{tag}@example.com",  # the "ffi" ligature
        f"\ufb01{tag}@example.com",  # the "fi" ligature
        f"STRASSE{tag}@example.com",  # ß folds to ss
        f"office{tag}@EXAMPLE.com",
    ):
        body = assert_error(register(same), 409, "ALREADY_EXISTS")
        assert list(body["details"]) == ["email"], (same, body)
    for homoglyph in (
        f"\u043effice{tag}@example.com",  # a Cyrillic o (U+043E) among Latin letters
        f"office{tag}@ex\u0430mple.com",  # a Cyrillic a (U+0430) in the domain
    ):
        body = assert_error(register(homoglyph), 400, "VALIDATION_ERROR")
        assert list(body["details"]) == ["email"], (homoglyph, body)
    # One script throughout is an address like any other.
    cyrillic = f"\u0438\u0432\u0430\u043d{uuid.uuid4().int % 10**12}@example.com"
    r = register(cyrillic)
    assert r.status_code == 201, r.text
    # A change of address meets the same rules.
    user = make_user(server)
    change = api.patch("/users/me", headers=user.headers, json={"email": full_width(f"office{tag}") + "@example.com"})
    assert_error(change, 409, "ALREADY_EXISTS")
    assert count(db, "SELECT count(*) FROM users WHERE email ILIKE %s", f"%{tag}@example.com") == 3


def test_an_address_that_python_and_postgresql_lower_case_differently_logs_in(api, server):
    tag = unique_name("").strip("_")
    address = f"\u0130lker{tag}@example.com"  # İ: lower() gives "i̇" in Python, and other things elsewhere
    user = make_user(server, email=address)
    with server.client() as api:
        for spelling in (address, address.lower(), address.casefold(), f"\u0130LKER{tag.upper()}@EXAMPLE.COM"):
            r = api.post("/auth/login", json={"email": spelling, "password": PASSWORD})
            assert r.status_code == 200, (spelling, r.text)
            assert api.get("/users/me", headers=bearer(r.json()["access_token"])).json()["id"] == user.id
        assert api.get("/users/me", headers=user.headers).json()["email"] == address
