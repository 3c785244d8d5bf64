"""The web wallet: its files served at / with a strict CSP, money never a float in its code, and a person's whole
journey driven in Debian's Chromium (Playwright) against the real server, with screenshots under var/screenshots/."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import test_paystack
from conftest import PASSWORD, balance, fund, log_in, make_admin, make_user, qr_of, unique_name
from oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider

from handlers.webapp import IMMUTABLE, csp, web_version
from scripts.local_services import free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SHOTS = ROOT / "var" / "screenshots"
# Debian's build of the headless shell Playwright itself runs for headless tests: the same engine as /usr/bin/chromium
# without the full browser around it, at about half the CPU (test_web alone: 134 CPU-s with chromium, 73 with it).
CHROMIUM = "/usr/bin/chromium-headless-shell"
EXPECTED_REFUSAL = "Failed to load resource: the server responded with a status of 4"
SIZES = {"phone": {"width": 375, "height": 812}, "desktop": {"width": 1280, "height": 800}}
REFRESH_TOKEN = "sessionStorage.getItem('wallet.refresh_token')"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"  # the test tooling's (package.json), never served


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
    assert r.headers["Cache-Control"] == "no-cache"  # revalidated on each visit: a release shows at once
    assert f'<script type="module" src="v/{web_version()}/js/app.js"></script>' in r.text
    again = httpx.get(f"{server.url}/", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    head = httpx.head(f"{server.url}/", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == r.headers["ETag"]
    assert int(head.headers["Content-Length"]) == len(r.content)


def test_the_page_names_its_files_by_version_and_those_are_kept_for_good(server):
    """The page names its modules, styles and images under v/<a hash of the web files>/, which never change under
    that name (immutable: no revalidation on a warm visit); the manifest stays under web/, its URLs relative to it."""
    page = httpx.get(f"{server.url}/").text
    named = set(re.findall(r'(?:href|src)="((?:web|v)/[^"]+)"', page))
    versioned = {url for url in named if url.startswith(f"v/{web_version()}/")}
    assert named - versioned == {"web/manifest.webmanifest"}
    assert len(versioned) == len(list((WEB / "js").rglob("*.js"))) + 3  # every module, the styles, two icons
    for url in versioned:
        r = httpx.get(f"{server.url}/{url}")
        assert r.status_code == 200, url
        assert r.headers["Cache-Control"] == IMMUTABLE == "public, max-age=31536000, immutable"
        assert r.headers["Content-Security-Policy"] == csp("http", f"127.0.0.1:{server.port}")
        assert r.content == (WEB / url.split("/", 2)[2]).read_bytes()
    # Another version (a page from before a release) gets today's file, never to be kept as that version's.
    other = httpx.get(f"{server.url}/v/0123456789abcdef/js/app.js")
    assert other.status_code == 200 and other.headers["Cache-Control"] == "no-cache"
    for path in (f"/v/{web_version()}/nope.js", f"/v/{web_version()}/%2e%2e/server.py", "/v/x/..%2fsettings.py"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code in (403, 404) and r.json()["code"] in ("FORBIDDEN", "NOT_FOUND"), path


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
    assert not [p for p in paths if p == "/" or p.startswith(("/web", "/v/"))]


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
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium-headless-shell); .ci/run installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Person:
    """One browser context (its own sessionStorage) and page, failing the test on any console error or CSP report."""

    def __init__(
        self, chromium: object, base_url: str, size: str = "desktop", locale: str = "en-US", **options: object
    ) -> None:
        self.context = chromium.new_context(base_url=base_url, viewport=SIZES[size], locale=locale, **options)
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

    def menu(self, entry: str) -> None:
        """Choose a main-menu entry, opening the phone's folded menu first where it is folded."""
        toggle = self.page.get_by_role("button", name="Menu")
        if toggle.is_visible():
            toggle.click()
        self.page.locator("#nav").get_by_role("link", name=entry, exact=True).click()

    def open_from_menu(self, entry: str, hash_path: str) -> None:
        """Choose a menu entry, wait for its page, and check that every field on it is labelled."""
        self.menu(entry)
        self.shown(hash_path)
        self.assert_labelled()

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
    assert alice.page.get_by_text("No transactions match these filters.").is_visible()
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
    # While the server is down, and a request the kill cut off mid-way (reset, or its kept-alive socket gone).
    person.expected += [
        "ERR_CONNECTION_REFUSED",
        "ERR_CONNECTION_RESET",
        "ERR_SOCKET_NOT_CONNECTED",
        "WebSocket connection to",
    ]
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
        person.page.locator("#network", has_text=re.compile("Reconnecting|cannot be reached")).wait_for()
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

    admin_page.menu("Admin")
    admin_page.field("Find users").fill(victim.username)
    admin_page.page.get_by_role("button", name="Search").click()
    admin_page.page.get_by_role("link", name=re.compile(victim.username)).click()
    admin_page.page.get_by_role("heading", name=victim.username).wait_for()
    admin_page.assert_labelled()
    # Freezing asks for a reason, then asks again: one click no longer freezes.
    admin_page.page.get_by_role("button", name="Freeze", exact=True).click()
    admin_page.page.locator("[data-error-for=reason]", has_text="Say why").wait_for()
    admin_page.field("Reason (kept in the action log)").fill("suspicious activity")
    admin_page.page.get_by_role("button", name="Freeze", exact=True).click()
    confirm = admin_page.page.get_by_role("group", name="Confirm")
    assert f"Freeze {victim.username}?" in confirm.inner_text()
    admin_page.shot("admin-user")
    confirm.get_by_role("button", name="Yes, freeze").click()
    admin_page.page.locator(".toast", has_text="is now frozen").wait_for()

    user_page.page.reload()
    banner = user_page.page.locator("#banner")
    banner.wait_for()
    assert "frozen" in banner.inner_text()
    user_page.send(admin.username, "1.00", "$1.00")
    alert = user_page.page.locator(".form-alert")
    alert.wait_for()
    assert "frozen" in alert.inner_text()

    # A credit the frozen account refuses reads as refused in the log, with its amount and both names.
    with server.client(admin.token) as client:
        body = {"amount": "5.00", "reason": "goodwill"}
        assert client.post(f"/admin/wallets/{victim.wallet_id}/deposit", json=body).status_code == 403
    admin_page.page.get_by_role("link", name="Action log").click()
    admin_page.shown("/admin/actions")
    frozen = admin_page.page.locator(".plain-list li", has_text="suspicious activity").first
    assert victim.username in frozen.inner_text() and admin.username in frozen.inner_text()
    refused = admin_page.page.locator(".plain-list li", has_text="goodwill").first
    assert "$5.00" in refused.inner_text() and "refused: account_frozen" in refused.inner_text().lower()
    admin_page.shot("admin-actions")
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

        person.menu("Sign out")
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

    person.menu("History")
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
    person.menu("History")
    rows.nth(20).wait_for(state="detached")
    assert rows.count() == 20


