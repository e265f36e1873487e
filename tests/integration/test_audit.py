"""Audit through the real app and CLI: history and past states of meters, tariffs and alerts,
and the read-only auditor role."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import CanMutateAggregate
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from api.presenters import row_from_aggregate
from commands.alerts import AlertDesk
from commands.context import SYSTEM, Actor, CommandContext, Role
from commands.meters import MeterRegistry
from commands.tariffs import TariffBook
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from domain.meter import Meter, meter_id
from domain.pricing import TariffSpec
from domain.tariff import tariff_id
from domain.values import ConnectionProfile, Location, MeterSpec
from hes.cli import app
from tests.conftest import JWT_SECRET, new_serial
from tests.integration.customer_support import ensure_customers
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
HISTORY_ANY = (
    "query($id: ID!) { history(aggregateId: $id) { position application aggregateType"
    " aggregateId version type time actor correlationId payload } }"
)
AGGREGATE_STATE_AT = (
    "query($id: ID!, $at: DateTime, $version: Int) { aggregateStateAt(aggregateId: $id, at: $at,"
    " version: $version) { application aggregateType aggregateId version createdAt updatedAt"
    " state } }"
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
    ' {host: "meter-7.grid.example", port: 4061, transport: HDLC}) { __typename '
    + METER_FIELDS
    + " } }",
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
    "setRegionCapacity": 'mutation { setRegionCapacity(region: "AUDIT", kw: 1.0)'
    " { __typename ... on ForbiddenError { code } } }",
    "createNotificationSubscription": "mutation { createNotificationSubscription(input: "
    '{channel: WEBHOOK, url: "https://hooks.example.com/a", kinds: [ALERT_RAISED]})'
    " { __typename ... on ForbiddenError { code } } }",
    "updateNotificationSubscription": "mutation($id: ID!) { updateNotificationSubscription("
    "id: $id, changes: {enabled: false}) { __typename ... on ForbiddenError { code } } }",
    "deleteNotificationSubscription": "mutation($id: ID!) { deleteNotificationSubscription("
    "id: $id) { __typename ... on ForbiddenError { code } } }",
    "acknowledgeAlert": "mutation($id: ID!) { acknowledgeAlert(id: $id) { __typename"
    " ... on ForbiddenError { code } } }",
    "resolveAlert": 'mutation($id: ID!) { resolveAlert(id: $id, note: "audit") { __typename'
    " ... on ForbiddenError { code } } }",
    "disconnectMeters": "mutation($id: ID!) { disconnectMeters(ids: [$id], confirm:"
    ' "disconnectMeters 1") { __typename ... on ForbiddenError { code } } }',
    "createApiKey": 'mutation { createApiKey(input: {name: "audit", scopes: ["ingest"]})'
    " { __typename ... on ForbiddenError { code } } }",
    "rotateApiKey": 'mutation { rotateApiKey(prefix: "abcdefgh") { __typename'
    " ... on ForbiddenError { code } } }",
    "revokeApiKey": 'mutation { revokeApiKey(prefix: "abcdefgh", reason: "audit") { __typename'
    " ... on ForbiddenError { code } } }",
    # DLMS remote commands and keys
    **{
        name: f"mutation($id: ID!) {{ {name}(id: $id{extra}) {{ __typename"
        " ... on ForbiddenError { code } } }"
        for name, extra in (
            ("disconnectMeter", ""),
            ("reconnectMeter", ""),
            ("synchronizeMeterClock", ""),
            ("readMeterOnDemand", ', quantities: ["voltage_l1"]'),
            ("retryRemoteCommand", ', commandId: "00000000-0000-0000-0000-000000000001"'),
            ("setMeterKeys", ', input: {llsPassword: "x12345678"}, confirm: "setMeterKeys 1"'),
            ("setMeterDlmsProfile", ', profile: "dsmr"'),
            ("refreshDlmsCapabilities", ""),
        )
    },
    # SIM inventory
    **{
        name: f"mutation {{ {name}({args}) {{ __typename ... on ForbiddenError {{ code }} }} }}"
        for name, args in (
            ("addSimCard", 'input: {iccid: "89445000123456789", provider: "Vodafone"}'),
            ("updateSimCard", 'iccid: "89445000123456789", apn: "iot.example"'),
            ("activateSimCard", 'iccid: "89445000123456789"'),
            ("suspendSimCard", 'iccid: "89445000123456789", reason: "audit"'),
            ("resumeSimCard", 'iccid: "89445000123456789"'),
            ("terminateSimCard", 'iccid: "89445000123456789", reason: "audit"'),
            ("installSim", 'meterSerial: "AU-1", iccid: "89445000123456789"'),
            ("removeSim", 'meterSerial: "AU-1", reason: "audit"'),
        )
    },
    **{
        name: "mutation { " + name + '(accountNumber: "ACC-AUDIT"' + args + ")"
        " { __typename ... on ForbiddenError { code } } }"
        for name, args in (
            (
                "createCustomer",
                ', area: "A", contact: {name: "N", address: "Addr"}',
            ),
            ("updateCustomerContact", ', area: "A", contact: {name: "N", address: "Addr"}'),
            ("changeCustomerPlan", ', customerType: PUBLIC, tariffPlan: "P"'),
            ("suspendCustomer", ', reason: "r"'),
            ("reactivateCustomer", ""),
            ("closeCustomer", ', reason: "r"'),
            ("eraseCustomer", ', reason: "r"'),
        )
    },
    # fleet operations
    **{
        name: f"mutation($id: ID!) {{ {name}(id: $id{extra}) {{ __typename"
        " ... on ForbiddenError { code } } }"
        for name, extra in (
            ("updateFirmware", ', imageId: "00000000-0000-0000-0000-000000000002"'),
            (
                "writeCalendar",
                ', touPlanId: "00000000-0000-0000-0000-000000000003", version: 1',
            ),
            ("setLoadLimit", ", limit: {thresholdNormalW: 5000, thresholdEmergencyW: 2000}"),
        )
    },
    **{
        name: f"mutation {{ {name}({args}) {{ __typename ... on ForbiddenError {{ code }} }} }}"
        for name, args in (
            (
                "uploadFirmwareImage",
                'identifier: "FW-AUDIT", manufacturer: "HES", model: "M", imageBase64: "AAAA"',
            ),
            ("deleteFirmwareImage", 'id: "00000000-0000-0000-0000-000000000002"'),
            ("createTouPlan", 'tariffPlan: "AUDIT", calendar: {}'),
            (
                "startCampaign",
                'input: {name: "audit", kind: LOAD_LIMIT, cohort: {region: "AUDIT"}, '
                "loadLimit: {thresholdNormalW: 5000, thresholdEmergencyW: 2000}}",
            ),
            (
                "startFirmwareCampaign",
                'input: {name: "audit", kind: FIRMWARE, cohort: {region: "AUDIT"}, '
                'imageId: "00000000-0000-0000-0000-000000000002"}',
            ),
            ("pauseCampaign", 'id: "00000000-0000-0000-0000-000000000004"'),
            ("resumeCampaign", 'id: "00000000-0000-0000-0000-000000000004"'),
            ("cancelCampaign", 'id: "00000000-0000-0000-0000-000000000004", reason: "audit"'),
        )
    },
    # consumption insights: not a union, so refused with a FORBIDDEN error (checked apart)
    "analyze": "mutation { analyze { id } }",
}


@pytest.fixture(scope="module", autouse=True)
def lifecycle_customers(settings: Settings) -> None:
    """The customer accounts ``MUTATIONS`` commission and assign meters to."""
    ensure_customers(settings, "ACC-1", "ACC-2")


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """A registry of its own over the test event store, for replaying by hand."""
    app_ = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app_
    app_.close()


@pytest.fixture(scope="module")
def tariff_book(settings: Settings) -> Iterator[TariffBook]:
    """The tariffs application over the test event store."""
    app_ = TariffBook(env=settings.database.eventsourcing_env())
    yield app_
    app_.close()


@pytest.fixture(scope="module")
def alert_desk(settings: Settings) -> Iterator[AlertDesk]:
    """The alerts application over the test event store."""
    app_ = AlertDesk(env=settings.database.eventsourcing_env())
    yield app_
    app_.close()


def by(subject: str, role: Role) -> CommandContext:
    """Command context of one caller, with the correlation id ``corr-<subject>``."""
    return CommandContext(
        actor=Actor(subject=subject, roles=frozenset({role})), correlation_id=f"corr-{subject}"
    )


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
    assert entries[2]["payload"]["connection"]["host"] == "meter-7.grid.example"
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
        if mutation == "analyze":
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
            continue
        result = body["data"][mutation]
        assert result["__typename"] == "ForbiddenError", (mutation, body)
        assert result["code"] == "FORBIDDEN"

    history = await gql(client, HISTORY, {"id": serial}, auditor)
    assert [e["type"] for e in history["data"]["history"]] == ["Registered"]


# -- CLI ------------------------------------------------------------------------------


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment pointing the CLI at the test servers and schema."""
    return {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_JWT_SECRET": JWT_SECRET,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
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
        connection=ConnectionProfile(host="127.9.9.9"),
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


# -- tariffs and alerts ---------------------------------------------------------------


def raise_decision(key: str) -> AlertDecision:
    """An overload detector's decision to raise an alert for ``key``."""
    return AlertDecision(
        verdict=Verdict.RAISE,
        alert_type=AlertType.OVERLOAD,
        severity=Severity.HIGH,
        region="North",
        dedup_key=key,
        message="transformer at 130 %",
        observed_at=datetime.now(UTC),
        evidence={"load_pct": 130.0},
    )


async def error_code(
    client: Client, query: str, variables: dict[str, Any], headers: dict[str, str]
) -> str:
    """The error code of an audit query that must fail (and return no data)."""
    body = await gql(client, query, variables, headers)
    assert "errors" in body and not any((body.get("data") or {}).values()), body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def test_alert_history_and_states_for_auditors_only(
    client: Client, auth: Auth, alert_desk: AlertDesk
) -> None:
    key = f"OVERLOAD:{new_serial('AUA')}"
    detector = CommandContext(actor=SYSTEM, correlation_id="corr-detector")
    id_ = alert_desk.raise_or_recur(raise_decision(key), detector).alert.id
    alert_desk.acknowledge(id_, by("olga", Role.OPERATOR))
    alert_desk.resolve(id_, "load shed", by("oscar", Role.OPERATOR))
    auditor = auth(Role.AUDITOR, subject="audrey")

    body = await gql(client, HISTORY_ANY, {"id": str(id_)}, auditor)
    entries = body["data"]["history"]
    assert [(e["version"], e["type"], e["actor"], e["correlationId"]) for e in entries] == [
        (1, "Raised", "system", "corr-detector"),
        (2, "Acknowledged", "olga", "corr-olga"),
        (3, "Resolved", "oscar", "corr-oscar"),
    ]
    assert {(e["application"], e["aggregateType"], e["aggregateId"]) for e in entries} == {
        ("alerts", "Alert", str(id_))
    }
    positions = [int(e["position"]) for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert entries[0]["payload"]["spec"]["dedup_key"] == key
    assert entries[0]["payload"]["spec"]["evidence"] == {"load_pct": 130.0}
    assert entries[2]["payload"]["note"] == "load shed"

    series = await gql(client, HISTORY_ANY, {"id": key}, auth(Role.ADMIN))
    assert [(e["aggregateType"], e["type"]) for e in series["data"]["history"]] == [
        ("AlertSeries", "Started"),
        ("AlertSeries", "Opened"),
        ("AlertSeries", "Closed"),
    ]

    acked = await gql(client, AGGREGATE_STATE_AT, {"id": str(id_), "version": 2}, auditor)
    state = acked["data"]["aggregateStateAt"]
    assert (state["application"], state["aggregateType"], state["version"]) == (
        "alerts",
        "Alert",
        2,
    )
    assert state["updatedAt"] == entries[1]["time"] and state["createdAt"] == entries[0]["time"]
    assert state["state"]["status"] == "ACKNOWLEDGED"
    assert state["state"]["acknowledged_by"] == "olga"
    assert state["state"]["resolved_at"] is None
    assert "commands" not in state["state"]
    at_end = await gql(
        client, AGGREGATE_STATE_AT, {"id": str(id_), "at": entries[2]["time"]}, auditor
    )
    final = at_end["data"]["aggregateStateAt"]["state"]
    assert (final["status"], final["resolved_by"], final["resolution_note"]) == (
        "RESOLVED",
        "oscar",
        "load shed",
    )

    meter_only = await gql(client, STATE_AT, {"id": str(id_), "version": 1}, auditor)
    assert meter_only["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "aggregateStateAt" in meter_only["errors"][0]["message"]
    for role in (Role.OPERATOR, Role.VIEWER):
        headers = auth(role, subject="olga")
        assert await error_code(client, HISTORY_ANY, {"id": str(id_)}, headers) == "FORBIDDEN"
        assert (
            await error_code(client, AGGREGATE_STATE_AT, {"id": str(id_), "version": 1}, headers)
            == "FORBIDDEN"
        )
    assert await error_code(client, HISTORY_ANY, {"id": str(id_)}, {}) == "UNAUTHENTICATED"


async def test_tariff_history_and_states_for_auditors_only(
    client: Client, auth: Auth, tariff_book: TariffBook
) -> None:
    region = new_serial("AUT")
    spec = TariffSpec(region=region, currency="EUR", base_price=Decimal("0.25"), timezone="UTC")
    tariff_book.create_tariff(spec, by("ada", Role.ADMIN))
    until = datetime(2999, 1, 1, tzinfo=UTC)
    tariff_book.apply_override(region, Decimal("0.40"), "heat wave", until, by("ben", Role.ADMIN))
    tariff_book.clear_override(region, "cooler", by("cyd", Role.ADMIN))
    id_ = str(tariff_id(region))
    auditor = auth(Role.AUDITOR)

    by_region = await gql(client, HISTORY_ANY, {"id": region}, auditor)
    entries = by_region["data"]["history"]
    assert [(e["version"], e["type"], e["actor"], e["correlationId"]) for e in entries] == [
        (1, "Created", "ada", "corr-ada"),
        (2, "OverrideApplied", "ben", "corr-ben"),
        (3, "OverrideCleared", "cyd", "corr-cyd"),
    ]
    assert {(e["application"], e["aggregateType"], e["aggregateId"]) for e in entries} == {
        ("tariffs", "Tariff", id_)
    }
    assert entries[0]["payload"]["base_price"] == "0.25"
    assert Decimal(entries[1]["payload"]["price"]) == Decimal("0.40")
    assert entries[1]["payload"]["reason"] == "heat wave"
    by_id = await gql(client, HISTORY_ANY, {"id": id_}, auth(Role.ADMIN))
    assert by_id["data"]["history"] == entries

    overridden = await gql(client, AGGREGATE_STATE_AT, {"id": region, "version": 2}, auditor)
    state = overridden["data"]["aggregateStateAt"]
    assert (state["application"], state["aggregateType"], state["aggregateId"]) == (
        "tariffs",
        "Tariff",
        id_,
    )
    assert state["state"]["region"] == region and state["state"]["base_price"] == "0.25"
    assert Decimal(state["state"]["override"]["price"]) == Decimal("0.40")
    assert state["state"]["override"]["author"] == "ben"
    cleared = await gql(client, AGGREGATE_STATE_AT, {"id": id_, "version": 3}, auditor)
    assert cleared["data"]["aggregateStateAt"]["state"]["override"] is None
    assert await error_code(client, AGGREGATE_STATE_AT, {"id": id_, "version": 4}, auditor) == (
        "NOT_FOUND"
    )
    assert await error_code(client, AGGREGATE_STATE_AT, {"id": id_}, auditor) == "BAD_USER_INPUT"

    for role in (Role.OPERATOR, Role.CUSTOMER):
        headers = auth(role, customer="ACC-1" if role is Role.CUSTOMER else None)
        assert await error_code(client, HISTORY_ANY, {"id": region}, headers) == "FORBIDDEN"
        assert (
            await error_code(client, AGGREGATE_STATE_AT, {"id": region, "version": 1}, headers)
            == "FORBIDDEN"
        )


def test_cli_history_and_state_of_a_tariff_and_an_alert(
    settings: Settings, tariff_book: TariffBook, alert_desk: AlertDesk
) -> None:
    region = new_serial("AUC")
    spec = TariffSpec(region=region, currency="EUR", base_price=Decimal("0.25"), timezone="UTC")
    tariff_book.create_tariff(spec, ctx("ada", Role.ADMIN))
    until = datetime(2999, 1, 1, tzinfo=UTC)
    tariff_book.apply_override(region, Decimal("0.40"), "heat wave", until, ctx("ben", Role.ADMIN))
    env = cli_env(settings)

    result = CliRunner().invoke(app, ["audit", "history", region, "--json"], env=env)
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(e["log"], e["aggregate_type"], e["type"], e["actor"]) for e in entries] == [
        ("tariffs", "Tariff", "Created", "ada"),
        ("tariffs", "Tariff", "OverrideApplied", "ben"),
    ]
    table = CliRunner().invoke(app, ["audit", "history", region], env=env)
    assert table.exit_code == 0, table.output
    assert "Created" in table.stdout and "tariffs log" in table.stdout

    state = CliRunner().invoke(
        app, ["audit", "state-at", region, "--version", "2", "--json"], env=env
    )
    assert state.exit_code == 0, state.output
    got = json.loads(state.stdout.strip().splitlines()[-1])
    assert (got["log"], got["aggregate_type"], got["version"]) == ("tariffs", "Tariff", 2)
    assert got["state"]["override"]["reason"] == "heat wave"

    key = f"OVERLOAD:{new_serial('AUC')}"
    alert = alert_desk.raise_or_recur(raise_decision(key), ctx("system", Role.ADMIN)).alert.id
    alert_desk.acknowledge(alert, ctx("olga"))
    listed = CliRunner().invoke(app, ["audit", "history", str(alert), "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [
        (e["log"], e["aggregate_type"], e["type"])
        for e in json.loads(listed.stdout.strip().splitlines()[-1])
    ] == [("alerts", "Alert", "Raised"), ("alerts", "Alert", "Acknowledged")]
    shown = CliRunner().invoke(app, ["audit", "state-at", str(alert), "--version", "2"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "state.status" in shown.stdout and "ACKNOWLEDGED" in shown.stdout
