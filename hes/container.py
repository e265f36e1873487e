"""Composition root: builds the applications, views, pools and clients from settings."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from commands.meters import MeterRegistry
from hes.settings import Settings
from projections.meters_queries import MeterQueries


class Container:
    """Everything a running process needs, opened and closed together."""

    def __init__(self, settings: Settings) -> None:
        if settings.database_url is None or settings.nats_url is None:
            raise ValueError("server URLs must be resolved before building the container")
        self.settings = settings
        self.registry = MeterRegistry(env=settings.eventsourcing_env())
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=10,
            open=False,
            kwargs={"autocommit": True},
        )
        self.meters = MeterQueries(self.pool, settings.db_schema)
        self.nats: NatsClient | None = None
        self.redis: Redis | None = (
            Redis.from_url(settings.redis_url, socket_timeout=2) if settings.redis_url else None
        )

    def store(self, name: str) -> Store:
        """A key-value store for ``name``: Redis (namespaced per schema) or in-process memory."""
        if self.redis is None:
            return MemoryStore()
        return RedisStore(self.redis, namespace=f"hes:{self.settings.db_schema}:{name}")

    async def open(self) -> None:
        """Open the read pool and the NATS connection."""
        await self.pool.open(wait=True, timeout=10)
        assert self.settings.nats_url is not None
        self.nats = await nats.connect(
            self.settings.nats_url,
            name="hes-api",
            max_reconnect_attempts=-1,
            connect_timeout=5,
        )

    async def close(self) -> None:
        """Close everything opened by ``open`` and the registry's connections."""
        if self.nats is not None:
            await self.nats.drain()
        await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.registry.close)
