"""The outbox's delivery lanes against real local servers: dead endpoints (one that accepts and never answers, one
that never accepts) hold up no one else's webhooks or e-mail; per-endpoint and per-user caps hold across two server
processes; an endpoint's circuit breaker opens, probes and closes; a kill -9 mid-delivery is delivered after a
restart; the backlog gauges in /metrics."""

import datetime as dt
import socket
import threading
import time
from collections import Counter

import httpx
import psycopg2
import pytest
from aiosmtpd.controller import Controller
from conftest import assert_audit_ok, fund, make_user, unique_name, wait_for
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from test_mail import Inbox
from test_webhooks import FAST, Receiver, register

from scripts.local_services import free_port, libpq_url

TOKEN = "scrape-" + "t" * 24


class BlackHole:
    """A TCP server that accepts every connection and never answers a byte."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.held = []
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            while True:
                self.held.append(self.listener.accept()[0])
        except OSError:
            pass  # closed

    def close(self):
        self.listener.close()
        for conn in self.held:
            conn.close()


class Unaccepting:
    """A port whose listener never accepts: past its one-connection backlog, connecting hangs (SYNs are dropped)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def close(self):
        self.listener.close()


@pytest.fixture
def dead_ends():
    """Ten endpoints that never answer: five black holes and five listeners that never accept."""
    ends = [BlackHole() for _ in range(5)] + [Unaccepting() for _ in range(5)]
    yield ends
    for end in ends:
        end.close()


@pytest.fixture
def inbox():
    mailbox = Inbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    mailbox.url = f"smtp://127.0.0.1:{controller.port}"
    yield mailbox
    controller.stop()


VILLAIN_IN_FLIGHT = (
    "SELECT count(*) FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id "
    "WHERE w.user_id = %s AND d.leased_until > now()"
)


def db_rows(alone, query, *args):
    with psycopg2.connect(libpq_url(alone.database_url)) as db, db.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def verifies(endpoint, headers, body):
    try:
        Webhook(endpoint["secret"]).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def scrape(server):
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def test_dead_endpoints_of_one_user_delay_no_one_elses_webhooks_or_mail(alone, dead_ends, inbox):
    # The breaker is kept shut (a high threshold): what isolates the others here is the lanes and the caps alone.
    server = alone(**FAST, WEBHOOK_BREAKER_FAILURES="1000", SMTP_URL=inbox.url, METRICS_TOKEN=TOKEN)
    villain = make_user(server)
    for end in dead_ends:
        register(server, villain, end.url)
    for _ in range(15):  # a burst: 30 events, 300 deliveries to endpoints that never answer
        fund(server, villain, "1.00")
    burst_ended = time.monotonic()
    wait_for(lambda: sum(len(end.held) for end in dead_ends if isinstance(end, BlackHole)) >= 5)
    receiver = Receiver()
    try:
        victim = make_user(server, email=f"{unique_name()}@example.com")
        register(server, victim, receiver.url, events=["deposit.completed"])
        seen = []
        for round_ in range(1, 4):
            started = time.monotonic()
            fund(server, victim, "1.00")
            receiver.wait_for(round_, timeout=5)
            wait_for(lambda round_=round_: len(inbox.messages) >= round_, timeout=5)
            assert time.monotonic() - started < 5
            # The villain's sends in flight, all processes together: the user's cap (10), never more.
            ((flying,),) = db_rows(alone, VILLAIN_IN_FLIGHT, villain.id)
            seen.append(flying)
        assert max(seen) == 10
        email = (("lane", "email"),)
        asked, backlog = wait_for(
            lambda: (r := (time.monotonic(), scrape(server)))[1][("wallet_outbox_pending", email)] == 0 and r
        )
        assert backlog[("wallet_outbox_oldest_pending_seconds", email)] == 0
        assert backlog[("wallet_outbox_pending", (("lane", "webhook"),))] >= 250
        # The villain's first deliveries were made before the burst ended.
        assert backlog[("wallet_outbox_oldest_pending_seconds", (("lane", "webhook"),))] >= asked - burst_ended
    finally:
        receiver.close()
    assert_audit_ok(alone.database_url)


