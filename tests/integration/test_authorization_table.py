"""Every GraphQL field and REST route the app exposes, called as every kind of caller.

The doors are enumerated from the schema and the app's routes, so a new field or route without
a line in ``api.graphql.operations`` or ``api.rest.operations`` (mapping it to a command or
query of ``commands.access``) fails here. Each is called anonymously, as each role and with API
keys (one of them with a scope no door accepts), and must answer 401/UNAUTHENTICATED,
403/FORBIDDEN or pass, exactly as the table says. Separate tests pin the policy itself
(admin-only doors, read-only roles) and that a customer never reads another customer's meter.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    get_named_type,
)
from graphql.pyutils import Undefined
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import AsyncTestClient
from strawberry.types.base import StrawberryObjectDefinition

from api.context import RequestContext
from api.graphql.access import FieldAccess
from api.graphql.operations import FIELDS, GRAPHQL
from api.graphql.schema import schema
from api.rest.operations import REST
from commands.access import Access
from commands.context import Actor, Role, Scope
from config.settings import Settings
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.gql import gql, meter_input

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]

RUN = uuid.uuid4().hex[:8]
CUSTOMER = f"ACC-AUTHZ-{RUN}"
SCALARS = {
    "String": f'"authz{RUN}"',
    "ID": f'"{uuid.uuid4()}"',
    "Int": "1",
    "Float": "0",
    "Boolean": "false",
    "DateTime": '"2024-01-01T00:00:00Z"',
    "Date": '"2024-01-01"',
    "Time": '"00:00:00"',
    "JSON": "{}",
}
OK, UNAUTHENTICATED, FORBIDDEN = "ok", "401", "403"


class Caller:
    """A kind of caller: its headers and the actor the table judges (None: anonymous)."""

    def __init__(self, name: str, headers: dict[str, str], actor: Actor | None) -> None:
        self.name, self.headers, self.actor = name, headers, actor

    def expected(self, rule: Access) -> str:
        if rule.public:
            return OK
        if self.actor is None:
            return UNAUTHENTICATED
        return OK if rule.allows(self.actor) else FORBIDDEN


@pytest.fixture(scope="module", autouse=True)
def customers(settings: Settings) -> None:
    """The customer accounts this module's meters are assigned to."""
    ensure_customers(settings, CUSTOMER, f"ACC-MINE-{RUN}", f"ACC-THEIRS-{RUN}", f"ACC-CAP-{RUN}")


@pytest.fixture(scope="module")
async def callers(client: Client, auth: Auth) -> list[Caller]:
    # The customer owns a meter in the region the String samples name, so region-scoped
    # fields (e.g. tariffChanged) pass their own ownership check and only the table decides.
    operator = auth(Role.OPERATOR)
    made_meter = await gql(
        client,
        "mutation($i: RegisterMeterInput!) { registerMeter(input: $i) { ... on Meter { id } } }",
        {"i": meter_input(new_serial("AZ"), region=f"authz{RUN}")},
        operator,
    )
    assigned = await gql(
        client,
        "mutation($id: ID!, $a: String!) { assignCustomer(id: $id, customerAccount: $a)"
        " { __typename } }",
        {"id": made_meter["data"]["registerMeter"]["id"], "a": CUSTOMER},
        operator,
    )
    assert assigned["data"]["assignCustomer"]["__typename"] == "Meter", assigned
    found = [Caller("anonymous", {}, None)]
    for role in Role:
        customer = CUSTOMER if role is Role.CUSTOMER else None
        actor = Actor(subject=role.value, roles=frozenset({role}), customer_account=customer)
        found.append(Caller(role.value, auth(role, subject=role.value, customer=customer), actor))
    for scope in Scope:  # events:read is the wrong scope for every door today
        made = await client.post(
            "/api/v1/api-keys",
            json={"name": f"authz-{scope.value.replace(':', '-')}", "scopes": [scope.value]},
            headers=auth(Role.ADMIN),
        )
        assert made.status_code == 201, made.text
        actor = Actor(subject="key", scopes=frozenset({scope}))
        found.append(Caller(f"key:{scope.value}", {"X-API-Key": made.json()["key"]}, actor))
    return found


