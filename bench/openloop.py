"""Open-loop load: a fixed offered rate, latency from each request's intended send time.

`python -m bench.openloop URL USERS_FILE RUN_ID RATE SECONDS [--load transfer|read|deep] [--max-connections N]
[--timeout S] [--deep WALLET TOKEN CURSORS]` schedules RATE x SECONDS requests at fixed intervals: `transfer` (the
default) sends transfers of 0.01 between random seeded users, `read` what bench/wrk.lua's `read` does (a random seeded
user's balance and first history page, alternately), `deep` a random seeded user's balance, and a page of
WALLET's history at one of the comma-separated CURSORS (read with TOKEN), alternately. A request is sent at its
intended time whatever the others are doing (on an idle keep-alive connection, or a new one), so a slow server cannot
slow the offered load down and its latency, counted from the intended time, includes any wait for the generator or a
connection (no coordinated omission). With --max-connections at most N are open: a request that finds none idle and N
open waits for one, and that wait counts in its latency. Requests sent more than LATE_MS after their intended time count
as `late` (the generator could not keep up); those without an answer TIMEOUT seconds after it as `timeout`, with that
timeout as their latency. Prints one "BENCH {json}" line in the shape of bench/wrk.lua's report; for transfers, the keys
without a final answer (none, or a 503 that asks for a retry) are listed there for the replay.

A plain asyncio HTTP/1.1 client rather than httpx: on two shared cores the generator's own CPU per request must
stay far below the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LATE_MS = 10


@dataclass
class Tally:
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("connect", "read", "write", "timeout"), 0))
    latencies: list[float] = field(default_factory=list)  # seconds, answered and timed out
    unanswered: dict[str, str] = field(default_factory=dict)  # transfers: Idempotency-Key: "sender-number to-wallet"
    late: int = 0
    connections: int = 0  # opened in all


async def read_response(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 response with a Content-Length (the server sends each answer whole); its status."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    await reader.readexactly(int(headers["content-length"]))  # KeyError: counted as a read error
    return int(head[0].split()[1])


@dataclass
class Request:
    payload: bytes
    key: str | None = None  # a transfer's Idempotency-Key, unanswered until its final answer
    what: str = ""  # and what it moves, "sender-number to-wallet", for the replay


class Generator:
    def __init__(
        self,
        url: str,
        users: list[list[str]],
        run_id: str,
        timeout: float,
        load: str,
        max_connections: int | None,
        deep: list[str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.users, self.run_id, self.timeout = users, run_id, timeout
        self.build = {"transfer": self.transfer, "read": self.read, "deep": self.deep}[load]
        wallet, self.deep_token, cursors = deep or ("", "", "")
        self.deep_pages = [
            f"/api/v1/wallets/{wallet}/transactions" + (f"?cursor={c}" if c else "") for c in cursors.split(",")
        ]
        # a request holds a slot from before it takes a connection until it gives it back, so at most
        # max_connections are ever open: one is opened only when none is idle
        self.slots = asyncio.Semaphore(max_connections) if max_connections else contextlib.nullcontext()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.tally = Tally()

    def http(self, method: str, path: str, token: str, headers: str = "", body: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
        head += f"Content-Type: application/json\r\n{headers}"  # as wrk.lua's requests, a GET's too
        return (head + (f"Content-Length: {len(body)}\r\n" if body else "") + "\r\n").encode() + body

    def transfer(self, n: int) -> Request:
        sender = random.randrange(len(self.users))
        to = random.randrange(len(self.users) - 1)
        to += to >= sender
        token, from_wallet, _ = self.users[sender]
        key, to_wallet = f"bench-{self.run_id}-{n}", self.users[to][1]
        body = json.dumps({"from_wallet_id": from_wallet, "to_wallet_id": to_wallet, "amount": "0.01"}).encode()
        payload = self.http("POST", "/api/v1/transfers", token, f"Idempotency-Key: {key}\r\n", body)
        return Request(payload, key, f"{sender + 1} {to_wallet}")

    def read(self, n: int) -> Request:
        """A random user's first history page, then another's balance, alternately, as wrk.lua's `read`."""
        token, wallet, _ = self.users[random.randrange(len(self.users))]
        what = "balance" if n % 2 else "transactions"
        return Request(self.http("GET", f"/api/v1/wallets/{wallet}/{what}", token))

    def deep(self, n: int) -> Request:
        """A random user's balance, then a page deep in the busy wallet's history, alternately."""
        if n % 2:
            return Request(self.http("GET", random.choice(self.deep_pages), self.deep_token))
        token, wallet, _ = self.users[random.randrange(len(self.users))]
        return Request(self.http("GET", f"/api/v1/wallets/{wallet}/balance", token))

    async def send(self, n: int, intended: float) -> None:
        loop, tally = asyncio.get_running_loop(), self.tally
        request = self.build(n)
        if request.key:
            tally.unanswered[request.key] = request.what
        if loop.time() - intended > LATE_MS / 1000:
            tally.late += 1
        stage, writer = "connect", None
        try:
            async with asyncio.timeout_at(intended + self.timeout), self.slots:
                if self.idle:
                    reader, writer = self.idle.pop()
                else:
                    tally.connections += 1
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                stage = "write"
                writer.write(request.payload)
                await writer.drain()
                stage = "read"
                status = await read_response(reader)
                self.idle.append((reader, writer))  # before the slot is given back: a waiter takes it
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as error:  # TimeoutError is an OSError
            timed_out = isinstance(error, TimeoutError)
            tally.errors["timeout" if timed_out else stage] += 1
            if timed_out:
                tally.latencies.append(self.timeout)
            if writer:
                writer.close()
            return
        tally.latencies.append(loop.time() - intended)
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
        if request.key and status != 503:  # SERVICE_UNAVAILABLE asks the client to retry under the key: the replay does
            del tally.unanswered[request.key]

    async def run(self, rate: float, seconds: float) -> float:
        """Offer the load; the seconds from the first intended send to the last answer."""
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1
        tasks = []
        for n in range(int(rate * seconds)):
            intended = start + n / rate
            if (delay := intended - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.send(n, intended)))
        await asyncio.gather(*tasks)
        for _, writer in self.idle:
            writer.close()
        return loop.time() - start


