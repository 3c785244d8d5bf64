"""`make bench`'s soak (bench/soak.py): a short real soak and the verdicts its report gives."""

import os
import shutil
import subprocess
import sys

import pytest

from bench.soak import TABLES, Sample, dead_tuple_targets, rss_target
from bench.world import ROOT


@pytest.mark.bench
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (make bench installs it, and pgbouncer)")
@pytest.mark.slow
def test_a_short_soak_samples_the_server_and_checks_every_transfer_event_and_webhook():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}  # its own PostgreSQL
    command = [sys.executable, "-m", "bench.run", "--soak", "10", "--soak-interval", "1", "--connections", "16"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "[soak 0/10 s] " in out and "RSS MiB " in out  # the progress line
    assert "1 server of 2 process(es)" in out and "warm-up: the first 20% of the time" in out
    targets, checks = out.split("targets:\n")[1].split("checks:\n")
    assert "RSS after warm-up (at " in targets and "supervisor " in targets and "worker 2 " in targets
    assert [line.split(":")[0] for line in targets.splitlines()[1:]] == list(TABLES)  # a line per table
    checks = checks.splitlines()
    assert len(checks) == 6, checks
    assert checks[0].startswith("PostgreSQL: autovacuum on,") and checks[0].endswith(" OK")
    assert "COMPLETED" in checks[1] and "PENDING left 0" in checks[1] and checks[1].endswith(" OK")
    assert checks[2].startswith("reads: ") and checks[3].startswith("webhooks: ") and checks[4].startswith("streams: ")
    assert (
        "(0 missing; " in checks[3]
        and " 0 of them more often than attempted; 0 unknown ids, 0 bad signatures" in checks[3]
    )
    assert all(check.endswith(" OK") for check in checks[1:5]) and "audit: exit 0" in checks[5]


def _samples(rss: list[list[float]], ratios: list[float], autovacuums: list[int]) -> list[Sample]:
    """A sample every 10 s of 100 s: each table with these dead-tuple ratios (of 1,000 tuples) and autovacuum counts."""
    return [
        Sample(
            10.0 * n,
            sizes,
            {t: (round(1000 * (1 - ratio)), round(1000 * ratio), runs, 0) for t in TABLES},
            0,
        )
        for n, (sizes, ratio, runs) in enumerate(zip(rss, ratios, autovacuums, strict=True))
    ]


def test_rss_is_flat_when_the_end_is_within_ten_percent_of_the_size_after_warm_up():
    ratios, runs = [0.0] * 11, [0] * 11
    flat = _samples([[30, 100, 100]] * 2 + [[30, 110, 120]] * 8 + [[30, 120, 125]], ratios, runs)
    assert rss_target(flat, 100) == (
        "RSS after warm-up (at 20 s) -> end (at 100 s): supervisor 30 -> 30 MiB (+0.0%); worker 1 110 -> 120 MiB"
        " (+9.1%); worker 2 120 -> 125 MiB (+4.2%); within 10% met"
    )
    growing = _samples([[100 + 5 * n] for n in range(11)], ratios, runs)
    assert rss_target(growing, 100).endswith("server 110 -> 150 MiB (+36.4%); within 10% MISSED")


def test_dead_tuples_are_bounded_when_autovacuum_brings_the_ratio_down_again():
    rss = [[100.0]] * 11
    sawtooth = _samples(rss, [0.1, 0.3, 0.5, 0.1, 0.3, 0.5, 0.1, 0.3, 0.5, 0.1, 0.3], [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    line = dead_tuple_targets(sawtooth, 100)[0]
    assert line.startswith("transactions: dead-tuple ratio max 50.0% (at 20 s), end 30.0% (300 dead / 700 live);")
    assert line.endswith(
        "mean 30.0% from warm-up to half-time, 30.0% after, 2 autovacuums after half-time: bounded met"
    )
    climbing = _samples(rss, [n / 20 for n in range(11)], [0] * 11)  # autovacuum never runs
    assert dead_tuple_targets(climbing, 100)[0].endswith("0 autovacuums after half-time: bounded MISSED")
    quiet = _samples(rss, [0.01] * 11, [0] * 11)  # too few dead tuples for autovacuum to start
    assert dead_tuple_targets(quiet, 100)[0].endswith("bounded met")
