"""The operational scenario end to end: a region pushed past 85 % load through the ingest API.

Readings → reading workers → regional load → the tariff engine steps the price up by tier → the
overload detector raises ONE alert over three hot windows → the relayed alert reaches a webhook
subscriber, signed → an operator acknowledges and resolves it → every step is in the event
history an auditor reads.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import nats
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql

from api.auth import TokenService
from bootstrap.connections import notifier_pool
from bootstrap.relay import SupervisedRelay
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from config.settings import Settings
from domain.detection import WINDOW, bucket_start
from domain.notifications import verify_signature
from processes.notifier import Notifier, secret_box
from tests.conftest import ingest_headers, new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import REGISTER, gql, meter_input
from tests.integration.notify_helpers import WebhookReceiver
from tests.integration.test_graphql_tariffs import create
from tests.worker_thread import WorkerThread

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

CAPACITY_KW = 10.0
METERS = 4
LOAD = (
    "query($r: String!, $f: DateTime!, $t: DateTime!) { regionalLoad(region: $r, from: $f,"
    " to: $t) { bucket loadPct meters } }"
)
ALERTS = (
    "query($r: String!) { alerts(region: $r, type: OVERLOAD) { edges { node {"
    " id status severity occurrences message customersAffected acknowledgedBy resolvedBy } } } }"
)
CURRENT = "query($r: String!) { currentTariff(region: $r) { effectivePrice loadPct } }"


async def post_window(
    client: Client, tokens: TokenService, serials: list[str], ts: datetime, load_pct: float, n: int
) -> None:
    """Every meter reports its share of ``load_pct`` of the region's capacity at ``ts``."""
    kw = load_pct / 100 * CAPACITY_KW / len(serials)
    items = [
        {
            "meter_id": serial,
            "timestamp": ts.isoformat(),
            "voltage": 230.0,
            "current": kw * 1000 / 230.0,
            "power_kw": kw,
            "energy_kwh": 100.0 + n,
        }
        for serial in serials
    ]
    response = await client.post(
        "/api/v1/telemetry/batch", content=json.dumps(items), headers=ingest_headers(tokens)
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] > 0, response.text


async def wait_for_load(
    client: Client, auth: Auth, region: str, bucket: datetime, load_pct: float
) -> None:
    """Until the reading workers stored the window's regional load."""
    for _ in range(200):
        body = await gql(
            client,
            LOAD,
            {"r": region, "f": bucket.isoformat(), "t": (bucket + WINDOW).isoformat()},
            auth(Role.VIEWER),
        )
        rows = body["data"]["regionalLoad"]
        if rows and abs(rows[0]["loadPct"] - load_pct) < 0.01 and rows[0]["meters"] == METERS:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"window {bucket} never reached {load_pct} %: {rows}")


