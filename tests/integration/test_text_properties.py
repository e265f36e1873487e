"""Property tests: arbitrary Unicode in every string of every GraphQL field and REST command.

The calls are enumerated from the GraphQL schema (every mutation and query) and from the
OpenAPI document (every POST/PUT/PATCH/DELETE route but ``/graphql``), so a new one is fuzzed
without a line here. Each generated input puts text into one string slot of an otherwise valid
call (an argument, an input field, a list item, a JSON body property, a CSV cell, a path or
query parameter): arbitrary Unicode, control characters and lone surrogates included, or the
valid value with one awkward character spliced in. Every answer must be below 500, no GraphQL
error may be a masked internal one, and afterwards every projection (meters, tariffs, alerts,
DLMS) still shows the next change in its read model. The number of inputs tried is printed in
the run's summary.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import nats
import psycopg
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    get_named_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from adapters.nats.streams import delete_streams
from api.app import create_app
from api.auth import TokenService
from api.graphql.schema import schema as graphql_schema
from bootstrap.container import Container
from bootstrap.dlms_process import dlms_projection
from bootstrap.migrate import migrate
from bootstrap.workers import SupervisedProjection, alerts_projection, tariffs_projection
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext, Role, Scope
from commands.meter_csv import TEMPLATE_COLUMNS, template_csv
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from tests.conftest import new_serial
from tests.integration.customer_support import ensure_customers
from tests.integration.live import serve
from tests.summary import report

pytestmark = pytest.mark.integration
MUTATION_EXAMPLES = 40
QUERY_EXAMPLES = 15
REST_EXAMPLES = 40
Slot = tuple[str | int, ...]
"""Where a string sits in a call's variables or body: keys and list positions."""

AWKWARD = [
    "\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\ud800", "\udfff", "\ufeff",
    "\u2028", "\U0001f600", "'", '"', "\\", "%", "{", "$", "é",
]  # fmt: skip
"""Characters that break naive code: controls, lone surrogates, quotes, escapes, astral."""
SCALARS: dict[str, Any] = {
    "Int": 1,
    "Float": 0.0,
    "Boolean": False,
    "DateTime": "2031-01-01T00:00:00+00:00",
    "Date": "2031-01-01",
    "Time": "01:00:00",
    "JSON": {},
}
NUMBERS: dict[str, Any] = {"phases": 1, "port": 4059, "clientAddress": 16, "thresholdPct": 50.0}


@dataclass
class World:
    """The fuzzed API and the objects its valid calls name."""

    base: str
    settings: Settings
    headers: dict[str, str]
    desk: AlertDesk
    good: dict[str, Any] = field(default_factory=dict)
    """Valid text by argument or property name."""
    ids: dict[str, str] = field(default_factory=dict)
    """Valid ids by ``<field>.<argument>`` (``id``: the meter's)."""


@pytest.fixture(scope="module")
def world(settings: Settings, tokens: TokenService) -> Iterator[World]:
    """The API and the meters, tariffs, alerts and DLMS projections on a schema of their own."""
    own = settings.replace(
        db_schema=settings.database.schema + "_tx",
        nats_prefix=settings.nats.prefix + "TX",
        projection_wait_seconds=5.0,
    )
    asyncio.run(migrate(own))
    ensure_customers(own, "ACC-FUZZ")  # the account the valid calls assign meters to
    workers = [
        SupervisedProjection(own),
        tariffs_projection(own),
        alerts_projection(own),
        dlms_projection(own),
    ]
    for worker in workers:
        worker.start()
    desk = AlertDesk(env=own.database.eventsourcing_env())
    token = tokens.issue("fuzzer", [Role.ADMIN], scopes=list(Scope))
    try:
        with serve(create_app(Container(own), tokens)) as address:
            found = World(f"http://{address}", own, {"Authorization": f"Bearer {token}"}, desk)
            _furnish(found)
            yield found
    finally:
        desk.close()
        for worker in workers:
            worker.stop()
        _drop(own)


def _drop(own: Settings) -> None:
    assert own.database.url and own.nats.url
    with psycopg.connect(own.database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(own.database.schema)))

    async def drop_streams() -> None:
        nc = await nats.connect(own.nats.url or "")
        await delete_streams(nc.jetstream(), own.nats.prefix)
        await nc.close()

    asyncio.run(drop_streams())


# -- the objects valid calls name ------------------------------------------------------


