"""Swagger UI at /docs: served from local files, and rendered by a real headless Chromium (Debian's headless shell),
driven over the DevTools protocol: the page shows the API, and "Authorize" with a Bearer token makes
"Try it out" work."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tornado.websocket import websocket_connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}


def test_swagger_ui_is_served_from_local_files(server):
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<title>Wallet API - Swagger UI</title>" in page.text
    # Every script, style and the spec come from this server: no CDN, and no call to the online validator.
    references = re.findall(r'(?:src|href|url)\s*[=:]\s*"([^"]+)"', page.text)
    assert sorted(references) == sorted(
        ["docs/swagger-ui.css", "docs/favicon-32x32.png", "docs/swagger-ui-bundle.js", "openapi.json"]
    )
    assert "validatorUrl: null" in page.text
    for name, content_type in ASSETS.items():
        asset = httpx.get(f"{server.url}/docs/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["Content-Type"].startswith(content_type), name
    assert len(httpx.get(f"{server.url}/docs/swagger-ui-bundle.js").content) > 500_000
    assert httpx.get(f"{server.url}/docs/package.json").status_code == 404


def test_docs_cannot_be_sniffed_framed_or_made_to_run_foreign_scripts(server):
    headers = httpx.get(f"{server.url}/docs").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    policy = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"].startswith("'self' 'sha256-") and "unsafe" not in policy["script-src"]
    assert "Server" not in headers


def test_no_answer_names_the_server_software_and_json_is_not_sniffed(server, user):
    answers = [
        httpx.get(f"{server.url}/health"),
        httpx.get(f"{server.url}/openapi.json"),
        httpx.get(f"{server.url}/docs/swagger-ui.css"),
        httpx.get(f"{server.url}/docs/"),  # a redirect
        httpx.get(f"{server.url}/docs/swagger-ui.css", headers={"If-None-Match": "*"}),
        httpx.get(f"{server.url}/no/such/path"),
        httpx.get(f"{server.url}/api/v1/users/me", headers=user.headers),
        httpx.get(f"{server.url}/api/v1/users/me", headers={"Authorization": "Bearer nope"}),
        httpx.delete(f"{server.url}/health"),
        httpx.post(f"{server.url}/api/v1/auth/login", content=b"{"),
    ]
    for answer in answers:
        assert "Server" not in answer.headers, (answer.request.url, answer.headers)
        assert answer.headers["X-Content-Type-Options"] == "nosniff", answer.request.url


class Browser:
    """Headless Chromium with a fresh profile, and one page driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Debian's command is a script that runs the browser as its child: stop both
        )
        self.profile = profile
        self.ws = None
        self.last_id = 0

    async def open(self) -> None:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "chromium did not start its DevTools endpoint"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        self.ws = await websocket_connect(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False
        )
        # Whatever the Content-Security-Policy blocks on a page is collected, for the tests to assert none.
        await self.call("Page.enable")
        await self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            source="window.blocked = []; document.addEventListener('securitypolicyviolation',"
            " e => window.blocked.push(e.effectiveDirective + ' ' + e.blockedURI));",
        )

    async def call(self, method: str, **params: object) -> dict:
        self.last_id += 1
        await self.ws.write_message(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.read_message())
            if message.get("id") == self.last_id:
                assert "error" not in message, message
                return message["result"]

    async def js(self, expression: str) -> object:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> object:
        deadline = time.monotonic() + timeout
        # An element found is reported as true: the protocol cannot return a DOM node by value.
        while not (value := await self.js(f"(v => v instanceof Node || v)({expression})")):
            assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
            await asyncio.sleep(0.1)
        return value

    async def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        path.write_bytes(png)
        return png

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        with contextlib.suppress(ProcessLookupError):  # the group is gone when the browser ended on its own
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
async def browser(tmp_path):
    executable = shutil.which("chromium-headless-shell")
    if executable is None:
        pytest.skip("chromium-headless-shell is not installed (apt-get install chromium-headless-shell); .ci/run does")
    browser = Browser(executable, tmp_path / "profile")
    try:
        await browser.open()
        yield browser
    finally:
        browser.close()


# The operation block of one method and path (Swagger UI puts zero-width spaces into long paths).
OPBLOCK = """[...document.querySelectorAll('.opblock')].find(b =>
    b.querySelector('.opblock-summary-method')?.textContent === '{method}' &&
    b.querySelector('.opblock-summary-path')?.textContent.replace(/\\u200b/g, '') === '{path}')"""


async def test_docs_render_in_headless_chromium(server, browser, tmp_path):
    await browser.call("Page.navigate", url=f"{server.url}/docs")
    title = await browser.wait_for("document.querySelector('.information-container .title')?.textContent")
    assert title.startswith("Wallet API")
    assert await browser.js("document.title") == "Wallet API - Swagger UI"
    assert await browser.js(OPBLOCK.format(method="POST", path="/api/v1/transfers") + " !== undefined")
    assert await browser.js("document.querySelector('.auth-wrapper .authorize') !== null")
    png = await browser.screenshot(tmp_path / "docs.png")
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert await browser.js("window.blocked") == []


async def test_authorize_with_a_bearer_token_then_try_it_out(server, browser, user, tmp_path):
    await browser.call("Page.navigate", url=f"{server.url}/docs")
    await browser.wait_for("document.querySelector('.auth-wrapper .authorize')")
    await browser.js("document.querySelector('.auth-wrapper .authorize').click()")
    await browser.wait_for("document.querySelector('.modal-ux input')")
    # Type the token the way React sees typing: the native value setter, then an input event.
    await browser.js(
        f"""(() => {{
            const input = document.querySelector('.modal-ux input');
            const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
            setValue.call(input, {json.dumps(user.token)});
            input.dispatchEvent(new Event('input', {{bubbles: true}}));
            document.querySelector('.modal-ux .auth-btn-wrapper .authorize').click();
        }})()"""
    )
    await browser.wait_for("document.querySelector('.modal-ux .auth-btn-wrapper .btn-done')")
    await browser.js("document.querySelector('.modal-ux .auth-btn-wrapper .btn-done').click()")

    me = OPBLOCK.format(method="GET", path="/api/v1/users/me")
    await browser.js(f"{me}.querySelector('.opblock-summary-control').click()")
    await browser.wait_for(f"{me}.querySelector('.try-out__btn')")
    await browser.js(f"{me}.querySelector('.try-out__btn').click()")
    await browser.wait_for(f"{me}.querySelector('.execute')")
    await browser.js(f"{me}.querySelector('.execute').click()")
    status = await browser.wait_for(
        f"{me}.querySelector('.live-responses-table tbody .response-col_status')?.textContent"
    )
    assert status.strip() == "200"
    body = await browser.js(f"{me}.querySelector('.live-responses-table tbody .highlight-code code').textContent")
    assert json.loads(body)["username"] == user.username
    curl = await browser.js(f"{me}.querySelector('.curl-command')?.textContent")
    assert f"Authorization: Bearer {user.token}" in curl
    assert await browser.js("window.blocked") == []
    await browser.screenshot(tmp_path / "authorized.png")
