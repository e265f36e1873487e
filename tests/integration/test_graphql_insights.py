"""GraphQL insights: `analyze` is for admins; a customer reads only its own meters' pattern,
forecast and scores; the feed, region forecasts and prioritized alerts are for staff.

The app runs on a schema of its own: an analysis reads every meter of its schema and may raise
alerts, which must not show up in the other tests' alert lists."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from psycopg.types.json import Jsonb

from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.migrate import migrate_database
from commands.context import Role
from config.settings import Settings
from domain.obis import POWER_IMPORT
from projections.partitions import ensure_partitions
from simulation.labelled_fleet import FleetSpec, LabelledFleet
from tests.integration.gql import gql

pytestmark = pytest.mark.integration

ACCOUNT = "ACC-I17-GQL"

PATTERN = """query($m: ID!) { consumptionPattern(meter: $m) {
  meterId days meanKw baseLoadKw peakKw trendPctPerWeek dailyProfileKw weeklyKwh } }"""
FORECAST = """query($m: ID!) { meterForecast(meter: $m) {
  key model points { start kw lowerKw upperKw } } }"""
SCORES = """query($m: ID!) { anomalyScores(meter: $m, days: 3) { day score reason } }"""
ANALYZE = "mutation { analyze { id trigger actor meters seconds summary } }"
FEED = """{ insights(first: 5) { id kind category evidence confidence alertIds }
  regionForecasts { key model capacityKw peakLoadPct points { loadPct } }
  prioritizedAlerts(first: 5) { score affectedKw factors { severity age affectedLoad customers
    recurrence } alert { id severity } } lastAnalysis { id trigger } }"""


@pytest.fixture(scope="module")
async def own(
    settings: Settings, tokens: TokenService
) -> AsyncIterator[tuple[AsyncTestClient, Settings]]:  # type: ignore[type-arg]
    """The real app on its own migrated schema (same servers and stream prefix)."""
    mine = settings.replace(db_schema=f"{settings.database.schema}_gqi")
    migrate_database(mine)
    try:
        async with AsyncTestClient(app=create_app(Container(mine), tokens)) as client:
            yield client, mine
    finally:
        assert mine.database.url is not None
        with psycopg.connect(mine.database.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(mine.database.schema))
            )


async def _meter_with_history(settings: Settings) -> uuid.UUID:
    """A commissioned meter of ``ACCOUNT`` with four weeks of 15-minute load up to now."""
    meter = uuid.uuid4()
    schema = settings.database.schema
    assert settings.database.url is not None
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now.replace(hour=0, minute=0) - timedelta(days=28)
    slots = int((now - start) / timedelta(minutes=15))
    fleet = LabelledFleet(FleetSpec(meters=1000, days=30, seed=9))
    power = fleet.curves(0, 1000)[0, :slots].astype(np.float64)
    s = sql.Identifier(schema)
    async with await psycopg.AsyncConnection.connect(settings.database.url, autocommit=True) as c:
        await ensure_partitions(c, schema, [(start + timedelta(days=d)).date() for d in range(30)])
        await c.execute(
            sql.SQL(
                "INSERT INTO {}.meters (id, serial, manufacturer, model, firmware, phases, region,"
                " area, status, customer_account, connection, registered_at, updated_at, version,"
                " events_applied) VALUES (%s, %s, 'Acme', 'M', '1', 1, 'I17', 'I17-1',"
                " 'COMMISSIONED', %s, %s, now(), now(), 1, 1)"
            ).format(s),
            (meter, f"I17-{meter.hex[:10]}", ACCOUNT, Jsonb({"host": "127.1.7.1"})),
        )
        async with c.cursor().copy(
            sql.SQL(
                "COPY {}.readings_15m (meter_id, quantity, bucket, region, count, sum, min, max,"
                " first_ts, first_value, last_ts, last_value) FROM STDIN"
            ).format(s)
        ) as copy:
            for t, watts in enumerate(power.tolist()):
                at = start + timedelta(minutes=15 * t)
                await copy.write_row(
                    (
                        meter,
                        POWER_IMPORT.id,
                        at,
                        "I17",
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
    return meter


async def test_insights_over_graphql_by_role(
    own: tuple[AsyncTestClient, Settings],  # type: ignore[type-arg]
    auth: Callable[..., dict[str, str]],
) -> None:
    client, settings = own
    meter = str(await _meter_with_history(settings))
    owner = auth(Role.CUSTOMER, customer=ACCOUNT)
    stranger = auth(Role.CUSTOMER, customer="ACC-SOMEONE-ELSE")
    viewer = auth(Role.VIEWER)

    refused = await gql(client, ANALYZE, headers=auth(Role.OPERATOR))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    ran = await gql(client, ANALYZE, headers=auth(Role.ADMIN, subject="ada"))
    assert "errors" not in ran, ran
    run = ran["data"]["analyze"]
    assert run["trigger"] == "analyze" and run["actor"] == "ada" and run["meters"] >= 1

    mine = await gql(client, PATTERN, {"m": meter}, headers=owner)
    pattern: dict[str, Any] = mine["data"]["consumptionPattern"]
    assert pattern["days"] == 28 and len(pattern["dailyProfileKw"]) == 96
    assert 0 < pattern["baseLoadKw"] <= pattern["meanKw"] <= pattern["peakKw"]
    assert len(pattern["weeklyKwh"]) == 7
    assert (await gql(client, PATTERN, {"m": meter}, headers=stranger))["data"] == {
        "consumptionPattern": None
    }
    assert (await gql(client, PATTERN, {"m": meter}, headers=viewer))["data"]["consumptionPattern"][
        "meterId"
    ] == meter

    forecast = (await gql(client, FORECAST, {"m": meter}, headers=owner))["data"]["meterForecast"]
    assert forecast["key"] == meter and len(forecast["points"]) == 96
    assert all(p["lowerKw"] <= p["kw"] <= p["upperKw"] for p in forecast["points"])
    assert (await gql(client, FORECAST, {"m": meter}, headers=stranger))["data"][
        "meterForecast"
    ] is None
    scores = (await gql(client, SCORES, {"m": meter}, headers=owner))["data"]["anomalyScores"]
    assert len(scores) == 1 and 0 <= scores[0]["score"] <= 100 and scores[0]["reason"]

    staff = await gql(client, FEED, headers=viewer)
    assert "errors" not in staff, staff
    regions = {r["key"]: r for r in staff["data"]["regionForecasts"]}
    assert regions["I17"]["capacityKw"] > 0 and len(regions["I17"]["points"]) == 96
    assert staff["data"]["lastAnalysis"]["id"] == run["id"]
    scores_ranked = [a["score"] for a in staff["data"]["prioritizedAlerts"]]
    assert scores_ranked == sorted(scores_ranked, reverse=True)
    denied = await gql(client, FEED, headers=owner)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
