"""Text is clean at the door: a stray control character is refused by the field it is in.

Each case of issue 11 that once froze a projection (a NUL in a firmware, a SIM card, a CSV
concentrator id, a tariff override's reason, an alert's resolution note) is sent again: the
answer names the field and the rule, nothing is recorded, and the next change through the same
projection shows up in its read model.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
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
from tests.integration.gql import REGISTER, gql, meter_input

pytestmark = pytest.mark.integration
Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

BAD = ["1\u0000x", "a\u0001b", "tab\tinside", "\u0085", "x\u007f"]
"""NUL, another C0 control, a tab in a one-line field, a C1 control (NEL), DEL."""
METER = "query($s: String) { meter(serial: $s) { serial firmware simCard } }"
OVERRIDE = (
    "mutation($r: String!, $reason: String!, $at: DateTime!) {"
    ' applyTariffOverride(region: $r, price: "0.5", reason: $reason, expiresAt: $at) {'
    " __typename ... on Tariff { override { reason } }"
    " ... on ValidationError { fields { field rule message } } } }"
)
RESOLVE = (
    "mutation($id: ID!, $note: String!) { resolveAlert(id: $id, note: $note) { __typename"
    " ... on Alert { status resolutionNote }"
    " ... on ValidationError { fields { field rule } } } }"
)


def _local(number: str, **overrides: Any) -> dict[str, Any]:
    connection = {"host": "127.0.0.1", "port": 4059, "transport": "WRAPPER"}
    return {**meter_input(number, connection=connection), **overrides}


async def _ascii_gql(
    client: Client, query: str, variables: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """POST a GraphQL operation as ASCII JSON (lone surrogates travel as \\u escapes)."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    response = await client.post(
        "/graphql", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _register(client: Client, auth: Auth, number: str, **overrides: Any) -> dict[str, Any]:
    body = await gql(client, REGISTER, {"input": _local(number, **overrides)}, auth(Role.OPERATOR))
    result: dict[str, Any] = body["data"]["registerMeter"]
    return result


async def _visible(client: Client, auth: Auth, serial: str) -> dict[str, Any] | None:
    body = await gql(client, METER, {"s": serial}, auth(Role.VIEWER))
    assert "errors" not in body, body
    meter: dict[str, Any] | None = body["data"]["meter"]
    return meter


async def test_register_meter_with_a_control_character_is_refused_and_the_next_is_visible(
    client: Client, auth: Auth
) -> None:
    for bad in BAD:
        refused = await _register(client, auth, new_serial("NUL"), firmware=bad)
        assert refused["__typename"] == "ValidationError", (bad, refused)
        assert ("firmware", "characters") in {(f["field"], f["rule"]) for f in refused["fields"]}
    for field in ("manufacturer", "model", "region", "area", "serial"):
        refused = await _register(client, auth, new_serial("NUL"), **{field: "N\u0000"})
        assert refused["__typename"] == "ValidationError", (field, refused)
        assert {f["field"] for f in refused["fields"]} == {field}
    for field in ("concentratorId", "simCard", "meterType"):
        refused = await _register(client, auth, new_serial("NUL"), **{field: "8\u00009"})
        assert {f["field"] for f in refused["fields"]} == {field}, refused

    serial = new_serial("NEXT")
    made = await _register(client, auth, serial, firmware="2.0 build 7", meterType="CT\nmeter")
    assert made["__typename"] == "Meter", made
    assert (await _visible(client, auth, serial)) == {
        "serial": serial,
        "firmware": "2.0 build 7",
        "simCard": None,
    }


