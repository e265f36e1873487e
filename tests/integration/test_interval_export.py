"""Daily interval export to JetStream: one message per meter, once, and recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats
import pytest
from psycopg_pool import AsyncConnectionPool

from bootstrap.workers import SupervisedProjection
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.meter import meter_id
from domain.readings import MeterBatch, Reading, Source
from domain.values import ConnectionProfile, MeterSpec
from projections.interval_export import export_day, export_due, export_subject
from projections.meters_queries import MeterQueries
from projections.reading_store import ReadingStore
from tests.conftest import new_serial

pytestmark = pytest.mark.integration


async def test_day_export_publishes_each_meter_once(
    settings: Settings, projection: SupervisedProjection
) -> None:
    assert settings.database.url and settings.nats.url
    day = (datetime.now(UTC) - timedelta(days=2)).date()
    start = datetime.combine(day, datetime.min.time(), UTC)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.database.url, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    nc = await nats.connect(settings.nats.url)
    try:
        registry = MeterRegistry(env=settings.database.eventsourcing_env())
        serials = [new_serial("X"), new_serial("X")]
        spec = MeterSpec(
            serial="x",
            manufacturer="A",
            model="B",
            firmware="1",
            phases=1,
            region="EXP",
            area="E",
            connection=ConnectionProfile(host="127.0.0.9"),
        )
        _, position = registry.import_meters(
            [(msgspec.structs.replace(spec, serial=s), None) for s in serials],
            CommandContext(actor=SYSTEM),
        )
        registry.close()
        assert position is not None
        assert await MeterQueries(pool, settings.database.schema).wait_for(position, 10)
        # Two meters reading their energy register every 15 minutes of that day.
        batches = [
            MeterBatch(
                meter=meter_id(s),
                region="EXP",
                source=Source.SIMULATOR,
                received_at=start,
                readings=[
                    Reading(
                        quantity=1, ts=start + timedelta(minutes=15 * i), value=1000.0 + 100 * i
                    )
                    for i in range(96)
                ],
            )
            for s in serials
        ]
        async with pool.connection() as conn:
            await ReadingStore(settings.database.schema, 1e7).write(conn, batches)

        sub = await nc.jetstream().subscribe(
            export_subject(settings.nats.prefix, day), ordered_consumer=True
        )
        report = await export_day(pool, nc, settings.database.schema, settings.nats.prefix, day)
        again = await export_day(pool, nc, settings.database.schema, settings.nats.prefix, day)
        assert report.meters == again.meters >= 2
        received = []
        try:
            while True:
                received.append(json.loads((await sub.next_msg(timeout=1)).data))
        except nats.errors.TimeoutError:
            pass
        mine = [m for m in received if m["serial"] in serials]
        assert len(mine) == 2  # the second export was dropped as duplicates by JetStream
        first = mine[0]["intervals"]
        assert len(first) == 96
        assert first[0]["quality"] == "partial" and first[0]["consumptionWh"] == 0.0
        assert first[1]["quality"] == "valid" and first[1]["consumptionWh"] == 100.0

        due = await export_due(
            pool, nc, settings.database.schema, settings.nats.prefix, now=datetime.now(UTC)
        )
        assert day not in {r.day for r in due}  # already recorded in export_runs
    finally:
        await nc.close()
        await pool.close()
