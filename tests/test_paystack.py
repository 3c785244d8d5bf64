"""Paystack deposits end to end: the real server against a fake Paystack that is a real local HTTP server
(scripts/fake_paystack.py), webhooks signed as Paystack signs them, the ledger audited after every test."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import (
    ROOT,
    Server,
    assert_error,
    balance,
    log_in,
    make_admin,
    make_user,
    recorded,
    scalar,
    unique_name,
    wait_for,
)

from scripts.local_services import free_port, stop, wait_ready
from wallet.providers.paystack import sign

SECRET = "sk_test_" + "k" * 40
# The sweep verifies deposits PENDING over 2 s, every second.
FAST_SWEEP = {"PENDING_TIMEOUT": "2", "RECOVERY_INTERVAL": "1"}


@dataclass
class Fake:
    url: str
    proc: subprocess.Popen

    def configure(self, **switches: Any) -> None:
        """Set switches; every switch not named goes back to its default."""
        r = httpx.post(f"{self.url}/_fake/config", json=switches)
        assert r.status_code == 200, r.text

    def pay(self, reference: str, outcome: str = "success") -> dict[str, Any]:
        r = httpx.post(f"{self.url}/pay/{reference}", params={"outcome": outcome}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    log = tmp_path_factory.mktemp("fake_paystack") / "fake.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.fake_paystack", "--port", str(port), "--secret-key", SECRET],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 30, "/_fake/config")
        yield Fake(url, proc)
    finally:
        stop(proc)


def paystack_env(fake: Fake, **extra: str) -> dict[str, str]:
    return {"PAYSTACK_SECRET_KEY": SECRET, "PAYSTACK_BASE_URL": fake.url, **FAST_SWEEP, **extra}


@pytest.fixture(scope="module")
def pserver(module_server: Any, fake: Fake) -> Server:
    return module_server(**paystack_env(fake))


@pytest.fixture(scope="module")
def admin_name(pserver: Server, database_url: str) -> str:
    return make_admin(pserver, database_url).username


@pytest.fixture(autouse=True)
def audited(request: pytest.FixtureRequest, pserver: Server, fake: Fake, admin_name: str) -> Any:
    """Every test starts with the fake's default switches, webhooks going to pserver, and ends with a clean audit."""
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack")
    yield
    admin = log_in(pserver, admin_name)
    with pserver.client(admin.token) as client:
        report = client.get("/admin/audit").json()
    assert report["ok"], report


def payer(server: Server, currency: str = "NGN") -> Any:
    name = unique_name()
    return make_user(server, currency, username=name, email=f"{name}@example.com")


def initialize(
    server: Server, user: Any, amount: str = "25.00", key: str | None = None, **extra: Any
) -> httpx.Response:
    headers = {**user.headers, **({"Idempotency-Key": key} if key else {})}
    with server.client() as client:
        return client.post(
            f"/wallets/{user.wallet_id}/deposits/paystack", json={"amount": amount, **extra}, headers=headers
        )


def started(server: Server, user: Any, amount: str = "25.00") -> dict[str, Any]:
    r = initialize(server, user, amount)
    assert r.status_code == 201, r.text
    return r.json()


