"""Reading workers under faults: killed mid-batch, PostgreSQL away for a while. Then count."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest
from psycopg import sql

from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams
from bootstrap.embedded import spawn_child, start_postgres
from bootstrap.migrate import migrate
from bootstrap.reading_worker import reading_worker
from config.settings import Settings
from domain.readings import MeterBatch, Reading, Source, partition_of
from tests.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUANTITIES = (1, 10, 20, 30, 40, 41)


def _batches(meters: int, intervals: int) -> list[MeterBatch]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=20)
    now = datetime.now(UTC)
    rng = random.Random(3)
    out = []
    for m in range(meters):
        meter = uuid.uuid4()
        energy = 1_000_000.0
        readings = []
        for i in range(intervals):
            energy += rng.uniform(0, 500)
            ts = start + timedelta(minutes=5 * i)
            readings += [
                Reading(quantity=1, ts=ts, value=energy),
                Reading(quantity=10, ts=ts, value=rng.uniform(100, 5000)),
                Reading(quantity=20, ts=ts, value=rng.uniform(220, 240)),
                Reading(quantity=30, ts=ts, value=rng.uniform(0, 20)),
                Reading(quantity=40, ts=ts, value=rng.uniform(0.8, 1)),
                Reading(quantity=41, ts=ts, value=rng.uniform(49.9, 50.1)),
            ]
        for i in range(0, len(readings), 96):
            out.append(
                MeterBatch(
                    meter=meter,
                    region=f"F{m % 4}",
                    source=Source.SIMULATOR,
                    readings=readings[i : i + 96],
                    received_at=now,
                )
            )
    return out


async def _publish(settings: Settings, batches: list[MeterBatch]) -> None:
    nc = await nats.connect(settings.nats.url or "")
    try:
        publisher = ReadingPublisher(nc, settings.nats)
        for i in range(0, len(batches), 500):
            part = batches[i : i + 500]
            await publisher.publish(
                part, [partition_of(b.region, settings.readings.partitions) for b in part]
            )
    finally:
        await nc.close()


def _totals(settings: Settings) -> dict[str, float]:
    assert settings.database.url
    s = sql.Identifier(settings.database.schema)
    with psycopg.connect(settings.database.url) as conn:

        def one(q: str) -> float:
            row = conn.execute(sql.SQL(q).format(s)).fetchone()
            return float(row[0] or 0) if row else 0.0

        # The aggregates as queries answer them: stored windows and those derived on read.
        return {
            "raw": one("SELECT count(*) FROM {}.readings"),
            "raw_sum": round(one("SELECT sum(value) FROM {}.readings"), 3),
            "m1": one("SELECT sum(count) FROM {}.windows_1m"),
            "m1_sum": round(one("SELECT sum(sum) FROM {}.windows_1m"), 3),
            "m15": one("SELECT sum(count) FROM {}.windows_15m"),
            "m30": one("SELECT sum(count) FROM {}.windows_30m"),
            "m30_sum": round(one("SELECT sum(sum) FROM {}.windows_30m"), 3),
            "status": one("SELECT sum(readings_total) FROM {}.meter_status"),
        }


@pytest.fixture
async def isolated(services: Services) -> AsyncIterator[Settings]:
    run = uuid.uuid4().hex[:8]
    s = Settings.of(
        database_url=services.database_url,
        nats_url=services.nats_url,
        db_schema=f"f_{run}",
        nats_prefix=f"F{run}_",
        reading_partitions=4,
        reading_fetch_batch=64,
    )
    await migrate(s)
    yield s
    nc = await nats.connect(services.nats_url)
    await delete_streams(nc.jetstream(), s.nats.prefix)
    await nc.close()
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s.database.schema))
        )


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_READING_PARTITIONS": "4",
        "HES_READING_FETCH_BATCH": "64",
        "HES_LOG_LEVEL": "ERROR",
    }
    return spawn_child(
        [sys.executable, "-m", "hes.cli", "workers", "run"],
        death_signal=signal.SIGTERM,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killed_worker_loses_and_duplicates_nothing(isolated: Settings) -> None:
    batches = _batches(meters=200, intervals=150)  # 180,000 readings
    total = sum(len(b.readings) for b in batches)
    await _publish(isolated, batches)
    rng = random.Random(11)
    seen_midway = []
    for _ in range(4):
        before = _totals(isolated)["raw"]
        worker = _worker(isolated)
        # Kill only once this worker has committed something, however slow its start-up:
        # a kill before any progress would prove nothing.
        started = time.monotonic()
        while _totals(isolated)["raw"] <= before and time.monotonic() - started < 60:
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        seen_midway.append(_totals(isolated)["raw"])
    worker = _worker(isolated)
    try:
        deadline = time.monotonic() + 120
        while _totals(isolated)["status"] < total and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything still to come would show up as a surplus
    finally:
        worker.terminate()
        worker.wait(30)
    totals = _totals(isolated)
    assert any(0 < n < total for n in seen_midway), seen_midway
    assert totals["raw"] == totals["m1"] == totals["m15"] == totals["m30"] == totals["status"]
    assert totals["raw"] == total
    expected_sum = round(sum(r.value for b in batches for r in b.readings), 3)
    assert totals["raw_sum"] == pytest.approx(expected_sum)
    assert totals["m1_sum"] == pytest.approx(expected_sum)
    assert totals["m30_sum"] == pytest.approx(expected_sum)


async def test_workers_wait_for_postgres_and_resume(services: Services, tmp_path: Path) -> None:
    pg = start_postgres(tmp_path)
    run = uuid.uuid4().hex[:8]
    s = Settings.of(
        database_url=pg.url,
        nats_url=services.nats_url,
        db_schema="hes",
        nats_prefix=f"P{run}_",
        reading_partitions=2,
        reading_fetch_batch=32,
    )
    await migrate(s)
    nc = await nats.connect(services.nats_url, max_reconnect_attempts=-1)
    stop = asyncio.Event()
    worker = reading_worker(s, nc, ack_wait=5.0)
    task = asyncio.create_task(worker.run(stop))
    try:
        first = _batches(meters=20, intervals=40)
        second = [msgspec.structs.replace(b, meter=uuid.uuid4()) for b in first]
        total = sum(len(b.readings) for b in first + second)
        await _publish(s, first)
        deadline = time.monotonic() + 30
        # The worker runs on this event loop: query from a thread, or a blocked loop would keep
        # the worker's open transaction (and its locks) from finishing while we wait on them.
        while (await asyncio.to_thread(_totals, s))["status"] < total / 2 and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)

        pg.stop()
        await _publish(s, second)  # JetStream keeps them while PostgreSQL is away
        await asyncio.sleep(4.0)  # handlers fail and nak; nothing is acknowledged
        pg = start_postgres(tmp_path)
        assert pg.url == s.database.url, "embedded PostgreSQL came back on another port"

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (await asyncio.to_thread(_totals, s))["status"] >= total:
                    break
            except psycopg.OperationalError:
                pass
            await asyncio.sleep(0.2)
        totals = await asyncio.to_thread(_totals, s)
        assert totals["raw"] == totals["m15"] == totals["status"] == total
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await delete_streams(nc.jetstream(), s.nats.prefix)
        await nc.drain()
        pg.stop()
