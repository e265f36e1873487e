"""Brings the database schema and the JetStream streams up to date."""

from __future__ import annotations

import asyncio

import msgspec
import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from adapters.nats.event_relay import create_tracking_table as create_relay_tracking
from adapters.nats.streams import ensure_streams
from bootstrap.applications import create_event_stores
from bootstrap.connections import connect_nats
from commands.audit_verify import install_chain
from config.settings import Settings
from projections.alerts_projection import AlertsProjection
from projections.alerts_view import AlertsView
from projections.customers_projection import CustomersProjection
from projections.customers_view import CustomersView
from projections.dlms_projection import DlmsProjection
from projections.dlms_view import DlmsView
from projections.fleet_projection import FleetProjection
from projections.fleet_view import FleetView
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView
from projections.migrations import migrate as migrate_read_models
from projections.sims_projection import SimsProjection
from projections.sims_view import SimsView
from projections.tariffs_projection import TariffsProjection
from projections.tariffs_view import TariffsView


class MigrationReport(msgspec.Struct, frozen=True):
    """What ``migrate`` found and did."""

    schema: str
    applied: list[int]
    streams: list[str]


_LOCK_CLASS = 0x4E5_0003


def migrate_database(settings: Settings) -> list[int]:
    """Create the schema, the event store and tracking tables and the read models."""
    assert settings.database.url is not None
    # Processes starting together (API replicas) migrate one after the other: the library's
    # CREATE TABLE IF NOT EXISTS is not safe against itself running concurrently.
    with psycopg.connect(settings.database.url, autocommit=True) as lock:
        lock.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, settings.database.schema)
        )
        return _migrate_database(settings)


def _migrate_database(settings: Settings) -> list[int]:
    assert settings.database.url is not None
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        applied = migrate_read_models(conn, settings.database.schema)
    env = settings.database.eventsourcing_env() | {"CREATE_TABLE": "y"}
    create_event_stores(settings.database)
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        install_chain(conn, settings.database.schema)  # every event log: needs their tables
    for projection, view in (
        (MetersProjection, MetersView),
        (TariffsProjection, TariffsView),
        (AlertsProjection, AlertsView),
        (SimsProjection, SimsView),
        (DlmsProjection, DlmsView),
        (CustomersProjection, CustomersView),
        (FleetProjection, FleetView),
    ):
        factory = InfrastructureFactory.construct(Environment(projection.name, env))
        factory.tracking_recorder(view)
        factory.close()
    create_relay_tracking(env)
    return applied


async def migrate_streams(settings: Settings) -> list[str]:
    """Create or update this deployment's JetStream streams."""
    assert settings.nats.url is not None
    nc = await connect_nats(settings.nats, connect_timeout=5, max_reconnect_attempts=3)
    try:
        return await ensure_streams(
            nc.jetstream(), settings.nats.prefix, settings.nats.stream_replicas
        )
    finally:
        await nc.close()


async def migrate(settings: Settings) -> MigrationReport:
    """Migrate PostgreSQL and NATS."""
    applied = await asyncio.to_thread(migrate_database, settings)
    streams = await migrate_streams(settings)
    return MigrationReport(schema=settings.database.schema, applied=applied, streams=streams)
