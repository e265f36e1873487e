"""Audit through the real app and CLI: history, stateAt and the read-only auditor role."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from api.presenters import row_from_aggregate
from commands.context import Actor, CommandContext, Role
from commands.meters import MeterRegistry
from domain.meter import Meter, meter_id
from domain.values import ConnectionProfile, Location, MeterSpec
from hes.cli import app
from hes.settings import Settings
from tests.conftest import JWT_SECRET, new_serial
from tests.integration.gql import METER_FIELDS, REGISTER, gql, meter_input

pytestmark = pytest.mark.integration

Auth = Callable[..., dict[str, str]]
Client = AsyncTestClient[Any]

HISTORY = (
    "query($id: ID!, $from: DateTime, $to: DateTime, $first: Int) {"
    " history(aggregateId: $id, from: $from, to: $to, first: $first) {"
    " position aggregateId version type time actor correlationId idempotencyKey payload } }"
)
STATE_AT = (
    "query($id: ID!, $at: DateTime, $version: Int) { stateAt(aggregateId: $id, at: $at,"
    " version: $version) { id serial status customerAccount version registeredAt updatedAt"
    " commissionedAt decommissionedAt decommissionReason location { address }"
    " connection { host port transport } } }"
)
# (mutation, actor subject, role) in the order the lifecycle test runs them.
LIFECYCLE = [
    ("registerMeter", "ann", Role.OPERATOR),
    ("commissionMeter", "bob", Role.OPERATOR),
    ("changeConnectionProfile", "cat", Role.OPERATOR),
    ("assignCustomer", "dan", Role.OPERATOR),
    ("unassignCustomer", "eve", Role.OPERATOR),
    ("decommissionMeter", "fay", Role.ADMIN),
]
MUTATIONS = {
    "registerMeter": REGISTER,
    "commissionMeter": 'mutation($id: ID!) { commissionMeter(id: $id, location: {address: "1 Grid'
    ' Rd"}, customerAccount: "ACC-1") { __typename ' + METER_FIELDS + " } }",
    "changeConnectionProfile": "mutation($id: ID!) { changeConnectionProfile(id: $id, connection:"
    ' {host: "meter-7.grid", port: 4061, transport: HDLC}) { __typename ' + METER_FIELDS + " } }",
    "assignCustomer": 'mutation($id: ID!) { assignCustomer(id: $id, customerAccount: "ACC-2") {'
    " __typename " + METER_FIELDS + " } }",
    "unassignCustomer": 'mutation($id: ID!) { unassignCustomer(id: $id, reason: "moved out") {'
    " __typename " + METER_FIELDS + " } }",
    "decommissionMeter": 'mutation($id: ID!) { decommissionMeter(id: $id, reason: "burnt out") {'
    " __typename " + METER_FIELDS + " } }",
    "createTariff": 'mutation { createTariff(input: {region: "AUDIT", currency: "EUR",'
    ' basePrice: "0.25", timezone: "UTC"}) { __typename ... on ForbiddenError { code } } }',
    "applyTariffOverride": 'mutation { applyTariffOverride(region: "AUDIT", price: "0.3",'
    ' reason: "audit", expiresAt: "2999-01-01T00:00:00Z") { __typename'
    " ... on ForbiddenError { code } } }",
    "clearTariffOverride": 'mutation { clearTariffOverride(region: "AUDIT", reason: "audit")'
    " { __typename ... on ForbiddenError { code } } }",
}


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """A registry of its own over the test event store, for replaying by hand."""
    app_ = MeterRegistry(env=settings.eventsourcing_env())
    yield app_
    app_.close()


def stored(registry: MeterRegistry, id_: UUID) -> list[CanMutateAggregate[UUID]]:
    """The meter's stored events, straight from the event store."""
    return cast("list[CanMutateAggregate[UUID]]", list(registry.events.get(id_)))


def replayed(registry: MeterRegistry, id_: UUID, n: int) -> Meter:
    """The meter folded by hand from its first ``n`` stored events."""
    meter: Any = None
    for event in stored(registry, id_)[:n]:
        meter = event.mutate(meter)
    assert isinstance(meter, Meter)
    return meter