# -- enumerating the doors -------------------------------------------------------------


def _graphql_fields() -> dict[str, GraphQLField]:
    gql_schema = schema._schema
    roots = (gql_schema.query_type, gql_schema.mutation_type, gql_schema.subscription_type)
    return {
        f"{root.name}.{name}": field
        for root in roots
        if root is not None
        for name, field in root.fields.items()
    }


def _rest_routes(client: Client) -> dict[str, HTTPRoute | WebSocketRoute]:
    doors: dict[str, HTTPRoute | WebSocketRoute] = {}
    for route in client.app.routes:
        if isinstance(route, WebSocketRoute):
            doors[f"WS {route.path_format}"] = route
        elif isinstance(route, HTTPRoute):
            for method in route.methods - {"OPTIONS", "HEAD"}:
                doors[f"{method} {route.path_format}"] = route
    return doors


def test_every_field_and_route_has_exactly_one_table_entry(client: Client) -> None:
    fields = set(_graphql_fields())
    assert sorted(fields - set(GRAPHQL)) == [], "add these GraphQL fields to api.graphql.operations"
    assert sorted(set(GRAPHQL) - fields) == [], "these table entries name no GraphQL field"
    routes = set(_rest_routes(client))
    assert sorted(routes - set(REST)) == [], "add these routes to api.rest.operations"
    stale = {k for k in set(REST) - routes if not k.startswith("GET /schema/openapi.y")}
    assert sorted(stale) == [], "these table entries name no route"


def test_every_field_rule_names_a_nullable_field_that_enforces_it() -> None:
    gql_schema = schema._schema
    for key in FIELDS:
        type_name, field_name = key.split(".")
        owner = gql_schema.get_type(type_name)
        assert isinstance(owner, GraphQLObjectType), key
        assert field_name in owner.fields, f"{key} names no GraphQL field"
        assert not isinstance(owner.fields[field_name].type, GraphQLNonNull), key
    guarded = {
        extension.key
        for type_ in schema.schema_converter.type_map.values()
        if isinstance(type_.definition, StrawberryObjectDefinition)
        for field in type_.definition.fields
        for extension in field.extensions
        if isinstance(extension, FieldAccess)
    }
    assert guarded == set(FIELDS), "pass these types to api.graphql.access.protect_fields"


# -- calling a GraphQL field -------------------------------------------------------------


def _literal(type_: GraphQLInputType) -> str:
    if isinstance(type_, GraphQLNonNull):
        return _literal(type_.of_type)
    if isinstance(type_, GraphQLList):
        return "[]"
    if isinstance(type_, GraphQLEnumType):
        return str(next(iter(type_.values)))
    if isinstance(type_, GraphQLInputObjectType):
        required = [
            f"{name}: {_literal(field.type)}"
            for name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        ]
        return "{" + ", ".join(required) + "}"
    assert isinstance(type_, GraphQLScalarType)
    assert type_.name in SCALARS, f"add a sample value of scalar {type_.name} to this test"
    return SCALARS[type_.name]


def operation(key: str, field: GraphQLField) -> str:
    """The smallest valid operation calling the field with its required arguments."""
    kind, name = key.split(".")
    args = ", ".join(
        f"{arg}: {_literal(spec.type)}"
        for arg, spec in field.args.items()
        if isinstance(spec.type, GraphQLNonNull) and spec.default_value is Undefined
    )
    call = f"{name}({args})" if args else name
    result = get_named_type(field.type)
    selection = ""
    if isinstance(result, GraphQLUnionType):
        typed = any(t.name == "ForbiddenError" for t in result.types)
        selection = "{ __typename" + (" ... on ForbiddenError { code }" if typed else "") + " }"
    elif isinstance(result, GraphQLObjectType):
        selection = "{ __typename }"
    return f"{kind.lower()} {{ {call} {selection} }}"


def _outcome(name: str, body: dict[str, Any]) -> str:
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code == "UNAUTHENTICATED":
            return UNAUTHENTICATED
        if code == "FORBIDDEN":
            return FORBIDDEN
    value = (body.get("data") or {}).get(name)
    if isinstance(value, dict) and value.get("__typename") == "ForbiddenError":
        return FORBIDDEN
    return OK


