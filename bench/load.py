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

from bench.seed import PASSWORD, query
from bench.world import BENCH, ROOT, Row, World

TIMEOUT = 10  # seconds a request may take before it counts as a timeout
BATCH_ITEMS = 100  # transfers per request in the batch scenario
RETRY_FOR = 75  # seconds a replay retries a key still in progress: past the server's PENDING_TIMEOUT (60 s)


def wrk(world: World, url: str, scenario: str, run_id: str, connections: int, seconds: int) -> subprocess.Popen:
    """bench/wrk.lua's scenario, with the EXTRA argument it needs."""
    extra = {"hot": world.merchant_wallet, "batch": str(BATCH_ITEMS), "login": PASSWORD}.get(scenario, "")
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s"]
    command += ["--timeout", f"{TIMEOUT}s", "-s", str(BENCH / "wrk.lua"), url]
    command += ["--", scenario, str(world.users_file), run_id, extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def openloop(
    world: World,
    url: str,
    run_id: str,
    rate: int,
    seconds: int,
    load: str = "transfer",
    max_connections: int = 0,
    deep: list[str] | None = None,
) -> subprocess.Popen:
    """`load` (transfer, read, or deep with its wallet, token and cursors) offered at `rate` a second for `seconds` on
    at most `max_connections` (0: no limit), in a process of their own as wrk runs in its own."""
    command = [sys.executable, "-m", "bench.openloop", url, str(world.users_file), run_id, str(rate), str(seconds)]
    command += ["--load", load, "--timeout", str(TIMEOUT)]
    if max_connections:
        command += ["--max-connections", str(max_connections)]
    if deep:
        command += ["--deep", *deep]
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


def _request(world: World, what: str) -> tuple[str, str, dict[str, Any]]:
    """The token, path and body of a money request the load left unanswered, from what wrk.lua (or the open-loop
    generator) remembered of it: a transfer's sender and recipient wallet, or a batch's sender and recipients."""
    sender, to = what.split(" ")
    token, from_wallet, _ = world.users[int(sender) - 1]
    if "-" in to:  # a wallet id: one transfer
        return token, "/transfers", {"from_wallet_id": from_wallet, "to_wallet_id": to, "amount": "0.01"}
    items = [
        {
            "reference": f"r{n}",
            "from_wallet_id": from_wallet,
            "to_wallet_id": world.users[int(u) - 1][1],
            "amount": "0.01",
        }
        for n, u in enumerate(to.split(","), 1)
    ]
    return token, "/transfers/batch", {"mode": "independent", "items": items}


def replay(world: World, url: str, unanswered: dict[str, str]) -> Counter[int]:
    """Send each transfer (or batch) left without a final answer at the stop (none, or a 503) again under its key,
    as a client would: the server answers what it did the first time (or, if the first never arrived or was refused,
    does it now), so every key ends with a known answer."""
    answers: Counter[int] = Counter()
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as client:
        for key, what in unanswered.items():
            token, path, body = _request(world, what)
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
            deadline = time.monotonic() + RETRY_FOR
            # 409 IDEMPOTENCY_IN_PROGRESS: the first is still executing, or a 503 left its claim (until the
            # server's PENDING_TIMEOUT); 503: the server is still catching up
            while (answer := client.post(path, json=body, headers=headers)).status_code in (409, 503):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            answers[answer.status_code] += 1
    return answers


_COUNTS = """
SELECT count(*) FILTER (WHERE t.status = 'COMPLETED'), count(*) FILTER (WHERE t.status = 'PENDING')
FROM transactions t WHERE t.type = 'TRANSFER' AND ({keyed})
"""
# A transfer carries its key; a batch's items are the transactions its row lists.
_KEYED = {
    False: "t.idempotency_key LIKE %s",
    True: "t.id IN (SELECT unnest(transaction_ids) FROM transfer_batches WHERE idempotency_key LIKE %s)",
}


def counts(world: World, key_pattern: str, batches: bool = False) -> tuple[int, int]:
    """COMPLETED and PENDING transfers whose Idempotency-Key (or their batch's) matches the LIKE pattern."""
    return query(world.database_url, _COUNTS.format(keyed=_KEYED[batches]), (key_pattern,))[0]


def count_check(world: World, run_id: str, rep: dict[str, Any], replayed: Counter[int], per_request: int = 1) -> str:
    """COMPLETED transfers of this run must equal its 201 answers (times the transfers per request: each item of a
    batch completes, there are funds for all); no row of it may be left PENDING."""
    completed, pending = counts(world, f"bench-{run_id}-%", batches=per_request > 1)
    created = (rep["statuses"].get("201", 0) + replayed[201]) * per_request
    verdict = "OK" if completed == created and pending == 0 else "FAILED"
    return (
        f"{run_id}: COMPLETED {completed} = 201 answers {created} "
        f"({len(rep['unanswered'])} unanswered or 503 at stop, replayed: {dict(replayed)};"
        f" PENDING left {pending}) {verdict}"
    )
