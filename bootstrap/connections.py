"""The one place that opens PostgreSQL pools and NATS connections for the running processes."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool

from config.settings import DatabaseSettings, NatsSettings, ReadingSettings


def _url(database: DatabaseSettings) -> str:
    if database.url is None:
        raise ValueError("database URL is not resolved")
    return database.url


def api_pool(database: DatabaseSettings) -> AsyncConnectionPool[Any]:
    """The API's read-side pool (unopened)."""
    return AsyncConnectionPool(
        _url(database),
        min_size=1,
        max_size=10,
        max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
        open=False,
        kwargs={"autocommit": True},
    )


def reading_pool(database: DatabaseSettings, readings: ReadingSettings) -> AsyncConnectionPool[Any]:
    """A reading worker's pool: one connection per writer and room for housekeeping (unopened)."""
    return AsyncConnectionPool(
        _url(database),
        min_size=1,
        max_size=readings.writers + 2,
        open=False,
        timeout=10,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
    )


def dlms_pool(database: DatabaseSettings) -> AsyncConnectionPool[Any]:
    """The DLMS side's pool: scheduler, collector, executor and push listener (unopened)."""
    return AsyncConnectionPool(
        _url(database),
        min_size=2,
        max_size=16,
        max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
        open=False,
        timeout=30,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
    )


def notifier_pool(database: DatabaseSettings) -> AsyncConnectionPool[Any]:
    """The notifier's pool: intake and delivery bookkeeping (unopened)."""
    return AsyncConnectionPool(
        _url(database),
        min_size=1,
        max_size=4,
        max_idle=30,  # give surplus connections back soon (adapters/postgres_store.py)
        open=False,
        kwargs={"autocommit": True},
    )


def command_pool(database: DatabaseSettings) -> AsyncConnectionPool[Any]:
    """A short-lived command's pool (``hes export``), psycopg's default sizes (unopened)."""
    return AsyncConnectionPool(_url(database), open=False, kwargs={"autocommit": True})


async def connect_nats(nats_settings: NatsSettings, **options: Any) -> NatsClient:
    """A NATS connection to the configured servers with ``options`` (nats-py's keywords)."""
    if nats_settings.url is None:
        raise ValueError("NATS URL is not resolved")
    return await nats.connect(nats_settings.servers, **options)


async def connect_nats_service(nats_settings: NatsSettings, name: str) -> NatsClient:
    """A long-lived service connection: reconnects forever; a frozen server cannot block flushes."""
    return await connect_nats(
        nats_settings,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        # a frozen server must not block publishers forever (they retry and push back)
        flush_timeout=5,
    )
