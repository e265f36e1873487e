"""Live subscriptions check access again on every message, and customers see a customer view.

A customer follows their meter's readings, alerts and region tariff over a real websocket; an
operator then moves the meter to another customer. The old customer's per-meter and per-region
streams end with FORBIDDEN at their next message and nothing of the meter reaches them any
more, while the new owner receives it. Tariffs shown to customers carry price, tiers and
validity, never an override's internal reason or author.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.relay import SupervisedRelay
from bootstrap.workers import SupervisedProjection
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext, Role
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import REGISTER, meter_input
from tests.integration.live import serve
from tests.integration.test_websocket_auth import _connect, _post_reading

pytestmark = pytest.mark.integration
Auth = Callable[..., dict[str, str]]
QUIET = 1.5
"""Seconds a stream must stay silent to count as receiving nothing."""


@pytest.fixture(scope="module")
def server(
    settings: Settings,
    tokens: TokenService,
    projection: SupervisedProjection,
    tariffs_worker: SupervisedProjection,
    alerts_worker: SupervisedProjection,
    event_relays: list[SupervisedRelay],
) -> Iterator[str]:
    with serve(create_app(Container(settings), tokens)) as address:
        yield address


@pytest.fixture(scope="module")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def desk(settings: Settings) -> Iterator[AlertDesk]:
    app = AlertDesk(env=settings.database.eventsourcing_env())
    yield app
    app.close()


async def _gql(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _owned_meter(http: httpx.AsyncClient, auth: Auth, region: str, account: str) -> str:
    """A meter in ``region`` supplying ``account``; returns its id."""
    connection = {"host": "127.0.0.1", "port": 4059, "transport": "WRAPPER"}
    made = await _gql(
        http,
        REGISTER,
        {"input": meter_input(new_serial("SA"), region=region, connection=connection)},
        auth(Role.OPERATOR),
    )
    meter_id: str = made["data"]["registerMeter"]["id"]
    await _assign(http, auth, meter_id, account)
    return meter_id


async def _assign(http: httpx.AsyncClient, auth: Auth, meter_id: str, account: str) -> None:
    """Move the meter to ``account`` and wait until the read model shows it."""
    moved = await _gql(
        http,
        "mutation($id: ID!, $a: String!) { assignCustomer(id: $id, customerAccount: $a)"
        " { ... on Meter { customerAccount } } }",
        {"id": meter_id, "a": account},
        auth(Role.OPERATOR),
    )
    assert moved["data"]["assignCustomer"]["customerAccount"] == account, moved


async def _subscribe(
    server: str, auth: Auth, account: str, query: str, variables: dict[str, Any]
) -> ClientConnection:
    headers = auth(Role.CUSTOMER, subject=f"c-{account}", customer=account)
    ws: ClientConnection = await _connect(server, {"Authorization": headers["Authorization"]})
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    await ws.send(
        json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
    )
    await asyncio.sleep(0.5)  # the subscription is bound before anything is sent
    return ws


async def _next(ws: ClientConnection, seconds: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), seconds))
    return message


async def _silent(ws: ClientConnection) -> bool:
    """True when nothing arrives within ``QUIET`` seconds (or the socket is closed)."""
    try:
        message = await asyncio.wait_for(ws.recv(), QUIET)
    except TimeoutError:
        return True
    raise AssertionError(f"expected nothing more, got {message!r}")


def _forbidden(message: dict[str, Any]) -> bool:
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    return bool(errors) and errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_live_readings_stop_for_the_old_customer_when_the_meter_moves(
    server: str, http: httpx.AsyncClient, auth: Auth, tokens: TokenService, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:6]
    old, new = f"ACC-A-{run}", f"ACC-B-{run}"
    ensure_customers(settings, old, new)
    meter_id = await _owned_meter(http, auth, "North", old)
    live = "subscription($m: String!) { liveReadings(meter: $m) { meterId value } }"
    before = await _subscribe(server, auth, old, live, {"m": meter_id})
    serial = (
        await _gql(
            http,
            "query($id: ID) { meter(id: $id) { serial } }",
            {"id": meter_id},
            auth(Role.VIEWER),
        )
    )["data"]["meter"]["serial"]

    await _post_reading(http, tokens, serial)
    first = await _next(before)
    assert first["type"] == "next" and first["payload"]["data"]["liveReadings"]["value"] == 230.0

    await _assign(http, auth, meter_id, new)
    after = await _subscribe(server, auth, new, live, {"m": meter_id})
    await _post_reading(http, tokens, serial)
    ended = await _next(before)
    assert _forbidden(ended), ended
    complete = await _next(before)
    assert complete["type"] == "complete", complete
    moved = await _next(after)
    assert moved["type"] == "next" and moved["payload"]["data"]["liveReadings"]["value"] == 230.0

    await _post_reading(http, tokens, serial)
    assert (await _next(after))["type"] == "next"
    assert await _silent(before)  # the old customer gets nothing more
    for ws in (before, after):
        await ws.close()


async def test_alerts_of_a_moved_meter_reach_only_its_new_customer(
    server: str, http: httpx.AsyncClient, auth: Auth, desk: AlertDesk, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:6]
    old, new = f"ACC-C-{run}", f"ACC-D-{run}"
    ensure_customers(settings, old, new)
    meter_id = await _owned_meter(http, auth, "North", old)
    raised = "subscription { alertRaised { id meterId } }"
    before = await _subscribe(server, auth, old, raised, {})
    await _assign(http, auth, meter_id, new)
    after = await _subscribe(server, auth, new, raised, {})

    decision = AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.TAMPER,
        severity=Severity.HIGH,
        region="North",
        dedup_key=f"MOVED:{run}",
        message="cover opened",
        observed_at=datetime.now(UTC),
        meter=uuid.UUID(meter_id),
    )
    await asyncio.to_thread(desk.raise_or_recur, decision, CommandContext(actor=SYSTEM))
    seen = await _next(after, 15)
    assert seen["type"] == "next" and seen["payload"]["data"]["alertRaised"]["meterId"] == meter_id
    assert await _silent(before)
    for ws in (before, after):
        await ws.close()


OVERRIDE = (
    "mutation($r: String!, $reason: String!, $price: String!, $at: DateTime!) {"
    " applyTariffOverride(region: $r, price: $price, reason: $reason, expiresAt: $at)"
    " { __typename } }"
)
TARIFF_VIEW = (
    "region effectivePrice tiers { thresholdPct surchargePct }"
    " override { price expiresAt active reason author }"
)


async def _tariff(http: httpx.AsyncClient, auth: Auth, region: str) -> None:
    created = await _gql(
        http,
        'mutation($r: String!) { createTariff(input: {region: $r, currency: "EUR",'
        ' basePrice: "0.25", timezone: "UTC"}) { __typename } }',
        {"r": region},
        auth(Role.ADMIN),
    )
    assert created["data"]["createTariff"]["__typename"] == "Tariff", created


async def _override(http: httpx.AsyncClient, auth: Auth, region: str, price: str) -> None:
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    applied = await _gql(
        http,
        OVERRIDE,
        {"r": region, "reason": "internal: storm desk", "price": price, "at": until},
        auth(Role.ADMIN, subject="tariff-admin"),
    )
    assert applied["data"]["applyTariffOverride"]["__typename"] == "Tariff", applied


async def test_customers_see_price_and_validity_of_an_override_not_its_reason_or_author(
    server: str, http: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:6]
    region, account = f"Tariff view {run}", f"ACC-E-{run}"
    ensure_customers(settings, account)
    await _owned_meter(http, auth, region, account)
    await _tariff(http, auth, region)
    await _override(http, auth, region, "0.4")
    query = "query($r: String!) { currentTariff(region: $r) { " + TARIFF_VIEW + " } }"

    staff = await _gql(http, query, {"r": region}, auth(Role.VIEWER))
    assert "errors" not in staff, staff
    assert staff["data"]["currentTariff"]["override"]["reason"] == "internal: storm desk"
    assert staff["data"]["currentTariff"]["override"]["author"] == "tariff-admin"

    customer = auth(Role.CUSTOMER, subject="c-view", customer=account)
    seen = await _gql(http, query, {"r": region}, customer)
    tariff = seen["data"]["currentTariff"]
    assert tariff["effectivePrice"] == "0.4000" and tariff["tiers"], tariff
    assert tariff["override"]["price"] == "0.4000" and tariff["override"]["active"] is True
    assert tariff["override"]["expiresAt"]
    assert tariff["override"]["reason"] is None and tariff["override"]["author"] is None
    refused = {(tuple(e["path"][-1:]), e["extensions"]["code"]) for e in seen["errors"]}
    assert refused == {(("reason",), "FORBIDDEN"), (("author",), "FORBIDDEN")}
    price_only = await _gql(
        http,
        "query($r: String!) { currentTariff(region: $r) { override { price expiresAt } } }",
        {"r": region},
        customer,
    )
    assert "errors" not in price_only, price_only


async def test_tariff_changes_stop_for_a_customer_without_a_meter_in_the_region(
    server: str, http: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:6]
    region, old, new = f"Tariff live {run}", f"ACC-F-{run}", f"ACC-G-{run}"
    ensure_customers(settings, old, new)
    meter_id = await _owned_meter(http, auth, region, old)
    await _tariff(http, auth, region)
    changed = (
        "subscription($r: String!) { tariffChanged(region: $r) { effectivePrice"
        " override { price reason } } }"
    )
    before = await _subscribe(server, auth, old, changed, {"r": region})

    await _override(http, auth, region, "0.5")
    first = await _next(before, 15)
    assert first["type"] == "next", first
    assert first["payload"]["data"]["tariffChanged"]["override"] == {
        "price": "0.5000",
        "reason": None,
    }
    assert [e["extensions"]["code"] for e in first["payload"]["errors"]] == ["FORBIDDEN"]

    await _assign(http, auth, meter_id, new)
    await _override(http, auth, region, "0.6")
    ended = await _next(before, 15)
    assert _forbidden(ended), ended
    assert (await _next(before))["type"] == "complete"
    await _override(http, auth, region, "0.7")
    assert await _silent(before)
    await before.close()


async def test_a_subscription_argument_with_a_control_character_is_refused(
    server: str, auth: Auth
) -> None:
    ws = await _subscribe(
        server,
        auth,
        "ACC-H",
        "subscription($m: String!) { liveReadings(meter: $m) { value } }",
        {"m": "SN\u0000"},
    )
    refused = await _next(ws)
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert errors[0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "field": "meter",
        "rule": "characters",
    }, refused
    await ws.close()
