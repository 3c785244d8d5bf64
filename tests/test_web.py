"""The web wallet: its files served at / with a strict CSP, money never a float in its code, and a person's whole
journey driven in Debian's Chromium (Playwright) against the real server, with screenshots under var/screenshots/."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import test_paystack
from conftest import PASSWORD, balance, fund, log_in, make_admin, make_user, unique_name
from oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider

from handlers.webapp import csp
from scripts.local_services import free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SHOTS = ROOT / "var" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
EXPECTED_REFUSAL = "Failed to load resource: the server responded with a status of 4"
SIZES = {"phone": {"width": 375, "height": 812}, "desktop": {"width": 1280, "height": 800}}
REFRESH_TOKEN = "sessionStorage.getItem('wallet.refresh_token')"


# ---- served files ------------------------------------------------------------------------------------------------


def test_index_is_served_at_the_root_with_a_strict_csp(server):
    r = httpx.get(f"{server.url}/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = r.headers["Content-Security-Policy"]
    assert policy == csp("http", f"127.0.0.1:{server.port}")
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    # The live updates' WebSocket: this host only, never ws:/wss: of any host.
    assert f"connect-src 'self' ws://127.0.0.1:{server.port};" in policy
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert '<script type="module" src="web/js/app.js"></script>' in r.text


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("web/js/app.js", "text/javascript; charset=utf-8"),
        ("web/css/app.css", "text/css; charset=utf-8"),
        ("web/img/icon.svg", "image/svg+xml"),
    ],
)
def test_assets_have_their_type_and_revalidate_with_an_etag(server, path, content_type):
    r = httpx.get(f"{server.url}/{path}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == content_type
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["Content-Security-Policy"] == csp("http", f"127.0.0.1:{server.port}")
    again = httpx.get(f"{server.url}/{path}", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_the_socket_origin_in_the_csp_is_this_host_with_the_page_s_scheme_or_none(server):
    assert "connect-src 'self' wss://wallet.example;" in csp("https", "wallet.example")
    assert "connect-src 'self' ws://[::1]:8000;" in csp("http", "[::1]:8000")
    for host in ("evil.example; script-src *", "a b", "", "x'y", "host/path"):
        assert "connect-src 'self'; " in csp("http", host), host  # not a plain host: no socket origin named
    # Tornado refuses a Host with spaces or a path itself (400); one it takes that is no plain host names none.
    r = httpx.get(f"{server.url}/", headers={"Host": "x'y"})
    assert r.status_code == 200
    assert "connect-src 'self'; " in r.headers["Content-Security-Policy"]


def test_a_missing_file_or_a_path_outside_web_is_a_json_error(server):
    for path in ("/web/nope.js", "/web/%2e%2e/server.py", "/web/..%2fsettings.py"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code in (403, 404), path
        assert r.json()["code"] in ("FORBIDDEN", "NOT_FOUND"), path
        assert "JWT" not in r.text


def test_the_web_files_are_not_api_operations(server):
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/web")]


def test_no_float_on_money_and_no_inline_code_in_the_client():
    code = {p.relative_to(WEB): p.read_text() for p in WEB.rglob("*") if p.suffix in (".js", ".html", ".css")}
    assert len(code) >= 8
    for name, text in code.items():
        assert not re.search(r"parseFloat|parseInt|Number\(|toFixed|\.innerHTML|eval\(", text), name
    html = code[Path("index.html")]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html and " style=" not in html


# ---- in the browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Person:
    """One browser context (its own sessionStorage) and page, failing the test on any console error or CSP report."""

    def __init__(self, chromium: object, base_url: str, size: str = "desktop") -> None:
        self.context = chromium.new_context(base_url=base_url, viewport=SIZES[size], locale="en-US")
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.expected: list[str] = []  # console errors a test provokes on purpose
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.set_default_timeout(15_000)

    def _console(self, message: object) -> None:
        # The API's refusals (a 4xx the page shows in words) are logged by Chromium too; anything else is a fault,
        # a CSP violation ("Refused to ...") above all.
        expected = (EXPECTED_REFUSAL, *self.expected)
        if message.type == "error" and not any(text in message.text for text in expected):
            self.problems.append(message.text)

    def goto(self, hash_path: str) -> None:
        self.page.goto(f"/#{hash_path}")
        self.shown(hash_path)

    def shown(self, hash_path: str) -> None:
        """Wait until the page for this path is on screen (the router marks <main> once it has rendered)."""
        self.page.locator(f'main[data-view="#{hash_path}"]').wait_for()

    def field(self, label: str) -> object:
        return self.page.get_by_label(label, exact=True)

    def register(self, username: str, **fields: str) -> None:
        self.goto("/register")
        self.field("Username").fill(username)
        self.field("Password").fill(PASSWORD)
        for label, value in fields.items():
            self.field(label).fill(value)
        self.page.get_by_role("button", name="Create account").click()
        self.page.get_by_role("heading", name="Wallets").wait_for()

    def log_in(self, username: str) -> None:
        self.goto("/login")
        self.field("Username, e-mail or phone").fill(username)
        self.field("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Wallets").wait_for()

    def send(self, username: str, amount: str, shown: str) -> None:
        """Fill the transfer form to a username, review it and confirm ("Send <shown>")."""
        self.goto("/transfer")
        self.field("Username").fill(username)
        self.field("Amount").fill(amount)
        self.page.get_by_role("button", name="Review").click()
        self.page.get_by_role("button", name=f"Send {shown}").click()

    def assert_labelled(self) -> None:
        """Every field on the page has a <label>."""
        unlabelled = self.page.evaluate("[...document.querySelectorAll('input, select')].filter(e => !e.labels.length)")
        assert unlabelled == []

    def connected(self) -> None:
        """Wait until the page's live updates are connected (js/live.js marks <body>)."""
        self.page.locator("body[data-live=open]").wait_for(state="attached")

    def renewed(self) -> None:
        """Wait until the page has renewed its tokens once more (each renewal stores a new refresh token)."""
        old = self.page.evaluate(REFRESH_TOKEN)
        self.page.wait_for_function(f"old => {REFRESH_TOKEN} !== old", arg=old)

    def shot(self, name: str, toasts: bool = False) -> None:
        """Screenshots at both sizes; notifications are cleared first unless they are the subject (`toasts`)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        if not toasts:
            self.page.evaluate("document.getElementById('toasts').replaceChildren()")
        for size, viewport in SIZES.items():
            self.page.set_viewport_size(viewport)
            self.page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)
        self.page.set_viewport_size(SIZES["desktop"])

    def close(self) -> None:
        self.context.close()
        assert self.problems == [], self.problems


@pytest.fixture
def people(chromium, server) -> Iterator[object]:
    opened: list[Person] = []

    def open_person(size: str = "desktop") -> Person:
        opened.append(Person(chromium, server.url, size))
        return opened[-1]

    yield open_person
    for person in opened:
        person.close()


def open_wallet(person: Person) -> None:
    person.page.locator(".wallet-card").first.click()
    person.page.get_by_role("heading", name="Deposit").wait_for()


def test_register_deposit_transfer_by_username_and_the_recipient_sees_it(server, people):
    alice, bob = people(), people()
    alice_name, bob_name = unique_name("alice"), unique_name("bob")
    alice.register(alice_name, **{"E-mail (optional)": f"{alice_name}@example.com"})
    bob.register(bob_name)

    open_wallet(alice)
    deposit = alice.page.locator("form", has=alice.page.get_by_role("heading", name="Deposit"))
    deposit.get_by_label("Amount (USD)").fill("50.001")
    deposit.get_by_role("button", name="Deposit").click()
    assert "at most 2 decimals" in deposit.locator(".error").first.inner_text()
    deposit.get_by_label("Amount (USD)").fill("50.00")
    deposit.get_by_role("button", name="Deposit").dblclick()  # a double click deposits once
    alice.page.locator(".balance.big", has_text="$50.00").wait_for()
    assert balance(server, log_in(server, alice_name)) == "50.00"
    alice.shot("wallet")

    alice.page.get_by_role("link", name="Send from this wallet").click()
    alice.field("Send to").select_option("to_username")
    alice.field("Username").fill(bob_name)
    alice.field("Amount").fill("12.50")
    alice.field("Description (optional)").fill("lunch")
    alice.page.get_by_role("button", name="Review").click()
    alice.assert_labelled()
    review = alice.page.get_by_role("region", name="Confirm the transfer")
    assert bob_name in review.inner_text() and "$12.50" in review.inner_text()
    alice.shot("transfer-confirm")
    review.get_by_role("button", name="Send $12.50").click()
    alice.page.get_by_role("heading", name=f"To {bob_name} · \u2212$12.50").wait_for()
    assert "COMPLETED" in alice.page.locator(".facts").inner_text()

    # A refused transfer: its reason in words under the amount, and the failed row in the history with its reason.
    alice.send(bob_name, "1000.00", "$1,000.00")
    amount_error = alice.page.locator("[data-error-for=amount]")
    amount_error.wait_for()
    assert amount_error.inner_text() == "Not enough money in this wallet for that amount."

    # The recipient reloads (the session survives it) and sees the money.
    bob.page.reload()
    bob.page.get_by_role("heading", name="Wallets").wait_for()
    assert bob.page.locator(".wallet-card .balance").inner_text() == "$12.50"
    bob.goto("/history")
    assert bob.page.locator(".tx summary").first.inner_text().startswith(f"From {alice_name}")

    # History filters: type, status; the detail opens in place.
    alice.goto("/history")
    alice.page.locator(".tx").nth(2).wait_for()
    assert alice.page.locator(".tx").count() == 3
    alice.field("Type").select_option("DEPOSIT")
    alice.page.get_by_role("button", name="Apply").click()
    alice.shown("/history?type=DEPOSIT")
    assert alice.page.locator(".tx").count() == 1
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    alice.field("From").fill(tomorrow)
    alice.page.get_by_role("button", name="Apply").click()
    alice.shown(f"/history?type=DEPOSIT&from={tomorrow}")
    assert alice.page.get_by_text("No transactions match.").is_visible()
    alice.goto("/history?status=FAILED")
    failed = alice.page.locator(".tx").first
    failed.wait_for()
    assert alice.page.locator(".tx").count() == 1
    assert "INSUFFICIENT_FUNDS" in failed.inner_text() or "funds" in failed.inner_text().lower()
    failed.locator("summary").click()
    assert "Failed because" in failed.inner_text()
    alice.goto("/history")
    alice.page.locator(".tx").first.wait_for()
    alice.shot("history")
    alice.goto("/wallets")
    alice.page.locator(".wallet-card").first.wait_for()
    alice.shot("wallets")


def pay(server, payer, to_username: str, amount: str) -> None:
    """A transfer over HTTP (not through a page)."""
    with server.client(payer.token) as client:
        body = {"from_wallet_id": payer.wallet_id, "to_username": to_username, "amount": amount}
        r = client.post("/transfers", json=body)
    assert r.status_code == 201, r.text


def test_a_transfer_arrives_live_in_the_recipient_s_open_page(server, people):
    """The recipient's page is open before the transfer: the balance, the history and a notification appear
    without a reload; the notification is in the status region, can be dismissed and goes away by itself. A filter
    the recipient has chosen and not yet applied is not thrown away by a redraw."""
    alice, bob = people(), people("phone")
    alice_name, bob_name = unique_name("alice"), unique_name("bob")
    alice.register(alice_name)
    sockets = []
    bob.page.on("websocket", lambda socket: sockets.append(socket))
    bob.register(bob_name)
    bob.connected()
    # The token travels as a subprotocol: never in the URL, which proxies and logs keep.
    assert sockets and all("token" not in socket.url for socket in sockets), [socket.url for socket in sockets]
    assert bob.page.locator(".wallet-card .balance").inner_text() == "$0.00"

    open_wallet(alice)
    deposit = alice.page.locator("form", has=alice.page.get_by_role("heading", name="Deposit"))
    deposit.get_by_label("Amount (USD)").fill("20.00")
    deposit.get_by_role("button", name="Deposit").click()
    alice.page.locator(".balance.big", has_text="$20.00").wait_for()
    alice.send(bob_name, "7.25", "$7.25")
    alice.page.get_by_role("heading", name=f"To {bob_name} · \u2212$7.25").wait_for()

    status = bob.page.locator("#toasts[role=status][aria-live=polite]")
    notice = status.locator(".toast", has_text=f"Received $7.25 from {alice_name}.")
    notice.wait_for()
    bob.page.locator(".wallet-card .balance", has_text="$7.25").wait_for()
    bob.shown("/wallets")  # the same page, redrawn in place: no reload, no navigation
    notice.get_by_role("button", name="Dismiss").focus()  # a notification with the focus on it stays
    status.locator(".toast", has_not_text="Received").evaluate_all("toasts => toasts.forEach((t) => t.remove())")
    bob.shot("live-notification", toasts=True)
    notice.get_by_role("button", name="Dismiss").click()
    notice.wait_for(state="detached")
    bob.page.mouse.move(0, 0)  # a notification under the pointer stays

    # On the history page, the next transfer's row appears at the top; its notification goes away by itself.
    bob.goto("/history")
    bob.page.locator(".tx").first.wait_for()
    assert bob.page.locator(".tx").count() == 1
    alice.send(bob_name, "1.50", "$1.50")
    bob.page.locator(".tx").nth(1).wait_for()
    assert bob.page.locator(".tx summary").first.inner_text().startswith(f"From {alice_name}")
    assert "+$1.50" in bob.page.locator(".tx summary").first.inner_text()
    second = bob.page.locator(".toast", has_text="Received $1.50")
    second.wait_for()
    second.wait_for(state="detached", timeout=20_000)
    assert alice.page.locator(".toast", has_text="Received").count() == 0  # the sender hears of no money received

    # A filter chosen but not yet applied is kept: the news waits (<main data-stale>) and Apply shows it.
    bob.field("Type").select_option("TRANSFER")
    bob.page.locator("body").click(position={"x": 5, "y": 5})  # the focus leaves the form: the choice alone holds
    alice.send(bob_name, "0.25", "$0.25")
    bob.page.locator(".toast", has_text="Received $0.25").wait_for()
    bob.page.locator("main[data-stale]").wait_for(state="attached")
    assert bob.field("Type").input_value() == "TRANSFER"
    assert bob.page.locator(".tx").count() == 2
    bob.page.get_by_role("button", name="Apply").click()
    bob.shown("/history?type=TRANSFER")
    assert bob.page.locator(".tx").count() == 3
    assert bob.page.locator("main[data-stale]").count() == 0


def test_after_a_drop_the_page_resumes_and_shows_what_it_missed_once(own_server, server, chromium):
    """The page's server is killed and started again; a transfer made meanwhile (through another server on the same
    database) shows up once after the page reconnects, and nothing it had already shown comes back."""
    theirs = own_server()
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "10.00")
    person = Person(chromium, theirs.url)
    # While the server is down, and a request the kill cut off mid-way.
    person.expected += ["ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "WebSocket connection to"]
    try:
        person.log_in(payee.username)
        person.connected()
        pay(server, payer, payee.username, "1.00")
        first = person.page.locator(".toast", has_text="Received $1.00")
        first.wait_for()
        first.get_by_role("button", name="Dismiss").click()
        # Toasts leave by themselves after a few seconds, so count every one that is ever added from here on.
        person.page.evaluate(
            """() => { window.toastsSeen = [];
                new MutationObserver((changes) => changes.forEach((c) => c.addedNodes.forEach((n) => {
                    if (n.classList && n.classList.contains('toast')) window.toastsSeen.push(n.textContent); })))
                    .observe(document.getElementById('toasts'), { childList: true }); }"""
        )

        theirs.kill()
        person.page.locator("body[data-live=connecting]").wait_for(state="attached")
        pay(server, payer, payee.username, "2.00")  # while the page is cut off
        theirs.start()
        missed = person.page.locator(".toast", has_text="Received $2.00")
        missed.wait_for(timeout=40_000)
        person.connected()
        pay(server, payer, payee.username, "3.00")  # events come in order: once this shows, any repeat would have
        person.page.locator(".toast", has_text="Received $3.00").wait_for()
        seen = person.page.evaluate("window.toastsSeen")
        assert [t for t in seen if "Received $" in t and "$3.00" not in t] == [t for t in seen if "$2.00" in t], seen
        assert sum("Received $2.00" in t for t in seen) == 1, seen
        person.page.locator(".wallet-card .balance", has_text="$6.00").wait_for()
    finally:
        person.close()


def test_an_expired_token_reconnects_and_a_revoked_login_signs_the_page_out(own_server, server, chromium):
    """With 5-second tokens and the login checked every second, the stream is closed (4401) once the token it was
    opened with expires: the page reconnects with its renewed token and a transfer still arrives live. Once the login
    is revoked (the password changed elsewhere), the 4401 ends in the sign-in page."""
    theirs = own_server(ACCESS_TOKEN_TTL="5", EVENTS_PING_INTERVAL="1", DB_POOL_SIZE="2")
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "5.00")
    person = Person(chromium, theirs.url)
    try:
        person.log_in(payee.username)
        person.connected()
        with person.page.expect_event("websocket", timeout=20_000):  # the next socket: the first one's token expired
            pass
        person.connected()
        pay(server, payer, payee.username, "2.00")
        person.page.locator(".toast", has_text="Received $2.00").wait_for()

        with server.client(payee.token) as client:
            r = client.patch("/users/me", json={"current_password": PASSWORD, "password": "battery-staple-8"})
        assert r.status_code == 200, r.text
        person.shown("/login")
        assert person.page.evaluate("sessionStorage.length") == 0
        person.page.locator("body[data-live=off]").wait_for(state="attached")
    finally:
        person.close()


def test_an_admin_freezes_a_user_and_the_user_sees_the_refusal(server, database_url, people):
    victim = make_user(server)
    admin = make_admin(server, database_url)
    user_page, admin_page = people("phone"), people()
    user_page.log_in(victim.username)
    admin_page.log_in(admin.username)

    admin_page.page.get_by_role("link", name="Admin").click()
    admin_page.field("Find users").fill(victim.username)
    admin_page.page.get_by_role("button", name="Search").click()
    admin_page.page.get_by_role("link", name=re.compile(victim.username)).click()
    admin_page.page.get_by_role("heading", name=victim.username).wait_for()
    admin_page.assert_labelled()
    admin_page.field("Reason (kept in the action log)").fill("suspicious activity")
    admin_page.page.get_by_role("button", name="Freeze", exact=True).click()
    admin_page.page.locator(".toast", has_text="is now frozen").wait_for()
    admin_page.shot("admin-user")

    user_page.page.reload()
    banner = user_page.page.locator("#banner")
    banner.wait_for()
    assert "frozen" in banner.inner_text()
    user_page.send(admin.username, "1.00", "$1.00")
    alert = user_page.page.locator(".form-alert")
    alert.wait_for()
    assert "frozen" in alert.inner_text()

    admin_page.page.get_by_role("link", name="Action log").click()
    admin_page.shown("/admin/actions")
    admin_page.page.locator(".plain-list li", has_text="suspicious activity").first.wait_for()
    admin_page.page.get_by_role("link", name="Audit").click()
    admin_page.shown("/admin/audit")
    assert admin_page.page.get_by_role("heading", name="The ledger balances").is_visible()
    admin_page.shot("admin-audit")


def test_a_reversal_shows_in_both_histories_and_the_original_says_what_was_reversed(server, database_url, people):
    sender, recipient, admin = make_user(server), make_user(server), make_admin(server, database_url)
    fund(server, sender, "10.00")
    with server.client(sender.token) as client:
        body = {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "4.00"}
        original = client.post("/transfers", json=body).json()
    with server.client(admin.token) as client:
        r = client.post(f"/admin/transactions/{original['id']}/reverse", json={"amount": "1.50"})
        assert r.status_code == 201, r.text

    recipient_page, sender_page = people("phone"), people()
    recipient_page.log_in(recipient.username)
    recipient_page.goto("/history?type=REVERSAL")
    reversal = recipient_page.page.locator(".tx").first
    reversal.wait_for()
    assert recipient_page.page.locator(".tx").count() == 1
    assert reversal.locator("summary").inner_text().startswith("Reversal")
    assert "\u2212$1.50" in reversal.locator("summary").inner_text()
    reversal.locator("summary").click()
    assert original["id"] in reversal.inner_text() and "Reverses" in reversal.inner_text()

    sender_page.log_in(sender.username)
    sender_page.goto("/history?type=TRANSFER")
    transfer = sender_page.page.locator(".tx").first
    transfer.wait_for()
    transfer.locator("summary").click()
    assert "Reversed" in transfer.inner_text() and "$1.50" in transfer.inner_text()
    sender_page.shot("history-reversed")


@pytest.mark.slow
def test_profile_new_wallet_session_refresh_reload_sign_out_and_closing_the_account(own_server, chromium):
    """With 5-second access tokens: the page renews its token and survives a reload; sign-out forgets the session.
    It waits for renewals rather than for fixed times: a reload while a renewal is in flight would lose the rotated
    refresh token (each works once), which a fixed sleep on a busy machine sometimes hit."""
    server = own_server(ACCESS_TOKEN_TTL="5", DB_POOL_SIZE="2")
    person = Person(chromium, server.url, "phone")
    try:
        name = unique_name("carol")
        person.register(name)
        person.field("Currency").fill("eur")
        person.field("Name (optional)").fill("Holidays")
        person.page.get_by_role("button", name="Open wallet").click()
        person.page.get_by_role("heading", name="Holidays").wait_for()
        person.goto("/wallets")
        assert person.page.locator(".total").count() == 2  # a total per currency
        assert person.page.locator(".wallet-card", has_text="Holidays").inner_text().count("€0.00") == 1

        person.renewed()
        person.renewed()  # renewed at 80% of 5 s, twice: the first access token is dead by now
        person.goto("/profile")
        person.assert_labelled()
        person.field("Phone").fill("12345")
        person.page.get_by_role("button", name="Save").click()
        phone_error = person.page.locator("[data-error-for=phone]")
        phone_error.wait_for()
        assert "E.164" in phone_error.inner_text()
        person.field("Phone").fill("+15551230000")
        contact = person.page.locator("form", has=person.page.get_by_role("heading", name="Contact")).element_handle()
        person.page.get_by_role("button", name="Save").click()
        person.page.locator(".toast", has_text="Saved.").wait_for()
        # Saving draws the page again: fill the next form only once the old one is gone, or the typing is lost.
        person.page.wait_for_function("form => !form.isConnected", arg=contact)
        person.field("Current password").fill(PASSWORD)
        person.field("New password").fill("battery-staple-7")
        person.page.get_by_role("button", name="Change password").click()
        person.page.locator(".toast", has_text="Password changed").wait_for()
        person.renewed()  # this session outlives the password change (the others are signed out) and renews
        person.page.reload()  # right after a renewal, so no renewal is in flight (the next is 4 s away)
        person.shown("/profile")
        assert person.field("Phone").input_value() == "+15551230000"

        person.page.get_by_role("link", name="Sign out").click()
        person.shown("/login")
        assert person.page.evaluate("sessionStorage.length") == 0
        person.page.reload()
        person.shown("/login")

        person.field("Username, e-mail or phone").fill("+15551230000")
        person.field("Password").fill("battery-staple-7")
        person.page.get_by_role("button", name="Sign in").click()
        person.shown("/wallets")
        person.goto("/profile")
        person.field(f"Type your username ({name}) to confirm").fill("not-me")
        person.page.get_by_role("button", name="Close my account").click()
        assert "exactly" in person.page.locator("[data-error-for=confirm]").inner_text()
        person.field(f"Type your username ({name}) to confirm").fill(name)
        person.page.get_by_role("button", name="Close my account").click()
        person.shown("/login")
        person.field("Username, e-mail or phone").fill(name)
        person.field("Password").fill("battery-staple-7")
        person.page.get_by_role("button", name="Sign in").click()
        alert = person.page.locator(".form-alert")
        alert.wait_for()
        assert alert.inner_text() == "This account is closed."
    finally:
        person.close()


def test_a_lost_answer_is_retried_with_the_same_key_and_an_expired_token_is_renewed(server, people):
    """The answer to a transfer is cut off on its way back: sending again reuses the Idempotency-Key, so the money
    moves once. A 401 TOKEN_EXPIRED makes the page refresh its tokens once and repeat the request."""
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "20.00")
    person = people()
    person.log_in(payer.username)

    keys: list[str] = []

    def lose_the_first_answer(route: object) -> None:
        keys.append(route.request.headers["idempotency-key"])
        response = route.fetch()  # the server executes it
        if len(keys) == 1:
            route.abort("connectionreset")
        else:
            route.fulfill(response=response)

    person.expected.append("net::ERR_CONNECTION_RESET")
    person.page.route("**/api/v1/transfers", lose_the_first_answer)
    person.send(payee.username, "5.00", "$5.00")
    alert = person.page.locator(".form-alert")
    alert.wait_for()
    assert "Cannot reach the server" in alert.inner_text()
    person.page.get_by_role("button", name="Review").click()
    person.page.get_by_role("button", name="Send $5.00").click()
    person.page.get_by_role("heading", name=re.compile(f"To {payee.username}")).wait_for()
    assert len(keys) == 2 and keys[0] == keys[1]
    assert balance(server, payer) == "15.00"
    assert balance(server, payee) == "5.00"

    # A fresh page: its live updates start after the transfer's event, so no redraw asks /users/me meanwhile.
    person.page.reload()
    person.connected()
    calls: list[str] = []

    def expire_once(route: object) -> None:
        calls.append(route.request.headers.get("authorization", ""))
        if len(calls) == 1:
            body = {"error": "The access token has expired.", "code": "TOKEN_EXPIRED"}
            route.fulfill(status=401, json=body, headers={"WWW-Authenticate": 'Bearer error="token_expired"'})
        else:
            route.continue_()

    person.page.route("**/api/v1/users/me", expire_once)
    with person.page.expect_request("**/api/v1/auth/refresh"):
        person.goto("/profile")
    assert person.page.get_by_role("heading", name="Profile").is_visible()
    assert len(calls) == 2 and calls[0] != calls[1]  # repeated once, with the new access token


def test_a_visit_overtaken_by_a_live_redraw_is_still_drawn(server, people):
    """An event that arrives while the next page is loading redraws that page as the visit it is: whatever the person
    does meanwhile on the page still on screen, the page they asked for appears, with the news."""
    payer, payee = make_user(server), make_user(server)
    fund(server, payer, "5.00")
    person = people()
    person.log_in(payee.username)
    person.connected()
    held: list[object] = []  # the history's page requests, answered only when the test lets them through
    person.page.route(re.compile(r"/api/v1/transactions\?"), lambda route: held.append(route))

    def requests_held(count: int) -> None:
        for _ in range(200):
            if len(held) >= count:
                return
            person.page.wait_for_timeout(50)
        raise AssertionError(f"{len(held)} history requests, not {count}")

    person.page.get_by_role("link", name="History").click()
    requests_held(1)
    with server.client(payer.token) as api:
        r = api.post(
            "/transfers", json={"from_wallet_id": payer.wallet_id, "to_wallet_id": payee.wallet_id, "amount": "1.00"}
        )
        assert r.status_code == 201, r.text
    person.page.locator(".toast", has_text="Received $1.00").wait_for()
    requests_held(2)  # the event draws the history again while its first draw waits
    person.field("Currency").fill("EUR")  # typed on the wallets page, still on screen
    for route in held:
        route.continue_()
    person.shown("/history")
    assert person.page.locator(".tx").count() == 1


def test_history_pages_by_cursor_newest_first_and_the_keyboard_is_enough(server, people):
    """Twenty rows a page, "Load more" for the next, all from the keyboard; a live event does not drop the pages
    loaded or close a row opened."""
    owner = make_user(server)
    for amount in range(1, 23):
        fund(server, owner, f"{amount}.00")
    person = people("phone")
    person.goto("/login")
    person.field("Username, e-mail or phone").focus()
    person.page.keyboard.type(owner.username)
    person.page.keyboard.press("Tab")
    person.page.keyboard.type(PASSWORD)
    person.page.keyboard.press("Enter")
    person.shown("/wallets")
    person.assert_labelled()

    person.goto("/history")
    person.assert_labelled()
    rows = person.page.locator(".tx .tx-amount")
    assert rows.count() == 20
    assert rows.first.inner_text() == "+$22.00"
    more = person.page.get_by_role("button", name="Load more")
    more.focus()
    person.page.keyboard.press("Enter")
    rows.nth(21).wait_for()
    assert rows.count() == 22
    assert rows.last.inner_text() == "+$1.00"
    assert more.is_hidden()
    person.page.locator(".tx summary").first.focus()
    person.page.keyboard.press("Enter")  # a row opens into its detail from the keyboard
    assert person.page.locator(".tx").first.get_attribute("open") == ""

    # The pages loaded stay when news arrives (a redraw would start again from the first page); a line at the top
    # offers the news.
    person.connected()
    fund(server, owner, "23.00")
    person.page.locator(".toast", has_text="Deposit of $23.00 received.").wait_for()
    person.page.locator("main[data-stale]").wait_for(state="attached")
    assert rows.count() == 22 and rows.first.inner_text() == "+$22.00"
    person.page.get_by_role("button", name="Show the latest").click()
    person.page.locator("main:not([data-stale])").wait_for(state="attached")
    assert rows.count() == 20 and rows.first.inner_text() == "+$23.00"
    assert person.page.get_by_role("button", name="Show the latest").count() == 0
    # A row opened stays open when news arrives.
    person.page.locator(".tx summary").first.click()
    fund(server, owner, "24.00")
    person.page.locator(".toast", has_text="Deposit of $24.00 received.").wait_for()
    person.page.locator("main[data-stale]").wait_for(state="attached")
    assert person.page.locator(".tx").first.get_attribute("open") == ""
    assert rows.first.inner_text() == "+$23.00"
    # The menu entry of the page on screen draws it afresh, as a visit: back to the first page.
    more.click()
    rows.nth(22).wait_for()
    person.page.get_by_role("link", name="History").click()
    rows.nth(20).wait_for(state="detached")
    assert rows.count() == 20


# ---- API keys, Paystack and Google, against a server with both providers ----------------------------------------

fake_paystack = test_paystack.fake  # the fake Paystack, as test_paystack starts it (a fixture, once per module)


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    with OidcProvider() as running:
        yield running


@pytest.fixture(scope="module")
def providers(module_server, fake_paystack, oidc):
    """A server with Paystack (the fake) and Google (the local provider, sending the browser back to the web app's
    own page, so its port is chosen first)."""
    port = free_port()
    started = module_server(
        port=port,
        DB_POOL_SIZE="2",
        PAYSTACK_SECRET_KEY=test_paystack.SECRET,
        PAYSTACK_BASE_URL=fake_paystack.url,
        GOOGLE_CLIENT_ID=CLIENT_ID,
        GOOGLE_CLIENT_SECRET=CLIENT_SECRET,
        GOOGLE_DISCOVERY_URL=oidc.discovery_url,
        GOOGLE_REDIRECT_URL=f"http://127.0.0.1:{port}/",
    )
    fake_paystack.configure(webhook_url=f"{started.url}/api/v1/webhooks/paystack")
    return started


@pytest.fixture
def person_at(chromium) -> Iterator[object]:
    opened: list[Person] = []

    def open_person(base_url: str) -> Person:
        opened.append(Person(chromium, base_url))
        return opened[-1]

    yield open_person
    for person in opened:
        person.close()


def test_api_keys_create_copy_use_roll_over_and_revoke(providers, person_at):
    owner = make_user(providers)
    fund(providers, owner, "7.00")
    person = person_at(providers.url)
    person.context.grant_permissions(["clipboard-read", "clipboard-write"])
    person.log_in(owner.username)
    person.page.get_by_role("link", name="API keys").click()
    person.shown("/keys")
    person.assert_labelled()
    person.page.get_by_label("Read wallets and history").uncheck()
    person.page.get_by_role("button", name="Create key").click()
    scopes_error = person.page.locator("[data-error-for=scopes]")
    scopes_error.filter(has_text=re.compile(".")).wait_for()
    assert person.page.locator("[data-error-for=name]").inner_text() != ""
    person.field("Name").fill("export")
    person.page.get_by_label("Read wallets and history").check()
    person.page.get_by_label("Transfer").check()
    person.field("Expires after").select_option("1D")
    person.page.get_by_role("button", name="Create key").click()
    box = person.page.get_by_role("region", name="New key")
    secret = box.locator("code").inner_text()
    assert re.fullmatch(r"wk_[0-9a-f]{12}[A-Za-z0-9_-]{43}", secret)
    box.get_by_role("button", name="Copy").click()
    person.page.locator(".toast", has_text="Copied.").wait_for()
    assert person.page.evaluate("navigator.clipboard.readText()") == secret
    keys = person.page.get_by_role("list", name="Your keys")
    listed = keys.inner_text()
    assert "export" in listed and "read, transfer" in listed and secret[:15] in listed and secret not in listed
    person.shot("keys")

    # The key works over HTTP, with its scopes only.
    with httpx.Client(base_url=f"{providers.url}/api/v1", headers={"X-API-Key": secret}) as client:
        assert client.get(f"/wallets/{owner.wallet_id}/balance").json()["balance"] == "7.00"
        assert client.post(f"/wallets/{owner.wallet_id}/deposit", json={"amount": "1.00"}).status_code == 403

    # Shown once: the page forgets the secret when it is left, and lists the key as used.
    person.page.reload()
    person.shown("/keys")
    assert secret not in person.page.content()
    assert box.is_hidden()
    assert "last used never" not in keys.inner_text()

    # Roll over, the old key kept for an hour: a new secret, shown once; both work.
    item = keys.locator("li", has_text="export")
    item.get_by_role("button", name="Roll over").click()
    item.get_by_label("The old key").select_option("3600")
    item.get_by_role("button", name="Roll over").click()
    box.locator("code", has_not_text=secret).wait_for()
    rolled = box.locator("code").inner_text()
    assert rolled.startswith("wk_") and rolled not in keys.inner_text()
    for key in (secret, rolled):
        r = httpx.get(f"{providers.url}/api/v1/wallets", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text

    # Revoke the new one: Cancel keeps it; confirming stops it at once.
    newest = keys.locator("li").first
    newest.get_by_role("button", name="Revoke").click()
    newest.get_by_role("button", name="Cancel").click()
    newest.get_by_role("button", name="Revoke").click()
    newest.get_by_role("button", name="Yes, revoke").click()
    keys.locator("li", has=person.page.locator(".badge", has_text="revoked")).wait_for()
    r = httpx.get(f"{providers.url}/api/v1/wallets", headers={"X-API-Key": rolled})
    assert r.status_code == 401 and r.json()["code"] == "INVALID_API_KEY"


def test_paystack_deposit_through_the_checkout_and_back(providers, person_at):
    name = unique_name("payer")
    owner = make_user(providers, currency="NGN", email=f"{name}@example.com")
    person = person_at(providers.url)
    person.log_in(owner.username)
    open_wallet(person)
    pay = person.page.locator("form", has=person.page.get_by_role("heading", name="Pay with Paystack"))
    pay.get_by_label("Amount to pay (NGN)").fill("25.001")
    pay.get_by_role("button", name="Pay with Paystack").click()
    assert "at most 2 decimals" in pay.locator(".error").first.inner_text()
    pay.get_by_label("Amount to pay (NGN)").fill("25.00")
    person.shot("paystack")
    pay.get_by_role("button", name="Pay with Paystack").click()
    person.page.wait_for_url(re.compile(r"/pay/TX[0-9A-F]{16}$"))  # the fake's checkout page
    person.page.get_by_role("button", name="Pay", exact=True).click()
    person.page.get_by_role("heading", name="Deposit received").wait_for()
    assert "#/deposit-return?reference=TX" in person.page.url
    facts = person.page.locator(".facts").inner_text()
    assert "COMPLETED" in facts and facts.count("25.00") == 2  # the amount, and the balance it made
    assert balance(providers, owner) == "25.00"
    person.shot("paystack-return")


def test_paystack_not_configured_is_said_in_words_then_not_offered(server, person_at):
    owner = make_user(server, email=f"{unique_name('np')}@example.com")
    person = person_at(server.url)
    person.expected.append("status of 503")
    person.log_in(owner.username)
    open_wallet(person)
    pay = person.page.locator("form", has=person.page.get_by_role("heading", name="Pay with Paystack"))
    pay.get_by_label("Amount to pay (USD)").fill("5.00")
    pay.get_by_role("button", name="Pay with Paystack").click()
    alert = pay.locator(".form-alert")
    alert.wait_for()
    assert alert.inner_text() == "Paystack deposits are not set up on this server."
    person.goto("/wallets")
    open_wallet(person)
    assert person.page.get_by_role("heading", name="Pay with Paystack").count() == 0


def test_google_sign_in_end_to_end_and_an_e_mail_of_a_password_account(providers, oidc, person_at):
    person = person_at(providers.url)
    email = f"{unique_name('g')}@example.com"
    oidc.user = {"sub": uuid.uuid4().hex, "email": email}
    person.goto("/login")
    person.shot("login")
    person.page.get_by_role("button", name="Continue with Google").click()
    person.page.get_by_role("heading", name="Wallets").wait_for()
    person.shown("/wallets")
    assert "code=" not in person.page.url and "state=" not in person.page.url
    refresh = person.page.evaluate("sessionStorage.getItem('wallet.refresh_token')")
    with httpx.Client(base_url=f"{providers.url}/api/v1") as client:
        pair = client.post("/auth/refresh", json={"refresh_token": refresh}).json()
        me = client.get("/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}).json()
    assert me["email"] == email and me["auth_providers"] == ["google"]

    # Signed out, and a Google account whose e-mail a password account already has: refused, in words.
    person.page.get_by_role("link", name="Sign out").click()
    person.shown("/login")
    taken = make_user(providers, email=f"{unique_name('t')}@example.com")
    with providers.client(taken.token) as client:
        oidc.user = {"sub": uuid.uuid4().hex, "email": client.get("/users/me").json()["email"]}
    person.expected.append("status of 409")
    person.page.get_by_role("button", name="Continue with Google").click()
    alert = person.page.locator('main[data-view="#/google"] .form-alert')
    alert.wait_for()
    assert "already exists" in alert.inner_text() and "password" in alert.inner_text()
    person.page.get_by_role("link", name="Back to sign in").click()
    person.shown("/login")
    assert person.page.evaluate("sessionStorage.length") == 0


def test_link_google_from_the_profile_then_sign_in_with_it(providers, oidc, person_at):
    """A password account links Google from its profile (the provider sends the browser back to the same page as a
    sign-in; the flow this tab started makes it a link), then signs in with Google. A Google account already linked
    to someone else is refused in words."""
    owner = make_user(providers, email=f"{unique_name('l')}@example.com")
    google_user = {"sub": uuid.uuid4().hex, "email": f"{unique_name('lg')}@example.com"}
    person = person_at(providers.url)
    person.log_in(owner.username)
    person.goto("/profile")
    facts = person.page.locator(".facts")
    assert "Sign in with\nPassword" in facts.inner_text()
    oidc.user = google_user
    person.page.get_by_role("button", name="Link Google").click()
    person.page.locator(".toast", has_text="Google is linked").wait_for()
    person.shown("/profile")
    assert "code=" not in person.page.url and "state=" not in person.page.url
    assert "Sign in with\nPassword, Google" in facts.inner_text()
    assert person.page.get_by_role("button", name="Link Google").count() == 0
    assert person.page.evaluate("sessionStorage.getItem('wallet.google_link')") is None
    with providers.client(owner.token) as client:
        assert client.get("/users/me").json()["auth_providers"] == ["password", "google"]

    person.page.get_by_role("link", name="Sign out").click()
    person.shown("/login")
    person.page.get_by_role("button", name="Continue with Google").click()
    person.shown("/wallets")
    person.goto("/profile")
    assert owner.username in facts.inner_text()

    # Another account cannot take the same Google account.
    other = make_user(providers)
    person.page.get_by_role("link", name="Sign out").click()
    person.shown("/login")
    person.log_in(other.username)
    person.goto("/profile")
    person.expected.append("status of 409")
    person.page.get_by_role("button", name="Link Google").click()
    alert = person.page.locator('main[data-view="#/google"] .form-alert')
    alert.wait_for()
    assert "linked to another account" in alert.inner_text()
    person.page.get_by_role("link", name="Back to the profile").click()
    person.shown("/profile")
    assert "Sign in with\nPassword" in facts.inner_text() and "Google" not in facts.inner_text()


def signed_in_as(person: Person) -> str:
    """The username the profile shows (the page's own session; the test never touches its tokens)."""
    person.goto("/profile")
    return person.page.locator(".facts").inner_text()


def test_a_google_sign_in_someone_else_started_never_replaces_the_session(providers, oidc, person_at):
    """Login CSRF: an attacker stops their own Google sign-in at the redirect and sends the link to a signed-in
    victim. The victim's tab did not start that flow (it holds no binding secret for it): nothing is signed in and
    the victim stays themselves. A sign-in the tab did start, while signed in, asks before it switches accounts."""
    victim = make_user(providers)
    person = person_at(providers.url)
    person.log_in(victim.username)

    oidc.user = {"sub": uuid.uuid4().hex, "email": f"{unique_name('atk')}@example.com"}
    verifier = "attacker-kept-binding-verifier-0123456789abcdef"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    r = httpx.get(f"{providers.url}/api/v1/auth/google", params={"binding_challenge": challenge})
    link = httpx.get(r.headers["Location"]).headers["Location"]  # the provider sends the attacker back: stopped here
    assert "code=" in link and "state=" in link
    person.page.goto(link)
    alert = person.page.locator('main[data-view="#/google"] .form-alert')
    alert.wait_for()
    assert "not started in this tab" in alert.inner_text()
    assert victim.username in signed_in_as(person)

    # A Google sign-in this tab started, that comes back once it has signed in otherwise (at the provider's page the
    # person went back and signed in with the password, then returned to it): asked first; staying keeps the session.
    google_user = {"sub": uuid.uuid4().hex, "email": f"{unique_name('own')}@example.com"}
    oidc.user, oidc.consent_page = google_user, True
    try:
        for choice in ("Stay signed in", "Switch to the Google account"):
            person.page.get_by_role("link", name="Sign out").click()
            person.shown("/login")
            person.page.get_by_role("button", name="Continue with Google").click()
            person.page.get_by_role("link", name="Continue").wait_for()
            consent = person.page.url
            person.page.go_back()
            person.log_in(victim.username)
            person.page.goto(consent)
            person.page.get_by_role("link", name="Continue").click()
            person.page.get_by_text(f"You are signed in as {victim.username}").wait_for()
            person.shot("google-switch-account")
            replaced = person.page.evaluate(REFRESH_TOKEN)
            person.page.get_by_role("button", name=choice).click()
            person.shown("/wallets")
            if choice == "Stay signed in":
                assert victim.username in signed_in_as(person)
    finally:
        oidc.consent_page = False
    # The session the switch replaced was signed out, not left alive.
    r = httpx.post(f"{providers.url}/api/v1/auth/refresh", json={"refresh_token": replaced})
    assert r.status_code == 401 and r.json()["code"] == "TOKEN_REVOKED", r.text
    facts = signed_in_as(person)
    assert google_user["email"].split("@")[0] in facts and victim.username not in facts
    assert person.page.evaluate("sessionStorage.getItem('wallet.google_sign_in')") is None


def google_refused_in_words(person: Person, button: str) -> None:
    """Click a Google button on a server without Google: the reason in words, and the button no longer offered."""
    person.expected.append("status of 503")
    person.page.get_by_role("button", name=button).click()
    alert = person.page.locator(".google-sign-in [role=alert]")
    alert.wait_for()
    assert alert.inner_text() == "Google sign-in is not set up on this server."
    assert person.page.get_by_role("button", name=button).is_hidden()


def test_google_not_configured_is_said_in_words_and_the_button_hidden(server, person_at):
    person = person_at(server.url)
    person.goto("/login")
    google_refused_in_words(person, "Continue with Google")

    # Signed in on this page, which knows now: the profile offers no linking. On a fresh page, linking says why not.
    owner = make_user(server)
    person.log_in(owner.username)
    person.goto("/profile")
    assert person.page.get_by_role("button", name="Link Google").is_hidden()
    fresh = person_at(server.url)
    fresh.log_in(owner.username)
    fresh.goto("/profile")
    google_refused_in_words(fresh, "Link Google")
