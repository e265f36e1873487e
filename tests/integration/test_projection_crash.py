"""Kill the projection worker at random moments; every event is still applied exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats
import psycopg
import pytest
from psycopg import sql

from adapters.nats.streams import delete_streams
from bootstrap.embedded import spawn_child
from bootstrap.migrate import migrate
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.meter import Meter
from domain.values import ConnectionProfile, Location, MeterSpec
from tests.conftest import RUN_ID, new_serial
from tests.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
METERS = 300
EVENTS_PER_METER = 4


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_LOG_LEVEL": "WARNING",
    }
    return spawn_child(
        [sys.executable, "-m", "hes.cli", "projections", "run"],
        death_signal=signal.SIGTERM,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _write_meters(registry: MeterRegistry) -> None:
    ctx = CommandContext(actor=SYSTEM)
    for _ in range(METERS):
        meta = ctx.meta("test")
        spec = MeterSpec(
            serial=new_serial("K"),
            manufacturer="Acme",
            model="K1",
            firmware="1",
            phases=3,
            region="R",
            area="A",
            connection=ConnectionProfile(host="127.9.9.9"),
        )
        meter = Meter.register(spec, meta)
        meter.commission(Location(address="x"), "ACC-1", meta)
        meter.assign_customer("ACC-2", meta)
        meter.change_connection_profile(ConnectionProfile(host="127.9.9.10"), meta)
        registry.save(meter)


def _positions(settings: Settings) -> tuple[int, int]:
    assert settings.database.url
    schema = sql.Identifier(settings.database.schema)
    with psycopg.connect(settings.database.url) as conn:
        recorded = conn.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}.meters_events").format(schema)
        ).fetchone()
        applied = conn.execute(
            sql.SQL(
                "SELECT coalesce(max(notification_id), 0) FROM {}.meters_view_tracking "
                "WHERE application_name = 'meters'"
            ).format(schema)
        ).fetchone()
    assert recorded and applied
    return int(recorded[0]), int(applied[0])


def test_killed_worker_applies_every_event_exactly_once(services: Services) -> None:
    settings = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"k_{RUN_ID}",
        nats_prefix=f"K{RUN_ID}_",
    )
    asyncio.run(migrate(settings))
    registry = MeterRegistry(env=settings.database.eventsourcing_env())
    writer = threading.Thread(target=_write_meters, args=(registry,))
    rng = random.Random(7)
    kills: list[tuple[int, int]] = []
    try:
        writer.start()
        deadline = time.monotonic() + 120
        while (writer.is_alive() or len(kills) < 6) and time.monotonic() < deadline:
            applied_before = _positions(settings)[1]
            worker = _worker(settings)
            # Kill only once this worker applied something (start-up time varies with load).
            started = time.monotonic()
            while (
                _positions(settings)[1] == applied_before
                and _positions(settings)[0] > applied_before
                and time.monotonic() - started < 30
            ):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.4))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills.append(_positions(settings))
        writer.join()

        worker = _worker(settings)
        try:
            recorded, applied = _positions(settings)
            while applied < recorded and time.monotonic() < deadline:
                time.sleep(0.1)
                recorded, applied = _positions(settings)
        finally:
            worker.terminate()
            worker.wait(10)

        assert recorded == METERS * EVENTS_PER_METER
        assert applied == recorded, f"projection stuck at {applied} of {recorded}"
        # Some kills must have landed part-way, or the test proved nothing.
        assert any(0 < a < r for r, a in kills), kills

        assert settings.database.url
        with psycopg.connect(settings.database.url) as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT count(*), sum(events_applied), min(events_applied), "
                    "max(events_applied), bool_and(version = events_applied) FROM {}.meters"
                ).format(sql.Identifier(settings.database.schema))
            ).fetchone()
        assert rows == (METERS, METERS * EVENTS_PER_METER, EVENTS_PER_METER, EVENTS_PER_METER, True)
    finally:
        registry.close()
        assert settings.database.url
        with psycopg.connect(settings.database.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(settings.database.schema))
            )
        asyncio.run(_drop_streams(settings))


async def _drop_streams(settings: Settings) -> None:
    nc = await nats.connect(settings.nats.url or "")
    await delete_streams(nc.jetstream(), settings.nats.prefix)
    await nc.close()
