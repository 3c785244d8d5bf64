"""The bench's load generators and the checks on what they left: wrk (closed loop, bench/wrk.lua) and the open-loop
generator (bench/openloop.py, transfers or reads), both printing one "BENCH {json}" report; the replay of transfers left
unanswered at the stop, and the count of COMPLETED transfers against the 201 answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
import psycopg2

from bench.seed import PASSWORD
from bench.world import BENCH, ROOT, Row, World
from scripts.local_services import libpq_url

TIMEOUT = 10  # seconds a request may take before it counts as a timeout
RETRY_FOR = 75  # seconds a replay retries a key still in progress: past the server's PENDING_TIMEOUT (60 s)


def wrk(world: World, url: str, scenario: str, run_id: str, connections: int, seconds: int) -> subprocess.Popen:
    extra = {"hot": world.merchant_wallet, "login": PASSWORD}.get(scenario, "")
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s"]
    command += ["--timeout", f"{TIMEOUT}s", "-s", str(BENCH / "wrk.lua"), url]
    command += ["--", scenario, str(world.users_file), run_id, extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def openloop(
    world: World, url: str, run_id: str, rate: int, seconds: int, load: str = "transfer", max_connections: int = 0
) -> subprocess.Popen:
    """`load` (transfer or read) offered at `rate` a second for `seconds` on at most `max_connections` (0: no limit),
    in a process of their own as wrk runs in its own."""
    command = [sys.executable, "-m", "bench.openloop", url, str(world.users_file), run_id, str(rate), str(seconds)]
    command += ["--load", load, "--timeout", str(TIMEOUT)]
    if max_connections:
        command += ["--max-connections", str(max_connections)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError(f"{proc.args[0]} printed no report (exit {proc.returncode}):\n{out}\n{err}")


def to_row(scenario: str, processes: int, connections: int, rep: dict[str, Any], note: str = "") -> Row:
    answers = {status: rep["statuses"][status] for status in sorted(rep["statuses"])}
    answers.update(
        {kind: n for kind in ("connect", "read", "write", "timeout", "late") if (n := rep["errors"].get(kind))}
    )
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
    """Send each transfer left without a final answer at the stop (none, or a 503) again under its key, as a client
    would: the server answers what it did the first time (or, if the first never arrived or was refused, does it
    now), so every key ends with a known answer."""
    answers: Counter[int] = Counter()
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as client:
        for key, what in unanswered.items():
            sender, to_wallet = what.split(" ")
            token, from_wallet, _ = world.users[int(sender) - 1]
            body = {"from_wallet_id": from_wallet, "to_wallet_id": to_wallet, "amount": "0.01"}
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
            deadline = time.monotonic() + RETRY_FOR
            # 409 IDEMPOTENCY_IN_PROGRESS: the first is still executing, or a 503 left its claim (until the
            # server's PENDING_TIMEOUT); 503: the server is still catching up
            while (answer := client.post("/transfers", json=body, headers=headers)).status_code in (409, 503):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            answers[answer.status_code] += 1
    return answers


def counts(world: World, key_pattern: str) -> tuple[int, int]:
    """COMPLETED and PENDING transfers whose Idempotency-Key matches the LIKE pattern."""
    conn = psycopg2.connect(libpq_url(world.database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'PENDING')"
                " FROM transactions WHERE type = 'TRANSFER' AND idempotency_key LIKE %s",
                (key_pattern,),
            )
            return cur.fetchone()
    finally:
        conn.close()


def count_check(world: World, run_id: str, rep: dict[str, Any], replayed: Counter[int]) -> str:
    """COMPLETED transfers of this run must equal its 201 answers; no row of it may be left PENDING."""
    completed, pending = counts(world, f"bench-{run_id}-%")
    created = rep["statuses"].get("201", 0) + replayed[201]
    verdict = "OK" if completed == created and pending == 0 else "FAILED"
    return (
        f"{run_id}: COMPLETED {completed} = 201 answers {created} "
        f"({len(rep['unanswered'])} unanswered or 503 at stop, replayed: {dict(replayed)};"
        f" PENDING left {pending}) {verdict}"
    )
