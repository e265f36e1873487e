"""Detectors over real read models: overload, communication failure and anomaly alerts."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bootstrap.applications import meter_registry
from bootstrap.migrate import migrate_database
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.alert import AlertStatus
from domain.detection import (
    WINDOW,
    anomaly_key,
    bucket_start,
    comm_key,
    outage_key,
    overload_key,
    tamper_key,
)
from domain.meter_events import STANDARD_LOG, LogEntry
from domain.obis import POWER_IMPORT
from domain.values import ConnectionProfile, MeterSpec
from processes.detectors import DetectorReport, Detectors
from projections.partitions import ensure_partitions
from tests.conftest import new_serial

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def det_settings(settings: Settings) -> Iterator[Settings]:
    """A schema of its own, so the session's reading workers' detectors cannot race these tests."""
    own = settings.replace(db_schema=f"{settings.database.schema}_det")
    migrate_database(own)
    yield own
    assert own.database.url is not None
    with psycopg.connect(own.database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(own.database.schema)))


@pytest.fixture(scope="module")
def desk(det_settings: Settings) -> Iterator[AlertDesk]:
    """The alerts write side of the detectors' schema."""
    app = AlertDesk(env=det_settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture
async def detectors(
    det_settings: Settings, desk: AlertDesk
) -> AsyncIterator[tuple[Detectors, AsyncConnectionPool[Any]]]:
    """Detectors on the schema, with the pool they read through."""
    assert det_settings.database.url is not None
    async with AsyncConnectionPool(
        det_settings.database.url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        yield (
            Detectors(
                det_settings.database,
                det_settings.detectors,
                pool,
                desk,
                functools.partial(meter_registry, det_settings.database),
            ),
            pool,
        )


def _q(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(schema=sql.Identifier(schema))


async def set_load(
    pool: AsyncConnectionPool[Any], schema: str, region: str, loads: dict[datetime, float]
) -> None:
    """Write regional 15-minute load windows (as the reading workers would)."""
    async with pool.connection() as conn:
        for bucket, pct in loads.items():
            await conn.execute(
                _q(
                    schema,
                    "INSERT INTO {schema}.regional_load_15m AS r (region, bucket, meters, power_w,"
                    " capacity_w, load_pct, updated_at) VALUES (%s, %s, 10, %s, 10000, %s, now())"
                    " ON CONFLICT (region, bucket) DO UPDATE SET load_pct = EXCLUDED.load_pct,"
                    " power_w = EXCLUDED.power_w",
                ),
                (region, bucket, pct * 100, pct),
            )


async def project(desk: AlertDesk, pool: AsyncConnectionPool[Any], schema: str) -> None:
    """Bring the alerts read model up to date (what the alerts projection does, synchronously)."""
    from eventsourcing.projection import ProjectionRunner

    from projections.alerts_projection import AlertsProjection
    from projections.alerts_view import AlertsView

    env = {**desk.env, "CREATE_TABLE": "y"}
    runner = ProjectionRunner(
        application_class=AlertDesk,
        projection_class=AlertsProjection,
        view_class=AlertsView,
        env=env,
    )
    try:
        position = desk.recorder.max_notification_id() or 0
        runner.wait(position, timeout=10)
    finally:
        runner.stop()


async def test_overload_raises_once_recurs_per_new_window_and_clears(
    detectors: tuple[Detectors, AsyncConnectionPool[Any]], desk: AlertDesk, det_settings: Settings
) -> None:
    det, pool = detectors
    schema = det_settings.database.schema
    region = f"OV-{uuid.uuid4().hex[:6]}"
    now = bucket_start(datetime.now(UTC)) + timedelta(minutes=7)
    current = bucket_start(now)
    w = [current - 2 * WINDOW, current - WINDOW, current]
    await set_load(pool, schema, region, {w[0]: 86.0, w[1]: 84.0, w[2]: 90.0})
    report = await det.run_once(now)
    assert overload_key(region) not in report.raised  # two windows above 85 % are not enough

    await set_load(pool, schema, region, {w[1]: 88.0})
    report = await det.run_once(now)
    assert report.raised.count(overload_key(region)) == 1
    alert = desk.open_alert(overload_key(region))
    assert alert is not None and alert.occurrences == 1 and alert.severity.value == "high"

    for _ in range(3):  # the same evidence, run after run: nothing new is recorded
        report = await det.run_once(now + timedelta(seconds=30))
        assert overload_key(region) not in report.raised
    await project(desk, pool, schema)

    # The next window is hot too: one more occurrence on the same alert, and it escalates.
    later = now + WINDOW
    await set_load(pool, schema, region, {current + WINDOW: 101.0})
    report = await det.run_once(later)
    assert report.raised.count(overload_key(region)) == 1
    same = desk.open_alert(overload_key(region))
    assert same is not None and same.id == alert.id and same.occurrences == 2
    assert same.severity.value == "critical"

    # Load falls back under the threshold in every considered window: auto-resolved.
    cool = later + 3 * WINDOW
    await set_load(pool, schema, region, {bucket_start(cool) - k * WINDOW: 50.0 for k in range(3)})
    await project(desk, pool, schema)
    report = await det.run_once(cool)
    assert overload_key(region) in report.cleared
    assert desk.open_alert(overload_key(region)) is None
    assert desk.get(alert.id).status is AlertStatus.RESOLVED and desk.get(alert.id).auto_resolved


async def test_overload_is_raised_just_after_a_window_boundary_before_new_readings(
    detectors: tuple[Detectors, AsyncConnectionPool[Any]], desk: AlertDesk, det_settings: Settings
) -> None:
    det, pool = detectors
    region = f"OV-{uuid.uuid4().hex[:6]}"
    now = bucket_start(datetime.now(UTC)) + timedelta(seconds=5)  # the new window is empty
    hot = {bucket_start(now) - k * WINDOW: 120.0 for k in (1, 2, 3)}
    await set_load(pool, det_settings.database.schema, region, hot)

    report = await det.run_once(now)

    assert report.raised.count(overload_key(region)) == 1
    alert = desk.open_alert(overload_key(region))
    assert alert is not None and alert.severity.value == "critical"


async def test_silent_meter_goes_offline_and_its_next_reading_resolves(
    detectors: tuple[Detectors, AsyncConnectionPool[Any]], desk: AlertDesk, det_settings: Settings
) -> None:
    det, pool = detectors
    schema = det_settings.database.schema
    meter, catching_up = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    old = now - timedelta(minutes=50)
    async with pool.connection() as conn:
        for m, received in ((meter, old), (catching_up, now)):
            await conn.execute(
                _q(
                    schema,
                    "INSERT INTO {schema}.meters (id, serial, manufacturer, model, firmware,"
                    " phases, region, area, status, connection, registered_at, updated_at,"
                    " version, events_applied) VALUES (%s, %s, 'Acme', 'M', '1', 1, 'CF', 'CF-1',"
                    " 'COMMISSIONED', '{{}}', now(), now(), 1, 1)",
                ),
                (m, f"CF{m.hex[:10]}"),
            )
            await conn.execute(
                _q(
                    schema,
                    "INSERT INTO {schema}.meter_status (meter_id, region, last_seen,"
                    " last_received_at, readings_total) VALUES (%s, 'CF', %s, %s, 10)",
                ),
                (m, old, received),
            )
    report = await det.run_once(now)
    assert comm_key(meter) in report.raised
    # Its newest reading is as old, but it delivered just now (catching up): not silent.
    assert comm_key(catching_up) not in report.raised
    await project(desk, pool, schema)
    assert comm_key(meter) not in (await det.run_once(now)).raised  # already offline

    async with pool.connection() as conn:
        await conn.execute(
            _q(
                schema,
                "UPDATE {schema}.meter_status SET last_received_at = %s WHERE meter_id = %s",
            ),
            (now, meter),
        )
    report = await det.run_once(now + timedelta(seconds=15))
    assert comm_key(meter) in report.cleared
    assert desk.open_alert(comm_key(meter)) is None


async def test_consumption_spike_against_own_baseline_raises_anomaly(
    detectors: tuple[Detectors, AsyncConnectionPool[Any]], desk: AlertDesk, det_settings: Settings
) -> None:
    det, pool = detectors
    schema = det_settings.database.schema
    meter, steady = uuid.uuid4(), uuid.uuid4()
    slot = bucket_start(datetime.now(UTC)) - 2 * WINDOW
    past = [slot - timedelta(weeks=k) for k in range(1, 5)]
    async with pool.connection() as conn:
        await ensure_partitions(conn, schema, sorted({b.date() for b in [slot, *past]}))
        for m, now_w in ((meter, 3000.0), (steady, 1050.0)):
            for bucket, watts in [(slot, now_w)] + [
                (b, 1000.0 + 10 * i) for i, b in enumerate(past)
            ]:
                await conn.execute(
                    _q(
                        schema,
                        "INSERT INTO {schema}.readings_15m (meter_id, quantity, bucket, region,"
                        " count, sum, min, max, first_ts, first_value, last_ts, last_value)"
                        " VALUES (%s, %s, %s, 'AN', 3, %s, %s, %s, %s, %s, %s, %s)",
                    ),
                    (
                        m,
                        POWER_IMPORT.id,
                        bucket,
                        3 * watts,
                        watts,
                        watts,
                        bucket,
                        watts,
                        bucket,
                        watts,
                    ),
                )
    report = DetectorReport()
    await det.judge_slot(slot, report)
    assert report.raised == [anomaly_key(meter)]
    alert = desk.open_alert(anomaly_key(meter))
    assert alert is not None and alert.evidence["kind"] == "spike"
    assert alert.evidence["baselineSamples"] == 4
    again = DetectorReport()
    await det.judge_slot(slot, again)
    assert again.raised == []  # the same slot judged twice records nothing new


async def test_meter_event_log_raises_tamper_and_outage_and_power_up_clears(
    detectors: tuple[Detectors, AsyncConnectionPool[Any]], desk: AlertDesk, det_settings: Settings
) -> None:
    det, pool = detectors
    registry = MeterRegistry(env=det_settings.database.eventsourcing_env())
    try:
        serial = new_serial("ME")
        spec = MeterSpec(
            serial=serial,
            manufacturer="Acme",
            model="M",
            firmware="1",
            phases=1,
            region="EV",
            area="EV-1",
            connection=ConnectionProfile(host="127.0.0.1"),
        )
        meter = registry.register_meter(spec, CommandContext(actor=SYSTEM)).meter.id
        async with pool.connection() as conn:  # the meters read model the detector reads
            await conn.execute(
                _q(
                    det_settings.database.schema,
                    "INSERT INTO {schema}.meters (id, serial, manufacturer, model, firmware,"
                    " phases, region, area, status, connection, registered_at, updated_at,"
                    " version, events_applied) VALUES (%s, %s, 'Acme', 'M', '1', 1, 'EV', 'EV-1',"
                    " 'REGISTERED', '{{}}', now(), now(), 1, 1)",
                ),
                (meter, serial),
            )
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        entries = [
            LogEntry(log=STANDARD_LOG, code=44, at=t0),  # meter cover opened
            LogEntry(log=STANDARD_LOG, code=1, at=t0 + timedelta(minutes=5)),  # power down
            LogEntry(log=STANDARD_LOG, code=3, at=t0 + timedelta(minutes=6)),  # not alerting
        ]
        registry.record_log_entries(meter, entries, CommandContext(actor=SYSTEM))
        report = await det.run_once(datetime.now(UTC))
        assert tamper_key(meter) in report.raised and outage_key(meter) in report.raised
        assert (await det.run_once(datetime.now(UTC))).raised == []  # each entry acted on once

        up = [LogEntry(log=STANDARD_LOG, code=2, at=t0 + timedelta(minutes=20))]
        registry.record_log_entries(meter, up, CommandContext(actor=SYSTEM))
        report = await det.run_once(datetime.now(UTC))
        assert report.cleared == [outage_key(meter)]
        tamper = desk.open_alert(tamper_key(meter))
        assert tamper is not None and tamper.severity.value == "high"
        assert desk.open_alert(outage_key(meter)) is None
    finally:
        registry.close()
