"""Brings the database schema and the JetStream streams up to date."""

from __future__ import annotations

import asyncio

import msgspec
import nats
import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.nats.event_relay import create_tracking_table as create_relay_tracking
from adapters.nats.streams import ensure_streams
from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.audit_verify import install_chain
from commands.meters import MeterRegistry
from commands.tariffs import TariffBook
from hes.settings import Settings
from projections.alerts_projection import AlertsProjection
from projections.alerts_view import AlertsView
from projections.dlms_projection import DlmsProjection
from projections.dlms_view import DlmsView
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView
from projections.migrations import migrate as migrate_read_models
from projections.tariffs_projection import TariffsProjection
from projections.tariffs_view import TariffsView


class MigrationReport(msgspec.Struct, frozen=True):
    """What ``migrate`` found and did."""

    schema: str
    applied: list[int]
    streams: list[str]


def migrate_database(settings: Settings) -> list[int]:
    """Create the schema, the event store and tracking tables and the read models."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        applied = migrate_read_models(conn, settings.db_schema)
    env = settings.eventsourcing_env() | {"CREATE_TABLE": "y"}
    MeterRegistry(env=env).close()
    TariffBook(env=env).close()
    AlertDesk(env=env).close()
    ApiKeyRegistry(env=env).close()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        install_chain(conn, settings.db_schema)  # every event log: needs their tables
    factory = InfrastructureFactory.construct(Environment(MetersProjection.name, env))
    factory.tracking_recorder(MetersView)
    factory.close()
    factory = InfrastructureFactory.construct(Environment(TariffsProjection.name, env))
    factory.tracking_recorder(TariffsView)
    factory.close()
    factory = InfrastructureFactory.construct(Environment(AlertsProjection.name, env))
    factory.tracking_recorder(AlertsView)
    factory.close()
    factory = InfrastructureFactory.construct(Environment(DlmsProjection.name, env))
    factory.tracking_recorder(DlmsView)
    factory.close()
    create_relay_tracking(env)
    return applied


async def migrate_streams(settings: Settings) -> list[str]:
    """Create or update this deployment's JetStream streams."""
    assert settings.nats_url is not None
    nc = await nats.connect(settings.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        return await ensure_streams(nc.jetstream(), settings.nats_prefix)
    finally:
        await nc.close()


async def migrate(settings: Settings) -> MigrationReport:
    """Migrate PostgreSQL and NATS."""
    applied = await asyncio.to_thread(migrate_database, settings)
    streams = await migrate_streams(settings)
    return MigrationReport(schema=settings.db_schema, applied=applied, streams=streams)