def _gql(world: World, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{world.base}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=world.headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


REGISTER = (
    "mutation($i: RegisterMeterInput!) { registerMeter(input: $i)"
    " { __typename ... on Meter { id serial } } }"
)


def _register(world: World, region: str = "North") -> dict[str, str]:
    made = _gql(
        world,
        REGISTER,
        {
            "i": {
                "serial": new_serial("TX"),
                "manufacturer": "Acme",
                "model": "AM550",
                "firmware": "1.0",
                "phases": 1,
                "region": region,
                "area": "N-01",
                "connection": {"host": "127.0.0.1"},
            }
        },
    )["registerMeter"]
    assert made["__typename"] == "Meter", made
    return {"id": made["id"], "serial": made["serial"]}


def _raise_alert(world: World, meter: str) -> str:
    decision = AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.THRESHOLD,
        severity=Severity.HIGH,
        region="North",
        dedup_key=f"FUZZ:{uuid.uuid4()}",
        message="fuzzing",
        observed_at=datetime.now(UTC),
        meter=uuid.UUID(meter),
    )
    return str(world.desk.raise_or_recur(decision, CommandContext(actor=SYSTEM)).alert.id)


def _furnish(world: World) -> None:
    """A meter, tariff, alert, subscription, API key and remote command for valid calls."""
    meter = _register(world)
    retired = _register(world)["id"]  # decommissioning it leaves the other meter in service
    _gql(
        world,
        'mutation { createTariff(input: {region: "North", currency: "EUR", basePrice: "0.2",'
        ' timezone: "UTC"}) { __typename } }',
    )
    saved = _gql(
        world,
        "mutation { createNotificationSubscription(input: {channel: WEBHOOK,"
        ' url: "http://127.0.0.1:9/hook", kinds: [ALERT_RAISED]}) { __typename'
        " ... on NotificationSubscriptionSaved { subscription { id } } } }",
    )["createNotificationSubscription"]
    # (a webhook policy refusing loopback leaves the subscription calls with an unknown id)
    subscription = saved.get("subscription", {}).get("id") or str(uuid.uuid4())
    key = _gql(
        world,
        'mutation { createApiKey(input: {name: "fuzzed key", scopes: ["ingest"]})'
        " { ... on IssuedApiKey { apiKey { prefix } } } }",
    )["createApiKey"]["apiKey"]["prefix"]
    command = _gql(
        world,
        "mutation($id: ID!) { synchronizeMeterClock(id: $id) { ... on RemoteCommand { id } } }",
        {"id": meter["id"]},
    )["synchronizeMeterClock"]["id"]
    alert = _raise_alert(world, meter["id"])
    world.good.update(
        {
            "serial": meter["serial"],
            "meter": meter["serial"],
            "aggregateId": meter["id"],
            "manufacturer": "Acme",
            "model": "AM550",
            "firmware": "1.0",
            "meterType": "single phase",
            "region": "North",
            "area": "N-01",
            "host": "127.0.0.1",
            "address": "1 Grid Rd",
            "customerAccount": "ACC-FUZZ",
            "concentratorId": "DC-1",
            "simCard": "8944500012345678901",
            "reason": "fuzzing",
            "note": "fuzzing",
            "currency": "EUR",
            "basePrice": "0.2",
            "price": "0.3",
            "timezone": "UTC",
            "surchargePct": "10",
            "multiplier": "1.5",
            "minChangePct": "2",
            "url": "http://127.0.0.1:9/hook",
            "email": "ops@example.com",
            "name": "fuzzed key",
            "scopes": "ingest",
            "roles": "viewer",
            "quantities": "voltage_l1",
            "quantity": "voltage_l1",
            "prefix": key,
            "llsPassword": "secret12",
            "ek": "000102030405060708090A0B0C0D0E0F",
            "ak": "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
            "systemTitle": "4D4D4D0000BC614E",
        }
    )
    world.ids.update(
        {
            "id": meter["id"],
            "meterId": meter["id"],
            "meter_id": meter["id"],
            "ids": meter["id"],
            "decommissionMeter.id": retired,
            "/api/v1/commands/meters/{meter_id}/decommission.meter_id": retired,
            "acknowledgeAlert.id": alert,
            "resolveAlert.id": alert,
            "alert.id": alert,
            "updateNotificationSubscription.id": subscription,
            "deleteNotificationSubscription.id": subscription,
            "notificationDeliveries.subscriptionId": subscription,
            "retryRemoteCommand.commandId": command,
            "remoteCommand.id": command,
            "command_id": command,
        }
    )


# -- generated text --------------------------------------------------------------------


