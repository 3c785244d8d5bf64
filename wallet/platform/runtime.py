"""The runtime every service function receives: settings, the database engine, the shared store, the CPU pool."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from settings import Settings
from wallet.errors import ServiceUnavailable
from wallet.platform import metrics
from wallet.platform.db import create_engine
from wallet.platform.prepared import postgres_error
from wallet.platform.store import Store, create_store

T = TypeVar("T")
S = TypeVar("S")

# How much lower than the event loop's the CPU pool's threads run (Linux nice levels, per thread; with the kernel's
# autogroups a nice value ranks a thread against the others of its session, the event loop first): a login's bcrypt
# (~0.25 s of CPU at cost 12) then mostly yields the core to the requests beside it. Measured with bench/run.py's
# login step on 2 shared cores (8 login connections, reads offered open loop beside them): at 300 reads/s the read p99
# fell from 65-190 ms to 10-35 ms with one process, logins within the noise; with reads saturating two processes,
# logins in 15 s went 31 (nice 0) -> 12 (10) -> 4 (19): 19 starves them, so 10.
CPU_POOL_NICENESS = 10


# SQLSTATEs of a database that is down, restarting, overloaded or too slow, rather than of a wrong request:
# 08 connection exceptions; 53 insufficient resources (too many connections); 57P01-57P03 administrator or crash
# shutdown and "the database system is starting up / in recovery mode / not yet accepting connections";
# 57014 a statement cancelled by DB_STATEMENT_TIMEOUT; 40P01 a deadlock PostgreSQL broke by failing this side (another
# transaction locked the same rows in the other order: nothing of this one was committed, and its retry is safe).
_OUTAGE_SQLSTATES = ("08", "53", "57P", "57014", "40P01")


@contextmanager
def _database_outage() -> Iterator[None]:
    """A database that cannot be reached, drops the connection, restarts or hangs is a dependency outage (503), not
    our fault. OSError covers refused connections and asyncpg's client-side timeouts (TimeoutError)."""
    try:
        yield
    except (DBAPIError, asyncpg.PostgresError) as error:
        found = postgres_error(error)
        invalidated = isinstance(error, DBAPIError) and error.connection_invalidated
        if not (invalidated or (found is not None and found.sqlstate.startswith(_OUTAGE_SQLSTATES))):
            raise
        raise ServiceUnavailable("The database is not answering; try again shortly.") from None
    except (OSError, PoolTimeout):
        raise ServiceUnavailable("The database is not answering; try again shortly.") from None


def _lower_priority() -> None:
    """The CPU pool's thread initializer: CPU_POOL_NICENESS below the thread that started it (the event loop's),
    whatever niceness the server was started with. Raising one's own nice value needs no privilege."""
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS names a process, not a thread: the whole server would drop
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + CPU_POOL_NICENESS))


@dataclass
class _Held:
    """The connection a task holds for a whole unit of work (Runtime.session), idle between its blocks."""

    conn: AsyncConnection
    task: asyncio.Task[Any] | None
    busy: bool = False


_REPLICA_LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
_held: ContextVar[_Held | None] = ContextVar("held_connection", default=None)


