"""Composition root: builds the applications, views, pools and clients from settings."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import msgspec
import nats
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from adapters.metrics import record_ingest_metrics
from adapters.nats.closing import drain_or_close
from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.ingest_listener import IngestListener
from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.subjects import event_subject
from adapters.window_counters import MemoryWindowCounter, RedisWindowCounter, WindowCounter
from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.ingest import IngestService
from commands.meters import MeterRegistry
from commands.tariffs import TariffBook
from domain.readings import Source
from hes.dlms_keys import key_service
from hes.settings import Settings
from projections.alerts_queries import AlertQueries
from projections.billing import BillingQueries
from projections.dlms_queries import DlmsQueries
from projections.intervals import IntervalQueries
from projections.meter_directory import MeterDirectory
from projections.meters_queries import MeterQueries
from projections.notification_deliveries import NotificationDeliveries
from projections.notification_subscriptions import NotificationSubscriptions
from projections.notifier import secret_box
from projections.price_cache import PriceCache
from projections.reading_queries import ReadingQueries
from projections.tariffs_queries import TariffQueries

_json = msgspec.json.Encoder()


class _TariffEventHead(msgspec.Struct):
    """The CloudEvents fields a price-cache refresh needs."""

    subject: UUID
    aggregateversion: int


class Container:
    """Everything a running process needs, opened and closed together."""

    def __init__(self, settings: Settings) -> None:
        if settings.database_url is None or settings.nats_url is None:
            raise ValueError("server URLs must be resolved before building the container")
        self.settings = settings
        self.registry = MeterRegistry(env=settings.eventsourcing_env())
        self.tariffs = TariffBook(env=settings.eventsourcing_env())
        self.alerts = AlertDesk(env=settings.eventsourcing_env())
        self.api_keys = ApiKeyRegistry(env=settings.eventsourcing_env())
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=10,
            max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
            open=False,
            kwargs={"autocommit": True},
        )
        self.meters = MeterQueries(self.pool, settings.db_schema)
        self.readings = ReadingQueries(self.pool, settings.db_schema)
        self.intervals = IntervalQueries(self.pool, settings.db_schema)
        self.billing = BillingQueries(self.pool, settings.db_schema)
        self.tariff_queries = TariffQueries(self.pool, settings.db_schema)
        self.alert_queries = AlertQueries(self.pool, settings.db_schema)
        self.dlms = DlmsQueries(self.pool, settings.db_schema)
        self.meter_keys = key_service(settings, self.registry)
        self.notifications = NotificationSubscriptions(
            self.pool,
            settings.db_schema,
            secret_box(settings),
            allow_http=settings.notification_allow_http,
            email_enabled=settings.smtp_host is not None,
        )
        self.notification_deliveries = NotificationDeliveries(
            self.pool, settings.db_schema, self.notifications
        )
        self.nats: NatsClient | None = None
        self._ingest: IngestService | None = None
        self._listener: IngestListener | None = None
        self.redis: Redis | None = (
            Redis.from_url(settings.redis_url, socket_timeout=2) if settings.redis_url else None
        )
        self.prices = PriceCache(self.store("prices"), self.tariff_queries)
        self._refreshes: set[asyncio.Task[bool]] = set()

    def store(self, name: str) -> Store:
        """A key-value store for ``name``: Redis (namespaced per schema) or in-process memory."""
        if self.redis is None:
            return MemoryStore()
        return RedisStore(self.redis, namespace=f"hes:{self.settings.db_schema}:{name}")

    def counter(self, name: str) -> WindowCounter:
        """A counter per key and window for ``name``: Redis (shared by replicas) or in-process."""
        if self.redis is None:
            return MemoryWindowCounter()
        return RedisWindowCounter(self.redis, namespace=f"hes:{self.settings.db_schema}:{name}")

    @property
    def ingest(self) -> IngestService:
        """The telemetry ingest service (available once ``open`` has run)."""
        if self._ingest is None:
            raise RuntimeError("container is not open")
        return self._ingest

    async def open(self, *, listen_for_ingest: bool = True) -> None:
        """Open the read pool, the NATS connection, the ingest service and its NATS listener."""
        await self.pool.open(wait=True, timeout=10)
        s = self.settings
        assert s.nats_url is not None
        self.nats = await nats.connect(
            s.nats_url,
            name="hes-api",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            # a frozen server must not block publishers forever (they retry and push back)
            flush_timeout=5,
        )
        self._ingest = IngestService(
            MeterDirectory(self.pool, s.db_schema),
            ReadingPublisher(self.nats, s),
            DeadLetterPublisher(self.nats, s),
            partitions=s.reading_partitions,
            max_batch_readings=s.max_batch_readings,
            future_tolerance_seconds=s.future_tolerance_seconds,
            max_age_seconds=s.retention_raw_days * 86400.0,
        )
        if listen_for_ingest:
            self._listener = IngestListener(self.nats, s, self._ingest_over_nats)
            await self._listener.start()
        await self.nats.subscribe(
            event_subject(s.nats_prefix, "tariff", "*"), cb=self._on_tariff_event
        )

    async def _on_tariff_event(self, msg: Msg) -> None:
        """Refresh the cached price of the tariff a relayed event changed."""
        try:
            event = msgspec.json.decode(msg.data, type=_TariffEventHead)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        task = asyncio.create_task(self.prices.refresh(event.subject, event.aggregateversion))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _ingest_over_nats(self, body: bytes) -> bytes:
        result = await self.ingest.ingest(body, Source.NATS)
        record_ingest_metrics(result, "nats")
        return _json.encode(result)

    async def close(self) -> None:
        """Close everything opened by ``open`` and the applications' connections."""
        for task in list(self._refreshes):
            task.cancel()
        await asyncio.gather(*self._refreshes, return_exceptions=True)
        if self._listener is not None:
            await self._listener.stop()
        if self.nats is not None:
            await drain_or_close(self.nats)
        await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.registry.close)
        await asyncio.to_thread(self.tariffs.close)
        await asyncio.to_thread(self.alerts.close)
        await asyncio.to_thread(self.api_keys.close)
