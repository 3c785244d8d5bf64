"""The server beyond one database endpoint: behind PgBouncer in transaction mode (DB_POOLER=transaction; Debian's
pgbouncer 1.18, no protocol-level prepared statements, in front of the test's PostgreSQL on a port of its own, stopped
by its PID), and on a multi-host DATABASE_URL through a dead host and a leader that turns read-only."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from conftest import PASSWORD, assert_audit_ok, balance, free_port, fund, in_parallel, make_user, unique_name, wait_for
from sqlalchemy.engine import make_url
from test_cli import query
from test_cluster import CLUSTER_JOBS, SWEEPING, led_by
from test_durability import definite
from test_event_stream import connect, pay, receive

from scripts.local_services import PGBOUNCER, PgBouncer, fresh_database, libpq_url, postgres_server
from wallet.platform.db import migrate
from wallet.platform.membership import HEARTBEAT

needs_pgbouncer = pytest.mark.skipif(
    not PGBOUNCER, reason="needs Debian's pgbouncer (apt-get install -y pgbouncer; .ci/run installs it)"
)
TRANSFERS = 200
# The session settings the server cannot send through the pooler (docs/operations.md#pgbouncer), given to each
# server connection pgbouncer opens.
SESSION_SETTINGS = "SET statement_timeout = 1000; SET client_connection_check_interval = 500"


@pytest.fixture
def pooled(postgres_server_url: str, template_database: str) -> Iterator[tuple[str, PgBouncer]]:
    """A database of this test's own (its URL), and a pgbouncer in front of it."""
    home = Path(tempfile.mkdtemp(prefix="wallet-pgbouncer-"))
    with fresh_database(postgres_server_url, template=template_database) as url:
        bouncer = PgBouncer(home, url, SESSION_SETTINGS)
        try:
            yield url, bouncer
        finally:
            bouncer.stop()
    shutil.rmtree(home, ignore_errors=True)


@needs_pgbouncer
def test_a_pooler_whose_sessions_have_no_statement_timeout_is_named_at_start(own_server, database_url):
    """The server cannot send statement_timeout through the pooler: when the pooler's sessions carry none, start-up
    says so (the driver still gives up a second after DB_STATEMENT_TIMEOUT)."""
    home = Path(tempfile.mkdtemp(prefix="wallet-pgbouncer-"))
    bare = PgBouncer(home, database_url, settings="")
    try:
        server = own_server(DATABASE_URL=bare.url, DB_POOLER="transaction", MIGRATE_ON_START="false")
        warned = [e["msg"] for e in server.log_entries() if "statement_timeout" in e["msg"]]
        assert len(warned) == 1 and "DB_POOLER" in warned[0], warned
        server.stop()
    finally:
        bare.stop()
        shutil.rmtree(home, ignore_errors=True)


@needs_pgbouncer
def test_money_moves_through_pgbouncer_in_transaction_mode(own_server, pooled):
    """200 concurrent keyed transfers through the pooler: each answers 201, or 503 with Retry-After when the machine
    is too busy to give it a connection in time (then its retry with the same key completes it), never a 500; each
    moves the money once, the books balance; the event stream (which polls, see docs/events.md) still pushes what
    happened."""
    database_url, bouncer = pooled
    server = own_server(
        DATABASE_URL=bouncer.url, DB_POOLER="transaction", MIGRATE_ON_START="false", EVENTS_POLL_MS="50"
    )
    assert not [e for e in server.log_entries() if "statement_timeout" in e["msg"]]  # the pooler gives it
    senders = [make_user(server) for _ in range(20)]
    for sender in senders:
        fund(server, sender, "100.00")
    recipient = make_user(server)

    def transfer(i: int) -> int:
        sender = senders[i % len(senders)]
        with server.client(sender.token) as client:
            body = {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "1.00"}
            send = lambda: client.post("/transfers", json=body, headers={"Idempotency-Key": f"pooled-{i}"})  # noqa: E731
            return definite(send).status_code

    statuses = Counter(in_parallel(TRANSFERS, transfer))
    assert statuses == {201: TRANSFERS}, statuses
    assert balance(server, recipient) == f"{TRANSFERS}.00"

    async def streamed() -> dict:
        conn = await connect(server, recipient.token, after=0)
        events = await receive(conn, TRANSFERS)  # replayed
        await asyncio.to_thread(pay, server, senders[0], recipient, "0.50")
        (live,) = await receive(conn, 1)
        conn.close()
        return {"replayed": len(events), "live": live["type"]}

    assert asyncio.run(streamed()) == {"replayed": TRANSFERS, "live": "transfer.received"}
    assert_audit_ok(database_url)


