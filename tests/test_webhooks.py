"""Webhooks to a real local HTTP receiver that verifies Standard Webhooks signatures with the reference library."""

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import pytest
from conftest import assert_audit_ok, assert_error, fund, make_user, wait_for
from standardwebhooks import Webhook

from scripts.local_services import libpq_url

FAST = {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_FIRST_RETRY_MS": "100", "EVENTS_POLL_MS": "50"}


class Receiver:
    """An HTTP server on a free loopback port recording every POST; `answers` are the statuses to give in turn
    (the last one repeats), each after `delay` seconds. `arrived` has each request's arrival (time.time(), to compare
    with the database's timestamps); `most` the most requests it was answering at once, by path and ("") in all."""

    def __init__(self, answers=(200,), delay=0.0):
        self.answers = list(answers)
        self.delay = delay
        self.received = []
        self.arrived = []
        self.most = Counter()
        flying = Counter()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with lock:
                    receiver.arrived.append(time.time())
                    for key in (self.path, ""):
                        flying[key] += 1
                        receiver.most[key] = max(receiver.most[key], flying[key])
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                with lock:
                    status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                    receiver.received.append((dict(self.headers), body.decode(), status))
                    for key in (self.path, ""):
                        flying[key] -= 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, self.received
        return self.received

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks(alone):
    """A server on a database of its own: on the shared one, other tests' servers (which refuse loopback URLs)
    would claim these deliveries too."""
    return alone(**FAST)


def register(server, user, url, events=("*",), status=201):
    with server.client(user.token) as client:
        r = client.post("/webhook-endpoints", json={"url": url, "events": list(events)})
    assert r.status_code == status, r.text
    return r.json()


def deliveries(server, user, endpoint):
    with server.client(user.token) as client:
        r = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_an_event_is_posted_signed_as_standard_webhooks_says(hooks, receiver):
    user = make_user(hooks)
    endpoint = register(hooks, user, receiver.url, events=["deposit.completed"])
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "active"
    with hooks.client(user.token) as client:
        assert "secret" not in client.get(f"/webhook-endpoints/{endpoint['id']}").json()
        assert [e["id"] for e in client.get("/webhook-endpoints").json()["items"]] == [endpoint["id"]]
    fund(hooks, user, "4.00")  # writes transaction.completed too, which this endpoint does not take
    ((headers, body, _),) = receiver.wait_for(1)
    event = Webhook(endpoint["secret"]).verify(body, headers)
    with hooks.client(user.token) as client:
        stored = client.get("/events").json()["items"]
    assert event == next(e for e in stored if e["type"] == "deposit.completed")
    assert headers["webhook-id"] == str(event["id"])
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    wait_for(lambda: deliveries(hooks, user, endpoint)[0]["status"] == "succeeded")
    (delivery,) = deliveries(hooks, user, endpoint)
    assert delivery["event_id"] == event["id"] and delivery["event_type"] == "deposit.completed"
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    time.sleep(0.3)
    assert len(receiver.received) == 1


def endpoint_row(server, endpoint):
    """The endpoint's row version (xmin: a new one at every UPDATE that wrote it) and its failure count."""
    with psycopg2.connect(libpq_url(server.env["DATABASE_URL"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT xmin::text, consecutive_failures FROM webhook_endpoints WHERE id = %s", (endpoint["id"],))
        return cur.fetchone()


def test_a_healthy_endpoint_s_row_is_not_written_by_each_delivery(hooks, receiver):
    user = make_user(hooks)
    endpoint = register(hooks, user, receiver.url, events=["deposit.completed"])
    before = endpoint_row(hooks, endpoint)
    for _ in range(3):
        fund(hooks, user, "1.00")
    receiver.wait_for(3)
    wait_for(lambda: [d["status"] for d in deliveries(hooks, user, endpoint)] == ["succeeded"] * 3)
    assert endpoint_row(hooks, endpoint) == before


def test_a_receiver_failing_three_times_gets_the_fourth_with_backoff(hooks):
    receiver = Receiver(answers=(500, 503, 404, 204))
    try:
        user = make_user(hooks)
        endpoint = register(hooks, user, receiver.url, events=["deposit.completed"])
        fund(hooks, user, "1.00")
        received = receiver.wait_for(4)
        wait_for(lambda: deliveries(hooks, user, endpoint)[0]["status"] == "succeeded")
        assert [status for _, _, status in received] == [500, 503, 404, 204]
        assert len({h["webhook-id"] for h, _, _ in received}) == 1  # the same event each time
        stamps = [int(h["webhook-timestamp"]) for h, _, _ in received]
        assert stamps == sorted(stamps)
        (delivery,) = deliveries(hooks, user, endpoint)
        assert delivery["attempts"] == 4 and delivery["last_status_code"] == 204
        assert endpoint_row(hooks, endpoint)[1] == 0  # the success reset the failures the breaker counts
    finally:
        receiver.close()


def test_after_the_retry_period_the_endpoint_is_failing_until_a_redelivery_succeeds(alone):
    server = alone(**FAST, WEBHOOK_RETRY_FOR="1")
    receiver = Receiver(answers=(500,))
    try:
        user = make_user(server)
        endpoint = register(server, user, receiver.url, events=["deposit.completed"])
        fund(server, user, "1.00")
        wait_for(lambda: deliveries(server, user, endpoint)[0]["status"] == "failed")
        (failed,) = deliveries(server, user, endpoint)
        assert failed["attempts"] >= 1 and failed["last_status_code"] == 500 and failed["next_attempt_at"] is None
        with server.client(user.token) as client:
            assert client.get(f"/webhook-endpoints/{endpoint['id']}").json()["status"] == "failing"
            fund(server, user, "1.00")  # a failing endpoint is sent nothing new
            receiver.answers = [200]
            r = client.post(f"/webhook-endpoints/{endpoint['id']}/deliveries/{failed['id']}/retry")
            assert r.status_code == 202, r.text
            wait_for(lambda: deliveries(server, user, endpoint)[0]["status"] == "succeeded")
            assert client.get(f"/webhook-endpoints/{endpoint['id']}").json()["status"] == "active"
        assert len(deliveries(server, user, endpoint)) == 1
    finally:
        receiver.close()


def test_a_rotated_secret_signs_beside_the_old_one_during_the_grace_period(hooks, receiver):
    user = make_user(hooks)
    endpoint = register(hooks, user, receiver.url, events=["deposit.completed"])
    with hooks.client(user.token) as client:
        rotated = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_seconds": 60}).json()
    assert rotated["secret"] != endpoint["secret"]
    fund(hooks, user, "1.00")
    ((headers, body, _),) = receiver.wait_for(1)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], rotated["secret"]):
        Webhook(secret).verify(body, headers)
    with hooks.client(user.token) as client:
        again = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret", json={}).json()
    fund(hooks, user, "1.00")
    headers, body, _ = receiver.wait_for(2)[1]
    Webhook(again["secret"]).verify(body, headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(rotated["secret"]).verify(body, headers)


def test_two_processes_deliver_each_event_once(alone, receiver):
    first, second = alone(**FAST), alone(**FAST)
    users = [make_user(first) for _ in range(4)]
    for u in users:
        register(first, u, receiver.url, events=["deposit.completed"])

    def deposit(i):
        for _ in range(10):
            fund(first if i % 2 else second, users[i], "0.10")

    threads = [threading.Thread(target=deposit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    receiver.wait_for(40)
    time.sleep(1)  # anything sent twice would arrive by now
    assert Counter(h["webhook-id"] for h, _, _ in receiver.received) == {
        h["webhook-id"]: 1 for h, _, _ in receiver.received
    }
    assert len(receiver.received) == 40
    assert_audit_ok(alone.database_url)


@pytest.mark.slow
def test_a_server_killed_between_commit_and_delivery_delivers_after_restart(alone, receiver):
    # A dispatcher that polls rarely has not picked the delivery up when it is killed right after the commit.
    doomed = alone(**{**FAST, "EVENTS_POLL_MS": "60000"})
    user = make_user(doomed)
    endpoint = register(doomed, user, receiver.url, events=["deposit.completed"])
    fund(doomed, user, "1.00")
    doomed.kill()
    assert receiver.received == []
    with psycopg2.connect(libpq_url(alone.database_url)) as db, db.cursor() as cur:
        cur.execute("SELECT status FROM deliveries WHERE endpoint_id = %s", (endpoint["id"],))
        assert cur.fetchall() == [("pending",)]
    alone(**FAST)
    ((headers, body, _),) = receiver.wait_for(1)
    assert Webhook(endpoint["secret"]).verify(body, headers)["type"] == "deposit.completed"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",  # loopback (and plain http)
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "https://[::ffff:127.0.0.1]/hook",
        # IPv6 forms that carry an IPv4 address inside: each reaches 127.0.0.1 where it is translated or tunnelled.
        "https://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated)
        "https://[::ffff:0:7f00:1]/hook",  # IPv4-translated (SIIT)
        "https://[64:ff9b::7f00:1]/hook",  # NAT64, the well-known prefix
        "https://[64:ff9b:1::7f00:1]/hook",  # NAT64, the local-use prefix
        "https://[2002:7f00:1::]/hook",  # 6to4
        "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo (the client 127.0.0.1, obfuscated)
        "https://0.0.0.0/hook",
        "https://user:pass@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ],
)
def test_urls_that_could_reach_inside_are_refused(server, user, url):
    """The default server (WEBHOOK_ALLOW_PRIVATE unset) refuses them at registration."""
    with server.client(user.token) as client:
        body = assert_error(
            client.post("/webhook-endpoints", json={"url": url, "events": ["*"]}), 400, "VALIDATION_ERROR"
        )
    assert "url" in body["details"]


def test_a_public_ipv4_address_inside_ipv6_is_judged_by_that_address(server, user):
    """A NAT64 or 6to4 form of a public IPv4 address is public too (an IPv6-only network reaches IPv4 hosts so)."""
    with server.client(user.token) as client:
        for url in ("https://[64:ff9b::808:808]/hook", "https://[2002:808:808::1]/hook"):
            r = client.post("/webhook-endpoints", json={"url": url, "events": ["transfer.received"]})
            assert r.status_code == 201, r.text
            assert client.delete(f"/webhook-endpoints/{r.json()['id']}").status_code == 204


def test_an_address_that_turned_private_after_registration_is_not_called(alone, receiver):
    """DNS rebinding: the check runs again at delivery time, against what the host resolves to then. An endpoint
    whose host now resolves to loopback is planted directly, as if its DNS had changed since registration."""
    server = alone(**{**FAST, "WEBHOOK_ALLOW_PRIVATE": "false"})
    user = make_user(server)
    with psycopg2.connect(libpq_url(alone.database_url)) as db, db.cursor() as cur:
        cur.execute(
            "INSERT INTO webhook_endpoints (id, user_id, url, event_types, secret) "
            "VALUES (gen_random_uuid(), %s, %s, ARRAY['*'], %s) RETURNING id",
            (user.id, receiver.url.replace("http://", "https://"), "whsec_" + "A" * 32),
        )
        planted = {"id": str(cur.fetchone()[0])}
    fund(server, user, "1.00")
    # An attempt counts from its claim; its outcome is written when it ends: wait for that.
    wait_for(lambda: deliveries(server, user, planted) and deliveries(server, user, planted)[0]["last_error"])
    attempt = deliveries(server, user, planted)[0]
    assert attempt["status"] == "pending" and attempt["last_status_code"] is None
    assert "non-public" in attempt["last_error"]
    assert receiver.received == []


def test_endpoint_input_and_ownership(hooks, receiver):
    owner, other = make_user(hooks), make_user(hooks)
    endpoint = register(hooks, owner, receiver.url)
    with hooks.client(other.token) as client:
        for method, path in [
            ("GET", f"/webhook-endpoints/{endpoint['id']}"),
            ("DELETE", f"/webhook-endpoints/{endpoint['id']}"),
            ("POST", f"/webhook-endpoints/{endpoint['id']}/rotate-secret"),
            ("GET", f"/webhook-endpoints/{endpoint['id']}/deliveries"),
        ]:
            assert_error(client.request(method, path, json={} if method == "POST" else None), 404, "NOT_FOUND")
    with hooks.client(owner.token) as client:
        for bad in (
            {"url": receiver.url, "events": []},
            {"url": receiver.url, "events": ["nope"]},
            {"url": receiver.url},
        ):
            assert_error(client.post("/webhook-endpoints", json=bad), 400, "VALIDATION_ERROR")
        r = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_seconds": 86401})
        assert_error(r, 400, "VALIDATION_ERROR")
        for _ in range(9):
            register(hooks, owner, receiver.url)
        assert_error(
            client.post("/webhook-endpoints", json={"url": receiver.url, "events": ["*"]}), 409, "LIMIT_REACHED"
        )
        assert client.delete(f"/webhook-endpoints/{endpoint['id']}").status_code == 204
        assert_error(client.get(f"/webhook-endpoints/{endpoint['id']}"), 404, "NOT_FOUND")
