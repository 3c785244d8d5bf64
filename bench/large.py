"""The bench's large world (`python -m bench.run --world large`): by default a million wallets and ten million ledger
entries, written with COPY, that the ledger audit passes, with one busy wallet (the merchant's) deep in history; and
what the bench measures on a world besides its load: the audit's and the sweeps' time and the tables' sizes.

Every wallet opens with a COMPLETED deposit of BALANCE from the outside world (two entries), on the first day of a
year of history; transfers between random wallets (two entries each) fill the rest of the year evenly, BUSY_SHARE
of them to or from the merchant. The generator keeps every balance, so each entry's balance_after is its wallet's
running sum and none goes below zero (a sender short of funds receives instead). The ids, usernames and numbers are
the small world's (bench/seed.py), so pgbench's scripts and the users file work on both; users 0 (the merchant) to
1,000 have a session and a token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import text

from bench.seed import BALANCE, FUNCTIONS, SESSIONS, SYSTEM_NUMBER, USER_ID, WALLET_ID, password_hash, query, users_file
from scripts.local_services import libpq_url
from settings import Settings, load_settings
from wallet.ledger import lifecycle
from wallet.operations import deposits, holds, payment_requests, schedules
from wallet.platform.db import resolve_database
from wallet.platform.paging import encode_cursor
from wallet.platform.runtime import Runtime

WALLETS, ENTRIES = 1_000_000, 10_000_000  # the default size
HISTORY = dt.timedelta(days=365)
BUSY_SHARE = 0.05  # of the transfers, to or from the merchant's wallet (user 0)
MAX_AMOUNT = 10_000  # minor units: a transfer moves 0.01 to 100.00
CHUNK = 50_000  # transactions per COPY and commit
SEED_RATE = 20_000  # entries a second, about, on two loaded cores (the progress's first estimate)
HASH = "0" * 64  # request_hash, as the small world's

_TRANSACTIONS = (
    "transactions (id, reference, type, status, amount, currency, source_wallet_id, destination_wallet_id,"
    " source_user_id, destination_user_id, initiator_id, request_hash, created_at, completed_at, claimed_at)"
)
_ENTRIES = "entries (transaction_id, wallet_id, amount, currency, balance_after, created_at)"


class _Progress:
    """A line per chunk of entries: how many of how many, and the time left at the pace so far."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say, self.done, self.started = total, say, 0, time.monotonic()

    def add(self, entries: int) -> None:
        self.done += entries
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        self.say(
            f"large world: {self.done:,} of {self.total:,} entries ({100 * self.done / self.total:.0f}%),"
            f" {elapsed:.0f} s, about {left / 60:.1f} min left"
        )


def _copy(cur: Any, table: str, lines: list[str]) -> None:
    cur.copy_expert(f"COPY {table} FROM STDIN", io.StringIO("".join(lines)))


