"""Which process of the cluster runs each periodic job: the holder of the job's PostgreSQL advisory lock.

Every process runs every job's loop; at each lap it asks `leads(job)`. The first to take the job's session-level
`pg_try_advisory_lock` on its own dedicated connection leads it, and keeps it for as long as that connection lives:
a leader that dies (kill -9, a lost host) loses its connection and with it the lock, which another process takes at
its next lap, within one interval. A leader that stops resigns (`resign`), so the next takes over at once.

A job's lock is named by the job and the settings that shape its runs (its variant): processes configured alike share
one leader; one configured otherwise (a host without the Paystack key, another PENDING_TIMEOUT) leads its own variant
instead of running, or not running, the job for the others with its settings.
"""

from __future__ import annotations

import asyncio
import zlib

import asyncpg

from wallet.errors import ServiceUnavailable
from wallet.platform import metrics
from wallet.platform.db import libpq_url

# The first key of every job's lock (pg_try_advisory_lock(int, int)); the one-bigint key space of the migrations'
# and the webhook claims' locks (727274, 727275) is a different one.
JOB_LOCKS = 727276
# Seconds to connect, and for the leader's check that its connection (so its lock) is still there.
TIMEOUT = 5


def job_key(job: str, variant: str) -> int:
    """The second key of a job's lock: stable across releases and hosts (a hash of its name and variant, as a signed
    int4)."""
    return int.from_bytes(zlib.crc32(f"{job}/{variant}".encode()).to_bytes(4, "big"), "big", signed=True)


class Leadership:
    """This process's claims on the cluster's periodic jobs, held on one connection of its own (outside the pool,
    and never through a transaction pooler: a session's lock must live as long as the session)."""

    def __init__(self, database_url: str) -> None:
        self.dsn = libpq_url(database_url)
        self.conn: asyncpg.Connection | None = None
        self.held: dict[str, str] = {}  # job -> the variant whose lock is held
        self.known: set[str] = set()
        self.lock = asyncio.Lock()  # one query at a time on the connection

    async def leads(self, job: str, variant: str = "") -> bool:
        """Whether this process leads `job` for this lap: it did and its connection still answers, or the lock was
        free and is now its. ServiceUnavailable when the database cannot say (then it leads nothing)."""
        async with self.lock:
            self.known.add(job)
            try:
                if self.conn is None or self.conn.is_closed():
                    self._lost()
                    self.conn = await asyncpg.connect(self.dsn, timeout=TIMEOUT)
                if job in self.held:
                    await self.conn.fetchval("SELECT 1", timeout=TIMEOUT)
                elif await self.conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", JOB_LOCKS, job_key(job, variant), timeout=TIMEOUT
                ):
                    self.held[job] = variant
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if self.conn is not None:
                    self.conn.terminate()
                self._lost()
                raise ServiceUnavailable("The database is not answering; try again shortly.") from None
            finally:
                self._report()
            return job in self.held

    async def resign(self, job: str) -> None:
        """Give `job` up (a stop): the next process to ask takes it without waiting for this one's connection."""
        async with self.lock:
            if job in self.held and self.conn is not None and not self.conn.is_closed():
                try:
                    await self.conn.fetchval(
                        "SELECT pg_advisory_unlock($1, $2)", JOB_LOCKS, job_key(job, self.held[job]), timeout=TIMEOUT
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    self.conn.terminate()  # a lock cannot outlive its connection
                    self._lost()
            self.held.pop(job, None)
            self._report()

    def leading(self) -> list[str]:
        return sorted(self.held)

    async def close(self) -> None:
        """Ends the connection, and every lock on it."""
        async with self.lock:
            if self.conn is not None:
                self.conn.terminate()
            self._lost()
            self._report()

    def _lost(self) -> None:
        self.conn = None
        self.held.clear()

    def _report(self) -> None:
        for job in self.known:
            metrics.job_leader(job, job in self.held)