def test_history_groups_by_day_across_pages_with_relative_times(server, db, chromium):
    """Rows sit under a heading per day (Today, Yesterday, then the date in the browser's locale); a day the cursor
    cut in two is one group after "Load more"; a recent time is relative, with the exact moment in <time>."""
    owner = make_user(server)
    for amount in range(1, 24):
        fund(server, owner, f"{amount}.00")
    # Deposits 1..15 made three days ago, 16..20 yesterday, 21..23 now (the ledger's triggers keep a completed
    # transaction as it is: they are set aside for this, as tests/test_reversals.py does).
    with db.cursor() as cur:
        cur.execute(
            "SET session_replication_role = replica;"
            " UPDATE transactions SET created_at = created_at - (CASE WHEN amount <= 1500 THEN 3 ELSE 1 END)"
            " * interval '1 day' WHERE destination_user_id = %s AND amount <= 2000;"
            " SET session_replication_role = DEFAULT",
            (owner.id,),
        )
    person = Person(chromium, server.url, timezone_id="UTC")
    try:
        person.log_in(owner.username)
        person.goto("/history")
        days = person.page.locator(".tx-day")
        titles = person.page.get_by_role("heading", level=2)
        now = dt.datetime.now(dt.UTC)
        then = now - dt.timedelta(days=3)
        dated = f"{then:%A, %B} {then.day}" + ("" if then.year == now.year else f", {then.year}")
        assert titles.all_inner_texts() == ["Today", "Yesterday", dated]
        assert [days.nth(i).locator(".tx").count() for i in range(3)] == [3, 5, 12]
        # Each day is a list named by its heading.
        assert person.page.get_by_role("list", name="Yesterday").locator(".tx").count() == 5
        newest = days.first.locator("time").first
        assert newest.inner_text() in ("now", "1 minute ago", "2 minutes ago")
        moment = dt.datetime.fromisoformat(newest.get_attribute("datetime"))
        assert abs(moment - now) < dt.timedelta(minutes=2)
        assert str(now.year) in newest.get_attribute("title") and str(now.day) in newest.get_attribute("title")
        person.page.get_by_role("button", name="Load more").click()
        person.page.locator(".tx").nth(22).wait_for()
        assert titles.all_inner_texts() == ["Today", "Yesterday", dated]  # no second heading for the same day
        assert days.nth(2).locator(".tx").count() == 15
        assert days.nth(2).locator(".tx-amount").last.inner_text() == "+$1.00"
        person.shot("history-days")
    finally:
        person.close()


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
    person.menu("API keys")
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


def test_a_bank_account_is_added_and_paid_out_to_and_no_paystack_says_so(server, providers, person_at):
    """Payouts: a bank account added from the banks of its currency (the holder's name as the bank resolved it), a
    payout to it from the NGN wallet that the fake Paystack sends (COMPLETED, live); without Paystack, the page says
    payouts are not available."""
    owner = make_user(providers, currency="NGN")
    fund(providers, owner, "100.00")
    person = person_at(providers.url)
    person.log_in(owner.username)
    person.open_from_menu("Payouts", "/payouts")
    add = person.page.get_by_role("form", name="Add a bank account")
    add.get_by_label("Account number").fill("12")
    add.get_by_role("button", name="Add account").click()
    assert add.locator("[data-error-for=bank_code]").inner_text() == "Choose the bank."
    assert add.locator("[data-error-for=account_number]").inner_text() == "An account number is 6 to 20 digits."
    add.get_by_label("Bank").select_option("058")
    add.get_by_label("Account number").fill("0123456789")
    add.get_by_role("button", name="Add account").click()
    accounts = person.page.get_by_role("list", name="Your bank accounts")
    accounts.get_by_text("TEST ACCOUNT 6789").wait_for()
    assert "******6789" in accounts.inner_text()

    payout = person.page.get_by_role("form", name="Pay out")
    payout.get_by_label("Amount").fill("30.001")
    payout.get_by_role("button", name="Pay out").click()
    assert "at most 2 decimals" in payout.locator("[data-error-for=amount]").inner_text()
    payout.get_by_label("Amount").fill("30.00")
    payout.get_by_role("button", name="Pay out").dblclick()  # a double click pays out once
    payouts = person.page.get_by_role("list", name="Your payouts")
    payouts.locator(".badge", has_text="COMPLETED").wait_for()  # Paystack's word arrives as an event: no reload
    assert payouts.locator("li").count() == 1
    assert balance(providers, owner) == "70.00"
    person.shot("payouts")
    accounts.get_by_role("button", name="Delete").click()
    accounts.get_by_role("button", name="Yes, delete").click()
    accounts.get_by_text("No bank accounts yet.").wait_for()
    assert "A deleted account" in payouts.inner_text() and "COMPLETED" in payouts.inner_text()

    off = person_at(server.url)
    off.log_in(make_user(server).username)
    off.menu("Payouts")
    off.shown("/payouts")
    off.page.get_by_text("Payouts to a bank account are not available on this server.").wait_for()
    assert off.page.get_by_role("form").count() == 0