async def test_rest_register_refuses_a_control_character_in_sim_card(
    client: Client, auth: Auth
) -> None:
    body = {
        "serial": new_serial("R"),
        "manufacturer": "Acme",
        "model": "AM550",
        "firmware": "1.0",
        "phases": 1,
        "region": "North",
        "area": "N-01",
        "connection": {"host": "127.0.0.2"},
        "simCard": "8944\u0000",
    }
    refused = await client.post(
        "/api/v1/commands/meters/register", json=body, headers=auth(Role.OPERATOR)
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [(e["field"], e["rule"]) for e in refused.json()["errors"]] == [("simCard", "format")]

    made = await client.post(
        "/api/v1/commands/meters/register",
        json={**body, "simCard": "8944500012345678901"},
        headers=auth(Role.OPERATOR),
    )
    assert made.status_code == 201, made.text
    shown = await _visible(client, auth, str(body["serial"]))
    assert shown is not None and shown["simCard"] == "8944500012345678901"


async def test_csv_import_reports_a_control_character_by_line_and_column(
    client: Client, auth: Auth
) -> None:
    bad, good = new_serial("CSV"), new_serial("CSV")
    header = (
        "meterNumber,concentratorId,meterType,brand,model,firmware,ipAddress,port,area,"
        "customer,simCard\n"
    )
    csv = (
        header
        + f"{bad},DC\u00001,three-phase,Iskra,AM550,1.0,127.0.0.3,4059,Z-1,,\n"
        + f"{good},DC-1,three-phase,Iskra,AM550,1.0,127.0.0.4,4059,Z-1,,\n"
    )
    response = await client.post(
        "/api/v1/imports/meters",
        files={"data": ("meters.csv", csv.encode(), "text/csv")},
        headers=auth(Role.OPERATOR),
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 1 and report["rejected"] == 1, report
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(2, "concentratorId")]
    assert await _visible(client, auth, bad) is None
    assert (await _visible(client, auth, good)) is not None


async def test_tariff_override_reason_with_nul_is_refused_and_the_next_is_visible(
    client: Client, auth: Auth, tariffs_worker: SupervisedProjection
) -> None:
    region = f"Clean {uuid.uuid4().hex[:6]}"
    created = await gql(
        client,
        'mutation($r: String!) { createTariff(input: {region: $r, currency: "EUR",'
        ' basePrice: "0.25", timezone: "UTC"}) { __typename } }',
        {"r": region},
        auth(Role.ADMIN),
    )
    assert created["data"]["createTariff"]["__typename"] == "Tariff", created
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refused = await gql(
        client, OVERRIDE, {"r": region, "reason": "storm\u0000", "at": until}, auth(Role.ADMIN)
    )
    result = refused["data"]["applyTariffOverride"]
    assert result["__typename"] == "ValidationError", refused
    assert [(f["field"], f["rule"]) for f in result["fields"]] == [("reason", "characters")]

    applied = await gql(
        client,
        OVERRIDE,
        {"r": region, "reason": "storm\nline two", "at": until},
        auth(Role.ADMIN),
    )
    assert applied["data"]["applyTariffOverride"]["override"]["reason"] == "storm\nline two"
    shown = await gql(
        client,
        "query($r: String!) { currentTariff(region: $r) { override { reason } } }",
        {"r": region},
        auth(Role.VIEWER),
    )
    assert shown["data"]["currentTariff"]["override"]["reason"] == "storm\nline two"

    refused_region = await gql(
        client, OVERRIDE, {"r": "North\u0000", "reason": "x", "at": until}, auth(Role.ADMIN)
    )
    fields = refused_region["data"]["applyTariffOverride"]["fields"]
    assert [(f["field"], f["rule"]) for f in fields] == [("region", "format")]


async def test_create_tariff_with_an_overflowing_price_is_a_validation_error(
    client: Client, auth: Auth
) -> None:
    for field, value in (
        ("basePrice", "1e999"),
        ("basePrice", "1e99999999999"),
        ("minChangePct", "1e999"),
    ):
        body = await gql(
            client,
            "mutation($input: CreateTariffInput!) { createTariff(input: $input) { __typename"
            " ... on ValidationError { fields { field rule } } } }",
            {
                "input": {
                    "region": f"Overflow {uuid.uuid4().hex[:6]}",
                    "currency": "EUR",
                    "basePrice": "0.2",
                    "timezone": "UTC",
                    field: value,
                }
            },
            auth(Role.ADMIN),
        )
        assert "errors" not in body, body
        result = body["data"]["createTariff"]
        assert result["__typename"] == "ValidationError", (field, value, body)
        assert result["fields"][0]["field"] == field
    tiers = await gql(
        client,
        "mutation($input: CreateTariffInput!) { createTariff(input: $input) { __typename"
        " ... on ValidationError { fields { field rule } } } }",
        {
            "input": {
                "region": f"Overflow {uuid.uuid4().hex[:6]}",
                "currency": "EUR",
                "basePrice": "0.2",
                "timezone": "UTC",
                "tiers": [{"thresholdPct": 50, "surchargePct": "1e999"}],
                "tou": [{"days": [1], "start": "00:00", "end": "06:00", "multiplier": "1e999"}],
            }
        },
        auth(Role.ADMIN),
    )
    fields = {f["field"]: f["rule"] for f in tiers["data"]["createTariff"]["fields"]}
    assert fields == {"tiers[0].surchargePct": "range", "tou[0].multiplier": "range"}


@pytest.fixture(scope="module")
def desk(settings: Settings) -> Iterator[AlertDesk]:
    app = AlertDesk(env=settings.database.eventsourcing_env())
    yield app
    app.close()


async def test_resolve_alert_note_with_nul_is_refused_and_the_resolution_is_visible(
    client: Client, auth: Auth, desk: AlertDesk, alerts_worker: SupervisedProjection
) -> None:
    decision = AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.THRESHOLD,
        severity=Severity.HIGH,
        region="North",
        dedup_key=f"CLEAN:{uuid.uuid4()}",
        message="note test",
        observed_at=datetime.now(UTC),
    )
    raised = desk.raise_or_recur(decision, CommandContext(actor=SYSTEM))
    alert_id = str(raised.alert.id)
    for _ in range(100):  # the projection shows the alert
        found = await gql(
            client, "query($id: ID!) { alert(id: $id) { id } }", {"id": alert_id}, auth(Role.VIEWER)
        )
        if found["data"]["alert"]:
            break
        await asyncio.sleep(0.05)

    refused = await gql(
        client, RESOLVE, {"id": alert_id, "note": "fixed\u0000"}, auth(Role.OPERATOR)
    )
    result = refused["data"]["resolveAlert"]
    assert result["__typename"] == "ValidationError", refused
    assert result["fields"] == [{"field": "note", "rule": "characters"}]

    resolved = await gql(
        client, RESOLVE, {"id": alert_id, "note": "fuse\treplaced\n"}, auth(Role.OPERATOR)
    )
    assert resolved["data"]["resolveAlert"] == {
        "__typename": "Alert",
        "status": "RESOLVED",
        "resolutionNote": "fuse\treplaced\n",
    }