async def _call_field(client: Client, key: str, field: GraphQLField, caller: Caller) -> str:
    query = operation(key, field)
    name = key.split(".")[1]
    if key.startswith("Subscription."):
        state = client.app.state
        context = RequestContext(
            container=state.container,
            tokens=state.tokens,
            authorization=None,
            correlation_id=f"authz-{RUN}",
            authentication=await state.authenticator.from_headers(
                {k.lower(): v for k, v in caller.headers.items()}
            ),
            authenticator=state.authenticator,
            dangerous=state.dangerous,
        )
        stream = await schema.subscribe(query, context_value=context)
        assert hasattr(stream, "__anext__"), stream
        try:
            first = await asyncio.wait_for(stream.__anext__(), 0.5)
        except TimeoutError:
            return OK  # subscribed and waiting for events
        finally:
            await stream.aclose()
        errors = [{"extensions": e.extensions} for e in first.errors or []]
        return _outcome(name, {"errors": errors})
    response = await client.post("/graphql", json={"query": query}, headers=caller.headers)
    assert response.status_code == 200, (key, caller.name, response.text)
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        assert not error["message"].startswith("internal error"), (key, caller.name, body)
    return _outcome(name, body)


async def test_every_graphql_field_answers_each_caller_as_the_table_says(
    client: Client, callers: list[Caller]
) -> None:
    mismatches = []
    for key, field in sorted(_graphql_fields().items()):
        rule = GRAPHQL[key]
        outcomes = await asyncio.gather(*(_call_field(client, key, field, c) for c in callers))
        for caller, got in zip(callers, outcomes, strict=True):
            if got != caller.expected(rule):
                mismatches.append(
                    f"{key} as {caller.name}: {got}, table says {caller.expected(rule)}"
                )
    assert mismatches == []


# -- calling a REST route --------------------------------------------------------------


def _path(route: HTTPRoute) -> str:
    def sample(match: re.Match[str]) -> str:
        return str(uuid.uuid4()) if match.group(2) == "uuid" else "authzzzzzz"

    return re.sub(r"\{(\w+):(\w+)\}", sample, route.path)