def test_the_server_says_what_it_has_turned_on(server, providers):
    off, on = (httpx.get(f"{s.url}/api/v1/config").json() for s in (server, providers))
    common = {"version": httpx.get(f"{server.url}/health").json()["version"], "two_factor": True, "self_deposit": True}
    currencies = off.pop("currencies")
    assert {"USD", "NGN", "JPY", "EUR"} <= set(currencies) and "XAU" not in currencies
    assert currencies == sorted(currencies)
    assert off == {**common, "paystack": False, "google": False, "payouts": False}
    assert on == {**common, "currencies": currencies, "paystack": True, "google": True, "payouts": True}


def test_paystack_not_configured_is_not_offered(server, person_at):
    """The page asks the server what it has turned on (GET /config): a wallet's page offers no Paystack where it is off
    (it used to offer it, and say why not only after a click)."""
    owner = make_user(server, email=f"{unique_name('np')}@example.com")
    person = person_at(server.url)
    person.log_in(owner.username)
    open_wallet(person)
    assert person.page.get_by_role("heading", name="Withdraw").is_visible()
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
    person.menu("Sign out")
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

    person.menu("Sign out")
    person.shown("/login")
    person.page.get_by_role("button", name="Continue with Google").click()
    person.shown("/wallets")
    person.goto("/profile")
    assert owner.username in facts.inner_text()

    # Another account cannot take the same Google account.
    other = make_user(providers)
    person.menu("Sign out")
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
            person.menu("Sign out")
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


def test_google_not_configured_is_not_offered(server, person_at):
    person = person_at(server.url)
    person.goto("/login")
    assert person.page.get_by_role("button", name="Sign in").is_visible()
    assert person.page.get_by_role("button", name="Continue with Google").count() == 0
    owner = make_user(server)
    person.log_in(owner.username)
    person.goto("/profile")
    assert person.page.get_by_role("button", name="Link Google").count() == 0


# ---- second pass (issue 26): each defect seen by a new user ------------------------------------------------------


def test_sign_out_then_back_then_sign_in_stays_signed_in(server, people):
    """Back after signing out never lands on the sign-out again, and a sign-in never honours next=/logout (it used
    to sign the person straight out again, with a second "Signed out.")."""
    owner = make_user(server)
    person = people()
    person.log_in(owner.username)
    person.menu("Sign out")
    person.shown("/login")
    person.page.go_back()
    person.page.locator('main[data-view^="#/login"]').wait_for()
    assert "logout" not in person.page.url
    person.field("Username, e-mail or phone").fill(owner.username)
    person.field("Password").fill(PASSWORD)
    person.page.get_by_role("button", name="Sign in").click()
    person.page.wait_for_url(re.compile(r"#/wallets$"), timeout=5_000)
    person.shown("/wallets")
    assert person.page.locator(".toast", has_text="Signed out.").count() <= 1
    assert person.page.evaluate(REFRESH_TOKEN) is not None

    # A link that asks for the sign-out after signing in is not followed either.
    person.menu("Sign out")
    person.shown("/login")
    person.goto("/login?next=%2Flogout")
    person.field("Username, e-mail or phone").fill(owner.username)
    person.field("Password").fill(PASSWORD)
    person.page.get_by_role("button", name="Sign in").click()
    person.page.wait_for_url(re.compile(r"#/wallets$"), timeout=5_000)
    assert person.page.evaluate(REFRESH_TOKEN) is not None


def test_a_hovered_wallet_card_keeps_its_text_readable(server, people):
    owner = make_user(server)
    person = people()
    person.log_in(owner.username)
    card = person.page.locator(".wallet-card").first
    card.hover()
    colours = card.evaluate(
        "c => [c, c.querySelector('.wallet-name'), c.querySelector('.balance')].map((e) => getComputedStyle(e).color)"
    )
    assert colours == ["rgb(255, 255, 255)"] * 3


