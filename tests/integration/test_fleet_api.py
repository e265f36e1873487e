"""Fleet operations over GraphQL and REST: images, TOU plans, campaigns and their progress."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.context import RequestContext
from api.graphql.schema import schema
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from commands.meters import MeterRegistry
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.dlms_support import eventually, profile, register
from tests.integration.gql import gql

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]

DONE = "__typename ... on FleetCommandDone { id version changed } ... on ValidationError { message fields { field rule } } ... on ConflictError { message }"  # noqa: E501
CALENDAR: dict[str, Any] = {
    "name": "TOU1",
    "seasons": [{"name": "All", "start": "2000-01-01", "week": "WK"}],
    "weeks": [{"name": "WK", "days": [1, 1, 1, 1, 1, 2, 2]}],
    "days": [
        {
            "dayId": 1,
            "switches": [{"start": "00:00:00", "tier": 1}, {"start": "07:00:00", "tier": 3}],
        },
        {"dayId": 2, "switches": [{"start": "00:00:00", "tier": 2}]},
    ],
    "specialDays": [{"index": 1, "on": "2026-12-25", "dayId": 2}],
}


@pytest.fixture(autouse=True)
def _workers(projection: SupervisedProjection, fleet_worker: SupervisedProjection) -> None:
    """The meters and fleet read models follow the writes."""


async def test_firmware_images_upload_list_and_delete(client: Client, auth: Auth) -> None:
    image = bytes(range(256)) * 8
    identifier = new_serial("FW")
    url = f"/api/v1/commands/firmware-images?identifier={identifier}&manufacturer=ACME&model=X1"
    made = await client.post(url, content=image, headers=auth(Role.ADMIN))
    assert made.status_code == 201, made.text
    assert made.json()["changed"] is True
    again = await client.post(url, content=image, headers=auth(Role.ADMIN))
    assert again.json() == made.json() | {"changed": False}
    other = await client.post(url, content=image + b"x", headers=auth(Role.ADMIN))
    assert other.status_code == 409, other.text
    empty = await client.post(
        "/api/v1/commands/firmware-images?identifier=has%20space&manufacturer=ACME&model=X1",
        content=b"",
        headers=auth(Role.ADMIN),
    )
    assert empty.status_code == 422
    assert {e["field"] for e in empty.json()["errors"]} == {"identifier", "image"}
    refused = await client.post(url, content=image, headers=auth(Role.OPERATOR))
    assert refused.status_code == 403

    listed = await gql(
        client, "{ firmwareImages { id identifier sha256 size } }", headers=auth(Role.VIEWER)
    )
    mine = [i for i in listed["data"]["firmwareImages"] if i["identifier"] == identifier]
    assert mine == [
        {
            "id": made.json()["id"],
            "identifier": identifier,
            "sha256": hashlib.sha256(image).hexdigest(),
            "size": len(image),
        }
    ]
    gone = await gql(
        client,
        "mutation($id: ID!) { deleteFirmwareImage(id: $id) {" + DONE + "} }",
        {"id": made.json()["id"]},
        auth(Role.ADMIN),
    )
    assert gone["data"]["deleteFirmwareImage"]["changed"] is True
    rest = await client.get("/api/v1/firmware-images", headers=auth(Role.VIEWER))
    assert identifier not in {i["identifier"] for i in rest.json()}
    fleet = client.app.state.container.fleet
    with pytest.raises(Exception, match="deleted"):
        await asyncio.to_thread(fleet.image_bytes, made.json()["id"])


async def test_base64_upload_over_graphql(client: Client, auth: Auth) -> None:
    upload = (
        "mutation($b: String!, $i: String!) { uploadFirmwareImage(identifier: $i, "
        'manufacturer: "ACME", model: "X1", imageBase64: $b) {' + DONE + "} }"
    )
    body = await gql(
        client,
        upload,
        {"b": base64.b64encode(b"image").decode(), "i": new_serial("FWG")},
        auth(Role.ADMIN),
    )
    assert body["data"]["uploadFirmwareImage"]["changed"] is True
    bad = await gql(client, upload, {"b": "***", "i": "X"}, auth(Role.ADMIN))
    assert bad["data"]["uploadFirmwareImage"]["fields"] == [
        {"field": "imageBase64", "rule": "format"}
    ]


async def test_tou_plans_are_versioned(client: Client, auth: Auth) -> None:
    plan = f"Plan {new_serial()}"
    create = "mutation($p: String!, $c: JSON!) { createTouPlan(tariffPlan: $p, calendar: $c) {"
    create += DONE + "} }"
    first = await gql(client, create, {"p": plan, "c": CALENDAR}, auth(Role.OPERATOR))
    assert first["data"]["createTouPlan"]["version"] == 1
    same = await gql(client, create, {"p": plan, "c": CALENDAR}, auth(Role.OPERATOR))
    assert same["data"]["createTouPlan"]["changed"] is False
    revised = await client.post(
        "/api/v1/commands/tou-plans",
        json={"tariffPlan": plan, "calendar": CALENDAR | {"name": "TOU2"}},
        headers=auth(Role.OPERATOR),
    )
    assert revised.status_code == 200, revised.text
    assert revised.json()["version"] == 2
    bad = await gql(
        client,
        create,
        {"p": plan, "c": CALENDAR | {"days": [{"dayId": "x", "switches": []}]}},
        auth(Role.OPERATOR),
    )
    assert bad["data"]["createTouPlan"]["fields"] == [
        {"field": "calendar.days[0].dayId", "rule": "shape"}
    ]
    listed = await client.get("/api/v1/tou-plans", headers=auth(Role.VIEWER))
    mine = next(p for p in listed.json() if p["tariffPlan"] == plan)
    assert mine["latestVersion"] == 2
    assert [v["calendar"]["name"] for v in mine["versions"]] == ["TOU1", "TOU2"]


async def test_a_campaign_is_started_followed_paused_and_cancelled(
    settings: Settings, client: Client, auth: Auth, registry: MeterRegistry
) -> None:
    serials = []
    for _ in range(3):
        meter = register(registry, profile(4059))
        serials.append(registry.get(meter).spec.serial)

    async def visible() -> bool:
        found = await gql(
            client,
            '{ meters(first: 500, filter: {area: "DLMS Test"}) { edges { node { serial } } } }',
            headers=auth(Role.VIEWER),
        )
        shown = {e["node"]["serial"] for e in found["data"]["meters"]["edges"]}
        return set(serials) <= shown

    await eventually(visible)
    body = {
        "name": "limit 6 kW",
        "kind": "LOAD_LIMIT",
        "cohort": {"serials": serials},
        "concurrency": 2,
        "perCell": 1,
        "loadLimit": {"thresholdNormalW": 6000, "thresholdEmergencyW": 3000},
    }
    wrong_door = await client.post(
        "/api/v1/commands/firmware-campaigns", json=body, headers=auth(Role.ADMIN)
    )
    assert wrong_door.status_code == 422
    started = await client.post(
        "/api/v1/commands/campaigns", json=body, headers=auth(Role.OPERATOR)
    )
    assert started.status_code == 201, started.text
    campaign_id = started.json()["id"]
    shown = await client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth(Role.VIEWER))
    assert (shown.json()["meters"], shown.json()["pending"], shown.json()["status"]) == (
        3,
        3,
        "RUNNING",
    )
    assert shown.json()["spec"]["limits"] == {"concurrency": 2, "perCell": 1, "maxAttempts": 3}

    context = RequestContext(
        container=client.app.state.container,
        tokens=client.app.state.tokens,
        authorization=None,
        correlation_id="fleet-sub",
        authentication=await client.app.state.authenticator.from_headers(
            {k.lower(): v for k, v in auth(Role.VIEWER).items()}
        ),
        authenticator=client.app.state.authenticator,
        dangerous=client.app.state.dangerous,
    )
    stream = await schema.subscribe(
        "subscription($id: ID!) { campaignProgress(id: $id) { status pending skipped } }",
        variable_values={"id": campaign_id},
        context_value=context,
    )
    assert hasattr(stream, "__anext__")
    first = await asyncio.wait_for(stream.__anext__(), 5)
    assert first.data == {"campaignProgress": {"status": "RUNNING", "pending": 3, "skipped": 0}}

    paused = await gql(
        client,
        "mutation($id: ID!) { pauseCampaign(id: $id) {" + DONE + "} }",
        {"id": campaign_id},
        auth(Role.OPERATOR),
    )
    assert paused["data"]["pauseCampaign"]["changed"] is True
    second = await asyncio.wait_for(stream.__anext__(), 5)
    assert second.data["campaignProgress"]["status"] == "PAUSED"  # type: ignore[index]
    cancelled = await client.post(
        f"/api/v1/commands/campaigns/{campaign_id}/cancel",
        json={"reason": "test over"},
        headers=auth(Role.OPERATOR),
    )
    assert cancelled.status_code == 200, cancelled.text
    last = await asyncio.wait_for(stream.__anext__(), 5)
    assert last.data == {"campaignProgress": {"status": "CANCELLED", "pending": 0, "skipped": 3}}
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(stream.__anext__(), 5)

    meters = await gql(
        client,
        "query($id: ID!) { campaign(id: $id) { meterStates { serial state reason } } }",
        {"id": campaign_id},
        auth(Role.VIEWER),
    )
    states = meters["data"]["campaign"]["meterStates"]
    assert sorted(s["serial"] for s in states) == sorted(serials)
    assert {(s["state"], s["reason"]) for s in states} == {
        ("SKIPPED", "campaign cancelled: test over")
    }
    rest = await client.get(
        f"/api/v1/campaigns/{campaign_id}/meters?state=SKIPPED&first=2", headers=auth(Role.VIEWER)
    )
    assert len(rest.json()) == 2


async def test_per_meter_fleet_commands_are_queued(
    client: Client, auth: Auth, registry: MeterRegistry
) -> None:
    meter = register(registry, profile(4059))
    limit = await gql(
        client,
        "mutation($id: ID!) { setLoadLimit(id: $id, limit: {thresholdNormalW: 5000, "
        "thresholdEmergencyW: 9000}) { __typename ... on ValidationError { fields { field } } } }",
        {"id": str(meter)},
        auth(Role.OPERATOR),
    )
    assert limit["data"]["setLoadLimit"]["fields"] == [{"field": "loadLimit.thresholdEmergencyW"}]
    queued = await client.post(
        f"/api/v1/commands/meters/{meter}/load-limit",
        json={"thresholdNormalW": 5000, "thresholdEmergencyW": 2000},
        headers=auth(Role.OPERATOR),
    )
    assert queued.status_code == 202, queued.text
    assert (queued.json()["kind"], queued.json()["status"]) == ("SET_LOAD_LIMIT", "REQUESTED")
    unknown = await client.post(
        f"/api/v1/commands/meters/{meter}/calendar",
        json={"touPlanId": "00000000-0000-0000-0000-000000000001", "version": 1},
        headers=auth(Role.OPERATOR),
    )
    assert unknown.status_code == 404


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Any:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()
