"""``hes projections rebuild``: a read model rebuilt from its source equals the live one."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from typer.testing import CliRunner

from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams
from bootstrap.migrate import migrate
from bootstrap.reading_worker import reading_worker
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from config.settings import Settings
from domain.readings import MeterBatch, Reading, Source, partition_of
from hes.cli import app
from projections.reading_worker import ReadingWorker
from projections.rebuild import rebuild as rebuild_read_model
from tests.conftest import JWT_SECRET, RUN_ID, new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import gql
from tests.integration.test_audit import MUTATIONS
from tests.integration.test_pipeline import register

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]


def _env(settings: Settings) -> dict[str, str]:
    return {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
        "HES_RETENTION_1M_DAYS": str(settings.readings.retention_1m_days),
    }


async def rebuild(settings: Settings, name: str) -> tuple[int, dict[str, Any]]:
    """Run ``hes projections rebuild NAME --json`` (in a thread: it runs its own loop)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["projections", "rebuild", name, "--json"], env=_env(settings)
    )
    assert result.exit_code in (0, 1), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, report


def scratch_schemas(settings: Settings) -> list[str]:
    """Scratch schemas of rebuilds of this settings' schema still in the database."""
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (settings.database.schema + "\\_rebuild\\_%",),
        ).fetchall()
    return [r[0] for r in rows]


def execute(settings: Settings, statement: str, *params: object) -> int:
    """Run one statement on ``settings``' schema (``{schema}``); return the rows it touched."""
    assert settings.database.url
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        cur = conn.execute(
            sql.SQL(statement).format(schema=sql.Identifier(settings.database.schema)),  # type: ignore[arg-type]
            params,
        )
        return cur.rowcount


async def test_meters_view_rebuild_equals_live_and_finds_a_tampered_row(
    client: Client, auth: Auth, settings: Settings, projection: SupervisedProjection
) -> None:
    ensure_customers(settings, "ACC-1", "ACC-2")
    ids = [await register(client, auth, new_serial("RB"), "REBUILD") for _ in range(3)]
    for mutation in ("commissionMeter", "changeConnectionProfile", "assignCustomer"):
        body = await gql(client, MUTATIONS[mutation], {"id": ids[0]}, auth(Role.ADMIN))
        assert "errors" not in body, body
    body = await gql(client, MUTATIONS["decommissionMeter"], {"id": ids[1]}, auth(Role.ADMIN))
    assert "errors" not in body, body

    code, report = await rebuild(settings, "meters_view")
    assert code == 0 and report["equal"] is True, report
    (meters,) = report["tables"]
    assert meters["rows_live"] == meters["rows_rebuilt"] >= 3
    assert meters["checksum_live"] == meters["checksum_rebuilt"]
    assert report["position"] >= report["replayed"] > 0

    told: list[tuple[int, int]] = []
    direct = await asyncio.to_thread(
        rebuild_read_model,
        settings.database,
        settings.nats,
        settings.readings,
        "meters_view",
        progress=lambda *p: told.append(p),
    )
    assert direct.equal and told and told[-1] == (direct.position, direct.position)

    tamper = "UPDATE {schema}.meters SET firmware = firmware || 'x' WHERE id = %s"
    assert execute(settings, tamper, ids[2]) == 1
    try:
        code, report = await rebuild(settings, "meters_view")
    finally:
        restore = "UPDATE {schema}.meters SET firmware = left(firmware, -1) WHERE id = %s"
        execute(settings, restore, ids[2])
    assert code == 1 and report["equal"] is False
    (meters,) = report["tables"]
    assert (meters["differing"], meters["only_live"], meters["only_rebuilt"]) == (1, 0, 0)
    assert meters["examples"] == [ids[2]]
    assert scratch_schemas(settings) == []


@pytest.fixture
async def isolated(settings: Settings) -> AsyncIterator[Settings]:
    """A schema and stream prefix of their own: only the READINGS stream writes the tables."""
    own = settings.replace(
        db_schema=f"rb_{RUN_ID}",
        nats_prefix=f"RB{RUN_ID}_",
        retention_1m_days=3,
    )
    await migrate(own)
    yield own
    execute(own, "DROP SCHEMA {schema} CASCADE")
    nc = await nats.connect(own.nats.url or "")
    await delete_streams(nc.jetstream(), own.nats.prefix)
    await nc.close()


def fleet_batches(meters: int, hours: int) -> list[MeterBatch]:
    """Five-minute readings of a few meters in a few regions, 24 readings per batch."""
    rng = random.Random(7)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    batches = []
    for m in range(meters):
        meter, energy = uuid.uuid4(), 1e6
        readings = []
        for i in range(hours * 12):
            ts = start + timedelta(minutes=5 * i + rng.random())
            energy += rng.uniform(0, 300)
            readings += [
                Reading(quantity=1, ts=ts, value=energy),
                Reading(quantity=10, ts=ts, value=rng.uniform(100, 5000)),
                Reading(quantity=20, ts=ts, value=rng.uniform(220, 240)),
            ]
        for i in range(0, len(readings), 24):
            batches.append(
                MeterBatch(
                    meter=meter,
                    region=f"RB{m % 3}",
                    source=Source.SIMULATOR,
                    readings=readings[i : i + 24],
                    received_at=start + timedelta(hours=hours, seconds=i),
                )
            )
    rng.shuffle(batches)  # interleave meters and windows: the live workers see any order
    return batches


async def wait_caught_up(settings: Settings, worker: ReadingWorker, seconds: float = 20) -> int:
    """Wait until the workers have nothing pending and the stored count stops moving."""
    deadline = time.monotonic() + seconds
    last = -1
    while time.monotonic() < deadline:
        count = execute(settings, "SELECT 1 FROM {schema}.readings")
        if await worker.consumer.lag() == 0 and count == last:
            return count
        last = count
        await asyncio.sleep(0.5)
    raise AssertionError("reading workers did not catch up")


async def test_readings_rebuild_equals_live(isolated: Settings) -> None:
    settings = isolated
    nc = await nats.connect(settings.nats.url or "")
    worker = reading_worker(settings, nc)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        batches = fleet_batches(meters=12, hours=8)
        publisher = ReadingPublisher(nc, settings.nats)
        await publisher.publish(
            batches, [partition_of(b.region, settings.readings.partitions) for b in batches]
        )
        stored = await wait_caught_up(settings, worker)
        assert stored == sum(len(b.readings) for b in batches)
        execute(
            settings,
            "INSERT INTO {schema}.region_capacity (region, capacity_w) VALUES ('RB1', 2.5e6)",
        )

        code, report = await rebuild(settings, "readings")
        assert code == 1  # the capacity changed after the live rows were written
        load = {t["table"]: t for t in report["tables"]}["regional_load_15m"]
        assert load["differing"] > 0 and all(e.startswith("RB1/") for e in load["examples"])
        execute(settings, "DELETE FROM {schema}.region_capacity")

        code, report = await rebuild(settings, "readings")
        assert code == 0 and report["equal"] is True, report
        assert report["partial"] is False and report["replayed"] == len(batches)
        tables = {t["table"]: t for t in report["tables"]}
        assert tables["readings"]["rows_live"] == stored == tables["readings"]["rows_rebuilt"]
        assert all(t["rows_live"] > 0 and t["equal"] for t in tables.values())
        assert tables["windows_1m"]["since"] is not None  # within the 1-minute retention
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await nc.drain()
    assert scratch_schemas(settings) == []
