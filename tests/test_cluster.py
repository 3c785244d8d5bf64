"""Several servers on one database, as several hosts are: each periodic job runs once per cluster per interval, by
the process holding its advisory lock, and another takes it over when that one dies or stops; each instance
registers itself, and one with another JWT key refuses to join."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import psycopg2
import pytest
import test_paystack
from alembic.script import ScriptDirectory
from conftest import (
    JWT_SECRET,
    ROOT,
    Server,
    assert_audit_ok,
    assert_error,
    assert_one_line_naming,
    make_admin,
    make_user,
    wait_for,
)
from test_paystack import payer, paystack_env, started, verify_calls

from scripts.local_services import free_port, libpq_url
from wallet.platform.db import alembic_config

fake = test_paystack.fake  # the fake Paystack, a real local server (scripts/fake_paystack.py)

CLUSTER_JOBS = (
    "interrupted-transactions",
    "provider-deposits",
    "payout-verification",
    "hold-expiry",
    "payment-request-expiry",
    "scheduled-transfers",
)
# Deposits are verified by the sweep once PENDING over 2 s, every second (RECOVERY_INTERVAL), and never given up.
# Every led job laps each second (RECOVERY_INTERVAL is alone's 1 s), so a takeover shows within a couple.
LAPS = {"SCHEDULE_INTERVAL": "1"}
SWEEPING = {**LAPS, "PAYSTACK_PENDING_TIMEOUT": "600", "METRICS_TOKEN": (TOKEN := "scraper-" + "t" * 24)}


def leaders(server: Server) -> dict[str, int]:
    """How many of the server's processes lead each job, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    found = dict.fromkeys(CLUSTER_JOBS, 0)
    for job, value in re.findall(r'^wallet_job_leader\{[^}]*job="([^"]+)"[^}]*\} (\S+)$', text, re.M):
        found[job] += int(float(value))
    return found


def led_by(servers: list[Server]) -> dict[str, int]:
    """Per job, how many processes of the whole cluster lead it."""
    counts = [leaders(server) for server in servers]
    return {job: sum(count[job] for count in counts) for job in CLUSTER_JOBS}


def test_a_sweep_asks_paystack_once_per_interval_whatever_the_processes(alone, fake):
    """Two servers of two processes each: four sweeps before, one now (the fake counts the verifies)."""
    servers = [alone(**paystack_env(fake, PROCESSES="2", **SWEEPING)) for _ in range(2)]
    assert wait_for(lambda: led_by(servers) == dict.fromkeys(CLUSTER_JOBS, 1), 10)
    reference = started(servers[0], payer(servers[0]))["reference"]
    wait_for(lambda: verify_calls(fake, reference) >= 1)  # the sweep reached it
    before, began = verify_calls(fake, reference), time.monotonic()
    time.sleep(5)  # a rate: the calls over a window of five intervals
    calls, laps = verify_calls(fake, reference) - before, time.monotonic() - began
    # One sweep each interval (a lap is its run and then the interval), four processes would make about 20.
    assert 2 <= calls <= laps + 1, (calls, laps)
    assert led_by(servers) == dict.fromkeys(CLUSTER_JOBS, 1)
    assert_audit_ok(alone.database_url)


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_another_process_takes_the_jobs_over_when_the_leader_dies_or_stops(alone, fake, end):
    """kill -9 (its connection, and with it its locks, goes) or SIGTERM (it resigns at the end of its drain): the
    other server leads every job within a couple of intervals, and the sweep goes on."""
    servers = [alone(**paystack_env(fake, **SWEEPING)) for _ in range(2)]
    assert wait_for(lambda: led_by(servers) == dict.fromkeys(CLUSTER_JOBS, 1), 10)
    leader = next(server for server in servers if leaders(server)["provider-deposits"])
    other = next(server for server in servers if server is not leader)
    reference = started(other, payer(other))["reference"]
    wait_for(lambda: verify_calls(fake, reference) >= 1)
    getattr(leader, end)()
    ended = time.monotonic()
    assert wait_for(lambda: leaders(other) == dict.fromkeys(CLUSTER_JOBS, 1), 10)
    assert time.monotonic() - ended < 3  # RECOVERY_INTERVAL is 1 s
    before = verify_calls(fake, reference)
    wait_for(lambda: verify_calls(fake, reference) > before, 5)
    assert_audit_ok(alone.database_url)


def sql(database_url: str, statement: str) -> tuple | None:
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchone() if cursor.description else None
    finally:
        conn.close()


def instances(server: Server, token: str) -> list[dict]:
    with server.client(token) as client:
        r = client.get("/admin/instances")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_admins_see_the_live_instances_and_the_jobs_each_leads(alone):
    """Each server's row: its pid, release, the schema's revision, a fingerprint that is not the key, the jobs it
    leads (each job by one instance); a dead instance's row goes, and a stopped one removes its own."""
    first, second = alone(**LAPS), alone(**LAPS)
    admin = make_admin(first, alone.database_url)
    # A process killed an hour ago: never listed, and deleted by the next heartbeat.
    gone = (
        "INSERT INTO instances (id, host, pid, version, revision, schema_revision, key_fingerprint, started_at, "
        "heartbeat_at) VALUES (gen_random_uuid(), 'gone', 1, '0', '0', '0', '0', now() - interval '1 hour', "
        "now() - interval '1 hour')"
    )
    sql(alone.database_url, gone)

    def led() -> list[dict] | None:
        rows = instances(first, admin.token)
        jobs = sorted(job for row in rows for job in row["jobs"])
        return rows if jobs == sorted(CLUSTER_JOBS) else None

    rows = wait_for(led, 15)  # a heartbeat each 5 s says what its process leads
    (head,) = ScriptDirectory.from_config(alembic_config(alone.database_url)).get_heads()
    assert {row["pid"] for row in rows} == {first.proc.pid, second.proc.pid}
    health = httpx.get(f"{first.url}/health").json()
    for row in rows:
        assert (row["version"], row["revision"]) == (health["version"], health["revision"])
        assert row["schema_revision"] == head
        assert re.fullmatch(r"[0-9a-f]{16}", row["key_fingerprint"]) and JWT_SECRET not in row["key_fingerprint"]
        assert row["started_at"] <= row["heartbeat_at"]
    assert len({row["key_fingerprint"] for row in rows}) == 1
    wait_for(lambda: sql(alone.database_url, "SELECT count(*) FROM instances WHERE host = 'gone'") == (0,), 10)
    second.stop()
    assert [row["pid"] for row in instances(first, admin.token)] == [first.proc.pid]
    with first.client(make_user(first).token) as client:
        assert_error(client.get("/admin/instances"), 403, "FORBIDDEN")
    with first.client() as client:
        assert client.get("/admin/instances").status_code == 401


def test_an_instance_with_another_jwt_key_refuses_to_join(alone):
    """Another JWT_SECRET than the live instances' would reject their tokens: it exits 1 with one line."""
    first = alone()
    wait_for(lambda: instances(first, make_admin(first, alone.database_url).token))
    env = {**os.environ, **first.env, "JWT_SECRET": "another-" + "s" * 40, "PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert_one_line_naming(done, "JWT_SECRET")
