"""GraphQL alerts through the real app, the alerts event store and its projection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from bootstrap.workers import SupervisedProjection
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext, Role
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

ALERT_FIELDS = """
  ... on Alert { id type severity status region meterId occurrences priority customersAffected
                 acknowledgedBy resolvedBy resolutionNote autoResolved version }
  ... on ValidationError { code message }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""
LIST = (
    "query($region: String, $status: [AlertStatus!], $severity: Severity, $type: AlertType,"
    " $first: Int!, $after: String) { alerts(region: $region, status: $status,"
    " severity: $severity, type: $type, first: $first, after: $after) {"
    " edges { cursor node { id type severity status priority customersAffected occurrences } }"
    " pageInfo { hasNextPage endCursor } } }"
)
ACK = (
    "mutation($id: ID!, $key: String) { acknowledgeAlert(id: $id, idempotencyKey: $key)"
    " { __typename " + ALERT_FIELDS + " } }"
)
RESOLVE = (
    "mutation($id: ID!, $note: String!) { resolveAlert(id: $id, note: $note)"
    " { __typename " + ALERT_FIELDS + " } }"
)


def decision(
    region: str, key: str, severity: Severity, meter: uuid.UUID | None = None, **kw: Any
) -> AlertDecision:
    """A RAISE decision for ``key`` in ``region``."""
    return AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=kw.pop("alert_type", AlertType.THRESHOLD),
        severity=severity,
        region=region,
        dedup_key=key,
        message=f"test alert {key}",
        observed_at=kw.pop("at", datetime.now(UTC)),
        meter=meter,
        evidence={"test": True},
    )


@pytest.fixture(scope="module")
def desk(settings: Settings) -> Any:
    """The alerts application of this run."""
    app = AlertDesk(env=settings.database.eventsourcing_env())
    yield app
    app.close()


async def listed(client: Client, auth: Auth, count: int, **variables: Any) -> dict[str, Any]:
    """The alerts page once the projection shows ``count`` alerts for the filter."""
    body: dict[str, Any] = {}
    for _ in range(200):
        body = await gql(client, LIST, {"first": 50, **variables}, auth(Role.VIEWER))
        assert "errors" not in body, body
        if len(body["data"]["alerts"]["edges"]) >= count:
            break
        await asyncio.sleep(0.05)
    page: dict[str, Any] = body["data"]["alerts"]
    return page