def test_the_caps_hold_across_two_processes_and_each_delivery_is_sent_once(alone):
    settings = {**FAST, "WEBHOOK_ENDPOINT_CONCURRENCY": "2", "WEBHOOK_USER_CONCURRENCY": "3"}
    first, second = alone(**settings), alone(**settings)
    receiver = Receiver(delay=0.2)  # slow enough that the caps are reached
    try:
        user = make_user(first)
        endpoints = [register(first, user, f"{receiver.url}/{name}", events=["deposit.completed"]) for name in "ab"]

        def deposit(server):
            for _ in range(10):
                fund(server, user, "0.10")

        threads = [threading.Thread(target=deposit, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        receiver.wait_for(40, timeout=30)
        wait_for(
            lambda: db_rows(alone, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'")[0][0] == 40,
        )
        # Which endpoint each request was for: the one whose secret signed it.
        sent = Counter(
            (h["webhook-id"], next(e["id"] for e in endpoints if verifies(e, h, body)))
            for h, body, _ in receiver.received
        )
        assert len(sent) == 20 * len(endpoints) and set(sent.values()) == {1}  # each event once to each endpoint
        assert receiver.most[""] == 3  # the user's cap, reached and never passed by the two processes together
        assert receiver.most["/hook/a"] <= 2 and receiver.most["/hook/b"] <= 2
        assert_audit_ok(alone.database_url)
    finally:
        receiver.close()


def test_a_failing_endpoint_is_left_alone_by_its_breaker_then_probed_and_closed(alone):
    # One send at a time to the endpoint, so that every attempt's place in the story is known.
    settings = {"WEBHOOK_BREAKER_FAILURES": "3", "WEBHOOK_BREAKER_COOLDOWN_MS": "1500"}
    server = alone(**FAST, **settings, WEBHOOK_ENDPOINT_CONCURRENCY="1")
    receiver = Receiver(answers=(503,))
    try:
        user = make_user(server)
        endpoint = register(server, user, receiver.url, events=["deposit.completed"])
        for _ in range(8):
            fund(server, user, "1.00")
        state = "SELECT consecutive_failures, extract(epoch FROM breaker_until) FROM webhook_endpoints WHERE id = %s"
        ((failures, first_until),) = wait_for(lambda: (r := db_rows(alone, state, endpoint["id"]))[0][1] and r)
        assert failures == 3 and len(receiver.arrived) == 3
        # The probe comes once the cooldown is over, and fails: open again for twice as long.
        ((_, second_until),) = wait_for(lambda: (r := db_rows(alone, state, endpoint["id"]))[0][0] == 4 and r)
        receiver.answers = [200]
        assert len(receiver.arrived) == 4 and receiver.arrived[3] >= float(first_until)
        assert float(second_until) - receiver.arrived[3] >= 2.9
        # The next probe succeeds and closes it; the rest follow.
        wait_for(lambda: db_rows(alone, state, endpoint["id"]) == [(0, None)], timeout=10)
        assert receiver.arrived[4] >= float(second_until)
        wait_for(lambda: db_rows(alone, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'") == [(8,)])
        assert any(
            e["msg"] == "webhook endpoint breaker open" and e["endpoint_id"] == endpoint["id"]
            for e in server.log_entries()
        )
    finally:
        receiver.close()


def test_a_delivery_killed_mid_send_is_delivered_after_the_restart(alone):
    receiver = Receiver(delay=60)  # holds the first request until the server is gone
    doomed = alone(**FAST)
    user = make_user(doomed)
    endpoint = register(doomed, user, receiver.url, events=["deposit.completed"])
    fund(doomed, user, "1.00")
    wait_for(lambda: receiver.arrived)
    doomed.kill()
    receiver.delay = 0
    query = "SELECT status, attempts, leased_until > now() FROM deliveries WHERE endpoint_id = %s"
    assert db_rows(alone, query, endpoint["id"]) == [("pending", 1, True)]  # in flight, under a lease
    # The lease (30 s) would let the row be taken again; it is moved back here rather than waited for.
    db_rows(alone, "UPDATE deliveries SET leased_until = now(), next_attempt_at = now() RETURNING id")
    try:
        alone(**FAST)
        wait_for(lambda: db_rows(alone, query, endpoint["id"])[0][0] == "succeeded")
        assert db_rows(alone, query, endpoint["id"]) == [("succeeded", 2, None)]
        ((headers, body, _),) = receiver.received  # the killed attempt was never answered
        assert len(receiver.arrived) == 2
        assert Webhook(endpoint["secret"]).verify(body, headers)["type"] == "deposit.completed"
    finally:
        receiver.close()
    assert_audit_ok(alone.database_url)


def test_nothing_is_sent_to_an_open_breaker_until_a_retry_asks_for_it(alone):
    server = alone(**FAST, WEBHOOK_BREAKER_FAILURES="1", WEBHOOK_BREAKER_COOLDOWN_MS="600000")
    receiver = Receiver(answers=(503,))
    try:
        user = make_user(server)
        endpoint = register(server, user, receiver.url, events=["deposit.completed"])
        fund(server, user, "1.00")
        receiver.wait_for(1)
        fund(server, user, "2.00")  # due at once, and its endpoint's breaker is open for 10 minutes
        query = "SELECT d.id, d.attempts FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.endpoint_id = %s"
        wait_for(lambda: len(db_rows(alone, query, endpoint["id"])) == 2)
        time.sleep(1)  # twenty polls of the dispatcher: none of them may pick it
        (first, _), (_, attempts) = db_rows(alone, query + " ORDER BY e.id", endpoint["id"])
        assert attempts == 0 and len(receiver.arrived) == 1
        with server.client(user.token) as client:
            paused_until = client.get(f"/webhook-endpoints/{endpoint['id']}").json()["paused_until"]
        assert 590 < (dt.datetime.fromisoformat(paused_until) - dt.datetime.now(dt.UTC)).total_seconds() <= 600
        receiver.answers = [200]
        started = time.monotonic()
        with server.client(user.token) as client:
            r = client.post(f"/webhook-endpoints/{endpoint['id']}/deliveries/{first}/retry")
        assert r.status_code == 202, r.text
        # The retry is the probe, sent at once; its success closes the breaker and the waiting one follows.
        wait_for(lambda: db_rows(alone, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'") == [(2,)])
        assert time.monotonic() - started < 5
        assert len(receiver.arrived) == 3
        with server.client(user.token) as client:
            assert client.get(f"/webhook-endpoints/{endpoint['id']}").json()["paused_until"] is None
    finally:
        receiver.close()