def test_the_send_form_checks_the_recipient_first_and_the_review_names_them(server, people):
    """A malformed recipient is said under its field before the review step (it used to be said only after Send);
    an unknown one too; the review step names who receives the money as the server knows them (masked); sending by
    e-mail works; "Edit" puts the focus back in the form; the next visit offers the recipient among the recent."""
    sender = make_user(server)
    bob_name = unique_name("bob")
    bob = make_user(server, username=bob_name, email=f"{bob_name}@example.com")
    fund(server, sender, "20.00")
    person = people("phone")
    person.log_in(sender.username)
    person.goto("/transfer")
    error = person.page.locator("[data-error-for=recipient]")
    for kind, typed, said in (
        ("to_wallet_number", "12ab", "10 digits"),
        ("to_phone", "555", "international form"),
        ("to_email", "bob@", "e-mail address"),
        ("to_username", unique_name("nobody"), "No one with a USD wallet"),
    ):
        person.field("Send to").select_option(kind)
        person.page.locator("form input[name=recipient]").fill(typed)
        person.field("Amount").fill("2.00")
        person.page.get_by_role("button", name="Review").click()
        error.filter(has_text=said).wait_for()
        assert person.page.get_by_role("region", name="Confirm the transfer").is_hidden()

    person.field("Send to").select_option("to_email")
    person.field("E-mail").fill(f"{bob_name.upper()}@example.com")
    person.page.get_by_role("button", name="Review").click()
    review = person.page.get_by_role("region", name="Confirm the transfer")
    dots = "\u2022"
    receiver = f"{bob_name[:2]}{dots * 3}{bob_name[-1]} \u00b7 wallet {dots * 4}{bob.wallet_number[-4:]}"
    review.locator(".receiver", has_text=receiver).wait_for()
    person.shot("transfer-review-recipient")
    review.get_by_role("button", name="Edit").click()
    assert person.page.evaluate("document.activeElement.name") == "recipient"
    person.page.get_by_role("button", name="Review").click()
    review.get_by_role("button", name="Send $2.00").click()
    person.page.get_by_role("heading", name=f"To {bob_name} \u00b7 \u2212$2.00").wait_for()
    assert balance(server, bob) == "2.00"

    person.goto("/transfer")
    recent = person.page.get_by_role("region", name="Recent recipients")
    recent.get_by_role("button", name=bob_name).click()
    assert person.field("Username").input_value() == bob_name
    person.shot("transfer-recent")


def network_latency(person: Person) -> Callable[[int], None]:
    """A function that makes every request of the page take so many ms more (Chromium's network emulation)."""
    cdp = person.context.new_cdp_session(person.page)
    cdp.send("Network.enable")

    def latency(ms: int) -> None:
        conditions = {"offline": False, "latency": ms, "downloadThroughput": -1, "uploadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", conditions)

    return latency


def test_a_slow_page_shows_progress_at_once_and_loads_in_parallel(server, people):
    """With a slow API, a click on History marks <main aria-busy>, shows the bar and moves the menu's highlight at
    once; the page's calls go side by side (two round trips' worth, not three); Send says "Sending…"."""
    owner, payee = make_user(server), make_user(server)
    fund(server, owner, "5.00")
    person = people()
    person.log_in(owner.username)
    slow_network = network_latency(person)
    slow_network(1500)
    started = time.monotonic()
    person.menu("History")
    busy = person.page.locator("main[aria-busy=true]")
    busy.wait_for(state="attached", timeout=1_000)
    assert person.page.locator("#progress").is_visible()
    assert person.page.get_by_role("link", name="History").get_attribute("aria-current") == "page"
    person.shown("/history")
    assert time.monotonic() - started < 4.0  # one after another, the three calls took 4.5 s or more
    assert busy.count() == 0 and person.page.locator("#progress").is_hidden()

    slow_network(0)
    person.goto("/transfer")
    person.field("Username").fill(payee.username)
    person.field("Amount").fill("1.00")
    person.page.get_by_role("button", name="Review").click()
    slow_network(1500)
    person.page.get_by_role("button", name="Send $1.00").click()
    sending = person.page.get_by_role("button", name="Sending…")
    sending.wait_for(timeout=1_000)
    assert sending.is_disabled()
    person.page.get_by_role("heading", name=re.compile(r"\u2212\$1\.00")).wait_for()


def test_offline_says_so_and_an_error_page_offers_retry(server, people):
    owner = make_user(server)
    person = people("phone")
    person.expected += ["ERR_INTERNET_DISCONNECTED", "WebSocket connection to"]
    person.log_in(owner.username)
    person.context.set_offline(True)
    banner = person.page.locator("#network[role=status]")
    banner.filter(has_text="You are offline").wait_for()
    person.menu("History")
    person.page.get_by_role("heading", name="Something went wrong").wait_for()
    assert "Cannot reach the server" in person.page.locator("main .form-alert").inner_text()
    person.shot("offline")
    person.context.set_offline(False)
    person.page.get_by_role("button", name="Retry").click()
    person.page.get_by_role("heading", name="History").wait_for()
    banner.wait_for(state="hidden")


def test_forms_say_every_problem_at_once_in_their_own_words(server, people, chromium):
    """Registration shows the password's problems beside the username's (they used to wait for a valid username);
    "EURO" is refused, not cut to "EUR"; a wrong current password is not "wrong username or password"; at most three
    notifications are on screen; a de-DE browser takes "12,50" as the amount it shows as "12,50 $"."""
    person = people()
    person.goto("/register")
    person.field("Username").fill("a b")
    person.field("Password").fill("1234")
    person.field("Currency of your first wallet (optional)").fill("EURO")
    person.page.get_by_role("button", name="Create account").click()
    for name, said in (("username", "3 to 32"), ("password", "8 to 72 bytes"), ("currency", "3-letter")):
        person.page.locator(f"[data-error-for={name}]", has_text=said).wait_for()
    assert person.field("Currency of your first wallet (optional)").input_value() == "EURO"

    owner = make_user(server)
    person.log_in(owner.username)
    person.goto("/profile")
    person.field("Current password").fill("not-my-password-1")
    person.field("New password").fill("battery-staple-9")
    person.page.get_by_role("button", name="Change password").click()
    person.page.locator("[data-error-for=current_password]", has_text="The current password is wrong.").wait_for()

    person.page.evaluate(
        "import(new URL('dom.js', document.querySelector('script[type=module]').src))"  # the page's own instance
        ".then((dom) => [1, 2, 3, 4, 5].forEach((i) => dom.toast(`n${i}`)))"
    )
    person.page.locator(".toast", has_text="n5").wait_for()
    assert person.page.locator(".toast").count() == 3

    german = Person(chromium, server.url, locale="de-DE")
    try:
        german.log_in(owner.username)
        open_wallet(german)
        deposit = german.page.locator("form", has=german.page.get_by_role("heading", name="Deposit"))
        deposit.get_by_label("Amount (USD)").fill("1234,50")
        deposit.get_by_role("button", name="Deposit").click()
        german.page.locator(".balance.big", has_text="1.234,50\u00a0$").wait_for()
    finally:
        german.close()