def variables(mutation: str, serial: str) -> dict[str, Any]:
    """Variables of one of ``MUTATIONS`` for the meter with this serial."""
    if mutation == "registerMeter":
        return {"input": meter_input(serial)}
    return {"id": str(meter_id(serial))}


async def lifecycle(client: Client, auth: Auth, serial: str) -> None:
    """Take a new meter through six commands, each by another caller with its own correlation id."""
    for mutation, subject, role in LIFECYCLE:
        headers = {**auth(role, subject=subject), "X-Correlation-ID": f"corr-{subject}-{serial}"}
        body = await gql(client, MUTATIONS[mutation], variables(mutation, serial), headers)
        assert body["data"][mutation]["__typename"] == "Meter", body


def assert_state_matches(got: dict[str, Any], meter: Meter) -> None:
    """The GraphQL MeterState shows exactly the replayed aggregate's state."""
    row = row_from_aggregate(meter)

    def when(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    assert got["id"] == str(row.id)
    assert got["serial"] == row.serial
    assert got["status"] == row.status.name
    assert got["customerAccount"] == row.customer_account
    assert got["version"] == row.version
    assert when(got["registeredAt"]) == row.registered_at
    assert when(got["updatedAt"]) == row.updated_at
    assert when(got["commissionedAt"]) == row.commissioned_at
    assert when(got["decommissionedAt"]) == row.decommissioned_at
    assert got["decommissionReason"] == row.decommission_reason
    assert got["location"] == (None if row.location is None else {"address": row.location.address})
    assert got["connection"] == {
        "host": row.connection.host,
        "port": row.connection.port,
        "transport": row.connection.transport.name,
    }


async def test_history_lists_every_event_with_actor_correlation_and_payload(
    client: Client, auth: Auth
) -> None:
    serial = new_serial("AU")
    await lifecycle(client, auth, serial)

    body = await gql(client, HISTORY, {"id": str(meter_id(serial))}, auth(Role.AUDITOR))
    entries = body["data"]["history"]

    assert [(e["version"], e["type"], e["actor"]) for e in entries] == [
        (1, "Registered", "ann"),
        (2, "Commissioned", "bob"),
        (3, "ConnectionProfileChanged", "cat"),
        (4, "CustomerAssigned", "dan"),
        (5, "CustomerUnassigned", "eve"),
        (6, "Decommissioned", "fay"),
    ]
    assert [e["correlationId"] for e in entries] == [
        f"corr-{subject}-{serial}" for _, subject, _ in LIFECYCLE
    ]
    positions = [int(e["position"]) for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == 6
    assert {e["aggregateId"] for e in entries} == {str(meter_id(serial))}
    assert entries[0]["payload"]["spec"]["serial"] == serial
    assert entries[1]["payload"] == {
        "location": {"address": "1 Grid Rd", "latitude": None, "longitude": None},
        "customer_account": "ACC-1",
    }
    assert entries[2]["payload"]["connection"]["host"] == "meter-7.grid"
    assert entries[3]["payload"] == {"customer_account": "ACC-2", "previous": "ACC-1"}
    assert entries[4]["payload"] == {"previous": "ACC-2", "reason": "moved out"}
    assert entries[5]["payload"] == {"reason": "burnt out"}

    times = [e["time"] for e in entries]
    window = await gql(
        client,
        HISTORY,
        {"id": serial, "from": times[1], "to": times[4]},
        auth(Role.ADMIN),
    )
    assert [e["version"] for e in window["data"]["history"]] == [2, 3, 4]
    first_two = await gql(client, HISTORY, {"id": serial, "first": 2}, auth(Role.AUDITOR))
    assert [e["version"] for e in first_two["data"]["history"]] == [1, 2]


async def test_state_at_every_version_and_time_equals_the_hand_replay(
    client: Client, auth: Auth, registry: MeterRegistry
) -> None:
    serial = new_serial("AU")
    await lifecycle(client, auth, serial)
    id_ = meter_id(serial)
    events = stored(registry, id_)
    assert len(events) == len(LIFECYCLE)

    for n, event in enumerate(events, start=1):
        expected = replayed(registry, id_, n)
        by_version = await gql(client, STATE_AT, {"id": str(id_), "version": n}, auth(Role.AUDITOR))
        assert_state_matches(by_version["data"]["stateAt"], expected)
        at = event.timestamp.isoformat()
        by_time = await gql(client, STATE_AT, {"id": serial, "at": at}, auth(Role.AUDITOR))
        assert_state_matches(by_time["data"]["stateAt"], expected)

    before = (events[0].timestamp - timedelta(seconds=1)).isoformat()
    early = await gql(client, STATE_AT, {"id": serial, "at": before}, auth(Role.AUDITOR))
    assert early["data"]["stateAt"] is None
    assert early["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_audit_queries_refuse_bad_input_unknown_ids_and_other_roles(
    client: Client, auth: Auth
) -> None:
    serial = new_serial("AU")
    await gql(client, REGISTER, {"input": meter_input(serial)}, auth(Role.OPERATOR))

    async def code(query: str, variables: dict[str, Any], headers: dict[str, str]) -> str:
        body = await gql(client, query, variables, headers)
        assert "errors" in body, body
        result: str = body["errors"][0]["extensions"]["code"]
        return result

    auditor = auth(Role.AUDITOR)
    now = datetime.now().astimezone().isoformat()
    assert await code(STATE_AT, {"id": serial}, auditor) == "BAD_USER_INPUT"
    assert await code(STATE_AT, {"id": serial, "at": now, "version": 1}, auditor) == (
        "BAD_USER_INPUT"
    )
    assert await code(HISTORY, {"id": serial, "first": 0}, auditor) == "BAD_USER_INPUT"
    assert await code(HISTORY, {"id": str(uuid4())}, auditor) == "NOT_FOUND"
    assert await code(STATE_AT, {"id": str(uuid4()), "version": 1}, auditor) == "NOT_FOUND"
    assert await code(STATE_AT, {"id": serial, "version": 2}, auditor) == "NOT_FOUND"
    for role in (Role.VIEWER, Role.OPERATOR, Role.CUSTOMER):
        headers = auth(role, customer="ACC-1" if role is Role.CUSTOMER else None)
        assert await code(HISTORY, {"id": serial}, headers) == "FORBIDDEN"
        assert await code(STATE_AT, {"id": serial, "version": 1}, headers) == "FORBIDDEN"
    assert await code(HISTORY, {"id": serial}, {}) == "UNAUTHENTICATED"


async def test_auditor_reads_everything_and_changes_nothing(client: Client, auth: Auth) -> None:
    serial = new_serial("AU")
    area = f"AU-{serial}"
    await gql(client, REGISTER, {"input": meter_input(serial, area=area)}, auth(Role.OPERATOR))
    auditor = auth(Role.AUDITOR, subject="audrey")

    listed = await gql(
        client,
        "query($f: MeterFilterInput) { meters(filter: $f, first: 10) {"
        " edges { node { serial } } } }",
        {"f": {"area": area}},
        auditor,
    )
    assert [e["node"]["serial"] for e in listed["data"]["meters"]["edges"]] == [serial]
    one = await gql(
        client, "query($s: String) { meter(serial: $s) { serial } }", {"s": serial}, auditor
    )
    assert one["data"]["meter"]["serial"] == serial

    schema = await gql(client, "{ __schema { mutationType { fields { name } } } }", {}, auditor)
    names = {f["name"] for f in schema["data"]["__schema"]["mutationType"]["fields"]}
    assert names == set(MUTATIONS), "a new mutation needs an auditor test here"
    for mutation, query in MUTATIONS.items():
        target = new_serial("AU") if mutation == "registerMeter" else serial
        body = await gql(client, query, variables(mutation, target), auditor)
        result = body["data"][mutation]
        assert result["__typename"] == "ForbiddenError", (mutation, body)
        assert result["code"] == "FORBIDDEN"

    history = await gql(client, HISTORY, {"id": serial}, auditor)
    assert [e["type"] for e in history["data"]["history"]] == ["Registered"]


# -- CLI ------------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment pointing the CLI at the test servers and schema."""
    return {
        "HES_DATABASE_URL": settings.database_url or "",
        "HES_NATS_URL": settings.nats_url or "",
        "HES_DB_SCHEMA": settings.db_schema,
        "HES_NATS_PREFIX": settings.nats_prefix,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(settings.data_dir),
    }


def ctx(subject: str, role: Role = Role.OPERATOR) -> CommandContext:
    """Command context of one caller, with a correlation id naming them."""
    return CommandContext(
        actor=Actor(subject=subject, roles=frozenset({role})), correlation_id=f"cli-{subject}"
    )


def test_cli_history_and_state_at(settings: Settings, registry: MeterRegistry) -> None:
    serial = new_serial("AC")
    spec = MeterSpec(
        serial=serial,
        manufacturer="Acme",
        model="AM550",
        firmware="1.0",
        phases=1,
        region="North",
        area="N-01",
        connection=ConnectionProfile(host="10.9.9.9"),
    )
    id_ = registry.register_meter(spec, ctx("ann")).meter.id
    registry.commission_meter(id_, Location(address="2 Grid Rd"), "ACC-9", ctx("bob"))
    registry.decommission_meter(id_, "replaced", ctx("fay", Role.ADMIN))
    env = cli_env(settings)

    result = CliRunner().invoke(app, ["audit", "history", serial, "--json"], env=env)
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(e["version"], e["type"], e["actor"], e["correlation_id"]) for e in entries] == [
        (1, "Registered", "ann", "cli-ann"),
        (2, "Commissioned", "bob", "cli-bob"),
        (3, "Decommissioned", "fay", "cli-fay"),
    ]
    assert entries[2]["payload"] == {"reason": "replaced"}

    window = CliRunner().invoke(
        app,
        ["audit", "history", str(id_), "--from", entries[1]["time"], "--json"],
        env=env,
    )
    assert window.exit_code == 0, window.output
    assert [e["version"] for e in json.loads(window.stdout.strip().splitlines()[-1])] == [2, 3]

    table = CliRunner().invoke(app, ["audit", "history", serial], env=env)
    assert table.exit_code == 0, table.output
    assert "Commissioned" in table.stdout and "cli-bob" in table.stdout

    for n in (1, 2, 3):
        by_version = CliRunner().invoke(
            app, ["audit", "state-at", serial, "--version", str(n), "--json"], env=env
        )
        assert by_version.exit_code == 0, by_version.output
        got = json.loads(by_version.stdout.strip().splitlines()[-1])
        expected = replayed(registry, id_, n)
        assert got["version"] == n
        assert got["status"] == expected.status.value
        assert got["customer_account"] == expected.customer_account
        assert datetime.fromisoformat(got["updated_at"]) == expected.modified_on
    at = entries[1]["time"]
    by_time = CliRunner().invoke(app, ["audit", "state-at", serial, "--at", at, "--json"], env=env)
    assert by_time.exit_code == 0, by_time.output
    assert json.loads(by_time.stdout.strip().splitlines()[-1])["version"] == 2
    shown = CliRunner().invoke(app, ["audit", "state-at", serial, "--version", "2"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "location.address" in shown.stdout and "2 Grid Rd" in shown.stdout

    neither = CliRunner().invoke(app, ["audit", "state-at", serial], env=env)
    assert neither.exit_code == 2 and "exactly one of --at or --version" in neither.output
    naive = CliRunner().invoke(app, ["audit", "history", serial, "--from", "2025-01-01"], env=env)
    assert naive.exit_code == 2 and "UTC offset" in naive.output
    unknown = CliRunner().invoke(app, ["audit", "history", new_serial("AC")], env=env)
    assert unknown.exit_code == 1 and "no aggregate" in unknown.output
    too_late = CliRunner().invoke(app, ["audit", "state-at", serial, "--version", "4"], env=env)
    assert too_late.exit_code == 1 and "no version 4" in too_late.output
