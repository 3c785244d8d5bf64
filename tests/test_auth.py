"""Auth over HTTP: register, login by username/e-mail/phone, refresh rotation and reuse, logout, tokens, throttling."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest
from conftest import JWT_SECRET, PASSWORD, WALLET_KEYS, assert_error, create_admin, make_user, unique_name, unique_phone

from bench.profile import cpu_ticks
from wallet.platform.runtime import CPU_POOL_NICENESS

USER_KEYS = {"id", "username", "email", "phone", "role", "status", "auth_providers", "two_factor", "created_at"}
TOKEN_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}


def login(api: httpx.Client, password: str = PASSWORD, **identifier: str) -> httpx.Response:
    return api.post("/auth/login", json={**identifier, "password": password})


def tokens(api: httpx.Client, username: str, password: str = PASSWORD) -> dict:
    r = login(api, password, username=username)
    assert r.status_code == 200, r.text
    return r.json()


def me(api: httpx.Client, access_token: str) -> httpx.Response:
    return api.get("/users/me", headers={"Authorization": f"Bearer {access_token}"})


def refresh(api: httpx.Client, refresh_token: str) -> httpx.Response:
    return api.post("/auth/refresh", json={"refresh_token": refresh_token})


def sign(claims: dict, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def access_claims(user_id: str, **overrides: object) -> dict:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "sid": str(uuid.uuid4()),
        "jti": str(uuid.uuid4()),
        "typ": "access",
        "role": "user",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def tuned(module_server):
    """One server with non-default settings: 30 s access tokens, EUR, 3 failures per account, real bcrypt cost.

    Its own Redis prefix keeps its throttling counters apart from the default server's.
    """
    return module_server(
        ACCESS_TOKEN_TTL="30",
        DEFAULT_CURRENCY="eur",
        LOGIN_MAX_FAILURES="3",
        BCRYPT_ROUNDS="10",
        REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:",
    )


# ---- register ----------------------------------------------------------------------------------------------


def test_register_creates_user_and_default_wallet(api, db):
    name = unique_name("Reg")
    phone = unique_phone()
    r = api.post(
        "/auth/register",
        json={"username": name, "password": PASSWORD, "email": f"{name}@Example.COM", "phone": phone},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user", "wallet"}
    user, wallet = body["user"], body["wallet"]
    assert set(user) == USER_KEYS and set(wallet) == WALLET_KEYS
    assert user["username"] == name
    assert user["email"] == f"{name}@example.com"  # the domain is normalised, the local part kept
    assert user["phone"] == phone
    assert (user["role"], user["status"]) == ("user", "active")
    assert user["created_at"].endswith("Z")
    uuid.UUID(user["id"])
    assert (wallet["currency"], wallet["balance"], wallet["status"]) == ("USD", "0.00", "active")
    assert len(wallet["number"]) == 10 and wallet["number"].isdigit()
    assert wallet["created_at"].endswith("Z") and wallet["updated_at"].endswith("Z")

    cur = db.cursor()
    cur.execute("SELECT password_hash, role, status FROM users WHERE id = %s", (user["id"],))
    password_hash, role, status = cur.fetchone()
    assert password_hash.startswith("$2b$04$") and PASSWORD not in password_hash
    assert (role, status) == ("user", "active")
    cur.execute("SELECT id::text, currency, balance FROM wallets WHERE user_id = %s", (user["id"],))
    assert cur.fetchall() == [(wallet["id"], "USD", 0)]


def test_register_in_a_given_currency(api):
    r = api.post("/auth/register", json={"username": unique_name(), "password": PASSWORD, "currency": "jpy"})
    assert r.status_code == 201, r.text
    assert (r.json()["wallet"]["currency"], r.json()["wallet"]["balance"]) == ("JPY", "0")


def test_default_currency_comes_from_settings(tuned):
    with tuned.client() as api:
        r = api.post("/auth/register", json={"username": unique_name(), "password": PASSWORD})
    assert r.status_code == 201, r.text
    assert r.json()["wallet"]["currency"] == "EUR"


# ---- login -------------------------------------------------------------------------------------------------


def test_login_by_username_email_and_phone(server, api):
    name = unique_name("Mixed")
    phone = unique_phone()
    user_id = make_user(server, username=name, email=f"{name}@mail.example.com", phone=phone).id
    spaced_phone = f"{phone[:2]} {phone[2:5]} {phone[5:8]} {phone[8:]}"
    for identifier in (
        {"username": name},
        {"username": name.upper()},
        {"email": f"{name.upper()}@MAIL.EXAMPLE.COM"},
        {"phone": phone},
        {"phone": spaced_phone},
    ):
        r = login(api, **identifier)
        assert r.status_code == 200, (identifier, r.text)
        pair = r.json()
        assert set(pair) == TOKEN_KEYS
        assert (pair["token_type"], pair["expires_in"]) == ("Bearer", 900)
        claims = jwt.decode(pair["access_token"], JWT_SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["typ"], claims["role"]) == (user_id, "access", "user")
        assert claims["exp"] - claims["iat"] == 900
        r = me(api, pair["access_token"])
        assert r.status_code == 200 and r.json()["id"] == user_id


def test_login_needs_exactly_one_identifier(api, user):
    body = assert_error(login(api), 400, "VALIDATION_ERROR")
    assert "_schema" in body["details"]
    body = assert_error(login(api, username=user.username, email="a@b.example.com"), 400, "VALIDATION_ERROR")
    assert "_schema" in body["details"]
    body = assert_error(api.post("/auth/login", json={"username": user.username}), 400, "VALIDATION_ERROR")
    assert "password" in body["details"]


def test_wrong_password_and_unknown_user_look_the_same(api, user):
    wrong = login(api, "wrong-password-1", username=user.username)
    unknown = login(api, PASSWORD, username=unique_name("ghost"))
    unknown_email = login(api, PASSWORD, email=f"{unique_name()}@nowhere.example.com")
    body = assert_error(wrong, 401, "INVALID_CREDENTIALS")
    assert unknown.status_code == unknown_email.status_code == 401
    assert unknown.json() == unknown_email.json() == body
    for r in (wrong, unknown, unknown_email):
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_user_costs_the_same_bcrypt_time(tuned):
    """The unknown-user path verifies against a dummy hash of the same cost, so timing does not reveal users.

    Measured as the server's CPU time per login, not the client's clock: other tests share the machine's cores, and
    their load moved single wall-clock samples by more than the 2:1 this test looks for."""
    server = tuned
    victim, ghost = make_user(server).username, unique_name("ghost")
    spent: dict[str, list[float]] = {victim: [], ghost: []}
    with server.client() as api:
        for _ in range(3):  # no more than LOGIN_MAX_FAILURES, so none of them is throttled
            for username in (ghost, victim):
                before = cpu_ticks([server.proc.pid])  # the whole process: its CPU pool's threads too
                assert login(api, "wrong-password-1", username=username).status_code == 401
                spent[username].append((cpu_ticks([server.proc.pid]) - before) / os.sysconf("SC_CLK_TCK"))

    # A check at the server's 10 rounds costs tens of milliseconds; skipping it would cost next to none.
    assert min(spent[victim]) > 0.02, spent
    assert min(spent[ghost]) > 0.5 * min(spent[victim]), spent


def test_bcrypt_runs_at_a_lower_cpu_priority_than_the_event_loop(server, user):
    """The login that made `user` ran bcrypt in the server's CPU pool, whose threads run CPU_POOL_NICENESS nice levels
    below the event loop (the main thread), so logins cannot take the core from the other requests."""
    pid = server.proc.pid
    loop = os.getpriority(os.PRIO_PROCESS, pid)
    assert loop < 19  # else nothing could be lower
    threads = {int(tid) for tid in os.listdir(f"/proc/{pid}/task")} - {pid}
    assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} & {min(19, loop + CPU_POOL_NICENESS)}


def test_passwords_over_72_bytes_are_refused_not_crashed(api, user):
    for password in ("p" * 73, "é" * 37, "😀" * 19, PASSWORD + "x" * 100):
        assert_error(login(api, password, username=user.username), 401, "INVALID_CREDENTIALS")


# ---- refresh and logout ------------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_is_refused(api, user):
    r = refresh(api, user.refresh_token)
    assert r.status_code == 200, r.text
    pair = r.json()
    assert set(pair) == TOKEN_KEYS and pair["token_type"] == "Bearer"
    assert pair["refresh_token"] != user.refresh_token and pair["access_token"] != user.token
    assert me(api, pair["access_token"]).status_code == 200
    r = refresh(api, pair["refresh_token"])
    assert r.status_code == 200, r.text
    assert me(api, r.json()["access_token"]).status_code == 200


def test_refresh_token_reuse_revokes_the_whole_login(api, user, db):
    other_login = tokens(api, user.username)
    rotated = refresh(api, user.refresh_token).json()

    reuse = refresh(api, user.refresh_token)
    assert_error(reuse, 401, "TOKEN_REVOKED")
    assert reuse.headers["WWW-Authenticate"].startswith("Bearer")
    # Everything issued within that login is dead: the newest access token and the newest refresh token.
    assert_error(me(api, rotated["access_token"]), 401, "TOKEN_REVOKED")
    assert_error(me(api, user.token), 401, "TOKEN_REVOKED")
    assert_error(refresh(api, rotated["refresh_token"]), 401, "TOKEN_REVOKED")
    sid = jwt.decode(user.token, JWT_SECRET, algorithms=["HS256"])["sid"]
    cur = db.cursor()
    cur.execute("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = %s", (sid,))
    assert cur.fetchone() == (True,)
    # Another login of the same user is untouched.
    assert me(api, other_login["access_token"]).status_code == 200
    assert refresh(api, other_login["refresh_token"]).status_code == 200


def test_access_token_is_not_a_refresh_token(api, user):
    assert_error(refresh(api, user.token), 401, "INVALID_TOKEN")
    assert_error(refresh(api, "not-a-jwt"), 401, "INVALID_TOKEN")
    assert me(api, user.token).status_code == 200


def test_logout_revokes_the_access_and_refresh_token_at_once(api, user):
    other_login = tokens(api, user.username)
    r = api.post("/auth/logout", headers=user.headers)
    assert r.status_code == 204 and r.content == b""
    body = assert_error(me(api, user.token), 401, "TOKEN_REVOKED")
    assert body["error"]
    assert_error(refresh(api, user.refresh_token), 401, "TOKEN_REVOKED")
    assert_error(api.post("/auth/logout", headers=user.headers), 401, "TOKEN_REVOKED")
    assert me(api, other_login["access_token"]).status_code == 200


def test_logout_needs_a_token(api):
    r = api.post("/auth/logout")
    assert_error(r, 401, "AUTHENTICATION_REQUIRED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


# ---- bad tokens --------------------------------------------------------------------------------------------


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 forgery below
def test_bad_tokens_are_401(api, user):
    header, payload, signature = user.token.split(".")
    claims = jwt.decode(user.token, JWT_SECRET, algorithms=["HS256"])
    forged_payload = _b64({**claims, "role": "admin"})
    bad = {
        "malformed": "abc.def",
        "garbage": "x" * 500,
        "wrong secret": sign(claims, "another-secret-" + "y" * 40),
        "tampered payload": f"{header}.{forged_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[::-1]}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "HS512": sign(claims, algorithm="HS512"),
        "refresh as access": user.refresh_token,
        "no exp": sign(access_claims(user.id, exp=None)),
        "no sid": sign(access_claims(user.id, sid=None)),
        "no typ": sign(access_claims(user.id, typ=None)),
        "no sub": sign(access_claims(user.id, sub=None)),
        "sub not a uuid": sign(access_claims("admin")),
        "unknown role": sign(access_claims(user.id, role="root")),
    }
    for name, token in bad.items():
        r = me(api, token)
        assert_error(r, 401, "INVALID_TOKEN")
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
    for header_value in ("Basic dXNlcjpwYXNz", "Bearer", "Token abc", user.token):
        assert_error(api.get("/users/me", headers={"Authorization": header_value}), 401, "INVALID_TOKEN")


def test_expired_token_is_401_token_expired(api, user):
    past = int(time.time()) - 3600
    r = me(api, sign(access_claims(user.id, iat=past - 900, exp=past)))
    assert_error(r, 401, "TOKEN_EXPIRED")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    expired_refresh = sign(access_claims(user.id, typ="refresh", iat=past - 900, exp=past))
    assert_error(refresh(api, expired_refresh), 401, "TOKEN_EXPIRED")


def test_a_well_signed_token_of_a_session_that_never_existed_cannot_refresh(api, user):
    forged = sign(access_claims(user.id, typ="refresh", role=None))
    assert_error(refresh(api, forged), 401, "TOKEN_REVOKED")


def test_access_token_ttl_of_30_seconds(tuned):
    user = make_user(tuned)
    with tuned.client() as api:
        pair = tokens(api, user.username)
        assert pair["expires_in"] == 30
        claims = jwt.decode(pair["access_token"], JWT_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 30
        assert me(api, pair["access_token"]).status_code == 200
        rotated = refresh(api, pair["refresh_token"]).json()
        assert rotated["expires_in"] == 30
        assert me(api, rotated["access_token"]).status_code == 200


# ---- throttling --------------------------------------------------------------------------------------------


def test_failed_logins_for_one_account_are_throttled(server, api, user):
    for _ in range(5):  # LOGIN_MAX_FAILURES defaults to 5
        assert_error(login(api, "wrong-password-1", username=user.username), 401, "INVALID_CREDENTIALS")
    for r in (
        login(api, "wrong-password-1", username=user.username),
        login(api, username=user.username),  # the right password too: the account is locked for a while
        login(api, username=user.username.upper()),
    ):
        assert_error(r, 429, "RATE_LIMITED")
        assert 0 < int(r.headers["Retry-After"]) <= 900
    # Another account from the same address is not affected.
    assert login(api, username=make_user(server).username).status_code == 200


def test_account_throttle_counts_every_identifier_of_the_account(tuned):
    name = unique_name()
    phone = unique_phone()
    make_user(tuned, username=name, email=f"{name}@x.example.com", phone=phone)
    with tuned.client() as api:
        for identifier in ({"username": name}, {"email": f"{name}@x.example.com"}, {"phone": phone}):
            assert_error(login(api, "wrong-password-1", **identifier), 401, "INVALID_CREDENTIALS")
        assert_error(login(api, email=f"{name}@X.EXAMPLE.COM"), 429, "RATE_LIMITED")
        assert_error(login(api, phone=phone), 429, "RATE_LIMITED")


def test_concurrent_failed_logins_cannot_exceed_the_limit(tuned):
    victim = make_user(tuned)

    def attempt(_: int) -> int:
        with tuned.client() as api:
            return login(api, "wrong-password-1", username=victim.username).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(attempt, range(12)))
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= 3, statuses


def test_failed_logins_from_one_address_are_throttled(own_server):
    server = own_server(
        LOGIN_IP_MAX_FAILURES="3", LOGIN_MAX_FAILURES="100", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:"
    )
    victim = make_user(server)
    with server.client() as api:
        for i in range(3):
            # A forged X-Forwarded-For must not give the client a fresh address.
            r = api.post(
                "/auth/login",
                json={"username": unique_name("ghost"), "password": PASSWORD},
                headers={"X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}"},
            )
            assert_error(r, 401, "INVALID_CREDENTIALS")
        r = login(api, username=victim.username)
        assert_error(r, 429, "RATE_LIMITED")
        assert 0 < int(r.headers["Retry-After"]) <= 900


def test_concurrent_failed_logins_from_one_address_cannot_exceed_its_limit(own_server):
    """The address is counted before the password is checked, so guesses in flight cannot run past the limit."""
    server = own_server(
        DB_POOL_SIZE="4",
        LOGIN_IP_MAX_FAILURES="3",
        BCRYPT_ROUNDS="10",
        REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:",
    )

    def attempt(_: int) -> int:
        with server.client() as api:  # a different account each time: only the address limit applies
            return login(api, "wrong-password-1", username=unique_name("ghost")).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(attempt, range(16)))
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= 3, statuses


def from_address(server, address: str) -> httpx.Client:
    """A client whose connections come from another loopback address, as another machine's would."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=f"{server.url}/api/v1", transport=transport, timeout=60)