def _splice(valid: str, char: str, at: int) -> str:
    at = min(at, len(valid))
    return valid[:at] + char + valid[at:]


def texts(valid: str | None) -> st.SearchStrategy[str]:
    """Arbitrary Unicode, awkward characters, or ``valid`` with one awkward character."""
    arbitrary = st.text(max_size=40) | st.text(st.sampled_from(AWKWARD), min_size=1, max_size=6)
    if not valid:
        return arbitrary
    spliced = st.builds(_splice, st.just(valid), st.sampled_from(AWKWARD), st.integers(0, 64))
    return arbitrary | spliced


def _get(value: Any, slot: Slot) -> Any:
    for key in slot:
        if value is None:
            return None
        value = value[key]
    return value


def _with(value: Any, slot: Slot, text: str) -> Any:
    """A deep copy of ``value`` with ``text`` at ``slot`` (missing containers are made)."""
    if not slot:
        return text
    head, rest = slot[0], slot[1:]
    if isinstance(head, int):
        items = list(copy.deepcopy(value) or [None])
        items[head] = _with(items[head], rest, text)
        return items
    fields = dict(copy.deepcopy(value) or {})
    fields[head] = _with(fields.get(head), rest, text)
    return fields


def _ascii_json(value: Any) -> bytes:
    """JSON with every non-ASCII character escaped, so lone surrogates travel as ``\\ud800``."""
    return json.dumps(value, ensure_ascii=True).encode()


@dataclass
class Call:
    """One GraphQL field or REST operation: a valid request and the string slots in it."""

    name: str
    valid: Any
    slots: list[Slot]
    send: Callable[[Any], httpx.Response]
    check: Callable[[httpx.Response], None]


def fuzz(calls: list[Call], examples: int) -> int:
    """Run ``examples`` generated inputs against each call; return how many were tried."""
    tried = [0]
    for call in calls:
        if call.slots:
            _property(call, examples, tried)()
    return tried[0]


def _property(call: Call, examples: int, tried: list[int]) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(call.slots), label="slot")
        valid = _get(call.valid, slot)
        text = data.draw(texts(valid if isinstance(valid, str) else None), label="text")
        tried[0] += 1
        response = call.send(_with(call.valid, slot, text))
        where = (call.name, slot, text, response.status_code, response.text[:400])
        assert response.status_code < 500, where
        call.check(response)

    return run


# -- GraphQL ---------------------------------------------------------------------------


def _shape(world: World, type_: GraphQLInputType, name: str, key: str) -> tuple[Any, list[Slot]]:
    """A valid value of an input type (None where optional and unknown) and its string slots."""
    required = isinstance(type_, GraphQLNonNull)
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    slots: list[Slot] = []
    if isinstance(inner, GraphQLList):
        item, slots = _shape(world, inner.of_type, name, key)
        return ([] if item is None else [item]), [(0, *s) for s in slots]
    if isinstance(inner, GraphQLInputObjectType):
        value: dict[str, Any] = {}
        for field_name, spec in inner.fields.items():
            value[field_name], inside = _shape(world, spec.type, field_name, field_name)
            slots.extend((field_name, *s) for s in inside)
        return value, slots
    if isinstance(inner, GraphQLEnumType):
        return (next(iter(inner.values)) if required else None), []
    assert isinstance(inner, GraphQLScalarType)
    if inner.name in ("String", "ID"):
        known = world.ids.get(key) or world.ids.get(name) or world.good.get(name)
        return (known or ("x" if required else None)), [()]
    assert inner.name in SCALARS, f"add a sample of scalar {inner.name} to this test"
    return (NUMBERS.get(name, SCALARS[inner.name]) if required else None), []


def _selection(graphql_field: GraphQLField) -> str:
    named = get_named_type(graphql_field.type)
    composite = (GraphQLObjectType, GraphQLUnionType, GraphQLInterfaceType)
    return " { __typename }" if isinstance(named, composite) else ""


def _graphql_calls(world: World, client: httpx.Client, kind: str) -> list[Call]:
    root = (
        graphql_schema._schema.mutation_type
        if kind == "mutation"
        else (graphql_schema._schema.query_type)
    )
    assert root is not None
    calls = []
    for name, graphql_field in root.fields.items():
        variables: dict[str, Any] = {}
        slots: list[Slot] = []
        for arg, spec in graphql_field.args.items():
            variables[arg], inside = _shape(world, spec.type, arg, f"{name}.{arg}")
            slots.extend((arg, *s) for s in inside)
        declared = ", ".join(f"${a}: {s.type}" for a, s in graphql_field.args.items())
        passed = ", ".join(f"{a}: ${a}" for a in graphql_field.args)
        call = f"{name}({passed})" if passed else name
        document = (
            f"{kind}{f'({declared})' if declared else ''} {{ {call}{_selection(graphql_field)} }}"
        )

        def send(value: Any, document: str = document) -> httpx.Response:
            body = _ascii_json({"query": document, "variables": value})
            return client.post(
                "/graphql",
                content=body,
                headers={**world.headers, "Content-Type": "application/json"},
            )

        calls.append(Call(f"{kind} {name}", variables, slots, send, _no_internal_error))
    return calls


