"""Whole reading pipeline: HTTP ingest → JetStream → reading workers → read models → GraphQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql

from api.auth import TokenService
from commands.context import Role
from config.settings import Settings
from tests.conftest import ingest_headers, new_serial
from tests.integration.gql import REGISTER, gql, meter_input
from tests.worker_thread import WorkerThread

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]


async def register(client: Client, auth: Auth, serial: str, region: str) -> str:
    body = await gql(
        client, REGISTER, {"input": meter_input(serial, region=region)}, auth(Role.OPERATOR)
    )
    meter_id: str = body["data"]["registerMeter"]["id"]
    return meter_id


async def wait_for_readings(
    client: Client, auth: Auth, meter: str, quantity: str, start: datetime, expected: int
) -> list[dict[str, Any]]:
    query = (
        "query($m: String!, $q: String!, $f: DateTime!, $t: DateTime!) {"
        " readings(meter: $m, quantity: $q, from: $f, to: $t) {"
        " edges { node { ts value quality source quantity { obis alias unit } } } } }"
    )
    deadline = time.monotonic() + 20
    while True:
        body = await gql(
            client,
            query,
            {
                "m": meter,
                "q": quantity,
                "f": start.isoformat(),
                "t": (start + timedelta(hours=2)).isoformat(),
            },
            auth(Role.VIEWER),
        )
        nodes = [e["node"] for e in body["data"]["readings"]["edges"]]
        if len(nodes) >= expected or time.monotonic() > deadline:
            return nodes
        await asyncio.sleep(0.1)


def gateway_item(serial: str, ts: datetime, kw: float, kwh: float) -> dict[str, Any]:
    return {
        "meter_id": serial,
        "timestamp": ts.isoformat(),
        "voltage": 231.5,
        "current": 4.2,
        "power_kw": kw,
        "energy_kwh": kwh,
        "power_factor": 0.97,
        "frequency": 50.01,
    }


async def test_http_batch_lands_in_read_models(
    client: Client,
    auth: Auth,
    tokens: TokenService,
    reading_worker: WorkerThread,
    settings: Settings,
) -> None:
    region = "PIPE-" + new_serial("")[:6]
    serial = new_serial("T")
    meter = await register(client, auth, serial, region)
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    items = [
        gateway_item(serial, start + timedelta(minutes=5 * i), 2.0 + i, 1000.0 + i)
        for i in range(4)
    ]
    items.append(
        {**gateway_item(serial, start + timedelta(minutes=21), 1.0, 1010.0), "voltage": 612.0}
    )
    items.append(gateway_item("NO-SUCH-METER", start, 1.0, 1.0))
    items.append(gateway_item(serial, datetime.now(UTC) + timedelta(hours=2), 1.0, 2000.0))
    response = await client.post(
        "/api/v1/telemetry/batch", content=json.dumps(items), headers=ingest_headers(tokens)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 4 * 6 + 5  # item 4 keeps all but its voltage
    rules = {(e["item"], e["field"], e["rule"]) for e in result["errors"]}
    assert (4, "voltage", "range") in rules
    assert (5, "meter_id", "unknown-meter") in rules
    assert (6, "timestamp", "future") in rules

    nodes = await wait_for_readings(client, auth, meter, "power_import", start, 5)
    assert [n["value"] for n in nodes] == [2000.0, 3000.0, 4000.0, 5000.0, 1000.0]
    assert nodes[0]["quantity"] == {"obis": "1.0.1.7.0.255", "alias": "power_import", "unit": "W"}
    assert nodes[0]["source"] == "http"

    aggregates = await gql(
        client,
        "query($m: String!, $f: DateTime!, $t: DateTime!) { aggregates(meter: $m, interval: M15,"
        ' from: $f, to: $t, quantity: "energy_import") { bucket count min max delta } }',
        {"m": serial, "f": start.isoformat(), "t": (start + timedelta(hours=1)).isoformat()},
        auth(Role.VIEWER),
    )
    windows = aggregates["data"]["aggregates"]
    assert [w["count"] for w in windows] == [3, 2]
    assert windows[0]["delta"] == 2000.0  # 1,000,000 → 1,002,000 Wh

    params = {"from": start.isoformat(), "to": (start + timedelta(minutes=45)).isoformat()}
    intervals = await client.get(
        f"/api/v1/meters/{serial}/intervals", params=params, headers=auth(Role.VIEWER)
    )
    assert intervals.status_code == 200, intervals.text
    assert [
        (i["consumptionWh"], i["quality"], i["readings"]) for i in intervals.json()["intervals"]
    ] == [(2000.0, "partial", 3), (8000.0, "valid", 2), (None, "missing", 0)]
    as_csv = await client.get(
        f"/api/v1/meters/{meter}/intervals",
        params={**params, "format": "csv", "interval": "M30"},
        headers=auth(Role.VIEWER),
    )
    lines = as_csv.text.splitlines()
    assert lines[0] == "serial,start,end,consumption_wh,quality,readings"
    assert lines[1].endswith(",10000.000,partial,5")
    stranger = await client.get(
        f"/api/v1/meters/{serial}/intervals",
        params=params,
        headers=auth(Role.CUSTOMER, customer="SOMEONE-ELSE"),
    )
    assert stranger.status_code == 404

    load = await gql(
        client,
        "query($r: String!, $f: DateTime!, $t: DateTime!) { regionalLoad(region: $r, from: $f,"
        " to: $t) { bucket meters powerKw capacityKw loadPct } }",
        {"r": region, "f": start.isoformat(), "t": (start + timedelta(hours=1)).isoformat()},
        auth(Role.OPERATOR),
    )
    first = load["data"]["regionalLoad"][0]
    assert first["meters"] == 1 and first["powerKw"] == pytest.approx(3.0)  # avg of 2, 3, 4 kW
    assert first["loadPct"] == pytest.approx(
        100 * 3.0 / settings.readings.default_region_capacity_kw
    )

    seen = await gql(
        client,
        "query($s: String) { meter(serial: $s) { lastSeen online } }",
        {"s": serial},
        auth(Role.VIEWER),
    )
    assert seen["data"]["meter"] == {
        "lastSeen": (start + timedelta(minutes=21)).isoformat(),
        "online": False,
    }

    fleet = await gql(
        client, "{ fleet { region metersRegistered metersReporting } }", None, auth(Role.VIEWER)
    )
    assert {"region": region, "metersRegistered": 1, "metersReporting": 0} in fleet["data"][
        "fleet"
    ]  # readings are an hour old: not "reporting" within the last 15 minutes

    # The same request again: JetStream and the store drop the duplicates, nothing changes.
    again = await client.post(
        "/api/v1/telemetry/batch", content=json.dumps(items), headers=ingest_headers(tokens)
    )
    assert again.json()["accepted"] == result["accepted"]
    await asyncio.sleep(1.0)
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        # Every 1-minute window as queries see it (stored, or derived from a coarser one).
        count = conn.execute(
            sql.SQL("SELECT count(*), sum(count) FROM {}.windows_1m WHERE meter_id = %s").format(
                sql.Identifier(settings.database.schema)
            ),
            (meter,),
        ).fetchone()
    assert count == (29, 29)  # one row per quantity and minute, each counting one reading

    # Every rejection is in the dead-letter stream with its reason.
    nc = await nats.connect(settings.nats.url or "")
    js = nc.jetstream()
    sub = await js.subscribe(
        f"{settings.nats.prefix.lower()}.hes.deadletter.readings.http", ordered_consumer=True
    )
    reasons = []
    try:
        while True:
            msg = await sub.next_msg(timeout=1)
            reasons.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await nc.close()
    mine = [r for r in reasons if r.get("serial") in (serial, "NO-SUCH-METER")]
    assert {r["rule"] for r in mine} >= {"range", "unknown-meter", "future"}


async def test_fleet_readings_per_minute_is_the_last_complete_window_and_no_more(
    client: Client,
    auth: Auth,
    tokens: TokenService,
    reading_worker: WorkerThread,
) -> None:
    region = "RPM-" + new_serial("")[:6]
    serial = new_serial("T")
    meter = await register(client, auth, serial, region)
    now = datetime.now(UTC)
    window = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    last = window - timedelta(minutes=15)  # the last complete window
    # 5 items x 6 readings = 30 in the last window, 3 items (18) in the one before, one in the
    # running window: only the 30 count, as 30 / 15 = 2 per minute (the window before: 1).
    times = [last + timedelta(minutes=3 * i) for i in range(5)]
    times += [last - timedelta(minutes=5 * (i + 1)) for i in range(3)]
    items = [gateway_item(serial, ts, 1.0, 1000.0 + n) for n, ts in enumerate(sorted(times))]
    items.append(gateway_item(serial, min(now, window + timedelta(seconds=1)), 1.0, 2000.0))
    posted = await client.post(
        "/api/v1/telemetry/batch", content=json.dumps(items), headers=ingest_headers(tokens)
    )
    assert posted.status_code == 200 and posted.json()["rejected"] == 0, posted.text
    await wait_for_readings(client, auth, meter, "voltage_l1", last - timedelta(minutes=45), 9)
    fleet = await gql(
        client,
        "{ fleet { region readingsPerMinute readingsLastMinute } }",
        None,
        auth(Role.VIEWER),
    )
    mine = next(f for f in fleet["data"]["fleet"] if f["region"] == region)
    assert mine == {"region": region, "readingsPerMinute": 2, "readingsLastMinute": 2}


async def test_ingest_needs_the_ingest_scope_and_valid_json(
    client: Client, auth: Auth, tokens: TokenService
) -> None:
    body = json.dumps([gateway_item("X", datetime.now(UTC), 1.0, 1.0)])
    assert (await client.post("/telemetry/batch", content=body)).status_code == 401
    operator = await client.post("/telemetry/batch", content=body, headers=auth(Role.ADMIN))
    assert operator.status_code == 403
    bad = await client.post("/telemetry/batch", content=b"{nope", headers=ingest_headers(tokens))
    assert bad.status_code == 400 and bad.json()["errors"][0]["rule"] == "json"


async def test_huge_batch_is_refused_whole(
    client: Client, auth: Auth, tokens: TokenService, settings: Settings
) -> None:
    serial = new_serial("H")
    await register(client, auth, serial, "HUGE")
    now = datetime.now(UTC) - timedelta(days=1)
    items = [
        gateway_item(serial, now + timedelta(seconds=i), 1.0, 1.0 + i)
        for i in range(settings.readings.max_batch // 6 + 1)
    ]
    response = await client.post(
        "/telemetry/batch", content=json.dumps(items), headers=ingest_headers(tokens)
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["rule"] == "too-many"
    await asyncio.sleep(0.5)
    gone = await gql(
        client,
        "query($s: String) { meter(serial: $s) { lastSeen } }",
        {"s": serial},
        auth(Role.VIEWER),
    )
    assert gone["data"]["meter"]["lastSeen"] is None  # nothing stored half-way


async def test_hot_queries_use_indexes(settings: Settings) -> None:
    assert settings.database.url
    schema = sql.Identifier(settings.database.schema)
    now = datetime.now(UTC)
    queries = {
        "readings": (
            sql.SQL(
                "SELECT * FROM {}.readings WHERE meter_id = %s AND quantity = 1 "
                "AND ts >= %s AND ts < %s ORDER BY ts LIMIT 500"
            )
        ),
        "aggregates": (
            sql.SQL(
                "SELECT * FROM {}.readings_15m WHERE meter_id = %s AND bucket >= %s AND bucket < %s"
            )
        ),
    }
    with psycopg.connect(settings.database.url) as conn:
        conn.execute("SET enable_seqscan = off")
        meter = "00000000-0000-0000-0000-000000000001"
        for name, query in queries.items():
            plan = conn.execute(
                sql.SQL("EXPLAIN ") + query.format(schema), (meter, now - timedelta(days=1), now)
            ).fetchall()
            text = "\n".join(r[0] for r in plan)
            assert "Index" in text and "Seq Scan" not in text, (name, text)
        plan = conn.execute(
            sql.SQL(
                "EXPLAIN SELECT * FROM {}.regional_load_15m WHERE region = 'x' "
                "AND bucket >= %s AND bucket < %s"
            ).format(schema),
            (now - timedelta(days=1), now),
        ).fetchall()
        assert "Index" in "\n".join(r[0] for r in plan)