def summary(tally: Tally, seconds: float, cpu: float) -> dict:
    """The report; its requests/s are the answers over the time until the last of them, not the offered rate."""
    latencies = sorted(tally.latencies) or [0.0]
    pick = lambda q: round(1e6 * latencies[min(len(latencies) - 1, int(q * len(latencies)))])  # noqa: E731
    return {
        "requests": sum(tally.statuses.values()),
        "duration_us": round(seconds * 1e6),
        "errors": {**tally.errors, "late": tally.late},
        "p50_us": pick(0.5),
        "p99_us": pick(0.99),
        "max_us": round(1e6 * latencies[-1]),
        "statuses": tally.statuses,
        "unanswered": tally.unanswered,
        "connections": tally.connections,
        "client_cpu_ms": 1000 * cpu / max(len(tally.latencies), 1),  # the generator's own, per request
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("users_file", help='one "token<TAB>wallet_id<TAB>username" line per paying user')
    parser.add_argument("run_id", help="the transfers' Idempotency-Keys are bench-RUN_ID-N")
    parser.add_argument("rate", type=float, help="requests offered a second")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--load", choices=("transfer", "read", "deep"), default="transfer")
    parser.add_argument("--deep", nargs=3, metavar=("WALLET", "TOKEN", "CURSORS"), help="what the deep load reads")
    parser.add_argument("--max-connections", type=int, help="open at most this many (default: no limit)")
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args(argv)
    with open(args.users_file) as lines:
        users = [line.rstrip("\n").split("\t") for line in lines]
    if args.load == "deep" and not args.deep:
        parser.error("--load deep needs --deep WALLET TOKEN CURSORS")
    generator = Generator(args.url, users, args.run_id, args.timeout, args.load, args.max_connections, args.deep)
    cpu = time.process_time()
    took = asyncio.run(generator.run(args.rate, args.seconds))
    print("BENCH " + json.dumps(summary(generator.tally, took, time.process_time() - cpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