# ---- an installable app: manifest, service worker, phone menu, themes --------------------------------------------


def test_the_manifest_and_the_service_worker_are_served(server):
    r = httpx.get(f"{server.url}/web/manifest.webmanifest")
    assert r.headers["Content-Type"] == "application/manifest+json"
    manifest, base = r.json(), str(r.url)
    assert manifest["display"] == "standalone" and manifest["name"] and manifest["short_name"]
    assert httpx.URL(base).join(manifest["start_url"]) == httpx.URL(f"{server.url}/#/wallets")
    assert httpx.URL(base).join(manifest["scope"]) == httpx.URL(f"{server.url}/")
    assert {"192x192", "512x512"} <= {icon["sizes"] for icon in manifest["icons"]}
    for icon in manifest["icons"]:
        got = httpx.get(httpx.URL(base).join(icon["src"]))
        assert got.status_code == 200 and got.headers["Content-Type"] == icon["type"], icon
    worker = httpx.get(f"{server.url}/sw.js")
    assert worker.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert worker.headers["Cache-Control"] == "no-cache"  # a new release's worker is picked up at once
    # The shell it keeps is every file of the app (no module left out), by the names the page uses, and nothing of
    # the API.
    listed = set(re.findall(r"'((?:web|v/[0-9a-f]+)/[^']+)'", worker.text))
    files = {
        f"v/{web_version()}/{p.relative_to(WEB)}"
        for p in WEB.rglob("*")
        if p.is_file() and p.name not in ("index.html", "sw.js", "manifest.webmanifest")
    }
    assert listed == files | {"web/manifest.webmanifest"}
    assert "api/" not in "".join(listed)


def test_the_page_preloads_its_whole_module_graph():
    """Every module is asked for at once (modulepreload), not level by level as the imports are found: on a phone's
    150 ms round trips the chain of imports cost one round trip per level."""
    preloaded = set(re.findall(r'<link rel="modulepreload" href="([^"]+)">', (WEB / "index.html").read_text()))
    modules = {f"web/{p.relative_to(WEB)}" for p in (WEB / "js").rglob("*.js") if p.name != "app.js"}
    assert preloaded == modules


def test_the_app_is_controlled_by_its_worker_and_opens_offline(server, people):
    owner = make_user(server)
    person = people("phone")
    person.expected += ["ERR_INTERNET_DISCONNECTED", "WebSocket connection to"]
    person.log_in(owner.username)
    person.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    assert person.page.reload().from_service_worker  # the page itself came through the worker
    person.shown("/wallets")
    assert person.page.evaluate("Boolean(navigator.serviceWorker.controller)")
    kept = person.page.evaluate(
        "caches.keys().then((names) => Promise.all(names.map((n) => caches.open(n).then((c) => c.keys()))))"
        ".then((lists) => lists.flat().map((r) => r.url))"
    )
    assert f"{server.url}/v/{web_version()}/js/app.js" in kept and not [url for url in kept if "/api/" in url]

    person.context.set_offline(True)
    assert person.page.reload().from_service_worker
    person.page.locator("#network", has_text="You are offline").wait_for()
    person.page.get_by_role("heading", name="Sign in").wait_for()  # the shell, from the worker's copy
    person.shot("offline-shell")


def test_a_load_asks_for_the_user_once_and_every_file_by_its_version(server, people):
    """A signed-in reload, a sign-in and a visit each ask GET /users/me once (the session's start used to ask it, then
    the page again); the page's files all come from v/<version>/, the modules' relative imports included, and a warm
    reload (the worker in control) asks the network for none of them."""
    owner = make_user(server)
    person = people("phone")
    asked: list[str] = []
    person.page.on("request", lambda request: asked.append(request.url.removeprefix(server.url)))

    def count(path: str) -> int:
        return sum(1 for url in asked if url.split("?")[0] == f"/api/v1/{path}")

    person.log_in(owner.username)
    assert count("users/me") == 1, asked  # the login page's own load asked nothing: signed out
    asked.clear()
    person.page.reload()
    person.shown("/wallets")
    assert (count("auth/refresh"), count("users/me"), count("wallets")) == (1, 1, 1), asked
    files = [url for url in asked if not url.startswith("/api/")]
    assert files[0] == "/#/wallets" or files[0] == "/"
    assert not [url for url in files[1:] if not url.startswith(f"/v/{web_version()}/")], files
    assert len(set(files[1:])) == len(list((WEB / "js").rglob("*.js"))) + 2  # the modules, the styles, the icon
    asked.clear()
    person.menu("History")
    person.shown("/history")
    assert count("users/me") == 1, asked

    person.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    person.page.wait_for_function("() => Boolean(navigator.serviceWorker.controller)")
    served: list[object] = []
    person.page.on("response", lambda response: served.append(response))
    person.page.reload()
    person.shown("/history")
    kept = [r for r in served if f"/v/{web_version()}/" in r.url]
    assert kept and all(r.from_service_worker for r in kept)