def test_a_stranger_cannot_lock_the_owner_out(own_server):
    """Wrong guesses count per account and address (low limit) and per account (a much higher ceiling): one
    stranger is stopped without touching the owner; only guesses from many addresses reach the ceiling."""
    server = own_server(
        DB_POOL_SIZE="4",
        LOGIN_MAX_FAILURES="3",
        LOGIN_ACCOUNT_MAX_FAILURES="7",
        REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:",
    )
    owner = make_user(server)
    with from_address(server, "127.0.0.2") as stranger:
        for _ in range(3):
            assert_error(login(stranger, "wrong-password-1", username=owner.username), 401, "INVALID_CREDENTIALS")
        assert_error(login(stranger, username=owner.username), 429, "RATE_LIMITED")  # even the right password
    with server.client() as api:
        assert login(api, username=owner.username).status_code == 200
        # The owner's own password check (a password change) is not locked either.
        change = {"password": "a-new-password-7", "current_password": PASSWORD}
        assert api.patch("/users/me", json=change, headers=owner.headers).status_code == 200

    # Spread over many addresses, guesses meet the per-account ceiling, and then everyone waits.
    for address, guesses in (("127.0.0.3", 3), ("127.0.0.4", 3), ("127.0.0.5", 1)):
        with from_address(server, address) as stranger:
            for _ in range(guesses):
                assert_error(login(stranger, "wrong-password-1", username=owner.username), 401, "INVALID_CREDENTIALS")
    with from_address(server, "127.0.0.6") as stranger:
        assert_error(login(stranger, "wrong-password-1", username=owner.username), 429, "RATE_LIMITED")
    with server.client() as api:
        r = login(api, "a-new-password-7", username=owner.username)
        assert_error(r, 429, "RATE_LIMITED")
        assert 0 < int(r.headers["Retry-After"]) <= 900


