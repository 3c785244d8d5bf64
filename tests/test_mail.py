"""E-mail through a real local SMTP server (aiosmtpd), one that refuses, one that hangs, and into var/mail/."""

import email
import email.policy
import socket
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from aiosmtpd.controller import Controller
from conftest import fund, make_admin, make_user, unique_name, wait_for

from scripts.local_services import free_port, libpq_url

FAST = {"EVENTS_POLL_MS": "50", "WEBHOOK_FIRST_RETRY_MS": "100", "MAIL_FROM": "Wallet <wallet@example.com>"}


class Inbox:
    """aiosmtpd handler: keeps every message, or refuses recipients with `refuse`."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.messages = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"


@pytest.fixture
def smtp():
    """Factory: a real SMTP server on a free loopback port with this handler; stopped after the test."""
    controllers = []

    def start(inbox):
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return f"smtp://127.0.0.1:{controller.port}"

    yield start
    for controller in controllers:
        controller.stop()


def deliveries(alone, user_id):
    with psycopg2.connect(libpq_url(alone.database_url)) as db, db.cursor() as cur:
        cur.execute(
            "SELECT e.type, d.status, d.attempts, d.last_status_code, d.last_error FROM deliveries d "
            "JOIN events e ON e.id = d.event_id WHERE d.channel = 'email' AND e.user_id = %s ORDER BY d.event_id",
            (user_id,),
        )
        return cur.fetchall()


def event_ids(server, user, type_):
    with server.client(user.token) as client:
        return [e["id"] for e in client.get("/events").json()["items"] if e["type"] == type_]


def test_mails_for_money_received_and_status_changes(alone, smtp):
    inbox = Inbox()
    server = alone(**FAST, SMTP_URL=smtp(inbox))
    nomail = make_user(server)
    address = f"{unique_name('bob')}@example.com"
    bob = make_user(server, email=address)
    admin = make_admin(server, alone.database_url)
    fund(server, nomail, "1300.00")
    with server.client(nomail.token) as client:
        r = client.post(
            "/transfers",
            json={
                "from_wallet_id": nomail.wallet_id,
                "to_wallet_id": bob.wallet_id,
                "amount": "1234.50",
                "description": "rent <march>",
            },
        )
        assert r.status_code == 201, r.text
    with server.client(admin.token) as client:
        for action in ("freeze", "unfreeze"):
            assert client.post(f"/admin/users/{bob.id}/{action}").status_code == 200
    wait_for(lambda: len(inbox.messages) >= 3)
    time.sleep(0.3)
    assert len(inbox.messages) == 3  # the user without an e-mail got none
    received, frozen, unfrozen = sorted(inbox.messages, key=lambda m: int(m["Message-ID"].split("-")[1].split("@")[0]))
    assert received["To"] == address
    assert received["From"] == "Wallet <wallet@example.com>"
    assert received["Subject"] == "You received 1,234.50 USD"
    (event_id,) = event_ids(server, bob, "transfer.received")
    assert received["Message-ID"] == f"<event-{event_id}@example.com>"
    text = received.get_body(("plain",)).get_content()
    page = received.get_body(("html",)).get_content()
    assert nomail.username in text and "1,234.50 USD" in text and "rent <march>" in text
    assert "rent &lt;march&gt;" in page and "<march>" not in page
    assert frozen["Subject"] == "Your account is frozen" and unfrozen["Subject"] == "Your account is active again"
    assert all(status == "succeeded" for _, status, *_ in deliveries(alone, bob.id))


def test_a_refusing_server_fails_the_mail_for_good(alone, smtp):
    inbox = Inbox(refuse="550 5.1.1 No such mailbox")
    server = alone(**FAST, SMTP_URL=smtp(inbox))
    user = make_user(server, email=f"{unique_name()}@example.com")
    fund(server, user, "1.00")
    wait_for(lambda: deliveries(alone, user.id) and deliveries(alone, user.id)[0][1] != "pending")
    ((kind, status, attempts, code, error),) = deliveries(alone, user.id)
    assert (kind, status, attempts, code) == ("deposit.completed", "failed", 1, 550)
    assert "No such mailbox" in error
    assert inbox.messages == []


def test_a_hanging_server_times_out_without_slowing_anything_else(alone):
    """A server that accepts and never answers: the send gives up after its timeout (10 s) and is retried later;
    meanwhile the API answers as usual."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    try:
        server = alone(**FAST, SMTP_URL=f"smtp://127.0.0.1:{listener.getsockname()[1]}")
        user = make_user(server, email=f"{unique_name()}@example.com")
        fund(server, user, "1.00")
        wait_for(lambda: held)
        started = time.monotonic()
        with server.client(user.token) as client:
            assert client.get(f"/wallets/{user.wallet_id}/balance").json()["balance"] == "1.00"
        assert time.monotonic() - started < 2
        wait_for(lambda: deliveries(alone, user.id)[0][4] is not None, timeout=20)
        ((_, status, attempts, code, error),) = deliveries(alone, user.id)
        assert status == "pending" and attempts >= 1 and code is None  # to be retried (a slow machine: tried twice)
        assert "Timeout" in error
    finally:
        listener.close()
        for conn, _ in held:
            conn.close()


def test_without_smtp_mails_are_written_as_eml_files(alone, tmp_path):
    server = alone(**FAST, VAR_DIR=str(tmp_path))
    user = make_user(server, email=f"{unique_name()}@example.com")
    fund(server, user, "7.25")
    (event_id,) = event_ids(server, user, "deposit.completed")
    path = Path(tmp_path) / "mail" / f"event-{event_id}.eml"
    wait_for(path.exists)
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "7.25 USD was deposited"
    assert message["Message-ID"] == f"<event-{event_id}@example.com>"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