def _idle_held() -> _Held | None:
    """The session's connection when this task may use it now: not inside another of its blocks, not a task that
    merely inherited the context (a task spawned during the session runs beside it), and not lost (after a database
    outage the blocks that follow, such as releasing the claim, take a fresh connection and fail as one would)."""
    held = _held.get()
    if held is None or held.busy or held.task is not asyncio.current_task() or held.conn.invalidated:
        return None
    return held


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    # bcrypt and other CPU-bound work; never on the event loop, and at a lower CPU priority than it.
    executor: ThreadPoolExecutor
    # DATABASE_READ_URL's: the replicas, for the reads where a little staleness is harmless (snapshot()).
    read_engine: AsyncEngine | None = None
    store: Store = field(init=False)
    _kept: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)
    # The same pool, its connections checked out in autocommit mode: set with the checkout, not in a step of its own
    # (each is a hop through SQLAlchemy's greenlet; a session's checkout and return went from ~82 to ~67 us of CPU).
    _autocommit_engine: AsyncEngine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.store = create_store(self.settings.redis_url, self.settings.redis_prefix, self.autocommit)
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        assert settings.database_url, "the server resolves DATABASE_URL before building the runtime"
        # The CPU pools of all processes together leave one core to the event loops and the database, so a burst
        # of logins (bcrypt, ~0.3 s of CPU each) cannot starve every other request.
        cpu_workers = max(1, ((os.cpu_count() or 2) - 1) // settings.processes)
        return cls(
            settings,
            create_engine(settings),
            ThreadPoolExecutor(max_workers=cpu_workers, initializer=_lower_priority),
            create_engine(settings, settings.database_read_url) if settings.database_read_url else None,
        )

    def per_process(self, kind: Callable[[Settings], S]) -> S:
        """This process's one instance of `kind`, made from the settings on first use: state an upper layer keeps for
        the process's lifetime (identity's verified tokens and revoked sessions) without this layer knowing its type."""
        try:
            return self._kept[kind]
        except KeyError:
            made = self._kept[kind] = kind(self.settings)
            return made

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Check one connection out for the whole block: the autocommit() and transaction() blocks inside it use
        it in turn (a money request takes one connection from the pool, not one per step). Between blocks it is in
        autocommit mode, so holding it holds no transaction."""
        if _held.get() is not None:
            yield
            return
        with _database_outage():
            async with AsyncExitStack() as stack:
                with metrics.waiting_for_connection():
                    conn = await stack.enter_async_context(self._autocommit_engine.connect())
                token = _held.set(_Held(conn, asyncio.current_task()))
                try:
                    yield
                finally:
                    _held.reset(token)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One unit of work: commits when the block ends, rolls back when it raises."""
        held = _idle_held()
        with _database_outage():
            if held is not None:
                held.busy = True
                try:
                    await held.conn.rollback()  # ends the autocommit blocks' bookkeeping; nothing is sent
                    await held.conn.execution_options(isolation_level=self.engine.dialect.default_isolation_level)
                    try:
                        async with held.conn.begin():
                            yield held.conn
                    finally:
                        await held.conn.execution_options(isolation_level="AUTOCOMMIT")
                finally:
                    held.busy = False
                return
            async with AsyncExitStack() as stack:
                with metrics.waiting_for_connection():
                    conn = await stack.enter_async_context(self.engine.begin())
                yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """Each statement commits on its own, without the BEGIN and COMMIT round trips: for single-statement work."""
        held = _idle_held()
        with _database_outage():
            if held is not None:
                held.busy = True
                try:
                    yield held.conn
                except BaseException:
                    with contextlib.suppress(Exception):
                        await held.conn.rollback()  # resets the connection's bookkeeping for the next block
                    raise
                finally:
                    held.busy = False
                return
            async with AsyncExitStack() as stack:
                with metrics.waiting_for_connection():
                    conn = await stack.enter_async_context(self._autocommit_engine.connect())
                yield conn

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only REPEATABLE READ transaction: every query in it sees the same committed state, however long
        the block takes (a statement streamed to a slow client stays consistent with its totals). On a replica
        (DATABASE_READ_URL) when there is one: it may lag the leader by the replication lag."""
        with _database_outage():
            async with (self.read_engine or self.engine).connect() as conn:
                await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                async with conn.begin():
                    yield conn

    async def run_cpu(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    async def replica_lag(self) -> float | None:
        """Seconds the replica behind DATABASE_READ_URL has yet to replay (0 when it has replayed all it received,
        or is a primary); None without DATABASE_READ_URL."""
        if self.read_engine is None:
            return None
        with _database_outage():
            async with self.read_engine.connect() as conn:
                return float((await conn.execute(_REPLICA_LAG)).scalar_one())

    async def close(self) -> None:
        if self.read_engine is not None:
            await self.read_engine.dispose()
        await self.engine.dispose()
        await self.store.close()
        self.executor.shutdown(wait=False)
