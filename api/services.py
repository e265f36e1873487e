"""What the API needs from its process: applications, read models and clients (a Protocol).

The composition root (``bootstrap.container.Services``) provides it; the API never imports the
composition root, so the dependency points inward.
"""

from __future__ import annotations

from typing import Any, Protocol

from litestar.stores.base import Store
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from adapters.window_counters import WindowCounter
from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.customers import CustomerBook
from commands.fleet import FleetOperations
from commands.ingest import IngestService
from commands.meter_keys import MeterKeyService
from commands.meters import MeterRegistry
from commands.notification_subscriptions import NotificationSubscriptions
from commands.operations import OperationsLog
from commands.sims import SimInventory
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.dlms_profile import ProfileCatalogue
from processes.insights.runner import InsightsProcess
from projections.alerts_queries import AlertQueries
from projections.audit_queries import AuditQueries
from projections.billing import BillingQueries
from projections.customers_queries import CustomerQueries
from projections.dashboard_queries import DashboardQueries
from projections.dlms_queries import DlmsQueries
from projections.fleet_queries import FleetPosition
from projections.insights_queries import InsightQueries
from projections.intervals import IntervalQueries
from projections.meters_queries import MeterQueries
from projections.notification_deliveries import NotificationDeliveries
from projections.price_cache import PriceCache
from projections.reading_queries import ReadingQueries
from projections.sims_queries import SimQueries
from projections.tariffs_queries import TariffQueries


class Services(Protocol):
    """Everything a request handler reaches: opened by ``open``, released by ``close``."""

    settings: Settings
    registry: MeterRegistry
    tariffs: TariffBook
    alerts: AlertDesk
    api_keys: ApiKeyRegistry
    sims: SimInventory
    customers: CustomerBook
    pool: AsyncConnectionPool[Any]
    meters: MeterQueries
    readings: ReadingQueries
    intervals: IntervalQueries
    billing: BillingQueries
    tariff_queries: TariffQueries
    alert_queries: AlertQueries
    sim_queries: SimQueries
    fleet_position: FleetPosition
    insight_queries: InsightQueries
    insights: InsightsProcess
    customer_queries: CustomerQueries
    dlms: DlmsQueries
    dlms_profiles: ProfileCatalogue
    dashboard: DashboardQueries
    audit: AuditQueries
    meter_keys: MeterKeyService
    notifications: NotificationSubscriptions
    notification_deliveries: NotificationDeliveries
    nats: NatsClient | None
    redis: Redis | None
    prices: PriceCache

    def store(self, name: str) -> Store:
        """A key-value store for ``name``."""
        ...

    def counter(self, name: str) -> WindowCounter:
        """A counter per key and window for ``name``."""
        ...

    @property
    def ingest(self) -> IngestService:
        """The telemetry ingest service."""
        ...

    @property
    def fleet(self) -> FleetOperations:
        """Fleet operations: images, TOU plans, campaigns."""
        ...

    @property
    def operations(self) -> OperationsLog:
        """The operators' interventions log."""
        ...

    async def open(self, *, listen_for_ingest: bool = True) -> None:
        """Open pools and connections."""
        ...

    async def close(self) -> None:
        """Close everything ``open`` opened."""
        ...
