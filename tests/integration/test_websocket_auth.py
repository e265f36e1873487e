"""GraphQL subscriptions over a real websocket: authenticate on connect, see only what's allowed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import api.graphql.access
from api.app import create_app
from api.auth import TokenService
from bootstrap.container import Container
from bootstrap.workers import SupervisedProjection
from commands.context import Role, Scope
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.gql import REGISTER, meter_input
from tests.integration.live import serve

pytestmark = pytest.mark.integration
Auth = Callable[..., dict[str, str]]
PROTOCOL = [Subprotocol("graphql-transport-ws")]
LIVE = "subscription($m: String!) { liveReadings(meter: $m) { value } }"


@pytest.fixture(scope="module")
def server(
    settings: Settings, tokens: TokenService, projection: SupervisedProjection
) -> Iterator[str]:
    with serve(create_app(Container(settings), tokens)) as address:
        yield address


@pytest.fixture(scope="module")
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=10) as client:
        yield client


async def _connect(server: str, payload: dict[str, Any], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    ws = await websockets.connect(
        f"ws://{server}/graphql", subprotocols=PROTOCOL, additional_headers=headers or {}
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


async def _close_code(server: str, payload: dict[str, Any]) -> int | None:
    ws = await _connect(server, payload)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def _key(http: httpx.AsyncClient, auth: Auth, **grants: list[str]) -> str:
    made = await http.post(
        "/api/v1/api-keys", json={"name": "ws-test", **grants}, headers=auth(Role.ADMIN)
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


async def _meter(http: httpx.AsyncClient, auth: Auth) -> str:
    serial = new_serial("WS")
    made = await http.post(
        "/graphql",
        json={"query": REGISTER, "variables": {"input": meter_input(serial)}},
        headers=auth(Role.OPERATOR),
    )
    assert made.json()["data"]["registerMeter"]["__typename"] == "Meter"
    return serial


async def _post_reading(http: httpx.AsyncClient, tokens: TokenService, serial: str) -> None:
    gateway = {"Authorization": "Bearer " + tokens.issue("gw", [], scopes=[Scope.INGEST])}
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    posted = await http.post(
        "/telemetry/batch",
        json=[{"meter_id": serial, "timestamp": ts.isoformat(), "voltage": 230.0}],
        headers=gateway,
    )
    assert posted.status_code == 200 and posted.json()["accepted"] == 1, posted.text


async def test_connections_without_acceptable_credentials_close_with_4401(
    server: str, tokens: TokenService
) -> None:
    expired = tokens.issue("late", [Role.VIEWER], ttl_seconds=-3600)
    for payload in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer {expired}"},
        {"X-API-Key": "hes_abcdefghij_" + "A" * 43},
    ):
        assert await _close_code(server, payload) == 4401, payload


async def test_a_caller_allowed_no_subscription_is_closed_with_4403(
    server: str, http: httpx.AsyncClient, auth: Auth
) -> None:
    ingest_only = await _key(http, auth, scopes=["ingest"])
    assert await _close_code(server, {"X-API-Key": ingest_only}) == 4403


async def test_payload_token_key_and_handshake_header_authenticate(
    server: str, http: httpx.AsyncClient, auth: Auth, tokens: TokenService
) -> None:
    viewer_key = await _key(http, auth, roles=["viewer"])
    bearer = auth(Role.VIEWER)["Authorization"]
    for payload, headers in (
        ({"Authorization": bearer}, None),
        ({"authorization": bearer}, None),
        ({"X-API-Key": viewer_key}, None),
        ({"Authorization": f"ApiKey {viewer_key}"}, None),
        ({}, auth(Role.VIEWER)),
    ):
        ws = await _connect(server, payload, headers)
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        await ws.close()


async def test_subscriptions_see_only_what_the_role_may_see(
    server: str, http: httpx.AsyncClient, auth: Auth, tokens: TokenService
) -> None:
    serial = await _meter(http, auth)
    customer = auth(Role.CUSTOMER, customer="ACC-WS-NOBODY")
    ws = await _connect(server, {"Authorization": customer["Authorization"]})
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    for id_, query, variables in (
        ("1", LIVE, {"m": serial}),
        ("2", 'subscription { liveReadings(region: "North") { value } }', {}),
    ):
        await ws.send(
            json.dumps(
                {
                    "id": id_,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        while message["type"] == "complete":  # the end of the previous subscription
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["id"] == id_, message
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] in ("NOT_FOUND", "FORBIDDEN"), message
    await ws.close()


async def test_streams_end_when_the_token_expires_or_the_key_is_revoked(
    server: str,
    http: httpx.AsyncClient,
    auth: Auth,
    tokens: TokenService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.graphql.access, "RECHECK_SECONDS", 0.0)
    serial = await _meter(http, auth)
    key_made = await http.post(
        "/api/v1/api-keys",
        json={"name": "ws-revoke", "roles": ["viewer"]},
        headers=auth(Role.ADMIN),
    )
    key, prefix = key_made.json()["key"], key_made.json()["apiKey"]["prefix"]
    short = tokens.issue("brief", [Role.VIEWER], ttl_seconds=2)
    sockets = []
    for payload in ({"Authorization": f"Bearer {short}"}, {"X-API-Key": key}):
        ws = await _connect(server, payload)
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        subscribe = {"query": LIVE, "variables": {"m": serial}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        sockets.append(ws)
    await asyncio.sleep(0.5)  # both subscriptions are bound
    await _post_reading(http, tokens, serial)
    for ws in sockets:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (
            first["type"] == "next" and first["payload"]["data"]["liveReadings"]["value"] == 230.0
        )
    revoked = await http.post(
        f"/api/v1/api-keys/{prefix}/revoke", json={"reason": "test"}, headers=auth(Role.ADMIN)
    )
    assert revoked.status_code == 200
    await asyncio.sleep(2.2)  # the short token expires
    await _post_reading(http, tokens, serial)
    for ws in sockets:
        ended = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ended["type"] in ("error", "next"), ended
        errors = ended["payload"] if ended["type"] == "error" else ended["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED", ended
        await ws.close()
