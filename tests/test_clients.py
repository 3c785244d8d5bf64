"""Client artefacts: scripts/demo.sh runs against a real server, and the Postman collection is what `make postman`
runs (v2.1, its folders, every request asserting its status) — newman itself runs it in .ci/run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "postman" / "wallet.postman_collection.json"


@pytest.mark.slow
def test_demo_script_walks_register_login_deposit_transfer_history(server):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), server.url], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("POST /auth/register", "POST /auth/login", "/deposit", "POST /transfers", "GET /transactions"):
        assert step in out
    assert "header: Idempotent-Replayed: true" in out
    assert "INSUFFICIENT_FUNDS" in out
    assert re.search(r"TRANSFER\s+out\s+12\.50 USD\s+COMPLETED lunch", out)
    assert "balance: 37.50 USD" in out
    assert "{" not in out  # readable lines, not raw JSON


def requests_of(item: dict) -> list[dict]:
    return [item] if "request" in item else [r for child in item["item"] for r in requests_of(child)]


def test_postman_collection_is_v21_with_a_test_on_every_request():
    collection = json.loads(COLLECTION.read_text())
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert [folder["name"] for folder in collection["item"]] == [
        "Auth",
        "Wallets",
        "Money",
        "History",
        "Holds",
        "Payment requests",
        "Payouts",
        "API keys",
        "Two-factor, step-up and sessions",
        "Admin",
        "Cross-currency",
        "Balances over time",
        "Scheduled transfers",
    ]
    for request in requests_of(collection):
        tests = "\n".join(line for e in request["event"] if e["listen"] == "test" for line in e["script"]["exec"])
        assert re.search(r"to\.have\.status\(\d{3}\)", tests), request["name"]
        assert request["request"]["url"]["raw"].startswith("{{baseUrl}}/"), request["name"]
    environment = json.loads((ROOT / "postman" / "local.postman_environment.json").read_text())
    assert {v["key"] for v in environment["values"]} == {"baseUrl", "adminUsername", "adminPassword"}


def test_postman_collection_covers_the_errors_a_client_must_handle():
    requests = requests_of(json.loads(COLLECTION.read_text()))
    scripts = "\n".join(line for r in requests for e in r["event"] for line in e["script"]["exec"])
    names = [r["name"] for r in requests]
    for code in (
        "AUTHENTICATION_REQUIRED",
        "INVALID_TOKEN",
        "INSUFFICIENT_FUNDS",
        "VALIDATION_ERROR",
        "INVALID_API_KEY",
    ):
        assert f'"{code}"' in scripts, code
    assert "Get someone else's wallet: 404" in names
    assert 'pm.response.headers.get("Idempotent-Replayed")).to.eql("true")' in scripts
    # Its users are new on every run, so it can run again and again against one database.
    assert 'pm.collectionVariables.set("aliceUsername", "pm_alice_" + run);' in scripts