@needs_pgbouncer
def test_through_the_pooler_the_jobs_are_led_once_on_sessions_around_it(own_server, pooled):
    """Two servers on the pooler: with DATABASE_SESSION_URL their leader locks live on sessions of their own, and each
    job is led by one process of the two; without it, each process runs every job and says so at start."""
    database_url, bouncer = pooled
    pooler = {"DATABASE_URL": bouncer.url, "DB_POOLER": "transaction", "MIGRATE_ON_START": "false", **SWEEPING}
    servers = [own_server(**pooler, DATABASE_SESSION_URL=database_url) for _ in range(2)]
    assert wait_for(lambda: led_by(servers) == dict.fromkeys(CLUSTER_JOBS, 1), 10)
    assert not [e for s in servers for e in s.log_entries() if "none leads them" in e["msg"]]
    alone = own_server(**pooler)
    assert [e["msg"] for e in alone.log_entries() if "DATABASE_SESSION_URL" in e["msg"]], alone.log_path


@needs_pgbouncer
def test_a_lock_wait_past_the_statement_timeout_answers_503_through_the_pooler(own_server, pooled):
    """The statement timeout still holds through the pooler: a transfer whose wallet another transaction holds
    answers 503 with Retry-After within seconds; once the lock goes, the same key completes it, once."""
    database_url, bouncer = pooled
    server = own_server(
        DATABASE_URL=bouncer.url, DB_POOLER="transaction", MIGRATE_ON_START="false", DB_STATEMENT_TIMEOUT="1"
    )
    sender, recipient = make_user(server), make_user(server)
    fund(server, sender, "10.00")
    blocker = psycopg2.connect(libpq_url(database_url))
    blocker.cursor().execute("SELECT 1 FROM wallets WHERE id = %s FOR NO KEY UPDATE", (sender.wallet_id,))
    body = {"from_wallet_id": sender.wallet_id, "to_wallet_id": recipient.wallet_id, "amount": "2.00"}
    with server.client(sender.token) as client:
        send = lambda: client.post("/transfers", json=body, headers={"Idempotency-Key": "held"})  # noqa: E731
        started = time.monotonic()
        held = send()
        assert (held.status_code, held.headers.get("Retry-After")) == (503, "1"), held.text
        assert time.monotonic() - started < 4
        blocker.rollback()
        blocker.close()
        assert definite(send).status_code == 201
    assert (balance(server, sender), balance(server, recipient)) == ("8.00", "2.00")
    assert_audit_ok(database_url)


@needs_pgbouncer
def test_a_pooler_that_dies_answers_503_until_it_is_back(own_server, pooled):
    """kill -9 of pgbouncer under keyed deposits, then started again on its port: meanwhile every answer is a
    success or a 503 with Retry-After, never a 500; service returns by itself, and every key deposits once or, when
    the pooler died under its execution, is given up as INTERRUPTED with nothing moved."""
    database_url, bouncer = pooled
    # An execution the kill cut short holds its key until PENDING_TIMEOUT: then a retry settles it.
    server = own_server(
        DATABASE_URL=bouncer.url, DB_POOLER="transaction", MIGRATE_ON_START="false", PENDING_TIMEOUT="2"
    )
    users = [make_user(server) for _ in range(4)]
    statuses, deposited, stop = Counter(), Counter(), threading.Event()

    def load(user):
        with server.client(user.token) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                headers = {"Idempotency-Key": f"{user.id}-{n}"}
                path = f"/wallets/{user.wallet_id}/deposit"
                r = definite(lambda: client.post(path, json={"amount": "1.00"}, headers=headers))  # noqa: B023
                statuses[r.status_code if r.status_code == 201 else r.json()["code"]] += 1
                deposited[user.id] += r.status_code == 201

    threads = [threading.Thread(target=load, args=(u,)) for u in users]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(deposited.values()) >= 20)
        bouncer.kill()
        down = sum(deposited.values())
        with server.client(users[0].token) as client:
            refused = client.get("/wallets")
        assert (refused.status_code, refused.headers.get("Retry-After")) == (503, "1"), refused.text
        bouncer.start()
        back = time.monotonic()
        wait_for(lambda: sum(deposited.values()) >= down + 20)
        recovered = time.monotonic() - back
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    # A deposit under way when the pooler died may be given up (nothing moved): its key answers that for good.
    assert set(statuses) <= {201, "INTERRUPTED"} and statuses[201] > 40, statuses
    assert recovered < 10, recovered
    for user in users:
        assert balance(server, user) == f"{deposited[user.id]}.00"
    assert_audit_ok(database_url)


