"""GraphQL meter registry through the real app, PostgreSQL event store and projection."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from commands.context import Role
from config.settings import Settings
from domain.meter import meter_id
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import METER_FIELDS, REGISTER, gql, meter_input

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]


def count_events(settings: Settings, serial: str) -> int:
    """Events stored for the meter with this serial."""
    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {settings.database.schema}.meters_events"
            " WHERE originator_id = %s",
            (meter_id(serial),),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def register(client: Client, auth: Auth, serial: str, **overrides: object) -> dict[str, Any]:
    body = await gql(
        client, REGISTER, {"input": meter_input(serial, **overrides)}, auth(Role.OPERATOR)
    )
    result: dict[str, Any] = body["data"]["registerMeter"]
    return result


async def test_register_then_query_shows_meter(client: Client, auth: Auth) -> None:
    serial = new_serial()
    result = await register(client, auth, serial)
    assert result["__typename"] == "Meter"
    assert result["status"] == "REGISTERED"
    assert result["id"] == str(meter_id(serial))

    body = await gql(
        client,
        "query($f: MeterFilterInput) { meters(filter: $f, first: 10) {"
        " edges { cursor node { serial status region } } pageInfo { hasNextPage endCursor } } }",
        # narrowed to this serial: other tests' meters in N-01 may fill the first page
        {"f": {"area": "N-01", "region": "North", "serialPrefix": serial}},
        auth(Role.VIEWER),
    )
    serials = [e["node"]["serial"] for e in body["data"]["meters"]["edges"]]
    assert serials == [serial]

    by_serial = await gql(
        client,
        "query($s: String) { meter(serial: $s) { id serial } }",
        {"s": serial.lower()},
        auth(Role.VIEWER),
    )
    assert by_serial["data"]["meter"]["id"] == result["id"]


async def test_full_lifecycle_is_recorded_with_actor(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "ACC-1", "ACC-2")
    serial = new_serial()
    meter = await register(client, auth, serial)
    mid = meter["id"]
    commission = await gql(
        client,
        'mutation($id: ID!) { commissionMeter(id: $id, location: {address: "1 Grid Rd",'
        ' latitude: 52.1, longitude: 4.3}, customerAccount: "ACC-1") { __typename '
        + METER_FIELDS
        + " } }",
        {"id": mid},
        auth(Role.OPERATOR, subject="olga"),
    )
    assert commission["data"]["commissionMeter"]["status"] == "COMMISSIONED"
    assert commission["data"]["commissionMeter"]["customerAccount"] == "ACC-1"

    change = await gql(
        client,
        "mutation($id: ID!) { changeConnectionProfile(id: $id, connection: "
        '{host: "meter-7.grid.example", port: 4061, transport: HDLC, physicalAddress: 17}) '
        "{ __typename " + METER_FIELDS + " } }",
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert change["data"]["changeConnectionProfile"]["connection"]["transport"] == "HDLC"

    assign = await gql(
        client,
        'mutation($id: ID!) { assignCustomer(id: $id, customerAccount: "ACC-2") { __typename '
        + METER_FIELDS
        + " } }",
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert assign["data"]["assignCustomer"]["customerAccount"] == "ACC-2"

    unassign = await gql(
        client,
        'mutation($id: ID!) { unassignCustomer(id: $id, reason: "moved out") { __typename '
        + METER_FIELDS
        + " } }",
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert unassign["data"]["unassignCustomer"]["customerAccount"] is None

    gone = await gql(
        client,
        'mutation($id: ID!) { decommissionMeter(id: $id, reason: "replaced") { __typename '
        + METER_FIELDS
        + " } }",
        {"id": mid},
        auth(Role.ADMIN, subject="ada"),
    )
    assert gone["data"]["decommissionMeter"]["status"] == "DECOMMISSIONED"
    assert gone["data"]["decommissionMeter"]["version"] == 6

    assert settings.database.url
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute(
            f"SELECT topic, state FROM {settings.database.schema}.meters_events "
            "WHERE originator_id = %s ORDER BY originator_version",
            (meter_id(serial),),
        ).fetchall()
    topics = [t.rsplit(".", 1)[-1] for t, _ in rows]
    assert topics == [
        "Registered",
        "Commissioned",
        "ConnectionProfileChanged",
        "CustomerAssigned",
        "CustomerUnassigned",
        "Decommissioned",
    ]
    actors = [bytes(state).decode() for _, state in rows]
    assert '"actor":"olga"' in actors[1] and '"actor":"ada"' in actors[5]
    assert all('"correlation_id":"' in a for a in actors)


async def test_validation_error_names_every_field(client: Client, auth: Auth) -> None:
    result = await register(
        client,
        auth,
        "bad serial!",
        phases=2,
        connection={"host": "not a host", "port": 70000},
    )
    assert result["__typename"] == "ValidationError"
    fields = {(f["field"], f["rule"]) for f in result["fields"]}
    assert {
        ("serial", "format"),
        ("phases", "allowed"),
        ("connection.host", "host"),
        ("connection.port", "range"),
    } <= fields


async def test_not_found_conflict_and_forbidden_are_typed(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "B")
    missing = await gql(
        client,
        'mutation { assignCustomer(id: "00000000-0000-0000-0000-000000000000",'
        ' customerAccount: "A") { __typename ' + METER_FIELDS + " } }",
        None,
        auth(Role.OPERATOR),
    )
    assert missing["data"]["assignCustomer"]["__typename"] == "NotFoundError"

    serial = new_serial()
    await register(client, auth, serial)
    again = await register(client, auth, serial)
    assert again["__typename"] == "ConflictError"
    assert "already registered" in again["message"]

    forbidden = await gql(client, REGISTER, {"input": meter_input(new_serial())}, auth(Role.VIEWER))
    assert forbidden["data"]["registerMeter"]["__typename"] == "ForbiddenError"

    mid = str(meter_id(serial))
    not_admin = await gql(
        client,
        'mutation($id: ID!) { decommissionMeter(id: $id, reason: "x") { __typename } }',
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert not_admin["data"]["decommissionMeter"]["__typename"] == "ForbiddenError"
    await gql(
        client,
        'mutation($id: ID!) { decommissionMeter(id: $id, reason: "x") { __typename } }',
        {"id": mid},
        auth(Role.ADMIN),
    )
    after = await gql(
        client,
        'mutation($id: ID!) { assignCustomer(id: $id, customerAccount: "B") { __typename '
        + METER_FIELDS
        + " } }",
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert after["data"]["assignCustomer"]["__typename"] == "ConflictError"
    assert "decommissioned" in after["data"]["assignCustomer"]["message"]


async def test_anonymous_and_tampered_tokens_are_rejected(client: Client, auth: Auth) -> None:
    anonymous = await gql(client, "{ meters { edges { cursor } } }")
    assert anonymous["data"] is None
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    token = auth(Role.VIEWER)["Authorization"].removeprefix("Bearer ")
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]  # privilege escalation attempt keeps the old signature
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    tampered = {"Authorization": f"Bearer {head}.{forged}.{signature}"}
    body = await gql(client, REGISTER, {"input": meter_input(new_serial())}, tampered)
    assert body["data"] is None
    assert "signature" in body["errors"][0]["message"]


async def test_idempotency_key_records_events_once(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "C-9")
    serial = new_serial()
    first = await gql(
        client,
        REGISTER,
        {"input": meter_input(serial), "key": "reg-" + serial},
        auth(Role.OPERATOR),
    )
    retry = await gql(
        client,
        REGISTER,
        {"input": meter_input(serial), "key": "reg-" + serial},
        auth(Role.OPERATOR),
    )
    assert first["data"]["registerMeter"]["__typename"] == "Meter"
    assert retry["data"]["registerMeter"]["__typename"] == "Meter"
    mid = first["data"]["registerMeter"]["id"]
    assign = (
        'mutation($id: ID!, $key: String) { assignCustomer(id: $id, customerAccount: "C-9",'
        " idempotencyKey: $key) { __typename " + METER_FIELDS + " } }"
    )
    for _ in range(3):
        r = await gql(client, assign, {"id": mid, "key": "assign-1"}, auth(Role.OPERATOR))
        assert r["data"]["assignCustomer"]["version"] == 2
    reused = await gql(
        client,
        'mutation($id: ID!) { unassignCustomer(id: $id, reason: "x", idempotencyKey: '
        '"assign-1") { __typename ... on ConflictError { message } } }',
        {"id": mid},
        auth(Role.OPERATOR),
    )
    assert reused["data"]["unassignCustomer"]["__typename"] == "ConflictError"
    assert count_events(settings, serial) == 2


async def test_pagination_walks_every_meter_once(client: Client, auth: Auth) -> None:
    area = "PG-" + new_serial("")[:6]
    serials = sorted(new_serial("P") for _ in range(7))
    for s in serials:
        await register(client, auth, s, area=area)
    seen: list[str] = []
    after = None
    query = (
        "query($f: MeterFilterInput, $after: String) { meters(filter: $f, first: 3, after: $after)"
        " { edges { node { serial } } pageInfo { hasNextPage endCursor } } }"
    )
    while True:
        body = await gql(client, query, {"f": {"area": area}, "after": after}, auth(Role.VIEWER))
        page = body["data"]["meters"]
        seen += [e["node"]["serial"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == serials

    bad = await gql(client, '{ meters(after: "!!") { edges { cursor } } }', None, auth(Role.VIEWER))
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_customer_sees_only_own_meters(
    client: Client, auth: Auth, settings: Settings
) -> None:
    ensure_customers(settings, "CUST-MINE", "CUST-THEIRS")
    mine, theirs = new_serial(), new_serial()
    for serial, account in ((mine, "CUST-MINE"), (theirs, "CUST-THEIRS")):
        m = await register(client, auth, serial)
        await gql(
            client,
            "mutation($id: ID!, $a: String!) { assignCustomer(id: $id, "
            "customerAccount: $a) { __typename } }",
            {"id": m["id"], "a": account},
            auth(Role.OPERATOR),
        )
    customer = auth(Role.CUSTOMER, customer="CUST-MINE")
    listed = await gql(
        client, "{ meters(first: 500) { edges { node { serial } } } }", None, customer
    )
    assert [e["node"]["serial"] for e in listed["data"]["meters"]["edges"]] == [mine]
    other = await gql(
        client, "query($s: String) { meter(serial: $s) { serial } }", {"s": theirs}, customer
    )
    assert other["data"]["meter"] is None
