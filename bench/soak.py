"""`python -m bench.run --soak [SECONDS]`: one server under a mixed load for a long time, sampled as it runs.

The load, all at once for the whole time: transfers (wrk, as the transfer scenario), balance and history reads (wrk,
as the read scenario), a few event-stream clients that stay connected and read every event of their user, and a
webhook endpoint per user pointing at a receiver this process runs, so the outbox dispatcher delivers every event.
Every few seconds it samples each server process's RSS and, for the tables the money path updates, the dead-tuple
ratio and the autovacuum runs. At the end: RSS after warm-up against the end per process, each table's ratio at its
maximum and at the end, and the checks (exit 1 when one fails).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tornado import web, websocket
from tornado.httpclient import HTTPRequest
from tornado.httpserver import HTTPServer

from bench import profile
from bench.load import count_check, replay, report, wrk
from bench.world import ROOT, World, audit, serving, world
from scripts.local_services import free_port, libpq_url, postgres_server, redis_server

WARMUP = 0.2  # the first fifth of the time: pools, prepared statements, caches and the allocator's arenas fill up
GROWTH = 0.10  # RSS at the end may exceed RSS after warm-up by this much (issue 25's target)
CLIMB = 0.10  # a table's mean dead-tuple ratio in the second half may pass the first half's by this much
AUTOVACUUM_AT = 0.2  # the ratio below which autovacuum need not run (its default scale factor, 0.2 of the live rows)
READERS = 8  # wrk connections reading balances and history pages beside the transfers
STREAMS = 4  # event-stream clients, each a different user's, connected throughout
STALL = 60  # seconds the webhook backlog may go without shrinking, after the load, before the soak stops waiting
PROGRESS_EVERY = 30  # seconds between progress lines
# The tables a transfer and its deliveries update: its PENDING row marked COMPLETED, both wallets' balances, the
# sender's daily usage, both users' event heads; each delivery marked sent and its endpoint's breaker reset.
TABLES = ("transactions", "wallets", "daily_usage", "event_heads", "deliveries", "webhook_endpoints")

_STATS = """
SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, n_tup_ins FROM pg_stat_user_tables WHERE relname = ANY(%s)
"""
_BACKLOG = "SELECT count(*) FROM deliveries WHERE channel = 'webhook' AND status = 'pending'"
_AUTOVACUUM = """
SELECT name, setting, unit FROM pg_settings WHERE name IN ('autovacuum', 'track_counts', 'autovacuum_naptime',
    'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_threshold', 'autovacuum_vacuum_cost_limit')
"""


# ---- what it samples -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss: list[float]  # MiB per server process, the supervisor first
    tables: dict[str, tuple[int, int, int, int]]  # live tuples, dead tuples, autovacuum runs, rows inserted
    backlog: int  # webhook deliveries pending

    def ratio(self, table: str) -> float:
        live, dead = self.tables[table][:2]
        return dead / (live + dead) if live + dead else 0.0


class Database:
    """One autocommit connection to the world's database (each statement sees the statistics as they are now)."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg2.connect(libpq_url(database_url))
        self.conn.autocommit = True

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def sample(self, at: float, pids: list[int]) -> Sample:
        tables = {name: tuple(values) for name, *values in self.rows(_STATS, list(TABLES))}
        return Sample(at, profile.rss_mib(pids), tables, self.rows(_BACKLOG)[0][0])  # type: ignore[arg-type]

    def close(self) -> None:
        self.conn.close()


# ---- the webhook receiver and the stream clients ---------------------------------------------------------------


@dataclass
class Hooks:
    """What the receiver got: deliveries by event id, and those whose signature did not verify."""

    signers: dict[str, Webhook] = field(default_factory=dict)  # user number -> its endpoint's secret
    received: Counter[int] = field(default_factory=Counter)
    forged: int = 0


