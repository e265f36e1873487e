"""Composition root: builds the applications, views, pools and clients from settings."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import msgspec
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from adapters.customer_keys import customer_master_key
from adapters.metrics import record_ingest_metrics
from adapters.nats.closing import drain_or_close
from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.ingest_listener import IngestListener
from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.subjects import event_subject
from adapters.window_counters import MemoryWindowCounter, RedisWindowCounter, WindowCounter
from bootstrap import applications
from bootstrap.connections import api_pool, connect_nats_service
from bootstrap.dlms_keys import key_service
from bootstrap.dlms_profiles import profile_catalogue
from commands.fleet import FleetOperations
from commands.ingest import IngestService
from commands.notification_subscriptions import NotificationSubscriptions
from commands.operations import OperationsLog
from config.settings import Settings
from domain.readings import Source
from processes.insights.runner import InsightsProcess
from processes.notifier import secret_box
from projections.alerts_queries import AlertQueries
from projections.audit_queries import AuditQueries
from projections.billing import BillingQueries
from projections.customers_queries import CustomerQueries
from projections.dashboard_queries import DashboardQueries
from projections.dlms_queries import DlmsQueries
from projections.fleet_queries import FleetPosition
from projections.insights_queries import InsightQueries
from projections.intervals import IntervalQueries
from projections.meter_directory import MeterDirectory
from projections.meters_queries import MeterQueries
from projections.notification_deliveries import NotificationDeliveries
from projections.price_cache import PriceCache
from projections.reading_queries import ReadingQueries
from projections.sims_queries import SimQueries
from projections.tariffs_queries import TariffQueries

_json = msgspec.json.Encoder()


class _TariffEventHead(msgspec.Struct):
    """The CloudEvents fields a price-cache refresh needs."""

    subject: UUID
    aggregateversion: int


class Container:
    """Everything a running process needs, opened and closed together."""

    def __init__(self, settings: Settings) -> None:
        if settings.database.url is None or settings.nats.url is None:
            raise ValueError("server URLs must be resolved before building the container")
        self.settings = settings
        self.registry = applications.meter_registry(settings.database)
        self.tariffs = applications.tariff_book(settings.database)
        self.alerts = applications.alert_desk(settings.database)
        self.api_keys = applications.api_key_registry(settings.database)
        self.sims = applications.sim_inventory(settings.database)
        customer_key = customer_master_key(settings.customers.master_key, settings.runtime.data_dir)
        self.customers = applications.customer_book(settings.database, customer_key)
        if settings.customers.links_checked:
            self.registry.customers = self.customers
        self._operations: OperationsLog | None = None
        self._fleet: FleetOperations | None = None
        self.pool: AsyncConnectionPool[Any] = api_pool(settings.database)
        self.meters = MeterQueries(self.pool, settings.database.schema)
        self.readings = ReadingQueries(self.pool, settings.database.schema)
        self.intervals = IntervalQueries(self.pool, settings.database.schema)
        self.billing = BillingQueries(self.pool, settings.database.schema)
        self.tariff_queries = TariffQueries(self.pool, settings.database.schema)
        self.alert_queries = AlertQueries(self.pool, settings.database.schema)
        self.insight_queries = InsightQueries(
            self.pool, settings.database.schema, settings.readings.default_region_capacity_kw * 1000
        )
        self.insights = InsightsProcess(
            settings.database, settings.insights, self.pool, self.alerts
        )
        self.sim_queries = SimQueries(self.pool, settings.database.schema)
        self.fleet_position = FleetPosition(self.pool, settings.database.schema)
        self.dlms = DlmsQueries(self.pool, settings.database.schema)
        self.dlms_profiles = profile_catalogue(settings.dlms)
        self.dashboard = DashboardQueries(
            self.pool, settings.database.schema, settings.readings.default_region_capacity_kw * 1000
        )
        self.audit = AuditQueries(self.pool, settings.database.schema)
        self.customer_queries = CustomerQueries(self.pool, settings.database.schema, customer_key)
        self.meter_keys = key_service(settings, self.registry)
        self.notifications = NotificationSubscriptions(
            self.pool,
            settings.database.schema,
            secret_box(settings.notifications, settings.runtime.data_dir),
            policy=settings.notifications.webhook_policy,
            email_enabled=settings.notifications.smtp_host is not None,
        )
        self.notification_deliveries = NotificationDeliveries(
            self.pool, settings.database.schema, self.notifications
        )
        self.nats: NatsClient | None = None
        self._ingest: IngestService | None = None
        self._listener: IngestListener | None = None
        self.redis: Redis | None = (
            Redis.from_url(settings.api.redis_url, socket_timeout=2)
            if settings.api.redis_url
            else None
        )
        self.prices = PriceCache(self.store("prices"), self.tariff_queries)
        self._refreshes: set[asyncio.Task[bool]] = set()

    def store(self, name: str) -> Store:
        """A key-value store for ``name``: Redis (namespaced per schema) or in-process memory."""
        if self.redis is None:
            return MemoryStore()
        return RedisStore(self.redis, namespace=f"hes:{self.settings.database.schema}:{name}")

    def counter(self, name: str) -> WindowCounter:
        """A counter per key and window for ``name``: Redis (shared by replicas) or in-process."""
        if self.redis is None:
            return MemoryWindowCounter()
        return RedisWindowCounter(
            self.redis, namespace=f"hes:{self.settings.database.schema}:{name}"
        )

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
        assert s.nats.url is not None
        self.nats = await connect_nats_service(s.nats, "hes-api")
        self._ingest = IngestService(
            MeterDirectory(self.pool, s.database.schema),
            ReadingPublisher(self.nats, s.nats),
            DeadLetterPublisher(self.nats, s.nats),
            partitions=s.readings.partitions,
            max_batch_readings=s.readings.max_batch,
            future_tolerance_seconds=s.readings.future_tolerance_seconds,
            max_age_seconds=s.readings.retention_raw_days * 86400.0,
        )
        if listen_for_ingest:
            self._listener = IngestListener(self.nats, s.nats, self._ingest_over_nats)
            await self._listener.start()
        await self.nats.subscribe(
            event_subject(s.nats.prefix, "tariff", "*"), cb=self._on_tariff_event
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

    @property
    def fleet(self) -> FleetOperations:
        """Fleet operations: images, TOU plans, campaigns (opened on first use)."""
        if self._fleet is None:
            self._fleet = applications.fleet_operations(self.settings.database)
        return self._fleet

    @property
    def operations(self) -> OperationsLog:
        """The operators' interventions log (opened on first use: only auditors read it)."""
        if self._operations is None:
            self._operations = applications.operations_log(self.settings.database)
        return self._operations

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
        await asyncio.to_thread(self.sims.close)
        await asyncio.to_thread(self.customers.close)
        if self._operations is not None:
            await asyncio.to_thread(self._operations.close)
        if self._fleet is not None:
            await asyncio.to_thread(self._fleet.close)
