"""Helpers of the DLMS integration tests: ports, registering meters that point at simulated
ones, setting their keys, waiting for read models."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg import sql

from adapters.dlms.simulator import simulated_keys
from bootstrap.dlms_keys import key_service
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.meter_keys import MeterKeys
from domain.values import ConnectionProfile, Location, MeterSpec, SecurityLevel, Transport
from tests.conftest import new_serial

T = TypeVar("T")
ADMIN = CommandContext(actor=SYSTEM)
CLIENT_OF = {SecurityLevel.NONE: 16, SecurityLevel.LLS: 17, SecurityLevel.HLS_GMAC: 1}


def dlms_settings(settings: Settings) -> Settings:
    """The test settings with a 2-day profile window.

    Reading older profile intervals would create readings partitions that other tests of the
    session expect not to exist yet (``test_partitions_are_created_on_demand``: 3 days back).
    """
    return settings.replace(dlms_profile_days=2)


def free_ports(count: int) -> int:
    """A base port with ``count`` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        base = random.randint(20_000, 60_000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError("no free port range")


_OF_LEVEL = -1


def profile(
    port: int,
    transport: Transport = Transport.WRAPPER,
    security: SecurityLevel = SecurityLevel.NONE,
    client: int | None = _OF_LEVEL,
) -> ConnectionProfile:
    """How to reach a simulated meter on ``port`` (``client`` None: the DLMS profile's)."""
    return ConnectionProfile(
        host="127.0.0.1",
        port=port,
        transport=transport,
        client_address=CLIENT_OF[security] if client == _OF_LEVEL else client,
        server_address=1,
        physical_address=17 if transport is Transport.HDLC else None,
        security=security,
    )


def register(
    registry: MeterRegistry,
    connection: ConnectionProfile,
    *,
    serial: str | None = None,
    area: str = "DLMS Test",
    phases: int = 3,
    manufacturer: str = "HES",
    model: str = "Simulated",
) -> UUID:
    """Register a meter; return its id."""
    spec = MeterSpec(
        serial=serial or new_serial("DLMS"),
        manufacturer=manufacturer,
        model=model,
        firmware="1.0",
        phases=phases,
        region="North",
        area=area,
        connection=connection,
    )
    return registry.register_meter(spec, ADMIN).meter.id


def commission(registry: MeterRegistry, *meters: UUID) -> None:
    """Record the meters as installed (the scheduler collects commissioned meters only)."""
    for meter in meters:
        registry.commission_meter(meter, Location(address="1 Test Lane"), None, ADMIN)


async def meters_status(settings: Settings, status: str, *meters: UUID) -> None:
    """Wait until the meters read model shows every one of ``meters`` with ``status``."""

    async def check() -> bool:
        shown = await scalar(
            settings,
            "SELECT count(*) FROM {s}.meters WHERE id = ANY(%s) AND status = %s",
            list(meters),
            status,
        )
        return bool(shown == len(meters))

    await eventually(check)


def set_simulated_keys(
    settings: Settings,
    registry: MeterRegistry,
    meter: UUID,
    sim_serial: str,
    *,
    wrong: bool = False,
    with_title: bool = False,
) -> int:
    """Give the meter the simulated meter's secrets (or wrong ones); return the key version.

    With ``with_title`` the meter also gets the simulated meter's system title (unique).
    """
    keys = simulated_keys(sim_serial)
    ek, ak = (bytes(16), bytes(16)) if wrong else (keys.ek, keys.ak)
    change = key_service(settings, registry).set_keys(
        meter,
        MeterKeys(lls_password=keys.lls_password, ek=ek, ak=ak),
        ADMIN,
        system_title=keys.system_title if with_title else None,
    )
    return change.key_version


async def scalar(settings: Settings, query: str, *params: Any) -> Any:
    """The first column of the first row of ``query`` (``{s}`` is the test schema).

    Runs in a thread: a blocking query on the event loop could wait for a lock held by a
    reading worker that runs on the same loop.
    """
    return await asyncio.to_thread(_scalar, settings, query, *params)


def _scalar(settings: Settings, query: str, *params: Any) -> Any:
    assert settings.database.url is not None
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL(query).format(s=sql.Identifier(settings.database.schema)),  # type: ignore[arg-type]
            params,
        ).fetchone()
    return None if row is None else row[0]


async def eventually(check: Callable[[], Awaitable[T | None]], seconds: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s (last: {value!r})")
        await asyncio.sleep(0.1)


async def meter_visible(settings: Settings, meter: UUID, key_version: int = 0) -> None:
    """Wait until the meters read model (and the DLMS state, for keys) show the meter."""

    async def check() -> bool:
        shown = await scalar(settings, "SELECT count(*) FROM {s}.meters WHERE id = %s", meter)
        if not shown:
            return False
        if key_version:
            version = await scalar(
                settings, "SELECT key_version FROM {s}.dlms_meter_state WHERE meter_id = %s", meter
            )
            return bool(version == key_version)
        return True

    await eventually(check)
