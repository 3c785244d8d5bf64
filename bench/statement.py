"""Measure a 100,000-entry statement in each format: time to the last byte and the server's peak memory.

    env -u DATABASE_URL -u REDIS_URL .venv/bin/python -m bench.statement [--entries 100000]

Seeds one wallet's history by SQL into a throwaway database (balanced pairs against the system account, COMPLETED,
the wallet's balance the entries' sum), serves each format from a fresh server process (so its peak RSS is that
request's), then runs the ledger audit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from scripts.local_services import free_port, fresh_database, libpq_url, postgres_server, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-1"

# Every fourth entry a withdrawal of 1.00, the others deposits of 1.00; balance_after is the running sum. Each
# transaction's two entries (the wallet's and the system account's) sum to zero. All fall within the wallet's life.
_SEED = """
INSERT INTO wallets (id, number, user_id, currency, is_system)
    VALUES (gen_random_uuid(), '0999999999', NULL, 'USD', true) ON CONFLICT DO NOTHING;
CREATE TEMP TABLE seed ON COMMIT DROP AS
    SELECT n, gen_random_uuid() AS tx, CASE WHEN n %% 4 = 0 THEN -100 ELSE 100 END AS delta,
           w.created_at + n * %(spacing)s::interval AS at
    FROM generate_series(1, %(n)s) n, wallets w WHERE w.id = %(wallet)s::uuid;
INSERT INTO transactions (id, reference, type, status, amount, currency, source_wallet_id, destination_wallet_id,
                          source_user_id, destination_user_id, initiator_id, request_hash, description,
                          created_at, completed_at)
    SELECT tx, 'ST' || n, CASE WHEN delta > 0 THEN 'DEPOSIT' ELSE 'WITHDRAWAL' END, 'COMPLETED', abs(delta), 'USD',
           CASE WHEN delta < 0 THEN %(wallet)s::uuid END, CASE WHEN delta > 0 THEN %(wallet)s::uuid END,
           CASE WHEN delta < 0 THEN %(user)s::uuid END, CASE WHEN delta > 0 THEN %(user)s::uuid END,
           %(user)s::uuid, repeat('0', 64), 'seeded entry ' || n, at, at
    FROM seed;
INSERT INTO entries (transaction_id, wallet_id, amount, currency, balance_after, created_at)
    SELECT tx, %(wallet)s::uuid, delta, 'USD', SUM(delta) OVER (ORDER BY n), at FROM seed
    UNION ALL
    SELECT tx, w.id, -delta, 'USD', NULL, at FROM seed, wallets w
    WHERE w.is_system AND NOT w.is_fx AND w.currency = 'USD';
UPDATE wallets SET balance = (SELECT SUM(delta) FROM seed) WHERE id = %(wallet)s::uuid;
"""


def seed_entries(
    cur: Any, wallet_id: str, user_id: str, count: int, spacing: dt.timedelta = dt.timedelta(microseconds=1)
) -> None:
    """Append `count` COMPLETED deposits and withdrawals of 1.00 to a USD wallet that has no entries yet, `spacing`
    apart from the wallet's opening on (it must be that far in the past)."""
    cur.execute(_SEED, {"n": count, "wallet": wallet_id, "user": user_id, "spacing": spacing})


def _serve(env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py")], cwd=ROOT, env={**os.environ, **env, "PORT": str(port)}
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    with postgres_server() as pg, fresh_database(pg) as database_url:
        env = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": "bench-secret-" + "x" * 40,
            "BCRYPT_ROUNDS": "4",
            "LOG_LEVEL": "WARNING",
            "STATEMENT_PDF_MAX_ENTRIES": str(args.entries),
        }
        url, proc = _serve(env)
        try:
            with httpx.Client(base_url=f"{url}/api/v1") as client:
                login = {"username": "statement_bench", "password": PASSWORD}
                registered = client.post("/auth/register", json={**login, "currency": "USD"}).json()
                token = client.post("/auth/login", json=login).json()["access_token"]
        finally:
            stop(proc)
        wallet, user = registered["wallet"]["id"], registered["user"]["id"]
        started = time.monotonic()
        with psycopg2.connect(libpq_url(database_url)) as conn, conn.cursor() as cur:
            seed_entries(cur, wallet, user, args.entries)
            cur.execute("ANALYZE")
        print(f"seeded {args.entries} entries in {time.monotonic() - started:.1f} s")
        print("| format | bytes | seconds | server RSS before (MiB) | server peak RSS (MiB) |")
        print("|---|---|---|---|---|")
        for kind in ("json", "csv", "pdf"):
            url, proc = _serve(env)
            try:
                before = _memory_kib(proc.pid, "VmRSS")
                size, started = 0, time.monotonic()
                headers = {"Authorization": f"Bearer {token}"}
                path = f"{url}/api/v1/wallets/{wallet}/statement"
                with httpx.stream("GET", path, params={"format": kind}, headers=headers, timeout=300) as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes():
                        size += len(chunk)
                seconds = time.monotonic() - started
                peak = _memory_kib(proc.pid, "VmHWM")
            finally:
                stop(proc)
            print(f"| {kind} | {size:,} | {seconds:.1f} | {before / 1024:.0f} | {peak / 1024:.0f} |")
        audit = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "audit"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        print("audit:", "passed" if audit.returncode == 0 else audit.stdout + audit.stderr)


if __name__ == "__main__":
    main()