class _Ledger:
    """The history as COPY lines, a chunk of transactions at a time, with every wallet's balance so far."""

    def __init__(self, wallets: int, system: str, start: dt.datetime, rand: random.Random) -> None:
        self.wallets, self.system, self.start, self.rand = wallets, system, start, rand
        self.balance = [0] * (wallets + 1)

    def deposits(self, first: int, last: int) -> tuple[list[str], list[str]]:
        """The opening deposits of wallets first .. last - 1, spread over the first day."""
        transactions, entries = [], []
        for n in range(first, last):
            at = (self.start + n * dt.timedelta(days=1) / (self.wallets + 1)).isoformat()
            tx, wallet, user = uuid.uuid4(), WALLET_ID.format(n), USER_ID.format(n)
            self.balance[n] = BALANCE
            transactions.append(
                f"{tx}\tSEED{n}\tDEPOSIT\tCOMPLETED\t{BALANCE}\tUSD\t\\N\t{wallet}\t\\N\t{user}\t{user}\t{HASH}"
                f"\t{at}\t{at}\t{at}\n"
            )
            entries.append(
                f"{tx}\t{wallet}\t{BALANCE}\tUSD\t{BALANCE}\t{at}\n{tx}\t{self.system}\t{-BALANCE}\tUSD\t\\N\t{at}\n"
            )
        return transactions, entries

    def _pair(self) -> tuple[int, int]:
        rand, wallets = self.rand, self.wallets
        if rand.random() < BUSY_SHARE:
            a, b = 0, rand.randint(1, wallets)
        else:
            a, b = rand.randint(1, wallets), rand.randint(1, wallets - 1)
            b += b >= a
        return (a, b) if rand.random() < 0.5 else (b, a)

    def transfers(self, first: int, last: int, total: int) -> tuple[list[str], list[str]]:
        """Transfers first .. last - 1 of `total`, evenly over the year after the first day."""
        transactions, entries = [], []
        step = (HISTORY - dt.timedelta(days=1)) / total
        balance = self.balance
        for i in range(first, last):
            a, b = self._pair()
            amount = min(self.rand.randint(1, MAX_AMOUNT), max(balance[a], balance[b]))
            if balance[a] < amount:
                a, b = b, a
            if amount == 0:  # both empty (never, in practice): a transfer of one minor unit the other way is still
                continue  # impossible, so this one is left out
            balance[a] -= amount
            balance[b] += amount
            at = (self.start + dt.timedelta(days=1) + i * step).isoformat()
            tx = uuid.uuid4()
            wa, wb, ua, ub = WALLET_ID.format(a), WALLET_ID.format(b), USER_ID.format(a), USER_ID.format(b)
            transactions.append(
                f"{tx}\tTX{tx.hex[:16].upper()}\tTRANSFER\tCOMPLETED\t{amount}\tUSD\t{wa}\t{wb}\t{ua}\t{ub}\t{ua}"
                f"\t{HASH}\t{at}\t{at}\t{at}\n"
            )
            entries.append(
                f"{tx}\t{wa}\t{-amount}\tUSD\t{balance[a]}\t{at}\n{tx}\t{wb}\t{amount}\tUSD\t{balance[b]}\t{at}\n"
            )
        return transactions, entries


def _chunks(total: int) -> Iterable[tuple[int, int]]:
    return ((first, min(first + CHUNK, total)) for first in range(0, total, CHUNK))


def grow(
    database_url: str,
    settings: Settings,
    wallets: int,
    entries: int,
    load_users: int,
    workdir: Path,
    say: Callable[[str], None] = print,
) -> tuple[Path, str, str]:
    """Write the large world into a migrated, empty database: `wallets` paying users (and the merchant) and about
    `entries` ledger entries (an even number: deposits' and transfers' two each); sessions and tokens for users 0 to
    `load_users`. Returns what bench/seed.py's users_file() returns."""
    transfers = (entries - 2 * (wallets + 1)) // 2
    if wallets < max(2, load_users) or transfers < 0:
        raise ValueError(f"{wallets} wallets need at least {2 * (wallets + 1)} entries (and {load_users} wallets)")
    start = (dt.datetime.now(dt.UTC) - HISTORY - dt.timedelta(minutes=1)).replace(microsecond=0)
    progress = _Progress(2 * (wallets + 1) + 2 * transfers, say)
    conn = psycopg2.connect(libpq_url(database_url))
    try:
        with conn.cursor() as cur:
            # The rows are consistent by construction, and the audit checks them afterwards: no per-row trigger (the
            # deferred balance check would run a query per entry) and no foreign-key check while they go in.
            cur.execute("SET session_replication_role = replica")
            cur.execute("SET maintenance_work_mem = '256MB'")  # the indexes rebuilt at the end sort in memory
            cur.execute(FUNCTIONS)
            cur.execute(
                "INSERT INTO wallets (id, number, currency, is_system, created_at) VALUES"
                " (gen_random_uuid(), %s, 'USD', true, %s) RETURNING id",
                (SYSTEM_NUMBER, start),
            )
            ledger = _Ledger(wallets, str(cur.fetchone()[0]), start, random.Random(wallets))
            indexes = _drop_indexes(cur, ("transactions", "entries"))
            for first, last in _chunks(wallets + 1):
                _write(conn, cur, *ledger.deposits(first, last), progress)
            for first, last in _chunks(transfers):
                _write(conn, cur, *ledger.transfers(first, last, transfers), progress)
            say(f"large world: building {len(indexes)} indexes")
            for definition in indexes:
                cur.execute(definition)
            hashed, opened = password_hash(settings), start.isoformat()
            for first, last in _chunks(wallets + 1):
                users = [
                    f"{USER_ID.format(n)}\t{'bench_merchant' if n == 0 else f'bench{n}'}\t{hashed}\t{opened}\n"
                    for n in range(first, last)
                ]
                _copy(cur, "users (id, username, password_hash, created_at)", users)
                rows = [
                    f"{WALLET_ID.format(n)}\t{1_000_000_000 + n}\t{USER_ID.format(n)}\tUSD\t{ledger.balance[n]}"
                    f"\t{opened}\t{opened}\n"
                    for n in range(first, last)
                ]
                _copy(cur, "wallets (id, number, user_id, currency, balance, created_at, updated_at)", rows)
            cur.execute(SESSIONS, {"n": load_users})
        conn.commit()
        say("large world: written; VACUUM ANALYZE, CHECKPOINT")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) users, wallets, transactions, entries")
            # The seeding's gigabytes of dirty pages written now, not by a checkpoint in the middle of a scenario.
            cur.execute("CHECKPOINT")
    finally:
        conn.close()
    return users_file(database_url, settings, workdir)