async def test_alerts_are_ordered_by_priority_and_paged(
    client: Client, auth: Auth, desk: AlertDesk, alerts_worker: SupervisedProjection
) -> None:
    region = f"A-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC) - timedelta(hours=5)
    ctx = CommandContext(actor=SYSTEM)
    for key, severity, at in [
        ("low-new", Severity.LOW, datetime.now(UTC)),
        ("critical", Severity.CRITICAL, datetime.now(UTC)),
        ("medium-old", Severity.MEDIUM, old),
        ("medium-new", Severity.MEDIUM, datetime.now(UTC)),
    ]:
        await asyncio.to_thread(
            desk.raise_or_recur, decision(region, f"{region}:{key}", severity, at=at), ctx
        )
    page = await listed(client, auth, 4, region=region)
    priorities = [e["node"]["priority"] for e in page["edges"]]
    assert priorities == sorted(priorities, reverse=True)
    severities = [e["node"]["severity"] for e in page["edges"]]
    assert severities[0] == "CRITICAL" and severities[-1] == "LOW"
    # an older alert of equal severity ranks higher (age raises priority)
    assert severities[1:3] == ["MEDIUM", "MEDIUM"]

    first = await gql(client, LIST, {"first": 2, "region": region}, auth(Role.VIEWER))
    rest = await gql(
        client,
        LIST,
        {"first": 2, "region": region, "after": first["data"]["alerts"]["pageInfo"]["endCursor"]},
        auth(Role.VIEWER),
    )
    ids = [e["node"]["id"] for e in first["data"]["alerts"]["edges"]]
    ids += [e["node"]["id"] for e in rest["data"]["alerts"]["edges"]]
    assert ids == [e["node"]["id"] for e in page["edges"]]
    assert first["data"]["alerts"]["pageInfo"]["hasNextPage"] is True
    assert rest["data"]["alerts"]["pageInfo"]["hasNextPage"] is False

    high = await listed(client, auth, 1, region=region, severity="HIGH")
    assert [e["node"]["severity"] for e in high["edges"]] == ["CRITICAL"]

    bad = await gql(client, LIST, {"first": 2, "after": "nonsense"}, auth(Role.VIEWER))
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_operator_acknowledges_and_resolves_viewer_may_not(
    client: Client, auth: Auth, desk: AlertDesk, alerts_worker: SupervisedProjection
) -> None:
    region = f"A-{uuid.uuid4().hex[:8]}"
    outcome = await asyncio.to_thread(
        desk.raise_or_recur,
        decision(region, f"{region}:x", Severity.HIGH),
        CommandContext(actor=SYSTEM),
    )
    alert_id = str(outcome.alert.id)
    refused = await gql(client, ACK, {"id": alert_id}, auth(Role.VIEWER))
    assert refused["data"]["acknowledgeAlert"]["__typename"] == "ForbiddenError"

    acked = await gql(
        client, ACK, {"id": alert_id, "key": "ack-1"}, auth(Role.OPERATOR, subject="op-1")
    )
    result = acked["data"]["acknowledgeAlert"]
    assert result["__typename"] == "Alert"
    assert result["status"] == "ACKNOWLEDGED" and result["acknowledgedBy"] == "op-1"
    again = await gql(
        client, ACK, {"id": alert_id, "key": "ack-1"}, auth(Role.OPERATOR, subject="op-1")
    )
    assert again["data"]["acknowledgeAlert"]["version"] == result["version"]  # replayed
    twice = await gql(client, ACK, {"id": alert_id}, auth(Role.OPERATOR, subject="op-2"))
    assert twice["data"]["acknowledgeAlert"]["__typename"] == "ConflictError"

    resolved = await gql(
        client, RESOLVE, {"id": alert_id, "note": "fuse replaced"}, auth(Role.OPERATOR)
    )
    r = resolved["data"]["resolveAlert"]
    assert r["__typename"] == "Alert" and r["status"] == "RESOLVED"
    assert r["resolutionNote"] == "fuse replaced"
    gone = await gql(client, RESOLVE, {"id": str(uuid.uuid4()), "note": "x"}, auth(Role.OPERATOR))
    assert gone["data"]["resolveAlert"]["__typename"] == "NotFoundError"

    open_only = await gql(
        client,
        LIST,
        {"first": 10, "region": region, "status": ["OPEN", "ACKNOWLEDGED"]},
        auth(Role.VIEWER),
    )
    assert open_only["data"]["alerts"]["edges"] == []


async def test_customer_sees_only_alerts_of_own_meters(
    client: Client,
    auth: Auth,
    desk: AlertDesk,
    alerts_worker: SupervisedProjection,
    settings: Settings,
) -> None:
    region = f"A-{uuid.uuid4().hex[:8]}"
    mine, theirs = new_serial(), new_serial()
    account_mine, account_theirs = f"C-{mine}", f"C-{theirs}"
    ensure_customers(settings, account_mine, account_theirs)
    ids = {}
    for serial, account in [(mine, account_mine), (theirs, account_theirs)]:
        body = await gql(
            client, REGISTER, {"input": meter_input(serial, region=region)}, auth(Role.OPERATOR)
        )
        ids[serial] = body["data"]["registerMeter"]["id"]
        assign = (
            "mutation($id: ID!, $c: String!) { assignCustomer(id: $id, customerAccount: $c)"
            " { __typename } }"
        )
        await gql(client, assign, {"id": ids[serial], "c": account}, auth(Role.OPERATOR))
    ctx = CommandContext(actor=SYSTEM)
    for serial in (mine, theirs):
        meter = uuid.UUID(ids[serial])
        await asyncio.to_thread(
            desk.raise_or_recur,
            decision(
                region,
                f"COMM_FAILURE:{meter}",
                Severity.MEDIUM,
                meter,
                alert_type=AlertType.COMM_FAILURE,
            ),
            ctx,
        )
    await listed(client, auth, 2, region=region)
    customer = auth(Role.CUSTOMER, subject="c1", customer=account_mine)
    body = await gql(client, LIST, {"first": 10, "region": region}, customer)
    nodes = [e["node"] for e in body["data"]["alerts"]["edges"]]
    assert len(nodes) == 1 and nodes[0]["customersAffected"] == 1
    theirs_alert = await gql(
        client,
        "query($id: ID!) { alert(id: $id) { id } }",
        {"id": str(desk.open_alert(f"COMM_FAILURE:{ids[theirs]}").id)},  # type: ignore[union-attr]
        customer,
    )
    assert theirs_alert["data"]["alert"] is None
    anonymous = await gql(client, LIST, {"first": 10})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