def _no_internal_error(response: httpx.Response) -> None:
    if response.headers.get("content-type", "").startswith("application/json"):
        for error in response.json().get("errors") or []:
            assert not error["message"].startswith("internal error"), error


# -- REST ------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _json_shape(
    world: World, schema: dict[str, Any], name: str, components: dict[str, Any]
) -> tuple[Any, list[Slot]]:
    """A valid JSON value for an OpenAPI schema and its string slots."""
    schema = _resolve(schema, components)
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            options = [_resolve(o, components) for o in schema[combinator]]
            typed = [o for o in options if o.get("type") != "null"]
            return _json_shape(world, typed[0], name, components) if typed else (None, [])
    kind = schema.get("type")
    slots: list[Slot] = []
    if kind == "object":
        value: dict[str, Any] = {}
        for prop, inner in (schema.get("properties") or {}).items():
            value[prop], inside = _json_shape(world, inner, prop, components)
            slots.extend((prop, *s) for s in inside)
        return value, slots
    if kind == "array":
        item, slots = _json_shape(world, schema.get("items") or {}, name, components)
        return ([] if item is None else [item]), [(0, *s) for s in slots]
    if "enum" in schema:
        return schema["enum"][0], []
    if kind == "string":
        return world.ids.get(name) or world.good.get(name) or "x", [()]
    if kind in ("integer", "number"):
        return NUMBERS.get(name, 1 if kind == "integer" else 0.0), []
    if kind == "boolean":
        return False, []
    return None, []


def _quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _telemetry(world: World) -> tuple[Any, list[Slot]]:
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = [
        {"meter_id": world.good["serial"], "timestamp": ts, "voltage": 230.0, "region": "North"},
        {
            "meter": world.good["serial"],
            "readings": [
                {"obis": "voltage_l1", "ts": ts, "value": 231.0, "unit": "V", "quality": ["valid"]}
            ],
        },
    ]
    slots: list[Slot] = [
        (0, "meter_id"),
        (0, "timestamp"),
        (0, "region"),
        (1, "meter"),
        (1, "readings", 0, "obis"),
        (1, "readings", 0, "ts"),
        (1, "readings", 0, "unit"),
        (1, "readings", 0, "quality", 0),
    ]
    return body, slots