def webhook(server: Server, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["x-paystack-signature"] = signature
    return httpx.post(f"{server.url}/api/v1/webhooks/paystack", content=body, headers=headers, timeout=60)


def charge_success(reference: str, amount: int, currency: str = "NGN", event: str = "charge.success") -> bytes:
    data = {"id": 1, "status": "success", "reference": reference, "amount": amount, "currency": currency}
    return json.dumps({"event": event, "data": data}).encode()


def signed(server: Server, body: bytes) -> httpx.Response:
    return webhook(server, body, sign(SECRET, body))


def deposit_row(db: Any, reference: str) -> tuple[str, str | None, int, int]:
    tx_id = scalar(db, "SELECT id::text FROM transactions WHERE provider_reference = %s", (reference,))
    return recorded(db, tx_id)


def verify_calls(fake: Fake, reference: str) -> int:
    return httpx.get(f"{fake.url}/_fake/transactions/{reference}").json()["verify_calls"]


def read_deposit(server: Server, user: Any, reference: str) -> dict[str, Any]:
    with server.client(user.token) as client:
        r = client.get(f"/deposits/{reference}")
    assert r.status_code == 200, r.text
    return r.json()


# ---- the happy path ------------------------------------------------------------------------------------------


def test_initialize_pay_webhook_credits(pserver, fake, db):
    user = payer(pserver)
    checkout = started(pserver, user, "25.00")
    tx, reference = checkout["transaction"], checkout["reference"]
    assert tx["status"] == "PENDING" and tx["type"] == "DEPOSIT" and tx["amount"] == "25.00"
    assert tx["provider"] == "paystack" and tx["provider_reference"] == reference == tx["reference"]
    assert checkout["authorization_url"] == f"{fake.url}/pay/{reference}"
    assert httpx.get(checkout["authorization_url"]).status_code == 200  # the checkout page exists at Paystack

    # Not paid yet: reading it asks Paystack ("abandoned"), which leaves it waiting.
    assert read_deposit(pserver, user, reference)["status"] == "PENDING"
    assert balance(pserver, user) == "0.00"

    assert fake.pay(reference)["webhook_statuses"] == [200]
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    done = read_deposit(pserver, user, reference)
    assert done["status"] == "COMPLETED" and done["completed_at"] and done["direction"] == "in"
    assert balance(pserver, user) == "25.00"
    with pserver.client(user.token) as client:
        assert client.get(f"/transactions/{tx['id']}").json()["provider_reference"] == reference
        r = client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "1"})
        assert (r.json()["provider"], r.json()["provider_reference"]) == (None, None)


def test_initialize_replay_answers_the_same_checkout(pserver, fake, db):
    user = payer(pserver)
    key = f"paystack-{uuid.uuid4()}"
    first = initialize(pserver, user, "10.00", key, callback_url="https://shop.example/done")
    assert first.status_code == 201, first.text
    again = initialize(pserver, user, "10.00", key, callback_url="https://shop.example/done")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert_error(
        initialize(pserver, user, "11.00", key, callback_url="https://shop.example/done"), 422, "IDEMPOTENCY_MISMATCH"
    )
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,)) == 1

    fake.pay(first.json()["reference"])
    paid = initialize(pserver, user, "10.00", key, callback_url="https://shop.example/done")
    assert paid.status_code == 201
    assert paid.json()["authorization_url"] == first.json()["authorization_url"]
    assert paid.json()["transaction"]["status"] == "COMPLETED"
    assert balance(pserver, user) == "10.00"


def test_a_replay_while_paystack_is_still_answering_is_409(pserver, fake, db):
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack", delay=3)
    user, key = payer(pserver), f"slow-{uuid.uuid4()}"
    first: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: first.append(initialize(pserver, user, "1.00", key)))
    thread.start()
    while not scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,)):
        time.sleep(0.05)  # recorded; now waiting for Paystack
    assert_error(initialize(pserver, user, "1.00", key), 409, "IDEMPOTENCY_IN_PROGRESS")
    thread.join(30)
    assert first[0].status_code == 201
    assert initialize(pserver, user, "1.00", key).json() == first[0].json()


def test_owner_only_and_unknown_references(pserver):
    user, other = payer(pserver), payer(pserver)
    reference = started(pserver, user)["reference"]
    with pserver.client(other.token) as client:
        assert_error(client.get(f"/deposits/{reference}"), 404, "NOT_FOUND")
        assert_error(client.get("/deposits/TXNOSUCHREFERENCE"), 404, "NOT_FOUND")
        assert_error(client.get("/deposits/%00bad"), 404, "NOT_FOUND")
        assert_error(
            client.post(f"/wallets/{user.wallet_id}/deposits/paystack", json={"amount": "1"}), 404, "NOT_FOUND"
        )


# ---- refusals before anything is recorded --------------------------------------------------------------------


def test_not_configured_is_503(server, user):
    with server.client(user.token) as client:
        r = client.post(f"/wallets/{user.wallet_id}/deposits/paystack", json={"amount": "5"})
    assert_error(r, 503, "PROVIDER_NOT_CONFIGURED")
    assert_error(webhook(server, b"{}", sign(SECRET, b"{}")), 503, "PROVIDER_NOT_CONFIGURED")


