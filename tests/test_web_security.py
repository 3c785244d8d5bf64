"""The web wallet's Security page and prompts in Chromium: turning two-factor sign-in on with the QR code, the sign-in's
code step (a code, a recovery code, Google), the "confirm it is you" dialog that keeps a half-sent transfer and a new
key's form, the sessions list with its sign-out buttons, and an admin told to enrol."""

from __future__ import annotations

import uuid

import httpx
import pytest
import test_web
from conftest import PASSWORD, balance, fund, make_admin, make_user, unique_name
from oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from test_two_factor import Authenticator
from test_web import REFRESH_TOKEN, Person

from scripts.local_services import free_port

pytestmark = pytest.mark.usefixtures("ledger_audited")

chromium = test_web.chromium  # the browser, as test_web starts it (a fixture, once per module)


person_at = test_web.person_at  # people at a server's URL, each in a context of their own


def signed_in_long_ago(person: Person, db, refresh_token: str, user_id: str) -> None:
    """The page holds a login whose sign-in was an hour ago (a session the person kept open, renewing its tokens):
    what needs a recent authentication asks for it."""
    db.cursor().execute(
        "UPDATE sessions SET authenticated_at = now() - interval '1 hour' WHERE user_id = %s", (user_id,)
    )
    person.goto("/login")
    person.page.evaluate("token => sessionStorage.setItem('wallet.refresh_token', token)", refresh_token)
    person.page.reload()
    person.page.get_by_role("heading", name="Wallets").wait_for()


def wrong_code_then_right(person: Person, app: Authenticator, label: str, button: str, said: str) -> None:
    """A wrong code is refused in words under its field; then the right one is sent."""
    person.field(label).fill(app.wrong())
    person.page.get_by_role("button", name=button).click()
    person.page.locator("[data-error-for=code]", has_text=said).wait_for()
    person.field(label).fill(app.code())
    person.page.get_by_role("button", name=button).click()


def test_turn_on_two_factor_then_sign_in_with_a_code_and_a_recovery_code(server, person_at):
    person = person_at(server.url)
    name = unique_name("tf")
    make_user(server, username=name)
    person.log_in(name)
    person.goto("/security")
    person.page.get_by_role("button", name="Turn on").click()
    qr = person.page.get_by_role("img", name="QR code to add this account to an authenticator app")
    qr.wait_for()
    assert person.page.evaluate("img => img.complete && img.naturalWidth > 0", qr.element_handle())  # CSP lets it in
    app = Authenticator(person.page.locator("code.secret").inner_text())
    person.assert_labelled()
    person.shot("security-enrol")
    wrong_code_then_right(person, app, "Code from the app", "Turn on", "wrong or expired")
    codes = person.page.get_by_role("list", name="Recovery codes").locator("li")
    codes.nth(9).wait_for()
    recovery = codes.all_inner_texts()
    assert len(set(recovery)) == 10
    person.shot("security-recovery-codes")
    person.page.get_by_role("button", name="I have kept them").click()
    person.page.get_by_text("On: signing in asks for a code").wait_for()

    # Signing in now asks for the code after the password.
    person.menu("Sign out")
    person.shown("/login")
    person.field("Username, e-mail or phone").fill(name)
    person.field("Password").fill(PASSWORD)
    person.page.get_by_role("button", name="Sign in").click()
    person.page.get_by_role("heading", name="Enter your code").wait_for()
    person.shot("sign-in-code")
    wrong_code_then_right(
        person, app, "Code from your authenticator app", "Verify", "wrong, expired or was already used"
    )
    person.page.get_by_role("heading", name="Wallets").wait_for()

    # A recovery code instead, once.
    person.menu("Sign out")
    person.shown("/login")
    person.field("Username, e-mail or phone").fill(name)
    person.field("Password").fill(PASSWORD)
    person.page.get_by_role("button", name="Sign in").click()
    person.page.get_by_role("button", name="Use a recovery code instead").click()
    person.field("Recovery code").fill(recovery[0])
    person.page.get_by_role("button", name="Verify").click()
    person.page.get_by_role("heading", name="Wallets").wait_for()

    # Turning it off takes the password and a code.
    person.goto("/security")
    person.field("Password").fill(PASSWORD)
    person.field("Code from your authenticator app").fill(app.code())
    person.page.get_by_role("button", name="Turn off").click()
    person.page.get_by_text("Off. With it on").wait_for()
    with server.client() as api:
        assert api.post("/auth/login", json={"username": name, "password": PASSWORD}).status_code == 200


def test_confirm_it_is_you_keeps_the_transfer_and_the_new_key(server, db, person_at):
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "5000.00")
    person = person_at(server.url)
    signed_in_long_ago(person, db, payer.refresh_token, payer.id)

    # A large transfer: the dialog asks for the password; cancelled, the form is back with everything typed.
    person.goto("/transfer")
    person.field("Username").fill(payee.username)
    person.field("Amount").fill("1500.00")
    person.field("Description (optional)").fill("rent")
    person.page.get_by_role("button", name="Review").click()
    person.page.get_by_role("button", name="Send $1,500.00").click()
    dialog = person.page.get_by_role("dialog", name="Confirm it is you")
    dialog.wait_for()
    person.shot("step-up")
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    person.page.locator(".form-alert", has_text="confirm it is you").wait_for()
    assert (person.field("Username").input_value(), person.field("Amount").input_value()) == (payee.username, "1500.00")
    assert person.field("Description (optional)").input_value() == "rent"
    # Again: a wrong password is said in the dialog; the right one sends the transfer as reviewed, once.
    person.page.get_by_role("button", name="Review").click()
    person.page.get_by_role("button", name="Send $1,500.00").click()
    dialog.get_by_label("Password").fill("wrong-horse-9")
    dialog.get_by_role("button", name="Confirm").click()
    dialog.locator("[data-error-for=password]", has_text="That password is wrong.").wait_for()
    dialog.get_by_label("Password").fill(PASSWORD)
    dialog.get_by_role("button", name="Confirm").click()
    person.page.get_by_role("heading", name=f"To {payee.username} · \u2212$1,500.00").wait_for()
    assert balance(server, payee) == "1500.00"

    # The step-up counts for a while: a new key needs no second prompt now.
    person.goto("/keys")
    person.field("Name").fill("books")
    person.page.get_by_role("button", name="Create key").click()
    person.page.get_by_role("heading", name="Your new key “books”").wait_for()
    assert person.page.get_by_role("dialog").count() == 0


