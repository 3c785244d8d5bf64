"""Several servers on one database, as several hosts are: each periodic job runs once per cluster per interval, by
the process holding its advisory lock, and another takes it over when that one dies or stops; each instance
registers itself, and one with another JWT key refuses to join."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import test_paystack
from conftest import Server, assert_audit_ok, wait_for
from test_paystack import payer, paystack_env, started, verify_calls

fake = test_paystack.fake  # the fake Paystack, a real local server (scripts/fake_paystack.py)

CLUSTER_JOBS = ("interrupted-transactions", "provider-deposits", "hold-expiry")
# Deposits are verified by the sweep once PENDING over 2 s, every second (RECOVERY_INTERVAL), and never given up.
SWEEPING = {"PAYSTACK_PENDING_TIMEOUT": "600", "METRICS_TOKEN": (TOKEN := "scraper-" + "t" * 24)}


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