# ---- create-admin ------------------------------------------------------------------------------------------


def test_create_admin_from_the_command_line(api, database_url, db):
    name = unique_name("Admin")
    done = create_admin(database_url, name, "admin-password-7")
    assert done.returncode == 0, done.stderr
    assert name in done.stdout
    pair = tokens(api, name.lower(), "admin-password-7")
    assert jwt.decode(pair["access_token"], JWT_SECRET, algorithms=["HS256"])["role"] == "admin"
    r = me(api, pair["access_token"])
    assert r.status_code == 200 and r.json()["role"] == "admin"
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM wallets w JOIN users u ON u.id = w.user_id WHERE u.username = %s", (name,))
    assert cur.fetchone() == (1,)


def test_create_admin_promotes_an_existing_user(api, database_url, user):
    done = create_admin(database_url, user.username.upper(), "new-admin-password-7")
    assert done.returncode == 0, done.stderr
    assert_error(login(api, username=user.username), 401, "INVALID_CREDENTIALS")
    pair = tokens(api, user.username, "new-admin-password-7")
    r = me(api, pair["access_token"])
    assert r.status_code == 200
    assert (r.json()["id"], r.json()["role"]) == (user.id, "admin")


def test_create_admin_refuses_a_weak_password(database_url, db):
    name = unique_name("Admin")
    done = create_admin(database_url, name, "12345678901")
    assert done.returncode != 0
    assert "password" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    cur = db.cursor()
    cur.execute("SELECT count(*) FROM users WHERE username = %s", (name,))
    assert cur.fetchone() == (0,)
