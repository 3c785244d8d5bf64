"""`make bench`: the wallet server under load on a fresh database, beside pgbench ceilings on the same database.

Prints one table (requests/s, p50/p99/max latency, CPU per request, answers by status) per scenario for 1 and 2
server processes, with the ceilings pgbench reaches on a transfer's own SQL and on a textbook transfer, then checks
that the COMPLETED transfers equal the 201 answers in every money scenario and that the ledger audit passes.
`--against REV` runs the same scenarios on another revision's server in the same session, interleaved, and prints
its table beside and the ratios; `--world large` runs the large world's scenarios on the small world and then on a
large one (bench/large.py), with each world's audit and sweep times and table sizes, and the ratios; `--profile`
instead profiles the transfer path with py-spy, and `--soak` runs one server under a long mixed load instead
(bench/soak.py).
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import large, profile, soak
from bench.load import BATCH_ITEMS, TIMEOUT, count_check, openloop, replay, report, to_row, wrk
from bench.pgbench import OPEN_LOOP, SCRIPTS, pgbench
from bench.world import ACCESS_TOKEN_TTL, ROOT, WALLETS, Row, World, audit, pooled, serving, world
from scripts.local_services import postgres_server, redis_server

LOGINS = 8  # connections logging in (bcrypt at cost 12)
BESIDE_LOGIN = 32  # open-loop reads' connections beside the logins: the target is read p99 <= 20 ms at 32
# Scenarios against the server, in this order.
SERVER = (
    "health",
    "transfer",
    "pooled",
    "hot",
    "batch",
    "read",
    "deep",
    "statement",
    "openloop",
    "openloop-high",
    "login",
)
SCENARIOS = (*SERVER, *SCRIPTS, *OPEN_LOOP)
MONEY = ("transfer", "pooled", "hot", "batch", "openloop", "openloop-high")
OPEN = ("openloop", "openloop-high")  # transfers offered open loop: at --rate, at --high-rate
READS = ("health", "read", "deep", "statement")
LARGE = ("transfer", "hot", "read", "deep", "statement")  # --world large's scenarios, unless --scenarios says
SHORT = 10  # seconds of the reads (at most --seconds)
WARMUP = 3  # seconds of reads opening a new server's pools and preparing its statements (at most --seconds)
SETUP, OVERHEAD = 10, 3  # estimated seconds to migrate and seed a database, around each scenario (for the ETA)


class Meter:
    """The CPU that the server's processes and their database backends spend on one scenario."""

    def __init__(self, world: World, server: subprocess.Popen) -> None:
        self.pids = profile.process_tree(server.pid), profile.backends(world.database_url)
        self.start = self._ticks()

    def _ticks(self) -> tuple[int, int]:
        return profile.cpu_ticks(self.pids[0]), profile.cpu_ticks(self.pids[1])

    def charge(self, row: Row) -> Row:
        """Put the CPU used since the start, per answered request, and the server processes' RSS now on the row."""
        requests = max(sum(n for kind, n in row.answers.items() if kind != "late"), 1)  # late ones have answers too
        ms = lambda ticks: 1000 * ticks / os.sysconf("SC_CLK_TCK") / requests  # noqa: E731
        end = self._ticks()
        row.server_cpu, row.db_cpu = ms(end[0] - self.start[0]), ms(end[1] - self.start[1])
        row.rss = profile.rss_mib(self.pids[0])
        return row


# ---- the plan and its progress ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    side: str  # "" alone; "old" / "new" with --against
    run: int  # 1 .. --repeat
    processes: int | None  # None for the pgbench ceilings
    scenario: str
    seconds: int