def _csv(cells: dict[str, str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerow([cells[c] for c in TEMPLATE_COLUMNS])
    return out.getvalue().encode("utf-8", "surrogatepass")


def _rest_calls(world: World, client: httpx.Client) -> list[Call]:
    spec = client.get("/schema/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    example = next(csv.reader(io.StringIO(template_csv())))
    row = dict(zip(TEMPLATE_COLUMNS, list(csv.reader(io.StringIO(template_csv())))[1], strict=True))
    assert list(example) == list(TEMPLATE_COLUMNS)
    row |= {"meterNumber": new_serial("CSV"), "ipAddress": "127.0.0.1"}
    calls = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("post", "put", "patch", "delete") or path == "/graphql":
                continue
            params = operation.get("parameters", [])
            valid: dict[str, Any] = {"path": {}, "query": {}, "body": None}
            slots: list[Slot] = []
            for param in params:
                where, name = param["in"], param["name"]
                if where not in ("path", "query"):
                    continue  # headers: idempotency keys are checked against a pattern
                inner = _resolve(param.get("schema", {}), components)
                if inner.get("type") == "string":
                    known = world.ids.get(f"{path}.{name}") or world.ids.get(name)
                    valid[where][name] = known or world.good.get(name) or "x"
                    slots.append((where, name))
                elif inner.get("type") == "boolean":
                    valid[where][name] = "false"
                elif inner.get("type") in ("number", "integer"):
                    valid[where][name] = "0"
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                valid["body"], inside = _json_shape(
                    world, content["application/json"]["schema"], "", components
                )
                slots.extend(("body", *s) for s in inside)
            elif "multipart/form-data" in content:
                valid["body"] = row
                slots.extend(("body", column) for column in TEMPLATE_COLUMNS)
            elif path.endswith("/telemetry/batch"):
                valid["body"], inside = _telemetry(world)
                slots.extend(("body", *s) for s in inside)

            def send(
                value: dict[str, Any],
                method: str = method,
                path: str = path,
                multipart: bool = "multipart/form-data" in content,
            ) -> httpx.Response:
                url = path
                for name, text in value["path"].items():
                    url = url.replace("{" + name + "}", _quoted(text))
                query = "&".join(f"{k}={_quoted(v)}" for k, v in value["query"].items())
                target = f"{url}?{query}" if query else url
                if multipart:
                    files = {"data": ("meters.csv", _csv(value["body"]), "text/csv")}
                    return client.request(method, target, files=files, headers=world.headers)
                headers = {**world.headers, "Content-Type": "application/json"}
                content = None if value["body"] is None else _ascii_json(value["body"])
                return client.request(method, target, content=content, headers=headers)

            calls.append(Call(f"{method.upper()} {path}", valid, slots, send, lambda _: None))
    return calls


# -- every projection still moves -------------------------------------------------------


def eventually(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Wait until ``check()`` holds; fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not show up within {seconds:g} s"
        time.sleep(0.1)


def assert_projections_alive(world: World) -> None:
    """A change through each projection after the fuzzing shows up in its read model."""
    meter = _register(world, region=f"Alive {uuid.uuid4().hex[:6]}")
    eventually(
        lambda: (
            _gql(world, "query($s: String) { meter(serial: $s) { id } }", {"s": meter["serial"]})[
                "meter"
            ]
            is not None
        ),
        "a meter registered after the fuzzing (meters projection)",
    )
    region = f"Alive {uuid.uuid4().hex[:6]}"
    _gql(
        world,
        'mutation($r: String!) { createTariff(input: {region: $r, currency: "EUR",'
        ' basePrice: "0.2", timezone: "UTC"}) { __typename } }',
        {"r": region},
    )
    eventually(
        lambda: any(
            t["region"] == region for t in _gql(world, "{ tariffs { region } }")["tariffs"]
        ),
        "a tariff created after the fuzzing (tariffs projection)",
    )
    alert = _raise_alert(world, meter["id"])
    eventually(
        lambda: (
            _gql(world, "query($id: ID!) { alert(id: $id) { id } }", {"id": alert})["alert"]
            is not None
        ),
        "an alert raised after the fuzzing (alerts projection)",
    )
    _gql(
        world,
        "mutation($id: ID!) { disconnectMeter(id: $id) { __typename } }",
        {"id": meter["id"]},
    )
    eventually(
        lambda: bool(
            _gql(
                world,
                "query($id: ID!) { remoteCommands(meterId: $id) { id } }",
                {"id": meter["id"]},
            )["remoteCommands"]
        ),
        "a remote command requested after the fuzzing (DLMS projection)",
    )


# -- the properties ----------------------------------------------------------------------


def test_no_string_in_any_graphql_mutation_or_query_gives_a_5xx_or_stops_a_projection(
    world: World,
) -> None:
    with httpx.Client(base_url=world.base, timeout=30) as client:
        mutations = _graphql_calls(world, client, "mutation")
        queries = _graphql_calls(world, client, "query")
        assert len(mutations) >= 20 and len(queries) >= 20
        started = time.monotonic()
        tried = fuzz(mutations, MUTATION_EXAMPLES) + fuzz(queries, QUERY_EXAMPLES)
    slots = sum(len(c.slots) for c in mutations + queries)
    report(
        f"property test (GraphQL): {tried} generated inputs over {len(mutations)} mutations and "
        f"{len(queries)} queries ({slots} string slots) in {time.monotonic() - started:.1f} s"
    )
    assert_projections_alive(world)


def test_no_string_in_any_rest_command_gives_a_5xx_or_stops_a_projection(world: World) -> None:
    with httpx.Client(base_url=world.base, timeout=30) as client:
        calls = _rest_calls(world, client)
        assert len(calls) >= 15
        assert all(c.slots for c in calls if "{" in c.name or "body" in str(c.valid))
        started = time.monotonic()
        tried = fuzz(calls, REST_EXAMPLES)
    slots = sum(len(c.slots) for c in calls)
    report(
        f"property test (REST): {tried} generated inputs over {len(calls)} commands "
        f"({slots} string slots) in {time.monotonic() - started:.1f} s"
    )
    assert_projections_alive(world)