def host_port(database_url: str) -> str:
    """Where a URL's server listens, as SQLAlchemy's multi-host form lists it: the embedded PostgreSQL's socket
    directory or the machine's address, then the port."""
    url = make_url(database_url)
    return f"{url.query.get('host') or url.host}:{url.port or 5432}"


def failover_url(first: str, database_url: str) -> str:
    """`database_url` behind libpq's failover list: the server of `first`, then its own; each new connection keeps
    the first that takes writes (target_session_attrs=read-write)."""
    hosts = (host_port(first), host_port(database_url))
    url = make_url(database_url).set(host=None, port=None, query={"host": hosts, "target_session_attrs": "read-write"})
    return url.render_as_string(hide_password=False)


def test_a_database_url_that_lists_a_dead_host_first_still_serves(own_server, database_url):
    """A multi-host DATABASE_URL (SQLAlchemy's form of libpq's) with target_session_attrs=read-write: the first host
    refuses connections, the second is the database; start-up, migrations and requests find it."""
    server = own_server(DATABASE_URL=failover_url(f"postgresql://nobody@127.0.0.1:{free_port()}/none", database_url))
    user = make_user(server)
    fund(server, user, "3.00")
    assert balance(server, user) == "3.00"


def test_a_leader_that_turns_read_only_answers_503_then_the_next_host_serves(
    own_server, postgres_server_url, template_database
):
    """A switch-over as the server sees it: the host it writes to turns read-only under its pooled connections (a
    demoted leader) and the next host takes writes. Meanwhile every answer is a 201 or a 503 with Retry-After, never
    a 500; the pool drops the connections to the old leader and registration works again within seconds."""
    with (
        fresh_database(postgres_server_url, template=template_database) as new,
        postgres_server(private=True) as old_server,
    ):
        # The old leader: a throwaway PostgreSQL with a database of the same name, deleted with it.
        admin = psycopg2.connect(libpq_url(old_server))
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {make_url(new).database}")
        old = make_url(libpq_url(old_server)).set(database=make_url(new).database).render_as_string(False)
        migrate(old)
        # A background write that meets the demoted host first has the pool dropped before the registration below
        # can meet it (a 201 with no 503 to see): here the dispatcher's lanes try one once a minute (EVENTS_POLL_MS)
        # and the sweeps once an hour, and the host is demoted just after a heartbeat, the next one HEARTBEAT seconds
        # away.
        slow = {"EVENTS_POLL_MS": "60000", "RECOVERY_INTERVAL": "3600", "SCHEDULE_INTERVAL": "3600"}
        server = own_server(DATABASE_URL=failover_url(old, new), DB_POOL_SIZE="4", **slow)

        def register(client, username=None):
            return client.post("/auth/register", json={"username": username or unique_name("ha"), "password": PASSWORD})

        with server.client() as client:
            assert in_parallel(8, lambda _: register(client).status_code) == [201] * 8  # fills the pool of 4
            beat = "SELECT now() - max(heartbeat_at) < interval '0.5 s' FROM instances"
            wait_for(lambda: query(old, beat), timeout=HEARTBEAT + 5)
            admin.cursor().execute("ALTER SYSTEM SET default_transaction_read_only = on")
            admin.cursor().execute("SELECT pg_reload_conf()")
            admin.close()
            answers = Counter()

            def on_new_leader():
                username = unique_name("ha")
                r = register(client, username)
                assert r.status_code == 201 or r.headers.get("Retry-After") == "1", r.text
                answers[r.status_code] += 1
                if r.status_code != 201:
                    return False
                with contextlib.closing(psycopg2.connect(libpq_url(new))) as conn, conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM users WHERE username = %s", (username,))
                    return cur.fetchone()[0] == 1  # not a backend of the old one that read the reload late

            started = time.monotonic()
            wait_for(on_new_leader, timeout=10)
            assert time.monotonic() - started < 5 and answers[503] >= 1, answers