def plan(args: argparse.Namespace, sides: list[str]) -> list[Step]:
    """Every scenario of every run, in the order they run: old, new, old, new, ... with --against."""
    steps = []
    for run in range(1, args.repeat + 1):
        for side in sides:
            seeding = args.entries // large.SEED_RATE if side == "large" else 0
            steps.append(Step(side, run, None, "setup", SETUP + seeding))
            for processes in args.processes:
                for scenario in (s for s in SERVER if s in args.scenarios):
                    seconds = min(SHORT, args.seconds) if scenario in READS else args.seconds
                    steps.append(Step(side, run, processes, scenario, seconds))
            pgbenched = (s for s in (*SCRIPTS, *OPEN_LOOP) if s in args.scenarios)
            steps += [Step(side, run, None, s, args.seconds) for s in pgbenched]
    return steps


def _drain(step: Step) -> int:
    """The open-loop generator (openloop, openloop-high, and login's reads) also waits for the last answers, up to the
    timeout, after its seconds."""
    return TIMEOUT if step.scenario in (*OPEN, "login") else 0


class Progress:
    """A line as each step starts, with an estimate of the time left: the planned seconds still to come, scaled by
    how long the planned seconds so far really took."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps, self.started = steps, time.monotonic()

    def start(self, step: Step) -> None:
        planned = lambda steps: sum(s.seconds + OVERHEAD + _drain(s) for s in steps)  # noqa: E731
        index = self.steps.index(step)
        elapsed, before, after = (
            time.monotonic() - self.started,
            planned(self.steps[:index]),
            planned(self.steps[index:]),
        )
        left = after * (elapsed / before if before else 1)
        where = " ".join(filter(None, [step.side, f"run {step.run}" if step.run > 1 or step.side else ""]))
        what = f"{step.scenario}" + (f", {step.processes} proc" if step.processes else "")
        finish = time.strftime("%H:%M:%S", time.gmtime(time.time() + left))
        print(
            f"[{index + 1}/{len(self.steps)}] {where + ': ' if where else ''}{what} ({step.seconds} s);"
            f" about {left / 60:.1f} min left, done near {finish} UTC",
            flush=True,
        )


# ---- one run ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    rows: list[Row]
    checks: list[str]
    audit_seconds: float
    figures: list[str]  # --world large: the sweeps' times and the tables' sizes


def measure(world: World, steps: list[Step], progress: Progress, args: argparse.Namespace) -> Run:
    """The steps of one run on its world: the server scenarios (one server per process count), then pgbench; then
    the audit and, with --world large, the sweeps' times and the tables' sizes."""
    rows, checks = [], []
    for processes, through_pooler in itertools.product(args.processes, (False, True)):
        mine = [s for s in steps if s.processes == processes and (s.scenario == "pooled") == through_pooler]
        if not mine:
            continue
        with ExitStack() as stack:
            # pooled: the transfer scenario, the server reaching PostgreSQL through PgBouncer (transaction mode).
            env = stack.enter_context(pooled(world)) if through_pooler else {}
            url, server = stack.enter_context(serving(world, processes, **env))
            report(wrk(world, url, "read", "warmup", args.connections, min(WARMUP, args.seconds)))
            for step in mine:
                progress.start(step)
                run_id = f"p{processes}{step.scenario}{secrets.token_hex(3)}"
                if step.scenario == "login":
                    logins = wrk(world, url, "login", "l", LOGINS, step.seconds)
                    reads = openloop(world, url, run_id, args.read_rate, step.seconds, "read", BESIDE_LOGIN)
                    rows.append(to_row("login", processes, LOGINS, report(logins)))
                    rep = report(reads)
                    note = (
                        f"read beside login; {offered(args.read_rate, rep)}, {rep['connections']} conns opened in all"
                    )
                    rows.append(to_row("read+login", processes, BESIDE_LOGIN, rep, note))
                    rows[-1].rss = rows[-2].rss = profile.rss_mib(profile.process_tree(server.pid))
                    continue
                if step.scenario == "deep":  # the merchant's history as it is now (the hot scenario adds to it)
                    found, depth = large.cursors(world.database_url, world.merchant_wallet)
                    deep = [world.merchant_wallet, world.merchant_token, ",".join(found)]
                    beside = openloop(world, url, run_id, args.rate, step.seconds)
                    reads = openloop(world, url, run_id, args.read_rate, step.seconds, "deep", BESIDE_LOGIN, deep)
                    transfers, rep = report(beside), report(reads)
                    rows.append(to_row("transfer+deep", processes, transfers["connections"], transfers))
                    rows[-1].note = f"transfers beside deep; {offered(args.rate, transfers)}"
                    note = (
                        f"balance, and a page at {len(found)} depths of the merchant's {depth:,} transactions, beside"
                        f" transfers; {offered(args.read_rate, rep)}"
                    )
                    rows.append(to_row("deep", processes, BESIDE_LOGIN, rep, note))
                    rows[-1].rss = rows[-2].rss = profile.rss_mib(profile.process_tree(server.pid))
                    replayed = replay(world, url, transfers["unanswered"])
                    checks.append(count_check(world, run_id, transfers, replayed, 1))
                    continue
                meter = Meter(world, server)
                if step.scenario in OPEN:
                    rate = args.rate if step.scenario == "openloop" else args.high_rate
                    rep = report(openloop(world, url, run_id, rate, step.seconds))
                    row = to_row(step.scenario, processes, rep["connections"], rep, offered(rate, rep))
                else:
                    load = "transfer" if through_pooler else step.scenario
                    rep = report(wrk(world, url, load, run_id, args.connections, step.seconds))
                    row = to_row(step.scenario, processes, args.connections, rep)
                rows.append(meter.charge(row))
                if step.scenario in MONEY:
                    per_request = BATCH_ITEMS if step.scenario == "batch" else 1
                    replayed = replay(world, url, rep["unanswered"])
                    checks.append(count_check(world, run_id, rep, replayed, per_request))
    for step in (s for s in steps if s.processes is None and s.scenario in (*SCRIPTS, *OPEN_LOOP)):
        progress.start(step)
        row, check = pgbench(world, step.scenario, args.connections, step.seconds, args.rate)
        rows.append(row)
        checks.append(check)
    by = {r.scenario: r for r in rows}
    ceiling, textbook = by.get(SCRIPTS["ceiling"][1]), by.get(SCRIPTS["textbook"][1])
    for row in rows:
        if row.scenario == "transfer":
            row.note = ", ".join(
                f"{row.rps / c.rps:.2f}x {name}" for c, name in ((ceiling, "same SQL"), (textbook, "textbook")) if c
            )
        if row.scenario == "pooled":
            direct = next((r for r in rows if r.scenario == "transfer" and r.processes == row.processes), None)
            ratio = f"; {row.rps / direct.rps:.2f}x transfer" if direct else ""
            row.note = f"through PgBouncer, transaction mode{ratio}"
        if row.scenario == "batch":  # a request is BATCH_ITEMS transfers
            row.note = ", ".join(
                [
                    f"{row.rps * BATCH_ITEMS:.0f} transfers/s in batches of {BATCH_ITEMS}",
                    *([f"{row.rps * BATCH_ITEMS / textbook.rps:.2f}x textbook"] if textbook else []),
                    *(
                        [f"CPU {row.server_cpu / BATCH_ITEMS:.3f} + {row.db_cpu / BATCH_ITEMS:.3f} ms/transfer"]
                        if row.server_cpu is not None and row.db_cpu is not None
                        else []
                    ),
                ]
            )
    started = time.monotonic()
    checks.append(audit(world))
    seconds = time.monotonic() - started
    figures = [large.sweeps(world.env), large.sizes(world.database_url)] if args.world == "large" else []
    return Run(rows, checks, seconds, figures)


def offered(rate: int, rep: dict[str, Any]) -> str:
    """An open-loop row's note: the offered rate and the generator's own CPU."""
    return f"{rate}/s offered; generator {rep['client_cpu_ms']:.2f} ms CPU/req"


# ---- what the rows say -----------------------------------------------------------------------------------------


def targets(rows: list[Row], high_rate: int) -> list[str]:
    """Issue 15's and 25's targets, per process count, as far as the rows measured them (openloop-high offered at
    `high_rate`)."""
    by = {(r.scenario, r.processes): r for r in rows}
    ceiling, textbook = by.get((SCRIPTS["ceiling"][1], "-")), by.get((SCRIPTS["textbook"][1], "-"))
    alone = by.get((OPEN_LOOP["ceiling-open"][1], "-"))
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines = []
    for procs in sorted({r.processes for r in rows} - {"-"}):
        transfer, hot, beside = by.get(("transfer", procs)), by.get(("hot", procs)), by.get(("read+login", procs))
        batch = by.get(("batch", procs))
        opened, high = by.get(("openloop", procs)), by.get(("openloop-high", procs))
        found = []
        if transfer and ceiling:
            ratio = transfer.rps / ceiling.rps
            found.append(f"transfer {ratio:.2f}x the same-SQL ceiling (>= 0.5) {met(ratio >= 0.5)}")
        if transfer and textbook:
            ratio = transfer.rps / textbook.rps
            found.append(f"transfer {ratio:.2f}x the textbook ceiling (moonshot >= 1.0) {met(ratio >= 1.0)}")
        if batch and textbook:
            ratio = batch.rps * BATCH_ITEMS / textbook.rps
            found.append(f"batch {ratio:.2f}x the textbook ceiling in transfers/s (>= 3) {met(ratio >= 3)}")
        if opened:
            floor = f" (the same SQL alone at that rate: {alone.p99:.1f} ms)" if alone else ""
            found.append(f"open-loop p99 {opened.p99:.1f} ms (<= 50) {met(opened.p99 <= 50)}{floor}")
        if high:
            found.append(f"open-loop p99 at {high_rate}/s {high.p99:.1f} ms (<= 50) {met(high.p99 <= 50)}")
        if transfer and hot:
            found.append(f"hot {hot.rps / transfer.rps:.2f}x transfer (>= 0.3) {met(hot.rps >= 0.3 * transfer.rps)}")
        if beside:
            at = f"open loop on at most {beside.connections} conns"
            found.append(f"read p99 beside login ({at}) {beside.p99:.1f} ms (<= 20) {met(beside.p99 <= 20)}")
        lines.append(f"{procs} proc: " + "; ".join(found))
    return lines


def growth(small: Run, large: Run) -> list[str]:
    """Issue 25's large-world targets: the money rates within 15% of the small world's, a balance read and a history
    page at any depth within 50 ms at p99, the audit within 2 minutes."""
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    before, after = ({(r.scenario, r.processes): r for r in run.rows} for run in (small, large))
    lines = []
    for key, row in after.items():
        scenario, procs = key
        if scenario in ("transfer", "hot") and key in before:
            ratio = row.rps / before[key].rps
            lines.append(f"{scenario}, {procs} proc: {ratio:.2f}x the small world's (>= 0.85) {met(ratio >= 0.85)}")
        if scenario == "deep":
            lines.append(f"deep, {procs} proc: p99 {row.p99:.1f} ms (<= 50) {met(row.p99 <= 50)}")
    audit_ok = large.audit_seconds <= 120
    return [
        *lines,
        f"audit {large.audit_seconds:.0f} s (small world {small.audit_seconds:.1f} s; <= 120) {met(audit_ok)}",
    ]


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
        "RSS MiB at end",
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
            " / ".join(f"{mib:.0f}" for mib in r.rss) if r.rss else "",
            " ".join(f"{k}:{v}" for k, v in r.answers.items()),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    line = lambda c: "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def ratios(old: list[list[Row]], new: list[list[Row]]) -> list[str]:
    """A line per scenario and process count: new over old, of the mean req/s and the mean p99 over the runs."""
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    keys = dict.fromkeys((r.scenario, r.processes) for run in new for r in run)
    lines = []
    for key in keys:
        before, after = ([r for run in runs for r in run if (r.scenario, r.processes) == key] for runs in (old, new))
        if not before:
            continue
        show = lambda rows, field, fmt: " ".join(format(getattr(r, field), fmt) for r in rows)  # noqa: E731
        rps = mean([r.rps for r in after]) / max(mean([r.rps for r in before]), 1e-9)
        p99 = mean([r.p99 for r in after]) / max(mean([r.p99 for r in before]), 1e-9)
        lines.append(
            f"{key[0]}{'' if key[1] == '-' else f', {key[1]} proc'}: req/s {rps:.2f}x"
            f" (old {show(before, 'rps', '.0f')} -> new {show(after, 'rps', '.0f')});"
            f" p99 {p99:.2f}x (old {show(before, 'p99', '.1f')} -> new {show(after, 'p99', '.1f')} ms)"
        )
    return lines


# ---- main ------------------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The revision in a temporary git worktree (detached), removed afterwards whatever happens (Ctrl-C too)."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = Path(tempfile.mkdtemp(prefix="wallet-bench-against-"))
    git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def profile_transfers(args: argparse.Namespace) -> int:
    """--profile: py-spy on a 1-process server under the transfer load."""
    with ExitStack() as stack:
        server_url, redis_url = stack.enter_context(postgres_server()), stack.enter_context(redis_server())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wallet-bench-")))
        w = stack.enter_context(world(ROOT, server_url, redis_url, workdir))
        with serving(w, 1) as (url, proc):
            report(wrk(w, url, "read", "warmup", args.connections, WARMUP))
            load = wrk(w, url, "transfer", f"profile{secrets.token_hex(3)}", args.connections, args.seconds + 2)
            print(profile.record(proc.pid, w.database_url, args.seconds, ROOT / "var" / "bench-transfer.pyspy"))
            replay(w, url, report(load)["unanswered"])
        print(audit(w))
    return 0


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="server process counts to measure (default 1,2)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds per money/login/pgbench scenario (default 15)")
    parser.add_argument("--rate", type=int, default=300, help="transfers offered a second in openloop (default 300)")
    parser.add_argument(
        "--high-rate", type=int, default=600, help="transfers offered a second in openloop-high (default 600)"
    )
    parser.add_argument(
        "--read-rate", type=int, default=300, help="reads offered a second beside the logins in login (default 300)"
    )
    parser.add_argument(
        "--scenarios",
        help=f"a subset of {','.join(SCENARIOS)} (default all; with --world large, {','.join(LARGE)})",
    )
    parser.add_argument("--against", metavar="REV", help="also bench this git revision's server, interleaved")
    parser.add_argument(
        "--world",
        choices=("small", "large"),
        default="small",
        help=f"small: {WALLETS:,} wallets (default); large: the small world, then a large one (--wallets, --entries)",
    )
    parser.add_argument(
        "--wallets", type=int, default=large.WALLETS, help=f"the large world's (default {large.WALLETS:,})"
    )
    parser.add_argument(
        "--entries", type=int, default=large.ENTRIES, help=f"the large world's (default {large.ENTRIES:,})"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (old, new, old, new with 2)")
    parser.add_argument("--profile", action="store_true", help="profile the transfer path with py-spy instead")
    parser.add_argument(
        "--soak",
        type=int,
        nargs="?",
        const=600,
        metavar="SECONDS",
        help="instead, one server under a mixed load for SECONDS (600 when not given), sampling RSS and dead tuples",
    )
    parser.add_argument(
        "--soak-interval", type=float, default=5, metavar="SECONDS", help="seconds between the soak's samples (5)"
    )
    args = parser.parse_args(argv)
    args.processes = [int(p) for p in args.processes.split(",")]
    args.scenarios = (args.scenarios or ",".join(LARGE if args.world == "large" else SCENARIOS)).split(",")
    if args.world == "large" and args.against:
        parser.error("--world large compares the small world with the large one: it takes no --against")
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.soak is not None and not 0 < args.soak <= ACCESS_TOKEN_TTL - 600:  # the seeded tokens outlive it
        parser.error(f"--soak takes 1 to {ACCESS_TOKEN_TTL - 600} seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (make bench installs Debian's wrk package)", file=sys.stderr)
        return 2
    (ROOT / "var").mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: servers stopped, worktree gone
    if args.profile:
        return profile_transfers(args)
    if args.soak:
        return 0 if all(passed(c) for c in soak.soak(args)) else 1
    started, load = time.monotonic(), os.getloadavg()[0]
    results: dict[str, list[Run]] = {}
    with ExitStack() as stack:
        trees: dict[str, Path] = {"": ROOT}
        sizes = {"large": (args.wallets, args.entries)}
        if args.against:
            trees = {"old": stack.enter_context(checkout(args.against)), "new": ROOT}
        if args.world == "large":
            trees = {"small": ROOT, "large": ROOT}
        server_url, redis_url = stack.enter_context(postgres_server()), stack.enter_context(redis_server())
        steps = plan(args, list(trees))
        progress = Progress(steps)
        for side, run in dict.fromkeys((s.side, s.run) for s in steps):
            mine = [s for s in steps if (s.side, s.run) == (side, run)]
            progress.start(mine[0])
            with (
                tempfile.TemporaryDirectory(prefix="wallet-bench-") as workdir,
                world(trees[side], server_url, redis_url, Path(workdir), sizes.get(side)) as w,
            ):
                results.setdefault(side, []).append(measure(w, mine, progress, args))
    print(
        f"\nwallet server bench: {os.cpu_count()} cores"
        f" (load average {load:.1f} before, {os.getloadavg()[0]:.1f} after),"
        f" {WALLETS} wallets{' (and the large world)' if args.world == 'large' else ''}, wrk -t2,"
        f" {args.seconds} s per money/login/pgbench scenario ({min(SHORT, args.seconds)} s health and reads),"
        f" {time.monotonic() - started:.0f} s in all"
    )
    for side, runs in results.items():
        if side:
            print(f"\n{side} ({label(side, args)}):")
        numbered = [
            replace(r, scenario=f"{r.scenario} #{n}") if len(runs) > 1 else r
            for n, run in enumerate(runs, 1)
            for r in run.rows
        ]
        print(table(numbered))
        print(
            "\n".join(
                [
                    *(f for run in runs for f in run.figures),
                    "targets:",
                    *(t for run in runs for t in targets(run.rows, args.high_rate)),
                ]
            )
        )
    if args.against or args.world == "large":
        before, after = ("old", "new") if args.against else ("small", "large")
        old, new = ([run.rows for run in results[side]] for side in (before, after))
        print("\n".join([f"\n{after} / {before}:", *ratios(old, new)]))
    if args.world == "large":
        print("\n".join(["large world targets:", *growth(results["small"][0], results["large"][0])]))
    checks = [
        f"{side + ' ' if side else ''}run {n}: {c}"
        for side, runs in results.items()
        for n, run in enumerate(runs, 1)
        for c in run.checks
    ]
    print("\n".join(["checks:", *checks]))
    return 0 if all(passed(c) for c in checks) else 1


def label(side: str, args: argparse.Namespace) -> str:
    if side == "old":
        return f"{args.against} = {git('rev-parse', '--short', args.against)}"
    return {
        "new": "this tree",
        "small": f"{WALLETS:,} wallets",
        "large": f"{args.wallets:,} wallets, {args.entries:,} entries",
    }[side]


def passed(check: str) -> bool:
    """A count check says OK; the audit exited 0."""
    return "exit 0:" in check if "server.py audit:" in check else check.endswith(" OK")


if __name__ == "__main__":
    sys.exit(main())