def test_unsupported_currency_and_missing_email_are_400(pserver, db):
    euro = payer(pserver, "EUR")
    body = assert_error(initialize(pserver, euro), 400, "CURRENCY_NOT_SUPPORTED")
    assert "NGN" in body["error"]
    no_email = make_user(pserver, "NGN")
    assert "email" in assert_error(initialize(pserver, no_email), 400, "VALIDATION_ERROR")["details"]
    assert_error(initialize(pserver, payer(pserver), "1.001"), 400, "VALIDATION_ERROR")
    assert_error(initialize(pserver, payer(pserver), callback_url="javascript:alert(1)"), 400, "VALIDATION_ERROR")
    ids = (euro.id, no_email.id)
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id IN %s", (ids,)) == 0


# ---- the provider failing at initialize ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "switches",
    [{"initialize_status": 500}, {"initialize_status": 400}, {"delay": 11}],
    ids=["500", "refused", "timeout"],
)
def test_provider_down_at_initialize_fails_the_row_with_502(pserver, fake, db, switches):
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack", **switches)
    user = payer(pserver)
    key = f"down-{uuid.uuid4()}"
    body = assert_error(initialize(pserver, user, "5.00", key), 502, "PROVIDER_ERROR")
    assert recorded(db, body["transaction_id"]) == ("FAILED", "PROVIDER_ERROR", 0, 0)
    replay = initialize(pserver, user, "5.00", key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert assert_error(replay, 502, "PROVIDER_ERROR") == body
    assert balance(pserver, user) == "0.00"


# ---- the webhook --------------------------------------------------------------------------------------------


def test_bad_or_missing_signature_is_401_and_changes_nothing(pserver, db):
    user = payer(pserver)
    reference = started(pserver, user, "7.00")["reference"]
    body = charge_success(reference, 700)
    for signature in (None, "", sign("sk_test_wrong", body), sign(SECRET, body + b" "), "zz" * 64):
        r = webhook(pserver, body, signature)
        assert_error(r, 401, "INVALID_SIGNATURE")
        assert "WWW-Authenticate" not in r.headers
    assert deposit_row(db, reference) == ("PENDING", None, 0, 0)
    assert balance(pserver, user) == "0.00"


def test_malformed_signed_events_are_400_and_change_nothing(pserver, db):
    user = payer(pserver)
    reference = started(pserver, user, "7.00")["reference"]
    assert_error(signed(pserver, b"{not json"), 400, "INVALID_JSON")
    assert_error(signed(pserver, b"[1, 2]"), 400, "INVALID_JSON")
    bad = json.dumps({"event": "charge.success", "data": {"reference": reference, "amount": "700", "currency": "NGN"}})
    assert "data.amount" in assert_error(signed(pserver, bad.encode()), 400, "VALIDATION_ERROR")["details"]
    no_data = json.dumps({"event": "charge.success"}).encode()
    assert assert_error(signed(pserver, no_data), 400, "VALIDATION_ERROR")["details"].keys() == {
        "data.reference",
        "data.amount",
        "data.currency",
    }
    assert deposit_row(db, reference) == ("PENDING", None, 0, 0)


def test_unknown_references_and_other_events_are_acknowledged_and_ignored(pserver, db):
    user = payer(pserver)
    reference = started(pserver, user, "7.00")["reference"]
    for body in (
        charge_success("TXUNKNOWN0000", 700),
        charge_success(reference, 700, event="transfer.success"),
        json.dumps({"event": "subscription.create", "data": {}}).encode(),
    ):
        r = signed(pserver, body)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    assert deposit_row(db, reference) == ("PENDING", None, 0, 0)


def test_oversized_body_is_413(pserver):
    body = b'{"event": "charge.success", "pad": "' + b"x" * 70_000 + b'"}'
    assert_error(signed(pserver, body), 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("switches", [{"amount_delta": 100}, {"amount_delta": -1}, {"currency": "GHS"}])
def test_amount_or_currency_mismatch_fails_and_never_credits(pserver, fake, db, switches):
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack", **switches)
    user = payer(pserver)
    reference = started(pserver, user, "9.00")["reference"]
    assert fake.pay(reference)["webhook_statuses"] == [200]
    assert deposit_row(db, reference) == ("FAILED", "PROVIDER_MISMATCH", 0, 0)
    assert read_deposit(pserver, user, reference)["failure_code"] == "PROVIDER_MISMATCH"
    assert signed(pserver, charge_success(reference, 900)).status_code == 200  # a correct copy later: still failed
    assert deposit_row(db, reference) == ("FAILED", "PROVIDER_MISMATCH", 0, 0)
    assert balance(pserver, user) == "0.00"


def test_twenty_concurrent_duplicate_webhooks_credit_once(pserver, fake, db):
    fake.configure(webhook_url=f"{pserver.url}/api/v1/webhooks/paystack", duplicates=20)
    user = payer(pserver)
    reference = started(pserver, user, "3.00")["reference"]
    assert fake.pay(reference)["webhook_statuses"] == [200] * 20
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    assert balance(pserver, user) == "3.00"


def test_webhooks_racing_verifies_credit_once(pserver, fake, db):
    fake.configure(webhook=False)  # paid at Paystack; the webhooks come from the racers below
    user = payer(pserver)
    reference = started(pserver, user, "4.00")["reference"]
    fake.pay(reference)
    body = charge_success(reference, 400)
    statuses: list[int] = []
    go = threading.Barrier(20)

    def race(i: int) -> None:
        go.wait()
        if i % 2:
            statuses.append(signed(pserver, body).status_code)
        else:
            with pserver.client(user.token) as client:
                statuses.append(client.get(f"/deposits/{reference}").status_code)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 20
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    assert balance(pserver, user) == "4.00"


def test_concurrent_reads_of_a_pending_deposit_ask_paystack_once(alone, fake):
    """30 reads of one pending deposit at once, half of them through another server process: Paystack is asked once
    (a process's reads share its verify in flight; the other process finds it asked a moment ago, through Redis).
    Once VERIFY_EVERY has passed, a read asks again. (Two servers on a database of their own, whose sweeps do not
    verify it meanwhile, nor pserver's.)"""
    first, second = (alone(**paystack_env(fake, PENDING_TIMEOUT="600")) for _ in range(2))
    user = payer(first)
    reference = started(first, user, "7.00")["reference"]
    fake.configure(delay=0.5)  # every read arrives while the first verify is still out
    go = threading.Barrier(30)

    def read(i: int) -> str:
        go.wait()
        return read_deposit(second if i % 2 else first, user, reference)["status"]

    with ThreadPoolExecutor(30) as pool:
        assert list(pool.map(read, range(30))) == ["PENDING"] * 30
    assert verify_calls(fake, reference) == 1
    fake.configure()
    wait_for(lambda: read_deposit(second, user, reference) and verify_calls(fake, reference) == 2, 10)


def test_lost_webhook_is_recovered_by_the_sweep(pserver, fake, db):
    fake.configure(webhook=False)
    user = payer(pserver)
    reference = started(pserver, user, "6.00")["reference"]
    fake.pay(reference)
    deadline = time.monotonic() + 20
    while deposit_row(db, reference)[0] == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)  # the database, not GET /deposits, which would verify by itself
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    assert balance(pserver, user) == "6.00"


def test_declined_payment_fails_on_verify(pserver, fake, db):
    user = payer(pserver)
    reference = started(pserver, user, "2.00")["reference"]
    fake.pay(reference, outcome="failed")
    assert read_deposit(pserver, user, reference)["failure_code"] == "PROVIDER_DECLINED"
    assert deposit_row(db, reference) == ("FAILED", "PROVIDER_DECLINED", 0, 0)


def test_a_frozen_account_cannot_start_one(pserver, db):
    user = payer(pserver)
    db.cursor().execute("UPDATE users SET status = 'frozen' WHERE id = %s", (user.id,))
    assert_error(initialize(pserver, user), 403, "ACCOUNT_FROZEN")
    assert scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,)) == 0