def test_the_phone_menu_is_one_line_and_opens_on_demand(server, database_url, people):
    """The phone's top bar is one line (six or seven links used to wrap onto two); "Menu" opens the entries."""
    admin = make_admin(server, database_url)
    person = people("phone")
    person.log_in(admin.username)
    assert person.page.locator(".topbar").bounding_box()["height"] < 70
    history = person.page.get_by_role("link", name="History")
    assert history.is_hidden()
    menu = person.page.get_by_role("button", name="Menu")
    menu.click()
    assert menu.get_attribute("aria-expanded") == "true"
    person.shot("phone-menu")
    person.page.set_viewport_size(SIZES["phone"])  # shot() leaves the desktop size
    history.click()
    person.shown("/history")
    assert history.is_hidden() and menu.get_attribute("aria-expanded") == "false"


def axe_violations(person: Person) -> list[str]:
    """axe-core's violations on the page on screen, one line each (rule: the elements it found)."""
    if not person.page.evaluate("'axe' in window"):
        person.page.add_script_tag(path=str(AXE))
    return person.page.evaluate(
        "axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations.map("
        "(v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`))"
    )


def test_every_page_passes_axe_in_both_themes_and_the_toggle_is_kept(server, database_url, chromium):
    if not AXE.exists():
        pytest.skip("axe-core is not installed (npm ci: package.json)")
    admin = make_admin(server, database_url)
    payee = make_user(server)
    fund(server, admin, "5.00")
    with server.client(payee.token) as client:
        body = {"to_username": admin.username, "amount": "1.00", "currency": "USD"}
        asked = client.post("/payment-requests", json=body)
    assert asked.status_code == 201, asked.text
    with server.client(admin.token) as client:  # one the admin asked: its page shares it with a QR code
        own = client.post("/payment-requests", json={**body, "to_username": payee.username})
    assert own.status_code == 201, own.text
    # axe is put into the page by the test: the CSP (rightly) refuses it, so this context alone bypasses it.
    person = Person(chromium, server.url, bypass_csp=True)
    try:
        pages = ["/login", "/register"]
        person.log_in(admin.username)
        wallet = person.page.locator(".wallet-card").first.get_attribute("href").removeprefix("#")
        pages += ["/wallets", wallet, "/transfer", "/history", "/profile", "/keys", "/security", "/admin"]
        pages += [f"/admin/users/{payee.id}", "/admin/audit", "/admin/actions"]
        pages += ["/requests", f"/pay/{asked.json()['id']}", f"/pay/{own.json()['id']}", "/payouts", "/scheduled"]
        found = {}
        for scheme in ("light", "dark"):
            person.page.emulate_media(color_scheme=scheme)
            for path in pages:
                if path in ("/login", "/register"):
                    continue  # signed in: checked below, signed out
                person.goto(path)
                if path == "/wallets" or path.endswith(own.json()["id"]):
                    person.page.locator("img.qr").wait_for()  # the code arrives after the page is drawn
                found[(scheme, path)] = axe_violations(person)
            person.goto("/transfer")
            person.field("Username").fill(payee.username)
            person.field("Amount").fill("1.00")
            person.page.get_by_role("button", name="Review").click()
            person.page.get_by_role("region", name="Confirm the transfer").locator(".receiver").wait_for()
            found[(scheme, "review")] = axe_violations(person)
            assert person.page.evaluate("document.documentElement.dataset.theme") == scheme
        person.goto("/wallets")
        person.page.locator("img.qr").wait_for()
        person.shot("wallets-dark")
        person.menu("Sign out")
        person.shown("/login")
        for scheme in ("light", "dark"):
            person.page.emulate_media(color_scheme=scheme)
            for path in ("/login", "/register"):
                person.goto(path)
                found[(scheme, path)] = axe_violations(person)
        assert {k: v for k, v in found.items() if v} == {}

        # The toggle overrides the system's choice, and is kept across a reload.
        toggle = person.page.get_by_role("button", name="Dark mode")
        assert toggle.get_attribute("aria-pressed") == "true"
        toggle.click()
        assert person.page.evaluate("document.documentElement.dataset.theme") == "light"
        person.page.reload()
        person.shown("/register")
        assert toggle.get_attribute("aria-pressed") == "false"
    finally:
        person.close()