def _drop_indexes(cur: Any, tables: tuple[str, ...]) -> list[str]:
    """Drop the tables' indexes that no constraint owns, and return their definitions: building an index once the
    rows are in (a sort) takes a fraction of the time that keeping it up to date row by row does."""
    cur.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = ANY(CAST(%s AS regclass[]))"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = indexrelid)",
        (list(tables),),
    )
    found = cur.fetchall()
    for name, _ in found:
        cur.execute(f"DROP INDEX {name}")
    return [definition for _, definition in found]


def _write(conn: Any, cur: Any, transactions: list[str], entries: list[str], progress: _Progress) -> None:
    _copy(cur, _TRANSACTIONS, transactions)
    _copy(cur, _ENTRIES, entries)
    conn.commit()
    progress.add(2 * len(entries))


# ---- what the bench measures on a world besides its load -------------------------------------------------------

_DEPTHS = """
SELECT seq, total FROM (
    SELECT seq, row_number() OVER (ORDER BY seq DESC) AS depth, count(*) OVER () AS total FROM transactions
    WHERE source_wallet_id = %(wallet)s OR destination_wallet_id = %(wallet)s
) h
WHERE depth %% greatest(total / %(points)s, 1) = 0 AND depth < total ORDER BY depth
"""


def cursors(database_url: str, wallet: str, points: int = 10) -> tuple[list[str], int]:
    """History cursors of the wallet at `points` depths from its newest transaction to its oldest (each names the
    row after which its page starts, as the next_cursor of the page before would), and how deep the history is."""
    rows = query(database_url, _DEPTHS, {"wallet": wallet, "points": points})
    return [encode_cursor(seq) for seq, _ in rows], rows[0][1] if rows else 0


_SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid),
       (SELECT count(*) FROM transactions)
FROM pg_class c WHERE c.relname IN ('transactions', 'entries', 'wallets', 'users') AND c.relkind = 'r'
ORDER BY pg_total_relation_size(c.oid) DESC
"""


def sizes(database_url: str) -> str:
    """The ledger's tables, each with its indexes and TOAST (pg_total_relation_size), per million transactions."""
    rows = query(database_url, _SIZES)
    mib = lambda size: size / 2**20  # noqa: E731
    per = 1e6 / max(rows[0][4], 1)
    return f"sizes ({rows[0][4]:,} transactions; MiB per million transactions: table + indexes): " + ", ".join(
        f"{name} {mib(total * per):.0f} ({mib(heap * per):.0f} + {mib(indexes * per):.0f})"
        for name, total, heap, indexes, _ in rows
    )


def sweeps(env: dict[str, str]) -> str:
    """One run of each periodic sweep that reads the ledger's tables (server.py's jobs), timed, in this process."""
    jobs = {
        "interrupted transactions": lifecycle.recover_interrupted,
        "provider deposits": deposits.sweep,
        "holds": holds.expire,
        "payment requests": payment_requests.expire,
        "scheduled transfers": schedules.run_due,
    }

    async def timed() -> list[str]:
        rt = Runtime.create(resolve_database(load_settings(env)))
        try:
            async with rt.transaction() as conn:  # the pool's first connection is not the first sweep's cost
                await conn.execute(text("SELECT 1"))
            found = []
            for name, job in jobs.items():
                started = time.monotonic()
                await job(rt)
                found.append(f"{name} {1000 * (time.monotonic() - started):.1f} ms")
            return found
        finally:
            await rt.close()

    return "sweeps: " + ", ".join(asyncio.run(timed()))
