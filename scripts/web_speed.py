"""How fast the web wallet draws a signed-in person's wallets page on a phone's network: cold (a new browser
profile: empty cache, no service worker) and warm (the same tab's next visit: its cache and worker in place).

Usage: .venv/bin/python -m scripts.with_server .venv/bin/python -m scripts.web_speed [--runs N]

The phone profile is Chromium's network emulation (the DevTools protocol's Network.emulateNetworkConditions):
150 ms round trips, 1.6 Mbps down, 750 kbps up, a 375x812 screen. A visit counts from the start of its navigation
to the moment the wallets page is on screen with its wallet (the router marks <main data-view>), measured in the
page (performance.now(), sampled at each frame). Each run is a new account signed in by its refresh token in
sessionStorage, as a reload of a signed-in tab finds it. Timings on a shared, loaded machine vary: give several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
PHONE = {"latency": 150, "downloadThroughput": 1_600_000 / 8, "uploadThroughput": 750_000 / 8, "offline": False}
DRAWN = "() => document.querySelector('main[data-view=\"#/wallets\"] .wallet-card') && performance.now()"
PASSWORD = "speed-test-password-1"


def refresh_token(url: str) -> str:
    """A new account's refresh token (each run signs in afresh: refresh tokens work once)."""
    api = f"{url}/api/v1"
    username = f"speed_{secrets.token_hex(4)}"
    httpx.post(f"{api}/auth/register", json={"username": username, "password": PASSWORD}).raise_for_status()
    login = httpx.post(f"{api}/auth/login", json={"username": username, "password": PASSWORD})
    login.raise_for_status()
    return login.json()["refresh_token"]


def throttle_workers(browser_cdp: object) -> None:
    """The phone's network for the running service workers too: a worker's own requests (the shell it fetches) are
    not the page's, and the page's emulation does not slow them. Each is attached (the protocol's older, unflattened
    sessions, which a Playwright CDP session can talk through) and given the same conditions."""
    for target in browser_cdp.send("Target.getTargets")["targetInfos"]:
        if target["type"] != "service_worker":
            continue
        session = browser_cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": False})
        for number, method in enumerate(("Network.enable", "Network.emulateNetworkConditions"), start=1):
            message = {"id": number, "method": method, "params": PHONE if number == 2 else {}}
            browser_cdp.send(
                "Target.sendMessageToTarget", {"sessionId": session["sessionId"], "message": json.dumps(message)}
            )


def visit(page: object, url: str) -> float:
    """Open the wallets page; the ms from the navigation's start until it is drawn."""
    page.goto(f"{url}/#/wallets", wait_until="commit")
    return page.wait_for_function(DRAWN, polling="raf", timeout=30_000).json_value()


def run(browser: object, browser_cdp: object, url: str) -> tuple[float, float]:
    """One cold visit, then (the worker installed and in control) one warm visit in the same tab."""
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    try:
        token = refresh_token(url)
        # Only where the tab has none: a reload finds the rotated token the page itself stored.
        context.add_init_script(
            f"if (!sessionStorage.getItem('wallet.refresh_token')) "
            f"sessionStorage.setItem('wallet.refresh_token', '{token}')"
        )
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", PHONE)
        cold = visit(page, url)
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.wait_for_function("() => Boolean(navigator.serviceWorker.controller)")
        page.goto("about:blank")
        throttle_workers(browser_cdp)
        warm = visit(page, url)
        return cold, warm
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", default=os.environ.get("WALLET_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args()
    colds, warms = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        browser_cdp = browser.new_browser_cdp_session()
        for number in range(1, args.runs + 1):
            cold, warm = run(browser, browser_cdp, args.url)
            colds.append(cold)
            warms.append(warm)
            print(f"run {number}: cold {cold / 1000:.2f} s, warm {warm / 1000:.2f} s", flush=True)
        browser.close()
    cold, warm = statistics.median(colds) / 1000, statistics.median(warms) / 1000
    print(f"median of {args.runs}: cold {cold:.2f} s, warm {warm:.2f} s")


if __name__ == "__main__":
    main()