@pytest.fixture
async def notifier(settings: Settings) -> AsyncIterator[Notifier]:
    """The notification worker on this run's schema and streams."""
    nc = await nats.connect(settings.nats.url or "")
    worker = Notifier(
        settings.database,
        settings.nats,
        settings.notifications,
        nc,
        notifier_pool(settings.database),
        box=secret_box(settings.notifications, settings.runtime.data_dir),
        poll_interval=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    yield worker
    stop.set()
    await asyncio.wait_for(task, 30)
    await nc.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A local webhook endpoint."""
    hook = WebhookReceiver()
    await hook.start()
    yield hook
    await hook.stop()


async def test_region_past_85_percent_steps_price_raises_one_alert_worked_by_operator(
    client: Client,
    auth: Auth,
    tokens: TokenService,
    settings: Settings,
    projection: SupervisedProjection,
    tariffs_worker: SupervisedProjection,
    alerts_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    event_relays: list[SupervisedRelay],
    notifier: Notifier,
    receiver: WebhookReceiver,
) -> None:
    region = f"OV-{uuid.uuid4().hex[:6]}"
    subscribed = await gql(
        client,
        "mutation($input: NotificationSubscriptionInput!) {"
        " createNotificationSubscription(input: $input) { __typename"
        " ... on NotificationSubscriptionSaved { webhookSecret } } }",
        {
            "input": {
                "channel": "WEBHOOK",
                "url": f"{receiver.base}/ok/grid-ops",
                "kinds": ["ALERT_RAISED"],
                "regions": [region],
            }
        },
        auth(Role.OPERATOR, subject="grid-ops"),
    )
    secret = subscribed["data"]["createNotificationSubscription"]["webhookSecret"]
    assert secret, subscribed
    assert settings.database.url
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (region, capacity_w) VALUES (%s, %s)").format(
                sql.Identifier(settings.database.schema, "region_capacity")
            ),
            (region, CAPACITY_KW * 1000),
        )
    assert (await create(client, auth, region, basePrice="0.2000"))["__typename"] == "Tariff"
    serials = [new_serial("OV") for _ in range(METERS)]
    ensure_customers(settings, "C-OV")
    for i, serial in enumerate(serials):
        body = await gql(
            client, REGISTER, {"input": meter_input(serial, region=region)}, auth(Role.OPERATOR)
        )
        meter = body["data"]["registerMeter"]["id"]
        if i == 0:
            await gql(
                client,
                "mutation($id: ID!, $c: String!) {"
                " assignCustomer(id: $id, customerAccount: $c) { __typename } }",
                {"id": meter, "c": "C-OV"},
                auth(Role.OPERATOR),
            )

    now = datetime.now(UTC)
    if now - bucket_start(now) < timedelta(seconds=10):
        # The current window's reading is stamped up to 5 s before now: keep it in this window.
        await asyncio.sleep(10 - (now - bucket_start(now)).total_seconds())
        now = datetime.now(UTC)
    current = bucket_start(now)
    windows = [current - 3 * WINDOW, current - 2 * WINDOW, current - WINDOW, current]
    loads = [70.0, 87.0, 88.0, 95.0]
    prices = []
    for n, (bucket, load) in enumerate(zip(windows, loads, strict=True)):
        ts = min(bucket + timedelta(minutes=1), now - timedelta(seconds=5))
        await post_window(client, tokens, serials, ts, load, n)
        await wait_for_load(client, auth, region, bucket, load)
        await reading_worker.apply_tariffs()
        for _ in range(100):
            body = await gql(client, CURRENT, {"r": region}, auth(Role.VIEWER))
            tariff = body["data"]["currentTariff"]
            if tariff["loadPct"] is not None and abs(tariff["loadPct"] - load) < 0.01:
                break
            await asyncio.sleep(0.05)
        prices.append(Decimal(tariff["effectivePrice"]))
    # 70 % → +10 %, 87 % → +20 %, 88 % → same tier (nothing recorded), 95 % → +35 %
    assert prices[0] == Decimal("0.22") and prices[1] == Decimal("0.24")
    assert prices[3] == Decimal("0.27")

    for _ in range(3):  # the detectors run again and again: still one alert
        # At the scenario's time: a quarter hour passing meanwhile would move the 30 minutes.
        await reading_worker.run_detectors(now)
    for _ in range(100):
        body = await gql(client, ALERTS, {"r": region}, auth(Role.VIEWER))
        edges = body["data"]["alerts"]["edges"]
        if edges:
            break
        await asyncio.sleep(0.05)
    assert len(edges) == 1, edges
    alert = edges[0]["node"]
    assert alert["status"] == "OPEN" and alert["occurrences"] == 1
    assert alert["severity"] == "HIGH" and alert["customersAffected"] == 1

    # The operators' webhook got the alert once, signed with their subscription's secret.
    for _ in range(200):
        if receiver.to("/ok/grid-ops"):
            break
        await asyncio.sleep(0.05)
    hooks = receiver.to("/ok/grid-ops")
    assert len(hooks) == 1, hooks
    assert verify_signature(
        secret, hooks[0].headers["x-hes-signature"], hooks[0].body, int(time.time())
    )
    assert alert["id"] in hooks[0].body.decode()

    operator = auth(Role.OPERATOR, subject="op-anna")
    ack = await gql(
        client,
        "mutation($id: ID!) { acknowledgeAlert(id: $id) { __typename"
        " ... on Alert { status acknowledgedBy } } }",
        {"id": alert["id"]},
        operator,
    )
    assert ack["data"]["acknowledgeAlert"] == {
        "__typename": "Alert",
        "status": "ACKNOWLEDGED",
        "acknowledgedBy": "op-anna",
    }
    done = await gql(
        client,
        "mutation($id: ID!, $note: String!) { resolveAlert(id: $id, note: $note) { __typename"
        " ... on Alert { status resolvedBy } } }",
        {"id": alert["id"], "note": "load shed"},
        operator,
    )
    assert done["data"]["resolveAlert"]["status"] == "RESOLVED"
    # The detectors see the same hot windows again: resolved stays resolved (no new alert).
    await reading_worker.run_detectors(now)
    await asyncio.sleep(0.5)
    body = await gql(client, ALERTS, {"r": region}, auth(Role.VIEWER))
    assert [e["node"]["status"] for e in body["data"]["alerts"]["edges"]] == ["RESOLVED"]

    # Each step is in the event history, with who did it.
    history = await gql(
        client,
        "query($id: ID!) { history(aggregateId: $id) { type actor } }",
        {"id": alert["id"]},
        auth(Role.AUDITOR),
    )
    steps = [(e["type"], e["actor"]) for e in history["data"]["history"]]
    assert steps == [("Raised", "system"), ("Acknowledged", "op-anna"), ("Resolved", "op-anna")]
    tariff_events = await gql(
        client,
        "query($id: ID!) { history(aggregateId: $id) { type payload } }",
        {"id": region},
        auth(Role.AUDITOR),
    )
    loads = [
        e["payload"]["price"]
        for e in tariff_events["data"]["history"]
        if e["type"] == "LoadPriceChanged"
    ]
    assert [Decimal(p) for p in loads] == [Decimal("0.22"), Decimal("0.24"), Decimal("0.27")]