async def test_graphql_query_arguments_with_nul_answer_a_validation_error(
    client: Client, auth: Auth
) -> None:
    for query, variables, path in (
        ("query($s: String) { meter(serial: $s) { id } }", {"s": "SN\u0000"}, "serial"),
        (
            "query($f: MeterFilterInput) { meters(filter: $f) { edges { cursor } } }",
            {"f": {"region": "North\u0000"}},
            "filter.region",
        ),
        (
            "query($r: String!) { currentTariff(region: $r) { region } }",
            {"r": "North\u0000"},
            "region",
        ),
        (
            'query($m: String!) { readings(meter: $m, quantity: "voltage_l1",'
            ' from: "2024-01-01T00:00:00Z", to: "2024-01-02T00:00:00Z") { edges { cursor } } }',
            {"m": "SN\ud800"},
            "meter",
        ),
    ):
        body = await _ascii_gql(client, query, variables, auth(Role.ADMIN))
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", body
        assert error["extensions"]["field"] == path, body
        assert "internal error" not in error["message"]


async def test_other_commands_name_the_field_holding_a_control_character(
    client: Client, auth: Auth
) -> None:
    meter = await _register(client, auth, new_serial("OTH"))
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (
            'mutation($id: ID!) { assignCustomer(id: $id, customerAccount: "ACC\\u0000")'
            " { __typename ... on ValidationError { fields { field } } } }",
            {"id": meter["id"]},
            "assignCustomer",
            "customerAccount",
        ),
        (
            'mutation($id: ID!) { commissionMeter(id: $id, location: {address: "1\\u0000 Rd"})'
            " { __typename ... on ValidationError { fields { field } } } }",
            {"id": meter["id"]},
            "commissionMeter",
            "location.address",
        ),
        (
            "mutation { createNotificationSubscription(input: {channel: EMAIL, email:"
            ' "ops@example.com", kinds: [ALERT_RAISED], regions: ["N\\u0000"]})'
            " { __typename ... on ValidationError { fields { field } } } }",
            {},
            "createNotificationSubscription",
            "regions[0]",
        ),
        (
            'mutation { createApiKey(input: {name: "gw\\u0000", scopes: ["ingest"]})'
            " { __typename ... on ValidationError { fields { field } } } }",
            {},
            "createApiKey",
            "name",
        ),
        (
            'mutation($id: ID!) { readMeterOnDemand(id: $id, quantities: ["\\u0000"])'
            " { __typename ... on ValidationError { fields { field } } } }",
            {"id": meter["id"]},
            "readMeterOnDemand",
            "quantities[0]",
        ),
    ]
    for query, variables, name, field in cases:
        body = await gql(client, query, variables, auth(Role.ADMIN))
        assert "errors" not in body, body
        result = body["data"][name]
        assert result["__typename"] == "ValidationError", (name, body)
        assert field in {f["field"] for f in result["fields"]}, (name, body)