async def _call_route(client: Client, key: str, route: HTTPRoute, caller: Caller) -> str:
    method = key.split(" ")[0]
    kwargs: dict[str, Any] = {"headers": caller.headers}
    if method in ("POST", "PUT"):
        kwargs["json"] = {}
    response = await client.request(method, _path(route), **kwargs)
    # Readiness answers 503 while a projection or relay lags (other tests' events, no relay
    # running here): a truthful answer that is open to everyone, not a server error.
    readiness = key == "GET /health/ready" and response.status_code == 503
    assert response.status_code < 500 or readiness, (
        key,
        caller.name,
        response.status_code,
        response.text,
    )
    if response.status_code == 401:
        assert response.json()["code"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
        return UNAUTHENTICATED
    if response.status_code == 403:
        assert response.json()["code"] == "FORBIDDEN"
        return FORBIDDEN
    return OK


async def test_every_rest_route_answers_each_caller_as_the_table_says(
    client: Client, callers: list[Caller]
) -> None:
    mismatches = []
    for key, route in sorted(_rest_routes(client).items()):
        if isinstance(route, WebSocketRoute):
            continue  # the websocket handshake is public; test_websocket_auth covers it
        rule = REST[key]
        outcomes = await asyncio.gather(*(_call_route(client, key, route, c) for c in callers))
        for caller, got in zip(callers, outcomes, strict=True):
            if got != caller.expected(rule):
                mismatches.append(
                    f"{key} as {caller.name}: {got}, table says {caller.expected(rule)}"
                )
    assert mismatches == []


# -- the policy itself ----------------------------------------------------------------

ADMIN_ONLY = {
    # fleet operations: firmware is for administrators only
    "Mutation.uploadFirmwareImage",
    "Mutation.deleteFirmwareImage",
    "Mutation.updateFirmware",
    "Mutation.startFirmwareCampaign",
    "POST /api/v1/commands/firmware-campaigns",
    "POST /api/v1/commands/firmware-images",
    "POST /api/v1/commands/firmware-images/{image_id}/delete",
    "POST /api/v1/commands/meters/{meter_id}/firmware-update",
    "Mutation.createApiKey",
    "Mutation.rotateApiKey",
    "Mutation.revokeApiKey",
    "Mutation.createTariff",
    "Mutation.applyTariffOverride",
    "Mutation.clearTariffOverride",
    "Mutation.setMeterKeys",
    "Mutation.decommissionMeter",
    "POST /api/v1/api-keys",
    "POST /api/v1/api-keys/{prefix}/rotate",
    "POST /api/v1/api-keys/{prefix}/revoke",
    "PUT /api/v1/meters/{meter_id}/keys",
    "POST /api/v1/commands/meters/{meter_id}/decommission",
    "Mutation.terminateSimCard",
    "POST /api/v1/commands/sims/{iccid}/terminate",
    "Mutation.eraseCustomer",
    "POST /api/v1/commands/customers/{account}/erase",
}
OPERATOR_DOORS = {
    # fleet operations: operators write calendars and load limits and steer campaigns
    "Mutation.writeCalendar",
    "Mutation.setLoadLimit",
    "Mutation.createTouPlan",
    "Mutation.startCampaign",
    "Mutation.pauseCampaign",
    "Mutation.resumeCampaign",
    "Mutation.cancelCampaign",
    "POST /api/v1/commands/campaigns",
    "POST /api/v1/commands/campaigns/{campaign_id}/cancel",
    "POST /api/v1/commands/meters/{meter_id}/load-limit",
    "Mutation.disconnectMeter",
    "Mutation.disconnectMeters",
    "Mutation.reconnectMeter",
    "Mutation.synchronizeMeterClock",
    "Mutation.readMeterOnDemand",
    "Mutation.retryRemoteCommand",
    "Mutation.acknowledgeAlert",
    "Mutation.resolveAlert",
    "POST /api/v1/commands/meters/{meter_id}/disconnect",
    "POST /api/v1/commands/meters/{meter_id}/reconnect",
    "Mutation.setMeterDlmsProfile",
    "Mutation.refreshDlmsCapabilities",
    "PUT /api/v1/meters/{meter_id}/dlms-profile",
    "POST /api/v1/commands/meters/{meter_id}/discover",
    *(
        f"Mutation.{name}"
        for name in (
            "addSimCard",
            "updateSimCard",
            "activateSimCard",
            "suspendSimCard",
            "resumeSimCard",
            "installSim",
            "removeSim",
        )
    ),
    "POST /api/v1/commands/sims",
    "POST /api/v1/commands/sims/{iccid}/update",
    "POST /api/v1/commands/sims/{iccid}/activate",
    "POST /api/v1/commands/sims/{iccid}/suspend",
    "POST /api/v1/commands/sims/{iccid}/resume",
    "POST /api/v1/commands/sims/{iccid}/install",
    "POST /api/v1/commands/sims/remove",
    "POST /api/v1/imports/sims",
    "Mutation.createCustomer",
    "Mutation.updateCustomerContact",
    "Mutation.changeCustomerPlan",
    "Mutation.suspendCustomer",
    "Mutation.reactivateCustomer",
    "Mutation.closeCustomer",
    "POST /api/v1/commands/customers",
    "POST /api/v1/commands/customers/{account}/contact",
    "POST /api/v1/commands/customers/{account}/plan",
    "POST /api/v1/commands/customers/{account}/suspend",
    "POST /api/v1/commands/customers/{account}/reactivate",
    "POST /api/v1/commands/customers/{account}/close",
    "POST /api/v1/imports/customers",
}
PUBLIC_DOORS = {
    "GET /graphql",
    "POST /graphql",
    "WS /graphql",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /api/v1/templates/meters",
    "GET /api/v1/templates/sims",
    "GET /api/v1/templates/customers",
    "GET /console",
    "GET /static/{file_path}",
}
# Managing one's own notification subscriptions is not a command on the grid.
SELF_SERVICE = {
    "Query.notificationSubscriptions",
    "Query.notificationDeliveries",
    "Mutation.createNotificationSubscription",
    "Mutation.updateNotificationSubscription",
    "Mutation.deleteNotificationSubscription",
}


def test_the_policy_admin_only_operator_and_read_only_roles() -> None:
    table = {**GRAPHQL, **REST}
    for key in ADMIN_ONLY:
        assert table[key].roles == {Role.ADMIN} and not table[key].scopes, key
    for key in OPERATOR_DOORS:
        assert table[key].roles == {Role.OPERATOR, Role.ADMIN}, key
    public = {k for k, rule in table.items() if rule.public}
    assert public - {k for k in public if k.startswith("GET /schema")} == PUBLIC_DOORS
    writes = {
        k
        for k in table
        if k.startswith(("Mutation.", "POST ", "PUT ", "DELETE "))
        and k not in PUBLIC_DOORS
        and k not in SELF_SERVICE
    }
    for role in (Role.VIEWER, Role.AUDITOR, Role.CUSTOMER):
        actor = Actor(subject=role.value, roles=frozenset({role}))
        assert [k for k in sorted(writes) if table[k].allows(actor)] == [], role
    # machine scopes open only their own doors
    for scope, doors in {
        Scope.INGEST: {"POST /telemetry/batch", "POST /api/v1/telemetry/batch"},
        Scope.EXPORT: {
            "GET /api/v1/meters/{meter}/intervals",
            "GET /api/v1/meters/{meter}/billing-determinants",
        },
        Scope.EVENTS_READ: set(),
    }.items():
        opened = {k for k, rule in table.items() if scope in rule.scopes}
        assert opened == doors, scope


# -- customers see their own meters only -----------------------------------------------


async def test_a_customer_never_reads_another_customers_meter(client: Client, auth: Auth) -> None:
    operator = auth(Role.OPERATOR)
    region = f"CUST{RUN}"
    mine, theirs = new_serial("CA"), new_serial("CB")
    ids = {}
    for serial, account in ((mine, f"ACC-MINE-{RUN}"), (theirs, f"ACC-THEIRS-{RUN}")):
        made = await gql(
            client,
            "mutation($i: RegisterMeterInput!) { registerMeter(input: $i)"
            " { ... on Meter { id } } }",
            {"i": meter_input(serial, region=region)},
            operator,
        )
        ids[serial] = made["data"]["registerMeter"]["id"]
        assigned = await gql(
            client,
            "mutation($id: ID!, $a: String!) { assignCustomer(id: $id, customerAccount: $a)"
            " { __typename } }",
            {"id": ids[serial], "a": account},
            operator,
        )
        assert assigned["data"]["assignCustomer"]["__typename"] == "Meter"
    customer = auth(Role.CUSTOMER, subject="carla", customer=f"ACC-MINE-{RUN}")

    async def data(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return await gql(client, query, variables, customer)

    by_id = "query($id: ID) { meter(id: $id) { serial } }"
    assert (await data(by_id, {"id": ids[mine]}))["data"]["meter"] == {"serial": mine}
    assert (await data(by_id, {"id": ids[theirs]}))["data"]["meter"] is None
    by_serial = "query($s: String) { meter(serial: $s) { serial } }"
    assert (await data(by_serial, {"s": theirs}))["data"]["meter"] is None
    listed = await data(
        "query($f: MeterFilterInput) { meters(filter: $f) { edges { node { serial } } } }",
        {"f": {"region": region}},
    )
    assert [e["node"]["serial"] for e in listed["data"]["meters"]["edges"]] == [mine]
    spoofed = await data(
        "query($f: MeterFilterInput) { meters(filter: $f) { edges { node { serial } } } }",
        {"f": {"customerAccount": f"ACC-THEIRS-{RUN}"}},
    )
    assert spoofed["data"]["meters"]["edges"] == []
    window = {"f": "2024-01-01T00:00:00Z", "t": "2024-01-02T00:00:00Z"}
    for query in (
        "query($m: String!, $f: DateTime!, $t: DateTime!) { readings(meter: $m,"
        ' quantity: "voltage_l1", from: $f, to: $t) { edges { cursor } } }',
        "query($m: String!, $f: DateTime!, $t: DateTime!) { aggregates(meter: $m,"
        " interval: M15, from: $f, to: $t) { bucket } }",
    ):
        other = await data(query, {"m": theirs, **window})
        assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND", other
        own = await data(query, {"m": mine, **window})
        assert "errors" not in own, own
    for path in ("intervals", "billing-determinants"):
        params = {"from": window["f"], "to": window["t"]}
        refused = await client.get(
            f"/api/v1/meters/{theirs}/{path}", params=params, headers=customer
        )
        assert refused.status_code == 404, refused.text
        served = await client.get(f"/api/v1/meters/{mine}/{path}", params=params, headers=customer)
        assert served.status_code == 200, served.text
    history = await data("query($id: ID!) { history(aggregateId: $id) { type } }", {"id": mine})
    assert history["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_meters_dlms_capabilities_are_for_staff_only(client: Client, auth: Auth) -> None:
    """``Meter.dlmsCapabilities`` is a field below ``Query.meter`` (open to customers for their
    own meters): it applies the staff rule of ``Query.dlmsCapabilities`` itself."""
    operator = auth(Role.OPERATOR)
    made = await gql(
        client,
        "mutation($i: RegisterMeterInput!) { registerMeter(input: $i) { ... on Meter { id } } }",
        {"i": meter_input(new_serial("CAP"), region=f"CAP{RUN}")},
        operator,
    )
    meter = made["data"]["registerMeter"]["id"]
    account = f"ACC-CAP-{RUN}"
    await gql(
        client,
        "mutation($id: ID!, $a: String!) { assignCustomer(id: $id, customerAccount: $a)"
        " { __typename } }",
        {"id": meter, "a": account},
        operator,
    )
    query = (
        "query($id: ID) { meter(id: $id) { serial dlmsCapabilities { clientAddress"
        " profile { name } plan { obis status } } } }"
    )
    own = await gql(client, query, {"id": meter}, auth(Role.CUSTOMER, customer=account))
    assert own["errors"][0]["extensions"]["code"] == "FORBIDDEN", own
    assert own["data"]["meter"]["dlmsCapabilities"] is None
    for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR):
        staff = await gql(client, query, {"id": meter}, auth(role))
        assert "errors" not in staff, (role, staff)
        caps = staff["data"]["meter"]["dlmsCapabilities"]
        assert (caps["clientAddress"], caps["profile"]["name"]) == (16, "idis")
        assert {p["status"] for p in caps["plan"]} == {"UNCHECKED"}  # nothing discovered yet


async def test_fleet_operations_roles(client: Client, auth: Auth) -> None:
    """Viewers follow campaigns; firmware campaigns start at their own (admin) door."""
    start = """mutation($input: StartCampaignInput!) { %s(input: $input) {
        __typename ... on ForbiddenError { message } ... on ValidationError { message } } }"""
    firmware = {
        "name": "fw",
        "kind": "FIRMWARE",
        "cohort": {"serials": [f"NOPE-{RUN}"]},
        "imageId": str(uuid.uuid4()),
    }
    body = await gql(
        client, start % "startFirmwareCampaign", {"input": firmware}, headers=auth(Role.OPERATOR)
    )
    assert body["data"]["startFirmwareCampaign"]["__typename"] == "ForbiddenError"
    body = await gql(
        client, start % "startCampaign", {"input": firmware}, headers=auth(Role.OPERATOR)
    )
    assert "startFirmwareCampaign" in body["data"]["startCampaign"]["message"]
    # an admin passes authorization and meets the cohort rule instead
    body = await gql(
        client, start % "startFirmwareCampaign", {"input": firmware}, headers=auth(Role.ADMIN)
    )
    assert body["data"]["startFirmwareCampaign"]["__typename"] == "ValidationError"
    assert "no meter" in body["data"]["startFirmwareCampaign"]["message"]
    listed = await gql(
        client,
        "{ campaigns { id } firmwareImages { id } touPlans { id } }",
        headers=auth(Role.VIEWER),
    )
    assert "errors" not in listed