class Receiver(web.RequestHandler):
    """POST /hook/<user number>: a delivery to that user's endpoint, verified with its secret (Standard Webhooks)."""

    def initialize(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def post(self, user: str) -> None:
        try:
            self.hooks.signers[user].verify(self.request.body, dict(self.request.headers), json_parse=False)
        except (KeyError, WebhookVerificationError):
            self.hooks.forged += 1
        else:
            self.hooks.received[int(self.request.headers["webhook-id"])] += 1
        self.set_status(204)


async def register(url: str, users: list[list[str]], hook_url: str, hooks: Hooks) -> None:
    """A webhook endpoint for every event of every user, at `hook_url`/<user number>."""
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def one(number: int, token: str) -> None:
            async with gate:
                answer = await client.post(
                    "/webhook-endpoints",
                    json={"url": f"{hook_url}/{number}", "events": ["*"]},
                    headers={"Authorization": f"Bearer {token}"},
                )
            answer.raise_for_status()
            hooks.signers[str(number)] = Webhook(answer.json()["secret"])

        await asyncio.gather(*(one(n, token) for n, (token, _, _) in enumerate(users, 1)))


class Stream:
    """One user's event stream, connected from the first event (?after=0) to the end; connected again after its last
    id if the server closes it."""

    def __init__(self, url: str, token: str, wallet: str) -> None:
        self.url, self.token, self.wallet = url.replace("http", "ws", 1), token, wallet
        self.ids: list[int] = []
        self.closes: Counter[str] = Counter()  # the server's close codes and reasons, before a reconnection
        self.conn: websocket.WebSocketClientConnection | None = None
        self.closing = False

    async def run(self) -> None:
        while not self.closing:
            after = self.ids[-1] if self.ids else 0
            request = HTTPRequest(f"{self.url}/api/v1/events/stream?after={after}")
            self.conn = await websocket.websocket_connect(request, subprotocols=["bearer", self.token])
            while (message := await self.conn.read_message()) is not None:
                self.ids.append(json.loads(message)["id"])
            if not self.closing:
                self.closes[f"{self.conn.close_code} {self.conn.close_reason}"] += 1

    def close(self) -> None:
        self.closing = True
        if self.conn:
            self.conn.close()


# ---- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    samples: list[Sample]
    transfers: dict[str, Any]  # wrk's reports
    reads: dict[str, Any]
    checks: list[str]


class Soak:
    """The load on one server, its samples and its checks."""

    def __init__(self, w: World, url: str, server: subprocess.Popen, args: argparse.Namespace) -> None:
        self.world, self.url, self.args = w, url, args
        self.pids = profile.process_tree(server.pid)
        self.db = Database(w.database_url)
        self.hooks = Hooks()
        self.streams = [Stream(url, token, wallet) for token, wallet, _ in w.users[:STREAMS]]

    async def run(self) -> Outcome:
        port = free_port()
        receiver = HTTPServer(web.Application([(r"/hook/(\d+)", Receiver, {"hooks": self.hooks})]))
        receiver.listen(port, "127.0.0.1")
        w, loads = self.world, []
        try:
            await register(self.url, w.users, f"http://127.0.0.1:{port}/hook", self.hooks)
            tasks = [asyncio.create_task(s.run()) for s in self.streams]
            run_id = f"soak{secrets.token_hex(3)}"
            loads = [
                wrk(w, self.url, "transfer", run_id, self.args.connections, self.args.soak),
                wrk(w, self.url, "read", f"{run_id}r", READERS, self.args.soak),
            ]
            samples = await self.sample_while(loads)
            transfers, reads = [await asyncio.to_thread(report, proc) for proc in loads]
            replayed = await asyncio.to_thread(replay, w, self.url, transfers["unanswered"])
            checks = [self.autovacuum_check(), count_check(w, run_id, transfers, replayed), reads_check(reads)]
            checks.append(self.webhook_check(await self.drain()))
            checks.append(await self.stream_check())
            await asyncio.gather(*tasks)
            return Outcome(samples, transfers, reads, checks)
        finally:
            for proc in loads:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            receiver.stop()
            self.db.close()

    async def sample_while(self, loads: list[subprocess.Popen]) -> list[Sample]:
        """A sample every --soak-interval seconds until the loads end; a progress line every PROGRESS_EVERY s."""
        samples: list[Sample] = []
        started, printed = time.monotonic(), -PROGRESS_EVERY
        while any(load.poll() is None for load in loads):
            samples.append(await asyncio.to_thread(self.db.sample, time.monotonic() - started, self.pids))
            if samples[-1].at - printed >= PROGRESS_EVERY:
                self.progress(samples[-1], samples[0])
                printed = samples[-1].at
            await asyncio.sleep(self.args.soak_interval)
        return samples

    def progress(self, sample: Sample, first: Sample) -> None:
        dead = ", ".join(f"{t} {100 * sample.ratio(t):.0f}%" for t in TABLES)
        transfers = sample.tables["transactions"][3] - first.tables["transactions"][3]
        print(
            f"[soak {sample.at:.0f}/{self.args.soak} s] {transfers} transfers,"
            f" {sum(self.hooks.received.values())} webhooks received ({sample.backlog} pending),"
            f" {sum(len(s.ids) for s in self.streams)} stream events; RSS MiB {_mib(sample.rss)}; dead tuples {dead};"
            f" {sum(values[2] for values in sample.tables.values())} autovacuums",
            flush=True,
        )

    async def drain(self) -> float:
        """Wait until no webhook delivery is pending, as long as the backlog keeps shrinking (a line every
        PROGRESS_EVERY seconds); the seconds it took."""
        started = shrank = printed = time.monotonic()
        least = None
        while backlog := (await asyncio.to_thread(self.db.rows, _BACKLOG))[0][0]:
            if least is None or backlog < least:
                least, shrank = backlog, time.monotonic()
            if time.monotonic() - shrank > STALL:
                break
            if time.monotonic() - printed >= PROGRESS_EVERY:
                print(f"[soak: load over] {backlog} webhook deliveries still pending", flush=True)
                printed = time.monotonic()
            await asyncio.sleep(1)
        return time.monotonic() - started

    def webhook_check(self, waited: float) -> str:
        """Every event reached the receiver, and no more often than the server attempted its delivery: delivery is at
        least once, and a repeat must be a retry the server counted (an attempt that timed out, or whose lease ran
        out before its answer was recorded)."""
        events = {event_id for (event_id,) in self.db.rows("SELECT id FROM events")}
        attempts = dict(self.db.rows("SELECT event_id, attempts FROM deliveries WHERE channel = 'webhook'"))
        received = self.hooks.received
        missing, unknown = len(events - received.keys()), len(received.keys() - events)
        repeated = [event for event, n in received.items() if n > 1]
        unexplained = sum(n > attempts.get(event, 0) for event, n in received.items())
        ok = not (missing or unknown or unexplained or self.hooks.forged)
        return (
            f"webhooks: {len(events)} events, each delivered to the receiver at least once and never more often than"
            f" the server attempted it ({missing} missing; {len(repeated)} more than once, {unexplained} of them"
            f" more often than attempted; {unknown} unknown ids, {self.hooks.forged} bad signatures; the backlog"
            f" emptied {waited:.0f} s after the load) {'OK' if ok else 'FAILED'}"
        )

    async def stream_check(self) -> str:
        """Each stream got its user's every event once, in id order (waiting up to 30 s for the last ones)."""
        query = "SELECT e.id FROM events e JOIN wallets w ON w.user_id = e.user_id WHERE w.id = %s ORDER BY e.id"
        pairs = [(s, [i for (i,) in self.db.rows(query, s.wallet)]) for s in self.streams]
        deadline = time.monotonic() + 30
        while any(len(s.ids) < len(expected) for s, expected in pairs) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        for s in self.streams:
            s.close()
        ok = all(s.ids == expected for s, expected in pairs)
        closes = sum((s.closes for s in self.streams), Counter())
        return (
            f"streams: {len(pairs)} clients got {sum(len(s.ids) for s in self.streams)} events, each its user's"
            f" every event once in id order (expected {sum(len(e) for _, e in pairs)}; closed by the server and"
            f" connected again: {dict(closes) or 'never'}) {'OK' if ok else 'FAILED'}"
        )

    def autovacuum_check(self) -> str:
        settings = {name: f"{value}{unit or ''}" for name, value, unit in self.db.rows(_AUTOVACUUM)}
        ok = settings["autovacuum"] == "on" and settings["track_counts"] == "on"
        shown = ", ".join(f"{name} {value}" for name, value in sorted(settings.items()))
        return f"PostgreSQL: {shown} {'OK' if ok else 'FAILED'}"


def reads_check(rep: dict[str, Any]) -> str:
    """Every read answered 200, or 503 (the server shedding load: DB_POOL_TIMEOUT), none lost or timed out."""
    statuses = rep["statuses"]
    errors = {kind: n for kind, n in rep["errors"].items() if n and kind != "status"}  # status: a non-2xx answer
    ok = set(statuses) <= {"200", "503"} and not errors
    return f"reads: {rep['requests']} answered {statuses}, errors {errors} {'OK' if ok else 'FAILED'}"


def _mib(sizes: list[float]) -> str:
    return " / ".join(f"{mib:.0f}" for mib in sizes)


# ---- the report ------------------------------------------------------------------------------------------------


def rss_target(samples: list[Sample], seconds: int) -> str:
    warm = next((s for s in samples if s.at >= WARMUP * seconds), samples[-1])
    end = samples[-1]
    names = ["supervisor", *(f"worker {n}" for n in range(1, len(end.rss)))] if len(end.rss) > 1 else ["server"]
    parts, ok = [], True
    for name, before, after in zip(names, warm.rss, end.rss, strict=True):
        growth = after / before - 1 if before else 0.0
        ok &= growth <= GROWTH
        parts.append(f"{name} {before:.0f} -> {after:.0f} MiB ({100 * growth:+.1f}%)")
    return (
        f"RSS after warm-up (at {warm.at:.0f} s) -> end (at {end.at:.0f} s): {'; '.join(parts)};"
        f" within {100 * GROWTH:.0f}% {'met' if ok else 'MISSED'}"
    )


def dead_tuple_targets(samples: list[Sample], seconds: int) -> list[str]:
    """Per table: the ratio's maximum and end, and whether autovacuum keeps it bounded: over the second half of the
    soak its mean is at most CLIMB above its mean between warm-up and half-time, and autovacuum ran on the table in
    the second half (or it never passed AUTOVACUUM_AT there: too few dead tuples to start one)."""
    half = samples[-1].at / 2
    first = [s for s in samples if WARMUP * seconds <= s.at < half]
    second = [s for s in samples if s.at >= half]
    mean = lambda part, table: sum(s.ratio(table) for s in part) / max(len(part), 1)  # noqa: E731
    lines = []
    for table in TABLES:
        top = max(samples, key=lambda s: s.ratio(table))
        runs = second[-1].tables[table][2] - second[0].tables[table][2]
        before, after = mean(first, table), mean(second, table)
        ok = after <= before + CLIMB and (runs > 0 or max(s.ratio(table) for s in second) <= AUTOVACUUM_AT)
        live, dead = samples[-1].tables[table][:2]
        lines.append(
            f"{table}: dead-tuple ratio max {100 * top.ratio(table):.1f}% (at {top.at:.0f} s),"
            f" end {100 * samples[-1].ratio(table):.1f}% ({dead} dead / {live} live); mean {100 * before:.1f}%"
            f" from warm-up to half-time, {100 * after:.1f}% after, {runs} autovacuums after half-time:"
            f" bounded {'met' if ok else 'MISSED'}"
        )
    return lines


def print_report(outcome: Outcome, args: argparse.Namespace, processes: int) -> None:
    samples, transfers, reads = outcome.samples, outcome.transfers, outcome.reads
    rate = lambda rep: rep["requests"] / (rep["duration_us"] / 1e6)  # noqa: E731
    print(
        f"\nsoak: {args.soak} s, 1 server of {processes} process(es), {args.connections} wrk connections of"
        f" transfers at {rate(transfers):.0f}/s, {READERS} of reads at {rate(reads):.0f}/s, {STREAMS} event streams,"
        f" a webhook endpoint per user; {len(samples)} samples, one every {args.soak_interval:g} s;"
        f" warm-up: the first {100 * WARMUP:.0f}% of the time"
    )
    backlog = max(samples, key=lambda s: s.backlog)
    print(
        f"webhook deliveries pending: at most {backlog.backlog} (at {backlog.at:.0f} s), {samples[-1].backlog} as the"
        " load ended"
    )
    print("\n".join(["targets:", rss_target(samples, args.soak), *dead_tuple_targets(samples, args.soak)]))
    print("\n".join(["checks:", *outcome.checks]))


def soak(args: argparse.Namespace) -> list[str]:
    """--soak: the world, one server of the largest --processes count, the load and the report; the checks."""
    processes = max(args.processes)
    with ExitStack() as stack:
        server_url, redis_url = stack.enter_context(postgres_server()), stack.enter_context(redis_server())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wallet-bench-")))
        w = stack.enter_context(world(ROOT, server_url, redis_url, workdir))
        # The receiver is on loopback, plain http: the webhook URL check would refuse it.
        url, server = stack.enter_context(serving(w, processes, WEBHOOK_ALLOW_PRIVATE="true"))
        outcome = asyncio.run(Soak(w, url, server, args).run())
        outcome.checks.append(audit(w))
    print_report(outcome, args, processes)
    return outcome.checks
