"""The bank test on the cluster of `make cluster` (var/cluster/cluster.json; `make cluster-test` starts it, runs this
and stops it; `make test` leaves it out: it is marked `cluster`).

Clients through nginx, across both app hosts, send transfers, deposits and withdrawals, each with an Idempotency-Key
resent until a definite answer, while faults come one after another: kill -9 of the leader's postmaster, the loss of
the leader's whole node, a switchover, kill -9 of one app host, a rolling restart of both (drain), a restart of Redis,
kill -9 of PgBouncer. Afterwards, on the leader of the moment: money is conserved in each currency, every
acknowledged operation is there exactly once and every refused one moved nothing, no answer was ever a 500, the
audit passes and the sweep leaves nothing PENDING. The recovery time of each fault is printed: from the fault to the
first success of a request sent after it."""

from __future__ import annotations

import json
import random
import signal
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg2
import pytest
from conftest import PASSWORD, assert_audit_ok, wait_for
from nginx import back_in_rotation

from scripts.cluster import APP_SETTINGS, HOME, HOSTS, NGINX_FAIL_TIMEOUT, Cluster

pytestmark = pytest.mark.cluster

CLIENTS = 16
WALLETS = 24  # half in USD, half in EUR: transfers stay within a currency
OPENING = 100_00  # cents each wallet is funded with before the faults
STEADY = 4  # seconds of load between one fault's recovery and the next fault
TIMEOUT = 20  # per request: above the server's own bounds (DB_POOL_TIMEOUT, statement timeout), below a hang
KILLED_HOST = "kill -9 of app host app1"
METRICS_TOKEN = APP_SETTINGS["METRICS_TOKEN"]


@dataclass
class Account:
    user_id: str
    wallet_id: str
    currency: str
    headers: dict[str, str]


@dataclass
class Ledger:
    """What the clients were told: every keyed operation and its definite answer, every attempt's timing."""

    answers: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)  # key -> (kind, status, code)
    successes: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered) of each 2xx
    resent: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # any 5xx but a 503 with Retry-After
    # nginx's 502 for a request whose app host died under it (kill -9): the gateway's "no answer", resent by key;
    # by the fault it came in.
    gateway: Counter = field(default_factory=Counter)
    fault: str = "none"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_success_after(self, moment: float) -> float | None:
        with self.lock:
            answered = [done for sent, done in self.successes if sent >= moment]
        return min(answered) - moment if answered else None


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    if not (HOME / "cluster.json").exists():
        pytest.fail("no cluster is running: `make cluster-test` starts one, runs this test and stops it")
    return Cluster()


def client(cluster: Cluster) -> httpx.Client:
    """A client for one thread, with its own TLS context: httpx sets the ALPN protocols on the context it is given
    at every new connection, and OpenSSL's context is not safe to change while another thread connects with it (a
    shared one sent, one time in many, a ClientHello nginx refused with a decode_error alert). A connection that
    could not be opened is tried again (no request was sent on it); what is sent is resent by the bank's own rules."""
    tls = ssl.create_default_context(cafile=json.loads((HOME / "cluster.json").read_text())["ca"])
    transport = httpx.HTTPTransport(verify=tls, local_address="127.0.0.1", retries=1)
    return httpx.Client(base_url=f"{cluster.url}/api/v1", transport=transport, timeout=TIMEOUT)


def open_account(http: httpx.Client, currency: str) -> Account:
    """A new user with a wallet in `currency`, logged in, its wallet funded with OPENING."""
    username = f"bank_{uuid.uuid4().hex[:12]}"
    r = http.post("/auth/register", json={"username": username, "password": PASSWORD, "currency": currency})
    assert r.status_code == 201, r.text
    user_id, wallet_id = r.json()["user"]["id"], r.json()["wallet"]["id"]
    r = http.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = http.post(f"/wallets/{wallet_id}/deposit", json={"amount": f"{OPENING / 100:.2f}"}, headers=headers)
    assert r.status_code == 201, r.text
    return Account(user_id, wallet_id, currency, headers)


