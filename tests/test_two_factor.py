"""Two-factor sign-in over HTTP: enrolment and its QR code, the login's code step, codes that work once, recovery
codes, throttled codes (a concurrency test), step-up with a code, turning it off, Google sign-in and admins."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pyotp
import pytest
import test_google
from conftest import PASSWORD, assert_error, make_admin, make_user, scalar, unique_name, wait_for
from test_step_up import KEY, aged, bearer

pytestmark = pytest.mark.usefixtures("ledger_audited")


class Authenticator:
    """An authenticator app: the codes of successive time steps, each step once (the server takes a code once, and
    only one later than the last it took), from the step before now, so three can be used at once."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.step = 0

    def code(self) -> str:
        # The server takes now and a step either side. Start no earlier than a step before where it will be in 2
        # seconds (so the request gets there in time), and never run ahead of a step after now: wait instead.
        self.step = max(self.step + 1, (int(time.time()) + 2) // 30 - 1)
        wait_for(lambda: self.step <= int(time.time()) // 30 + 1, timeout=35)
        return self.totp.generate_otp(self.step)

    def wrong(self) -> str:
        """A code of no step the server would take now."""
        return self.totp.generate_otp(int(time.time()) // 30 - 5)


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def enrol(server, user) -> tuple[Authenticator, list[str]]:
    """Turn two-factor sign-in on for `user` (with their fresh login): its app and the recovery codes."""
    with server.client(user.token) as api:
        r = api.post("/users/me/2fa")
        assert r.status_code == 201, r.text
        app = Authenticator(r.json()["secret"])
        r = api.post("/users/me/2fa/confirm", json={"code": app.code()})
        assert r.status_code == 200, r.text
    return app, r.json()["recovery_codes"]


def password_step(server, username: str) -> str:
    """POST /auth/login of a user with two-factor sign-in: 401 MFA_REQUIRED; its mfa_token."""
    with server.client() as api:
        r = api.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 401 and r.json()["code"] == "MFA_REQUIRED", r.text
    return r.json()["mfa_token"]


def code_step(server, mfa_token: str, **code: str):
    with server.client() as api:
        return api.post("/auth/login/mfa", json={"mfa_token": mfa_token, **code})


@pytest.fixture(scope="module")
def tight(module_server):
    """A server allowing 3 wrong tries per account, with a Redis prefix of its own (its counters stay apart)."""
    return module_server(LOGIN_MAX_FAILURES="3", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:")


def test_enrol_confirm_and_sign_in_with_a_code(server, db):
    user = make_user(server)
    with server.client(user.token) as api:
        r = api.post("/users/me/2fa")
        assert r.status_code == 201, r.text
        enrolment = r.json()
        assert set(enrolment) == {"secret", "otpauth_uri", "qr_code"}
        assert enrolment["otpauth_uri"].startswith(
            f"otpauth://totp/Wallet:{user.username}?secret={enrolment['secret']}"
        )
        assert enrolment["qr_code"].startswith("data:image/svg+xml")
        # Stored encrypted: the database does not give the secret away.
        stored = scalar(db, "SELECT secret FROM two_factor WHERE user_id = %s", (user.id,))
        assert enrolment["secret"] not in stored
        # Pending until confirmed: sign-in is unchanged, and a wrong code does not turn it on.
        assert api.get("/users/me").json()["two_factor"] is False
        app = Authenticator(enrolment["secret"])
        assert_error(api.post("/users/me/2fa/confirm", json={"code": app.wrong()}), 401, "INVALID_CREDENTIALS")
        r = api.post("/users/me/2fa/confirm", json={"code": app.code()})
        assert r.status_code == 200, r.text
        codes = r.json()["recovery_codes"]
        assert len(set(codes)) == 10
        assert api.get("/users/me").json()["two_factor"] is True
        assert_error(api.post("/users/me/2fa/confirm", json={"code": app.code()}), 409, "ALREADY_EXISTS")
        assert_error(api.post("/users/me/2fa"), 409, "ALREADY_EXISTS")
    hashes = scalar(db, "SELECT recovery_hashes FROM two_factor WHERE user_id = %s", (user.id,))
    assert len(hashes) == 10 and not {c.replace("-", "") for c in codes} & set(hashes)

    # The password alone gives no tokens now; the code finishes the sign-in.
    with server.client() as api:
        r = api.post("/auth/login", json={"username": user.username, "password": PASSWORD})
    body = assert_error(r, 401, "MFA_REQUIRED")
    assert "access_token" not in body and body["details"]["expires_in"] == 300
    r = code_step(server, body["mfa_token"], code=app.code())
    assert r.status_code == 200, r.text
    access = claims(r.json()["access_token"])
    assert access["amr"] == ["pwd", "otp", "mfa"] and abs(access["auth_time"] - time.time()) < 60
    with server.client(r.json()["access_token"]) as api:
        assert api.get("/users/me").json()["id"] == user.id
    # A refreshed token keeps when and how the login authenticated.
    with server.client() as api:
        refreshed = api.post("/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}).json()
    assert (claims(refreshed["access_token"])["auth_time"], claims(refreshed["access_token"])["amr"]) == (
        access["auth_time"],
        access["amr"],
    )


def test_a_code_works_once_and_so_does_an_mfa_token(server):
    user = make_user(server)
    app, codes = enrol(server, user)
    code = app.code()
    first, second = password_step(server, user.username), password_step(server, user.username)
    assert code_step(server, first, code=code).status_code == 200
    assert_error(code_step(server, second, code=code), 401, "INVALID_CREDENTIALS")  # replayed within its window
    # A later code signs in; the mfa_token that has already signed in does not sign in again, even with a good code.
    assert code_step(server, second, code=app.code()).status_code == 200
    assert_error(code_step(server, first, recovery_code=codes[0]), 401, "INVALID_CREDENTIALS")
    assert_error(code_step(server, "not-a-token", code="123456"), 401, "INVALID_TOKEN")
    assert_error(code_step(server, first, code="12345"), 400, "VALIDATION_ERROR")
    assert_error(code_step(server, first, code="123456", recovery_code="abcde-fghjk"), 400, "VALIDATION_ERROR")


def test_a_recovery_code_works_once(server):
    user = make_user(server)
    _, codes = enrol(server, user)
    r = code_step(server, password_step(server, user.username), recovery_code=codes[0])
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["amr"] == ["pwd", "recovery", "mfa"]
    assert_error(
        code_step(server, password_step(server, user.username), recovery_code=codes[0]), 401, "INVALID_CREDENTIALS"
    )
    # Typed without its dash and in capitals, another one works.
    typed = codes[1].replace("-", "").upper()
    assert code_step(server, password_step(server, user.username), recovery_code=typed).status_code == 200


def test_concurrent_wrong_codes_cannot_exceed_the_limit(tight):
    """Like passwords: each try is counted before it is checked, so 12 wrong codes at once get at most
    LOGIN_MAX_FAILURES (3) answers that say "wrong", the rest 429; and then even the right code waits."""
    user = make_user(tight)
    app, codes = enrol(tight, user)
    token = password_step(tight, user.username)

    def attempt(i: int) -> int:
        return code_step(tight, token, code=f"{(int(app.wrong()) + i) % 10**6:06d}").status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(attempt, range(12)))
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= 3, statuses
    r = code_step(tight, token, code=app.code())
    assert_error(r, 429, "RATE_LIMITED")
    assert 0 < int(r.headers["Retry-After"]) <= 900
    assert_error(code_step(tight, token, recovery_code=codes[0]), 429, "RATE_LIMITED")


def test_step_up_and_turning_it_off_need_a_code(server):
    user = make_user(server)
    app, codes = enrol(server, user)
    stale = aged(user.token, 600)
    with server.client() as api:
        assert_error(api.post("/keys", json=KEY, headers=bearer(stale)), 403, "STEP_UP_REQUIRED")
        # With two-factor sign-in on, the password alone does not step up.
        r = api.post("/auth/step-up", json={"password": PASSWORD}, headers=bearer(stale))
        assert_error(r, 400, "VALIDATION_ERROR")
        assert_error(
            api.post("/auth/step-up", json={"code": app.wrong()}, headers=bearer(stale)), 401, "INVALID_CREDENTIALS"
        )
        r = api.post("/auth/step-up", json={"code": app.code()}, headers=bearer(stale))
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"access_token", "token_type", "expires_in"}
        fresh = r.json()["access_token"]
        assert claims(fresh)["amr"] == ["pwd", "otp", "mfa"] and claims(fresh)["sid"] == claims(user.token)["sid"]
        assert api.post("/keys", json=KEY, headers=bearer(fresh)).status_code == 201

        # Off: the password and a code (or a recovery code) are both needed.
        off = {"password": PASSWORD, "code": app.code()}
        r = api.request("DELETE", "/users/me/2fa", json={**off, "password": "wrong-horse-9"}, headers=bearer(stale))
        assert_error(r, 401, "INVALID_CREDENTIALS")
        r = api.request("DELETE", "/users/me/2fa", json={"password": PASSWORD}, headers=bearer(stale))
        assert_error(r, 400, "VALIDATION_ERROR")
        r = api.request(
            "DELETE", "/users/me/2fa", json={**off, "code": None, "recovery_code": codes[3]}, headers=bearer(stale)
        )
        assert r.status_code == 204, r.text
        assert_error(api.request("DELETE", "/users/me/2fa", json=off, headers=bearer(stale)), 404, "NOT_FOUND")
        r = api.post("/auth/login", json={"username": user.username, "password": PASSWORD})
        assert r.status_code == 200, r.text


def test_enrolment_needs_a_recent_authentication(server):
    user = make_user(server)
    with server.client() as api:
        assert_error(api.post("/users/me/2fa", headers=bearer(aged(user.token, 301))), 403, "STEP_UP_REQUIRED")
        assert_error(
            api.post("/users/me/2fa/confirm", json={"code": "123456"}, headers=bearer(user.token)), 404, "NOT_FOUND"
        )


# ---- Google sign-in ----------------------------------------------------------------------------------------------


provider, gserver = test_google.provider, test_google.gserver  # the local OIDC provider and a server using it


def test_google_sign_in_of_a_user_with_two_factor_needs_the_code(gserver, provider):
    who = {"sub": uuid.uuid4().hex, "email": f"{unique_name('g')}@example.com"}
    r = test_google.sign_in(gserver, provider, who)
    assert r.status_code == 200, r.text
    with gserver.client(r.json()["access_token"]) as api:  # just signed in: recent enough to enrol
        app = Authenticator(api.post("/users/me/2fa").json()["secret"])
        assert api.post("/users/me/2fa/confirm", json={"code": app.code()}).status_code == 200
    r = test_google.sign_in(gserver, provider, who)
    body = assert_error(r, 401, "MFA_REQUIRED")
    r = code_step(gserver, body["mfa_token"], code=app.code())
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["amr"] == ["google", "otp", "mfa"]
    # No password: turning it off takes a recent authentication and a code.
    with gserver.client(r.json()["access_token"]) as api:
        assert api.request("DELETE", "/users/me/2fa", json={"code": app.code()}).status_code == 204


# ---- admins ------------------------------------------------------------------------------------------------------


def test_admin_require_2fa_makes_an_admin_enrol_first(own_server, database_url):
    strict = own_server(ADMIN_REQUIRE_2FA="true", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:")
    admin = make_admin(strict, database_url)
    with strict.client(admin.token) as api:
        body = assert_error(api.get("/admin/users"), 403, "TWO_FACTOR_REQUIRED")
        assert "/users/me/2fa" in body["error"]
        assert api.get("/users/me").status_code == 200  # the rest of the account answers
    app, _ = enrol(strict, admin)
    # Enrolled, but this login did not use it: a step-up with a code makes it one that did.
    with strict.client(admin.token) as api:
        assert_error(api.get("/admin/users"), 403, "TWO_FACTOR_REQUIRED")
        stepped = api.post("/auth/step-up", json={"code": app.code()}).json()["access_token"]
    with strict.client(stepped) as api:
        assert api.get("/admin/users").status_code == 200
    signed_in = code_step(strict, password_step(strict, admin.username), code=app.code()).json()["access_token"]
    with strict.client(signed_in) as api:
        assert api.get("/admin/audit").status_code == 200
    # A plain user meets the ordinary 403.
    with strict.client(make_user(strict).token) as api:
        assert_error(api.get("/admin/users"), 403, "FORBIDDEN")
