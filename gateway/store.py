"""The shared store: redis-py's asyncio client, failing fast and logging once per outage.

Production points `settings.redis_url` at Redis; the default is the embedded
store (embedded_store.py), a private redis-server on a unix socket. Both speak
the same protocol, so this is the only store code the gateway has.

A store that stops answering raises StoreDown. For a second after a failure,
calls raise it at once without touching the network, so an outage costs each
request nothing; the outage and the recovery are each logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("gateway")
T = TypeVar("T")

TIMEOUT_S = 1.0  # a store slower than this is treated as down: the provider call matters more
RETRY_DOWN_AFTER_S = 1.0
POOL_SIZE = 128  # connections to the store per process, at most


class StoreDown(Exception):
    """The store did not answer; the message names no address, so a client may read it."""


def cache_key(digest: str) -> str:
    return f"gw:cache:v2:{digest}"  # v2: the digest covers the cache scope


def describe(url: str) -> str:
    """The store's address without its password, for logs and /ready."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"embedded store at {parts.path}"
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}"


class Store:
    def __init__(self, url: str, on_error: Callable[[], None] = lambda: None):
        self.name = describe(url)  # for logs
        self.kind = "embedded" if url.startswith("unix://") else "redis"  # for clients
        # One immediate retry: after a Redis restart the pooled connections are dead,
        # and the first command on each finds out; a fresh connection then succeeds.
        # Past POOL_SIZE commands at once a command waits for a connection (a healthy
        # store frees one in well under TIMEOUT_S) rather than failing as if it were down.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        self.redis = Redis.from_pool(pool)
        self._down_since: float | None = None
        self._next_try = 0.0
        self._on_error = on_error  # counts every failed or skipped operation

    async def run(self, op: Callable[[Redis], Awaitable[T]], *, probe: bool = False) -> T:
        """Run `op` against Redis; `probe` tries even inside the fail-fast second."""
        if self._down_since is not None and not probe and time.monotonic() < self._next_try:
            self._on_error()
            raise StoreDown(f"the {self.kind} store does not answer")
        try:
            result = await op(self.redis)
        except (RedisError, OSError) as exc:
            self._on_error()
            self._failed(exc)
            raise StoreDown(f"the {self.kind} store does not answer "
                            f"({type(exc).__name__})") from exc
        if self._down_since is not None:
            log.warning("store %s answers again after %.1fs", self.name,
                        time.monotonic() - self._down_since)
            self._down_since = None
        return result

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.error("store %s does not answer (%s): serving without the cache until it "
                      "returns", self.name, type(exc).__name__)
        self._next_try = now + RETRY_DOWN_AFTER_S

    async def get(self, key: str) -> bytes | None:
        value = await self.run(lambda redis: redis.get(key))
        return value if isinstance(value, bytes) else None  # a client that decodes: never

    async def first(self, keys: tuple[str, ...]) -> bytes | None:
        """The value of the first of `keys` that has one, in one round trip."""
        values = await self.run(lambda redis: redis.mget(keys))
        return next((value for value in values if isinstance(value, bytes)), None)

    async def set(self, key: str, value: bytes, ttl_s: int, overwrite: bool = True) -> None:
        await self.run(lambda redis: redis.set(key, value, ex=ttl_s, nx=not overwrite))

    async def many(self, keys: list[str]) -> list[bytes | None]:
        """The values of `keys`, in order (None where there is none), in one round trip."""
        values = await self.run(lambda redis: redis.mget(keys))
        return [value if isinstance(value, bytes) else None for value in values]

    async def set_many(self, values: list[tuple[str, bytes, int]]) -> None:
        """Every (key, value, ttl_s) set, in one round trip."""
        async def op(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for key, value, ttl_s in values:
                    pipe.set(key, value, ex=ttl_s)
                await pipe.execute()
        await self.run(op)

    async def delete(self, *keys: str) -> bool:
        """Whether there was a value to delete."""
        return bool(await self.run(lambda redis: redis.delete(*keys)))

    async def problem(self) -> str | None:
        """None when the store answers a PING now, else why not (for /ready)."""
        try:
            await self.run(lambda redis: redis.ping(), probe=True)
        except StoreDown as exc:
            return str(exc)
        return None

    async def close(self) -> None:
        await self.redis.aclose()