class Bank:
    """CLIENTS threads sending keyed operations among `accounts` until stopped."""

    def __init__(self, cluster: Cluster, accounts: list[Account]) -> None:
        self.cluster, self.accounts = cluster, accounts
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> Bank:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in self.threads), "a client never got a definite answer"

    def definite(self, http: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """Send the same key until the answer is not 'try again' (503, 409 while in flight, or no answer at all)."""
        ledger = self.ledger
        while True:
            sent = time.monotonic()
            try:
                r = http.post(path, json=body, headers=headers)
            except httpx.TransportError as error:
                with ledger.lock:
                    ledger.resent[type(error).__name__] += 1
                time.sleep(0.2)
                continue
            if r.status_code == 502 and r.headers.get("Server") == "nginx":
                with ledger.lock:
                    ledger.gateway[ledger.fault] += 1
            elif r.status_code >= 500 and not (r.status_code == 503 and r.headers.get("Retry-After")):
                with ledger.lock:
                    ledger.server_errors.append(f"{ledger.fault}: {r.status_code} {path}: {r.text[:300]}")
            if r.status_code < 300:
                with ledger.lock:
                    ledger.successes.append((sent, time.monotonic()))
            if r.status_code not in (409, 503) and r.status_code < 500:
                return r
            with ledger.lock:
                ledger.resent[str(r.status_code)] += 1
            time.sleep(0.2)

    def run(self, i: int) -> None:
        rng = random.Random(i)
        with client(self.cluster) as http:
            while not self.stopping.is_set():
                me = rng.choice(self.accounts)
                amount = f"{rng.randint(1, 3000) / 100:.2f}"
                kind = rng.choices(["transfer", "deposit", "withdraw"], weights=[6, 2, 2])[0]
                if kind == "transfer":
                    to = rng.choice([a for a in self.accounts if a is not me and a.currency == me.currency])
                    path, body = "/transfers", {"from_wallet_id": me.wallet_id, "to_wallet_id": to.wallet_id}
                else:
                    path, body = f"/wallets/{me.wallet_id}/{kind}", {}
                key = f"bank-{uuid.uuid4().hex}"
                r = self.definite(http, path, {**body, "amount": amount}, {**me.headers, "Idempotency-Key": key})
                with self.ledger.lock:
                    self.ledger.answers[key] = (kind, r.status_code, r.json().get("code"))


def faults(cluster: Cluster) -> Iterator[tuple[str, Callable[[], None], Callable[[], Any]]]:
    """(name, inject, recovered) for each fault in turn: `recovered` is true once the cluster is whole again."""

    def leader() -> str:
        return wait_for(cluster.leader, 60)

    yield "kill -9 of the leader's postmaster", lambda: cluster.kill_postmaster(leader()), cluster.healthy

    lost: list[str] = []

    def lose_node() -> None:
        lost.append(leader())
        cluster.kill_node(lost[0])

    def node_back() -> bool:
        # A new leader first; then the lost node comes back (pg_rewind) as a replica, as an operator would bring it.
        if cluster.leader() in (None, lost[0]):
            return False
        if cluster.processes.process(lost[0]) is None:
            cluster.start_patroni(lost[0])
        return cluster.healthy()

    yield "loss of the leader's node (Patroni and PostgreSQL)", lose_node, node_back
    yield "switchover (Patroni's REST API)", cluster.switchover, lambda: cluster.healthy() and cluster.leader()

    def host_back() -> bool:
        if cluster.processes.process("app1") is None:
            cluster.start_host("app1")
        return True

    yield KILLED_HOST, lambda: cluster.kill_host("app1"), host_back

    def rolling_restart() -> None:
        # As docs/operations.md says an operator does it: one host at a time, the next stopped only once nginx sends
        # the one restarted requests and it is back in every nginx worker's rotation (18 502s in one run without it).
        for host, _ in HOSTS:
            cluster.processes.kill(host, sig=signal.SIGTERM)
            offset = cluster.access_log_size()
            cluster.start_host(host)
            back = time.monotonic()  # it refuses no connection from here on
            wait_for(lambda h=host, o=offset: cluster.proxied_to(h, o), 60)
            time.sleep(max(0.0, back + back_in_rotation(NGINX_FAIL_TIMEOUT) - time.monotonic()))

    yield "rolling restart of both app hosts (drain)", rolling_restart, lambda: True
    yield "restart of Redis", lambda: cluster.restart("redis"), lambda: True

    def pgbouncer_back() -> bool:
        # PgBouncer's supervisor (systemd's Restart=) brings it back; here, the harness.
        if cluster.processes.process("pgbouncer") is None:
            cluster.start_pgbouncer()
        return True

    yield "kill -9 of PgBouncer", lambda: cluster.processes.kill("pgbouncer"), pgbouncer_back


def query(cluster: Cluster, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """On the leader of the moment, through HAProxy's write port."""
    conn = psycopg2.connect(cluster.direct_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_reads_after_a_write_see_it_and_statements_come_from_a_replica(cluster):
    """Read-your-writes through nginx (each request on either host): the balance and the history right after each
    transfer show it (they read the leader); the statement, read from a replica (DATABASE_READ_URL: PgBouncer's
    wallet_replica, HAProxy's read port), catches up; every host reports the replica's lag."""
    transfers = 20
    with client(cluster) as http:
        me, you = open_account(http, "USD"), open_account(http, "USD")
        for i in range(transfers):
            body = {"from_wallet_id": me.wallet_id, "to_wallet_id": you.wallet_id, "amount": "1.00"}
            r = http.post("/transfers", json=body, headers={**me.headers, "Idempotency-Key": uuid.uuid4().hex})
            assert r.status_code == 201, r.text
            r = http.get(f"/wallets/{me.wallet_id}/balance", headers=me.headers)
            assert r.json()["balance"] == f"{OPENING / 100 - (i + 1):.2f}", r.text
            r = http.get(f"/wallets/{me.wallet_id}/transactions", headers=me.headers)
            assert len(r.json()["items"]) == i + 2, r.text  # the opening deposit and every transfer so far
        statement = f"/wallets/{me.wallet_id}/statement"
        wait_for(lambda: http.get(statement, headers=me.headers).json().get("entry_count") == transfers + 1, 30)
    # The replicas served those statements: they have the app's sessions (PgBouncer's, to database wallet).
    sessions = 0
    for member in cluster.members():
        if member["role"] != "leader":
            conn = psycopg2.connect(host="127.0.0.1", port=member["port"], user="postgres", dbname="postgres")
            with conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = 'wallet'")
                sessions += cur.fetchone()[0]
            conn.close()
    assert sessions > 0
    for host, _ in HOSTS:
        r = httpx.get(f"{cluster.host_url(host)}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200 and "\nwallet_replica_lag_seconds " in r.text, r.text[-500:]


def open_account_alone(cluster: Cluster, currency: str) -> Account:
    with client(cluster) as http:
        return open_account(http, currency)


def test_money_survives_every_fault(cluster):
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # a password hash each: in parallel, a client each
        accounts = list(pool.map(lambda i: open_account_alone(cluster, ("USD", "EUR")[i % 2]), range(WALLETS)))
    recovery: dict[str, float] = {}
    with Bank(cluster, accounts) as bank:
        time.sleep(STEADY)
        for name, inject, recovered in faults(cluster):
            bank.ledger.fault = name
            inject()
            moment = time.monotonic()  # the fault is complete (a whole node is gone, both hosts were restarted)
            wait_for(recovered, 120)
            # Recovered: a request sent after the fault succeeded (through nginx, on whichever host and leader).
            recovery[name] = wait_for(lambda m=moment: bank.ledger.first_success_after(m), 120)
            print(f"\n{name}: first success {recovery[name]:.1f} s after the fault", flush=True)
            time.sleep(STEADY)
    cluster.write_description()  # the app hosts' new PIDs
    ledger = bank.ledger
    elapsed = time.monotonic() - started
    outcomes = Counter((kind, status, code) for kind, status, code in ledger.answers.values())
    print(
        f"\ncluster bank: {CLIENTS} clients, {len(ledger.answers)} operations in {elapsed:.0f} s through nginx; "
        f"answers {dict(outcomes)}; resent {dict(ledger.resent)}; nginx 502 {dict(ledger.gateway)}"
    )
    for name, seconds in recovery.items():
        print(f"  recovery {seconds:5.1f} s  {name}")

    assert not ledger.server_errors, ledger.server_errors[:10]
    assert not ledger.resent["ReadTimeout"]  # no request hung: every one was answered within TIMEOUT
    assert set(ledger.gateway) <= {KILLED_HOST}, ledger.gateway  # only while a host died with requests in flight
    allowed = {(201, None), (400, "INSUFFICIENT_FUNDS")}
    assert {(status, code) for _, status, code in outcomes} <= allowed, outcomes
    keys = list(ledger.answers)
    wallet_ids = [a.wallet_id for a in accounts]

    # The recovery sweep fails nothing keyed that a client still retries; every key got its answer, so none stays
    # PENDING once the sweep has run.
    wait_for(
        lambda: query(cluster, "SELECT COUNT(*) FROM transactions WHERE status = 'PENDING'")[0][0] == 0,
        60,
    )
    rows = dict(
        query(
            cluster,
            "SELECT t.idempotency_key, t.status || ':' || COUNT(e.id) FROM transactions t "
            "LEFT JOIN entries e ON e.transaction_id = t.id WHERE t.idempotency_key = ANY(%s) "
            "GROUP BY t.id",
            (keys,),
        )
    )
    assert len(rows) == len(keys)  # one row per key: none lost, none doubled (the key is unique per caller)
    for key, (_, status, _) in ledger.answers.items():
        expected = "COMPLETED:2" if status == 201 else "FAILED:0"
        assert rows[key] == expected, (key, status, rows[key])

    # Money in each currency: what the wallets hold is what was deposited and not withdrawn.
    for currency in ("USD", "EUR"):
        mine = [a.wallet_id for a in accounts if a.currency == currency]
        held = query(cluster, "SELECT SUM(balance) FROM wallets WHERE id = ANY(%s::uuid[])", (mine,))[0][0]
        moved = query(
            cluster,
            "SELECT COALESCE(SUM(CASE type WHEN 'DEPOSIT' THEN amount ELSE -amount END), 0) FROM transactions "
            "WHERE status = 'COMPLETED' AND (type = 'DEPOSIT' AND destination_wallet_id = ANY(%(w)s::uuid[]) "
            "OR type = 'WITHDRAWAL' AND source_wallet_id = ANY(%(w)s::uuid[]))",
            {"w": mine},
        )[0][0]
        assert held == moved, (currency, held, moved)
    assert query(cluster, "SELECT MIN(balance) FROM wallets WHERE id = ANY(%s::uuid[])", (wallet_ids,))[0][0] >= 0
    assert_audit_ok(cluster.direct_url)
    assert elapsed < 8 * 60