def test_a_paid_deposit_to_a_frozen_account_waits_and_is_credited_once_unfrozen(pserver, fake, db):
    user = payer(pserver)
    reference = started(pserver, user, "8.00")["reference"]
    db.cursor().execute("UPDATE users SET status = 'frozen' WHERE id = %s", (user.id,))
    try:
        assert fake.pay(reference)["webhook_statuses"] == [200]
        assert deposit_row(db, reference) == ("PENDING", None, 0, 0)
    finally:
        db.cursor().execute("UPDATE users SET status = 'active' WHERE id = %s", (user.id,))
    assert signed(pserver, charge_success(reference, 800)).status_code == 200  # Paystack retries
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    assert balance(pserver, user) == "8.00"


# ---- crashes and expiry (own servers) --------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_after_initialize_then_the_webhook_credits_once_after_restart(own_server, fake, db):
    doomed = own_server(**paystack_env(fake))
    user = payer(doomed)
    reference = started(doomed, user, "12.00")["reference"]
    # A second deposit is mid-initialize (Paystack slow) when the server dies: the payer never gets a page.
    fake.configure(delay=30)

    def cut_off_initialize() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            initialize(doomed, user, "13.00")

    threading.Thread(target=cut_off_initialize, daemon=True).start()
    deadline = time.monotonic() + 10
    while scalar(db, "SELECT COUNT(*) FROM transactions WHERE initiator_id = %s", (user.id,)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    doomed.kill()
    fake.configure()
    cut_off = scalar(db, "SELECT id::text FROM transactions WHERE initiator_id = %s AND amount = 1300", (user.id,))

    restarted = own_server(**paystack_env(fake))
    time.sleep(3)  # past PENDING_TIMEOUT: recovery must leave the deposit waiting for Paystack
    assert deposit_row(db, reference) == ("PENDING", None, 0, 0)
    fake.configure(webhook_url=f"{restarted.url}/api/v1/webhooks/paystack", duplicates=3)
    assert fake.pay(reference)["webhook_statuses"] == [200] * 3
    assert deposit_row(db, reference) == ("COMPLETED", None, 2, 0)
    assert balance(restarted, user) == "12.00"
    # The cut-off one is failed once PENDING_TIMEOUT and Paystack's 10 s timeout have both passed.
    deadline = time.monotonic() + 30
    while recorded(db, cut_off)[0] == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded(db, cut_off) == ("FAILED", "INTERRUPTED", 0, 0)
    restarted.stop()


@pytest.mark.slow
def test_unpaid_deposits_expire_but_paid_ones_never_do(own_server, fake, db):
    # Every server's sweep sees every deposit: this one, with its 3 s expiry, runs alone and stops at the end.
    short = own_server(**paystack_env(fake, PAYSTACK_PENDING_TIMEOUT="3"))
    try:
        # Paystack's verify down from the start: nothing is given up while it cannot be asked (set before the
        # deposits, so that a slow machine's sweep cannot ask it first).
        fake.configure(webhook=False, verify_status=500)
        user = payer(short)
        unpaid = started(short, user, "1.00")["reference"]
        paid = started(short, user, "2.00")["reference"]
        fake.pay(paid)
        time.sleep(5)
        assert deposit_row(db, unpaid) == ("PENDING", None, 0, 0)
        fake.configure(webhook=False)
        deadline = time.monotonic() + 20
        while "PENDING" in (deposit_row(db, unpaid)[0], deposit_row(db, paid)[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert deposit_row(db, unpaid) == ("FAILED", "PROVIDER_EXPIRED", 0, 0)
        assert deposit_row(db, paid) == ("COMPLETED", None, 2, 0)
        assert balance(short, user) == "2.00"
    finally:
        short.stop()


def test_readme_walkthrough_runs_as_printed(pserver):
    section = (ROOT / "README.md").read_text().split("## Paystack deposits", 1)[1]
    script = re.findall(r"```sh\n(.*?)```", section, re.S)[1]
    carol = unique_name("carol")
    script = script.replace("http://127.0.0.1:8000", pserver.url).replace("carol", carol)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"status":"PENDING"' in result.stdout and '"provider":"paystack"' in result.stdout
    assert '"status":"COMPLETED"' in result.stdout
    assert result.stdout.rstrip().endswith('"balance":"2500.00","available_balance":"2500.00","at":null}')