def test_a_request_is_asked_shared_and_paid_once_from_its_link(server, people):
    """Payment requests: the payee asks (asking oneself is refused before sending), shares the #/pay/{id} link; the
    payer opens it signed out on a phone, signs in, lands on the request and double-clicks Pay: one pay is sent, the
    money moves once, and the payee's list shows it PAID. A second request is declined from the payer's list."""
    payee, payer = make_user(server), make_user(server)
    fund(server, payer, "20.00")
    asker = people()
    asker.log_in(payee.username)
    asker.open_from_menu("Requests", "/requests")
    ask = asker.page.get_by_role("form", name="Ask for money")
    ask.get_by_label("Username").fill(payee.username)
    ask.get_by_label("Amount").fill("7.505")
    ask.get_by_role("button", name="Send request").click()
    assert ask.locator("[data-error-for=recipient]").inner_text() == "You cannot ask yourself."
    assert "at most 2 decimals" in ask.locator("[data-error-for=amount]").inner_text()
    ask.get_by_label("Username").fill(payer.username)
    ask.get_by_label("Amount").fill("7.50")
    ask.get_by_label("Description (optional)").fill("tickets")
    ask.get_by_role("button", name="Send request").click()
    asker.page.get_by_role("heading", name=f"You ask {payer.username} for $7.50").wait_for()
    link = asker.page.locator(".share-link").inner_text()
    assert re.fullmatch(rf"{re.escape(server.url)}/#/pay/[0-9a-f-]{{36}}", link), link

    paying = people("phone")  # signed out: the link asks for the sign-in first, then opens the request
    posts: list[str] = []
    paying.page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/pay") else None)
    paying.page.goto(link)
    paying.field("Username, e-mail or phone").fill(payer.username)
    paying.field("Password").fill(PASSWORD)
    paying.page.get_by_role("button", name="Sign in").click()
    paying.page.get_by_role("heading", name=f"{payee.username} asks you for $7.50").wait_for()
    assert "tickets" in paying.page.locator(".facts").inner_text()
    paying.page.get_by_role("button", name="Pay $7.50").dblclick()
    paying.page.locator(".page-head .badge", has_text="PAID").wait_for()
    assert len(posts) == 1
    assert balance(server, payer) == "12.50" and balance(server, payee) == "7.50"
    assert paying.page.get_by_role("button", name="Pay $7.50").count() == 0
    paying.shot("request-paid")

    asker.goto("/requests")
    mine = asker.page.get_by_role("list", name="Asked by you")
    assert "PAID" in mine.locator("li").first.inner_text()

    # A second request, declined from the payer's list after a second "Yes".
    ask = asker.page.get_by_role("form", name="Ask for money")
    ask.get_by_label("Username").fill(payer.username)
    ask.get_by_label("Amount").fill("1.00")
    ask.get_by_role("button", name="Send request").click()
    asker.page.get_by_role("heading", name=f"You ask {payer.username} for $1.00").wait_for()
    paying.goto("/requests?status=OPEN")
    asked = paying.page.get_by_role("list", name="Asked of you")
    asked.get_by_role("button", name="Decline").click()
    asked.get_by_role("button", name="Yes, decline").click()
    paying.page.get_by_text("Request declined.").wait_for()
    paying.page.get_by_text("None with this status.").first.wait_for()
    paying.goto("/requests?status=DECLINED")
    assert paying.page.get_by_role("list", name="Asked of you").locator(".badge", has_text="DECLINED").count() == 1
    assert balance(server, payer) == "12.50"


def test_pay_me_qr_codes_of_a_request_and_a_wallet_number_are_drawn_by_this_server(server, people):
    """A payee's open request and the wallets page show a QR code (an <img> named for what it pays) of the link
    beside it: the request's page, and the send form with the wallet number filled in, which the payer opens. The
    code is the server's drawing of that link (segno's, as the server makes it), asked of this server only."""
    payee, payer = make_user(server), make_user(server)
    person = people("phone")
    asked_of: list[str] = []
    person.page.on("request", lambda r: asked_of.append(r.url) if not r.url.startswith("data:") else None)
    person.log_in(payee.username)

    share = person.page.get_by_role("region", name="Share your wallet number")
    code = share.get_by_role("img", name=f"QR code to pay USD wallet · {payee.wallet_number}")
    code.wait_for()
    link = share.locator(".share-link").inner_text()
    assert link == f"{server.url}/#/transfer?to_wallet_number={payee.wallet_number}"
    assert code.get_attribute("src") == qr_of(link)
    assert code.evaluate("img => img.complete && img.naturalWidth > 0")  # drawn: the CSP allows data: images
    assert f"{server.url}/api/v1/wallets/{payee.wallet_id}/link" in asked_of
    person.shot("wallets-share")

    with server.client(payee.token) as client:
        request = client.post(
            "/payment-requests", json={"to_username": payer.username, "amount": "3.00", "currency": "USD"}
        ).json()
    person.goto(f"/pay/{request['id']}")
    shared = person.page.get_by_role("region", name="Share")
    code = shared.get_by_role("img", name="QR code of the link to this request for $3.00")
    code.wait_for()
    link = shared.locator(".share-link").inner_text()
    assert link == f"{server.url}/#/pay/{request['id']}"
    assert code.get_attribute("src") == qr_of(link)
    assert code.evaluate("img => img.complete && img.naturalWidth > 0")
    assert f"{server.url}/api/v1/payment-requests/{request['id']}/link" in asked_of
    assert all(url.startswith(server.url) for url in asked_of), asked_of  # no QR service anywhere
    assert "null" not in person.page.locator("main").inner_text()  # the parts a payee is not shown leave no trace
    person.shot("request-share")

    # The wallet's link opens the payer's send form with the number in it.
    paying = people()
    paying.log_in(payer.username)
    paying.page.goto(f"{server.url}/#/transfer?to_wallet_number={payee.wallet_number}")
    paying.shown(f"/transfer?to_wallet_number={payee.wallet_number}")
    assert paying.field("Send to").input_value() == "to_wallet_number"
    assert paying.field("Wallet number").input_value() == payee.wallet_number


