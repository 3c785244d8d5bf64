"""`make bench`'s driver (bench/run.py): a short real run of the new scenarios against this tree and HEAD in a
temporary worktree, and the plan, the verdict and the old/new ratios it prints."""

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from bench.run import ROOT, Step, passed, plan, ratios
from bench.run import table as render
from bench.world import Row


@pytest.mark.bench
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (make bench installs it, and pgbouncer)")
@pytest.mark.slow
def test_a_short_bench_against_head_checks_every_money_scenario_and_removes_its_worktree():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}  # 64 pgbench clients
    command = [sys.executable, "-m", "bench.run", "--seconds", "1", "--processes", "1", "--rate", "100"]
    command += ["--high-rate", "150", "--scenarios", "transfer,pooled,textbook,openloop,openloop-high,ceiling-open"]
    command += ["--against", "HEAD"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "[1/14] old run 1: setup" in out and "[14/14] new run 1: ceiling-open" in out  # one line a step
    old, new = out.split("\nold (HEAD = ")[1].split("\nnew (this tree):")
    for table in (old, new):
        assert "| transfer " in table and "| openloop " in table and "| pgbench (textbook) " in table
        assert "| openloop-high " in table and "150/s offered" in table
        assert "| pooled " in table and "x transfer" in table  # through PgBouncer, and its ratio to the direct row
        assert "x textbook" in table  # the transfer's ratio to the textbook ceiling
        assert "| RSS MiB at end |" in table
        # The same SQL offered at openloop's rate by pgbench -R, and the open-loop target beside its floor.
        assert "| pgbench (same SQL) open loop " in table and "100/s offered (pgbench -R)" in table
        assert "(the same SQL alone at that rate: " in table
    assert "open-loop p99 at 150/s " in out  # issue 25's second open-loop target
    assert "transfer, 1 proc: req/s " in out and "openloop, 1 proc: req/s " in out  # new / old
    checks = out.split("checks:\n")[1].splitlines()
    assert len(checks) == 14 and all(passed(c) for c in checks), checks  # 6 scenarios and the audit, each side
    assert sum("COMPLETED" in c and "PENDING left 0" in c for c in checks) == 12
    assert (
        "wallet-bench-against"
        not in subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    )


def test_the_plan_interleaves_the_sides_run_by_run():
    args = argparse.Namespace(repeat=2, processes=[1, 2], scenarios=["read", "transfer", "textbook"], seconds=15)
    steps = plan(args, ["old", "new"])
    assert [(s.side, s.run) for s in steps if s.scenario == "setup"] == [("old", 1), ("new", 1), ("old", 2), ("new", 2)]
    assert steps[:6] == [
        Step("old", 1, None, "setup", 10),
        Step("old", 1, 1, "transfer", 15),  # in the bench's order, not the option's
        Step("old", 1, 1, "read", 10),  # reads last 10 s at most
        Step("old", 1, 2, "transfer", 15),
        Step("old", 1, 2, "read", 10),
        Step("old", 1, None, "textbook", 15),
    ]


def test_a_check_passes_only_when_it_says_ok_and_the_audit_only_on_exit_0():
    assert passed("p1transfer: COMPLETED 5 = 201 answers 5 (...; PENDING left 0) OK")
    assert not passed("p1transfer: COMPLETED 5 = 201 answers 6 (...; PENDING left 0) FAILED")
    assert passed("new run 1: server.py audit: exit 0: ledger audit: OK")
    assert not passed("new run 1: server.py audit: exit 1: ledger audit: FAILED")


def test_the_ratios_compare_the_means_of_the_runs():
    def row(scenario: str, processes: str, rps: float, p99: float) -> Row:
        return Row(scenario, processes, 64, rps, 1.0, p99, p99, {})

    old = [[row("transfer", "1", 100, 400)], [row("transfer", "1", 300, 600)]]
    new = [[row("transfer", "1", 400, 100), row("pgbench (textbook)", "-", 900, 90)]]
    assert ratios(old, new) == [
        "transfer, 1 proc: req/s 2.00x (old 100 300 -> new 400); p99 0.20x (old 400.0 600.0 -> new 100.0 ms)"
    ]


def test_the_table_shows_each_server_process_rss_at_the_scenario_end():
    rows = [
        Row("transfer", "2", 64, 700, 80.0, 200.0, 300.0, {"201": 10}, rss=[30.4, 81.0, 79.6]),
        Row("pgbench (textbook)", "-", 64, 1400, 40.0, 110.0, 390.0, {"transfers": 20}),
    ]
    header, _, transfer, pgbench = render(rows).splitlines()
    column = [cell.strip() for cell in header.split("|")].index("RSS MiB at end")
    assert [cell.strip() for cell in transfer.split("|")][column] == "30 / 81 / 80"  # the supervisor, then each worker
    assert [cell.strip() for cell in pgbench.split("|")][column] == ""
