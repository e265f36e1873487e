"""Counters of events per key and time window, shared by every API replica when Redis is set.

Redis increments atomically (``INCR`` in a transaction with ``EXPIRE``), so two replicas
admitting the same actor at the same instant cannot both take the last slot; without Redis the
count lives in this process.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis


class WindowCounter(Protocol):
    """Counts occurrences per key; a key lives ``ttl_seconds`` after its last increment."""

    async def increment(self, key: str, ttl_seconds: int) -> int:
        """Add one to ``key`` and return its new count."""
        ...


class MemoryWindowCounter:
    """A process-local ``WindowCounter``."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    async def increment(self, key: str, ttl_seconds: int) -> int:
        """Add one to ``key`` and return its new count (no await: atomic on the event loop)."""
        now = time.monotonic()
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        count = self._counts.get(key, (0, 0.0))[0] + 1
        self._counts[key] = (count, now + ttl_seconds)
        return count


class RedisWindowCounter:
    """A ``WindowCounter`` in Redis under ``namespace:``."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def increment(self, key: str, ttl_seconds: int) -> int:
        """Add one to ``key`` and return its new count, atomically across processes."""
        name = f"{self._namespace}:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, ttl_seconds)
            count, _ = await pipe.execute()
        return int(count)