def test_empty_lists_guide_to_adding_money_and_sharing_the_wallet_number(server, people):
    """A newcomer's empty history and requests say how to start, with links: "Add money" and "share your wallet
    number", which leads to the wallets page's code."""
    newcomer = make_user(server)
    person = people()
    person.log_in(newcomer.username)
    person.goto("/history")
    empty = person.page.locator(".empty", has_text="No transactions yet.")
    assert empty.get_by_role("link", name="Add money").get_attribute("href") == "#/wallets"
    assert empty.get_by_role("link", name="share your wallet number").is_visible()
    person.goto("/requests")
    assert person.page.get_by_text("No one has asked you for money yet.").is_visible()
    empty = person.page.locator(".empty", has_text="You have not asked anyone yet")
    empty.get_by_role("link", name="share your wallet number").click()
    person.shown("/wallets")
    person.page.get_by_role("region", name="Share your wallet number").get_by_role("img").wait_for()


def test_a_weekly_transfer_is_scheduled_paused_resumed_and_cancelled(server, people):
    """Scheduled transfers: the form says every problem at once (a past first payment, a number of times of 0, a
    bad amount), then a weekly schedule of 3 is listed ACTIVE with its next run; pause, resume, and cancel after a
    second "Yes"."""
    owner, payee = make_user(server), make_user(server)
    person = people()
    person.log_in(owner.username)
    person.open_from_menu("Scheduled", "/scheduled")
    form = person.page.get_by_role("form", name="Schedule a transfer")
    form.get_by_label("Username").fill(payee.username)
    form.get_by_label("Amount").fill("2.5x")
    form.get_by_label("First payment").fill((dt.datetime.now() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Repeat").select_option("week")
    form.get_by_label("Times (optional)").fill("0")
    form.get_by_role("button", name="Schedule").click()
    errors = {name: form.locator(f"[data-error-for={name}]").inner_text() for name in ("amount", "start_at", "count")}
    assert errors["start_at"] == "The first payment must be in the future." and "amount such as" in errors["amount"]
    assert errors["count"] == "Enter a number of times from 1 to 1000."
    form.get_by_label("Amount").fill("2.50")
    form.get_by_label("First payment").fill((dt.datetime.now() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Times (optional)").fill("3")
    form.get_by_role("button", name="Schedule").click()
    schedules = person.page.get_by_role("list", name="Your schedules")
    item = schedules.locator("li", has_text=f"$2.50 to {payee.username}")
    item.locator(".badge", has_text="ACTIVE").wait_for()
    assert "Every week, 3 times" in item.inner_text() and "0 made" in item.inner_text()
    person.shot("scheduled")

    for button, status in (("Pause", "PAUSED"), ("Resume", "ACTIVE")):
        item.get_by_role("button", name=button).click()
        item.locator(".badge", has_text=status).wait_for()
    item.get_by_role("button", name="Cancel schedule").click()
    item.get_by_role("button", name="Yes, cancel it").click()
    item.locator(".badge", has_text="CANCELLED").wait_for()
    assert item.get_by_role("button").count() == 0
    with server.client(owner.token) as client:
        listed = client.get("/scheduled-transfers").json()["items"]
    assert [(s["status"], s["every"], s["count"], s["amount"]) for s in listed] == [("CANCELLED", "week", 3, "2.50")]


def test_schedules_page_by_cursor_with_load_more_and_an_empty_list_guides(server, people):
    """A list longer than a page of the API (twenty) shows "Load more", which brings the rest; an empty one says
    what to do."""
    owner, payee = make_user(server), make_user(server)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    with server.client(owner.token) as client:
        for cents in range(1, 22):
            body = {"from_wallet_id": owner.wallet_id, "to_username": payee.username, "amount": f"0.{cents:02d}"}
            r = client.post("/scheduled-transfers", json={**body, "start_at": start})
            assert r.status_code == 201, r.text
    person = people()
    person.log_in(owner.username)
    person.goto("/scheduled")
    schedules = person.page.get_by_role("list", name="Your schedules").locator("> li")
    assert schedules.count() == 20
    more = person.page.get_by_role("button", name="Load more")
    more.click()
    schedules.nth(20).wait_for()
    assert schedules.count() == 21 and more.is_hidden()
    assert len(set(schedules.evaluate_all("items => items.map((li) => li.dataset.scheduleId)"))) == 21

    newcomer = people()
    newcomer.log_in(payee.username)
    newcomer.goto("/scheduled")
    newcomer.page.get_by_text("Nothing scheduled yet: a rent or an allowance").wait_for()
    assert newcomer.page.get_by_role("button", name="Load more").is_hidden()


def test_a_statement_downloads_from_the_wallet_page(server, people):
    owner = make_user(server)
    fund(server, owner, "12.34")
    person = people()
    person.log_in(owner.username)
    open_wallet(person)
    statement = person.page.get_by_role("form", name="Statement")
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    statement.get_by_label("From").fill(tomorrow)
    statement.get_by_label("To").fill(dt.date.today().isoformat())
    statement.get_by_role("button", name="Download statement").click()
    statement.locator("[data-error-for=to]", has_text="after the start date").wait_for()
    statement.get_by_label("From").fill("")
    statement.get_by_label("To").fill("")
    for kind, start in (("csv", b""), ("pdf", b"%PDF")):
        statement.get_by_label("Format").select_option(kind)
        with person.page.expect_download() as download:
            statement.get_by_role("button", name="Download statement").click()
        assert download.value.suggested_filename.endswith(f".{kind}")
        content = Path(download.value.path()).read_bytes()
        assert content.startswith(start) and (kind == "pdf" or b"12.34" in content), content[:200]
