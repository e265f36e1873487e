"""The per-actor limit on dangerous commands holds exactly across API replicas (Redis)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from adapters.window_counters import RedisWindowCounter
from api.dangerous import DangerousCommands, DangerousRateLimited
from commands.context import Actor, Role
from config.settings import Settings

pytestmark = pytest.mark.integration


async def test_replicas_racing_for_the_last_slots_admit_exactly_the_limit(
    settings: Settings,
) -> None:
    assert settings.api.redis_url, "the test services include Redis"
    redis = Redis.from_url(settings.api.redis_url)
    namespace = f"hes:{settings.database.schema}:dangerous-race-{uuid.uuid4().hex[:6]}"
    replicas = [
        DangerousCommands(RedisWindowCounter(redis, namespace), bulk_threshold=1, per_hour=5)
        for _ in range(3)
    ]
    actor = Actor(subject="olga", roles=frozenset({Role.OPERATOR}))

    async def attempt(n: int) -> bool:
        guard = replicas[n % len(replicas)]
        try:
            await guard.admit(actor, "disconnectMeters", count=2, confirm="disconnectMeters 2")
        except DangerousRateLimited:
            return False
        return True

    try:
        outcomes = await asyncio.gather(*(attempt(n) for n in range(60)))
        assert sum(outcomes) == 5
        other = Actor(subject="oscar", roles=frozenset({Role.OPERATOR}))
        await replicas[0].admit(other, "disconnectMeters", count=2, confirm="disconnectMeters 2")
        keys = [key async for key in redis.scan_iter(f"{namespace}:*")]
        ttls = [await redis.ttl(key) for key in keys]
        assert len(keys) == 2 and all(0 < ttl <= 3660 for ttl in ttls)
    finally:
        async for key in redis.scan_iter(f"{namespace}:*"):
            await redis.delete(key)
        await redis.aclose()