def test_a_new_key_asks_for_a_code_when_two_factor_is_on(server, db, person_at):
    owner = make_user(server)
    with server.client(owner.token) as api:
        secret = api.post("/users/me/2fa").json()["secret"]
        app = Authenticator(secret)
        assert api.post("/users/me/2fa/confirm", json={"code": app.code()}).status_code == 200
    person = person_at(server.url)
    with server.client() as api:
        mfa = api.post("/auth/login", json={"username": owner.username, "password": PASSWORD}).json()["mfa_token"]
        pair = api.post("/auth/login/mfa", json={"mfa_token": mfa, "code": app.code()}).json()
    signed_in_long_ago(person, db, pair["refresh_token"], owner.id)
    person.goto("/keys")
    person.field("Name").fill("ledger export")
    person.page.get_by_role("button", name="Create key").click()
    dialog = person.page.get_by_role("dialog", name="Confirm it is you")
    dialog.get_by_label("Code from your authenticator app").fill(app.code())
    dialog.get_by_role("button", name="Confirm").click()
    person.page.get_by_role("heading", name="Your new key “ledger export”").wait_for()


def test_the_sessions_list_and_its_sign_out_buttons(server, person_at):
    owner = make_user(server)
    person = person_at(server.url)
    person.log_in(owner.username)
    with server.client() as api:
        phone = api.post(
            "/auth/login",
            json={"username": owner.username, "password": PASSWORD},
            headers={"User-Agent": "WalletPhone/2.0"},
        ).json()
    person.goto("/security")
    sessions = person.page.get_by_role("list", name="Sessions").locator("li")
    assert sessions.count() == 3  # this browser, the phone, make_user's login
    mine = sessions.filter(has_text="This device")
    assert mine.count() == 1 and "Chrome" in mine.inner_text()
    person.shot("security-sessions")
    sessions.filter(has_text="WalletPhone/2.0").get_by_role("button", name="Sign out this session").click()
    person.page.locator(".toast", has_text="Signed out that session.").wait_for()
    sessions.filter(has_text="WalletPhone/2.0").wait_for(state="detached")
    assert sessions.count() == 2
    with server.client(phone["access_token"]) as api:
        assert api.get("/users/me").json()["code"] == "TOKEN_REVOKED"

    person.page.get_by_role("button", name="Sign out everywhere else").click()
    person.page.locator(".toast", has_text="Signed out everywhere else.").wait_for()
    sessions.nth(1).wait_for(state="detached")
    assert sessions.count() == 1
    with server.client(owner.token) as api:
        assert api.get("/users/me").json()["code"] == "TOKEN_REVOKED"
    # Its own: signed out, back to the sign-in page.
    sessions.first.get_by_role("button", name="Sign out", exact=True).click()
    person.shown("/login")
    assert person.page.evaluate(REFRESH_TOKEN) is None


def test_an_admin_without_two_factor_is_told_to_turn_it_on(own_server, database_url, person_at):
    strict = own_server(ADMIN_REQUIRE_2FA="true", REDIS_PREFIX=f"wallet-test-{uuid.uuid4().hex[:8]}:")
    admin = make_admin(strict, database_url)
    person = person_at(strict.url)
    person.log_in(admin.username)
    person.goto("/admin")
    person.page.get_by_text("Administrators must use two-factor sign-in").wait_for()


def test_google_sign_in_asks_for_the_code(own_server, person_at):
    with OidcProvider() as oidc:
        port = free_port()
        google = own_server(
            port=port,
            GOOGLE_CLIENT_ID=CLIENT_ID,
            GOOGLE_CLIENT_SECRET=CLIENT_SECRET,
            GOOGLE_DISCOVERY_URL=oidc.discovery_url,
            GOOGLE_REDIRECT_URL=f"http://127.0.0.1:{port}/",
        )
        oidc.user = {"sub": uuid.uuid4().hex, "email": f"{unique_name('g')}@example.com"}
        person = person_at(google.url)
        person.goto("/login")
        person.page.get_by_role("button", name="Continue with Google").click()
        person.page.get_by_role("heading", name="Wallets").wait_for()
        refresh = person.page.evaluate(REFRESH_TOKEN)
        with httpx.Client(base_url=f"{google.url}/api/v1") as api:
            token = api.post("/auth/refresh", json={"refresh_token": refresh}).json()["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            app = Authenticator(api.post("/users/me/2fa", headers=bearer).json()["secret"])
            assert api.post("/users/me/2fa/confirm", json={"code": app.code()}, headers=bearer).status_code == 200
        person.menu("Sign out")
        person.shown("/login")
        person.page.get_by_role("button", name="Continue with Google").click()
        person.page.get_by_role("heading", name="Enter your code").wait_for()
        person.field("Code from your authenticator app").fill(app.code())
        person.page.get_by_role("button", name="Verify").click()
        person.page.get_by_role("heading", name="Wallets").wait_for()
