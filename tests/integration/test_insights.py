"""The insights process over real read models: a small labelled fleet written as 15-minute
aggregates, one analysis, what it stores, the alerts it raises, and running it again."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bootstrap.migrate import migrate_database
from commands.alerts import AlertDesk
from config.settings import Settings
from domain.alert import AlertType
from domain.detection import anomaly_key
from domain.insight_rules import forecast_overload_key
from domain.obis import POWER_IMPORT
from processes.insights.analysis import SLOTS_PER_DAY
from processes.insights.runner import InsightsProcess
from projections.insights_queries import InsightQueries
from projections.partitions import ensure_partitions
from simulation.labelled_fleet import START, FleetSpec, LabelledFleet
from tests.integration.test_detectors import project

pytestmark = pytest.mark.integration

NOW = START + timedelta(days=28, hours=1)
"""An hour into the day after four whole weeks of the fleet."""
METERS = 60
THIEF, STUCK = 3, 7


@pytest.fixture(scope="module")
def ins_settings(settings: Settings) -> Iterator[Settings]:
    """A schema of its own: the analysis reads every meter of its schema."""
    own = settings.replace(db_schema=f"{settings.database.schema}_ins")
    migrate_database(own)
    yield own
    assert own.database.url is not None
    with psycopg.connect(own.database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(own.database.schema)))


@pytest.fixture(scope="module")
def desk(ins_settings: Settings) -> Iterator[AlertDesk]:
    app = AlertDesk(env=ins_settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture
async def pool(ins_settings: Settings) -> AsyncIterator[AsyncConnectionPool[Any]]:
    assert ins_settings.database.url is not None
    async with AsyncConnectionPool(
        ins_settings.database.url, min_size=1, max_size=3, kwargs={"autocommit": True}
    ) as p:
        yield p


def _fleet() -> tuple[LabelledFleet, np.ndarray]:
    """Normal meters, one thief from day 18 (40 % metered) and one stuck meter from day 25."""
    spec = FleetSpec(
        meters=METERS,
        days=29,
        seed=3,
        regions=1,
        areas_per_region=2,
        theft_share=0,
        stuck_share=0,
        failing_phase_share=0,
        false_tamper_share=0,
    )
    fleet = LabelledFleet(spec)
    power = fleet.curves(0, METERS)[:, : 28 * SLOTS_PER_DAY + 3]
    power[THIEF, 18 * SLOTS_PER_DAY :] *= 0.4
    power[STUCK, 25 * SLOTS_PER_DAY :] = power[STUCK, 25 * SLOTS_PER_DAY - 1]
    return fleet, power


async def _write(
    pool: AsyncConnectionPool[Any], schema: str, ids: list[uuid.UUID], power: np.ndarray
) -> None:
    """The meters read model and the 15-minute aggregates, as the workers would write them."""
    s = sql.Identifier(schema)
    async with pool.connection() as conn:
        await ensure_partitions(
            conn, schema, [(START + timedelta(days=d)).date() for d in range(30)]
        )
        for i, meter in enumerate(ids):
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meters (id, serial, manufacturer, model, firmware, phases,"
                    " region, area, status, connection, registered_at, updated_at, version,"
                    " events_applied) VALUES (%s, %s, 'Acme', 'M', '1', 1, 'IN', %s,"
                    " 'COMMISSIONED', '{{}}', now(), now(), 1, 1)"
                ).format(s),
                (meter, f"INS-{i:04d}", f"IN-{i % 2}"),
            )
        async with conn.cursor().copy(
            sql.SQL(
                "COPY {}.readings_15m (meter_id, quantity, bucket, region, count, sum, min, max,"
                " first_ts, first_value, last_ts, last_value) FROM STDIN"
            ).format(s)
        ) as copy:
            for i, meter in enumerate(ids):
                for t, watts in enumerate(power[i].tolist()):
                    at = START + timedelta(minutes=15 * t)
                    await copy.write_row(
                        (
                            meter,
                            POWER_IMPORT.id,
                            at,
                            "IN",
                            3,
                            3 * watts,
                            watts,
                            watts,
                            at,
                            watts,
                            at,
                            watts,
                        )
                    )
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.meter_log_events (meter_id, log, at, code, kind, recorded_at)"
                " VALUES (%s, 'standard', %s, 44, 'FRAUD', now())"
            ).format(s),
            (ids[THIEF], START + timedelta(days=18, hours=2)),
        )
        peak = float(power.sum(axis=0).max())
        await conn.execute(
            sql.SQL("INSERT INTO {}.region_capacity (region, capacity_w) VALUES ('IN', %s)").format(
                s
            ),
            (0.5 * peak,),
        )


async def test_one_analysis_stores_patterns_forecasts_scores_and_an_explained_feed(
    ins_settings: Settings, desk: AlertDesk, pool: AsyncConnectionPool[Any]
) -> None:
    schema = ins_settings.database.schema
    _, power = _fleet()
    ids = sorted(uuid.uuid4() for _ in range(METERS))
    await _write(pool, schema, ids, power)
    process = InsightsProcess(ins_settings.database, ins_settings.insights, pool, desk)

    report = await process.run_once(NOW)
    assert report.run_id is not None and report.meters == METERS
    assert report.window_start == START
    assert anomaly_key(ids[STUCK]) in report.alerts_raised
    assert forecast_overload_key("IN") in report.alerts_raised

    queries = InsightQueries(pool, schema, 1e6)
    pattern = await queries.pattern(ids[0])
    assert pattern is not None and len(pattern.daily_profile_w) == 96 and pattern.days == 28
    forecast = await queries.meter_forecast(ids[0])
    assert forecast is not None and len(forecast.mean_w) == 96
    assert forecast.start == START + timedelta(days=28, minutes=45)
    regions = await queries.region_forecasts(None)
    assert [r.key for r in regions] == ["IN"] and regions[0].capacity_w == pytest.approx(
        0.5 * float(power.sum(axis=0).max())
    )
    scores = await queries.scores(ids[STUCK], 7)
    assert scores[0].day == (START + timedelta(days=27)).date()
    assert scores[0].score == 95.0 and "constant" in scores[0].reason

    await project(desk, pool, schema)
    feed = await queries.insights("IN", None, None, 50)
    by_kind: dict[str, list[Any]] = {}
    for item in feed:
        by_kind.setdefault(item.kind, []).append(item)
    theft = by_kind["THEFT"]
    assert [t.meter_id for t in theft] == [ids[THIEF]]
    assert theft[0].category == "REVENUE_PROTECTION" and theft[0].confidence >= 60
    assert any("fell" in e and "stayed down" in e for e in theft[0].evidence)
    assert theft[0].since == START + timedelta(days=18)
    assert any("tamper" in e for e in theft[0].evidence)
    assert [s.meter_id for s in by_kind["STUCK_METER"]] == [ids[STUCK]]
    assert by_kind["STUCK_METER"][0].alert_ids  # linked to the meter's open anomaly alert
    assert "FORECAST_OVERLOAD" in by_kind
    mine = await queries.insights("IN", "MAINTENANCE", None, 50)
    assert {i.kind for i in mine} == {"STUCK_METER"}

    ranked = await queries.prioritized_alerts(None, NOW + timedelta(hours=1), 10)
    assert ranked[0].alert.alert_type is AlertType.OVERLOAD  # the region's early warning
    assert [p.factors.score for p in ranked] == sorted(
        (p.factors.score for p in ranked), reverse=True
    )

    # Running again with the same evidence replays the alerts and keeps first_seen.
    again = await process.run_once(NOW + timedelta(minutes=1))
    assert again.run_id is not None and again.run_id > report.run_id
    assert again.alerts_raised == []
    feed_again = await queries.insights("IN", None, "THEFT", 50)
    assert feed_again[0].first_seen == theft[0].first_seen
    assert feed_again[0].last_seen > theft[0].last_seen
    run = await queries.last_run()
    assert run is not None and run.id == again.run_id and run.meters == METERS
    assert json.loads(json.dumps(run.summary))["regionModels"]["IN"] in {
        "weekly-profile",
        "holt-winters",
    }


async def test_a_second_run_waits_while_one_holds_the_lock(
    ins_settings: Settings, desk: AlertDesk, pool: AsyncConnectionPool[Any]
) -> None:
    from processes.insights.runner import LOCK_KEY

    process = InsightsProcess(ins_settings.database, ins_settings.insights, pool, desk)
    async with pool.connection() as holder:
        key = (LOCK_KEY, ins_settings.database.schema)
        await holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
        try:
            skipped = await process.run_once(datetime.now(UTC))
        finally:
            await holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
    assert skipped.run_id is None and skipped.meters == 0


async def test_the_schedule_runs_until_stopped(
    ins_settings: Settings, desk: AlertDesk, pool: AsyncConnectionPool[Any]
) -> None:
    import asyncio

    from processes.insights.runner import RunReport

    process = InsightsProcess(
        ins_settings.database,
        ins_settings.insights.__class__(interval_seconds=0.05),
        pool,
        desk,
    )
    stop = asyncio.Event()
    reports: list[RunReport] = []

    def seen(report: RunReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    await asyncio.wait_for(process.run_forever(stop, seen), timeout=120)
    assert len(reports) == 2
    assert all(r.run_id is not None for r in reports)  # the first test's meters are there
