"""Remote commands end to end: GraphQL/REST mutation → Meter events → executor → simulated
meter → read-back → confirmed (or failed, then retried), visible in the meter's history."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from adapters.dlms.executor import CommandExecutor
from adapters.dlms.simulator import SimulatedFleet, simulated_keys, start_simulated_meters
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.collection import Task
from domain.values import SecurityLevel, Transport
from hes.cli import app
from tests.integration.dlms_support import (
    ADMIN,
    dlms_settings,
    eventually,
    free_ports,
    meter_visible,
    profile,
    register,
    scalar,
    set_simulated_keys,
)
from tests.integration.gql import gql
from tests.worker_thread import WorkerThread

pytestmark = pytest.mark.integration
Client = AsyncTestClient[Any]
Auth = Callable[..., dict[str, str]]

COMMAND = """
  __typename
  ... on RemoteCommand { id meterId kind status attempt reason quantities requestedBy
    result { relayConnected controlState clockBefore clockAfter values { obis value unit at } } }
  ... on ValidationError { code message fields { field rule message } }
  ... on NotFoundError { code message }
  ... on ConflictError { code message }
  ... on ForbiddenError { code message }
"""
DISCONNECT = (
    "mutation($id: ID!, $key: String) { disconnectMeter(id: $id, idempotencyKey: $key) {"
    + COMMAND
    + "} }"
)
RECONNECT = "mutation($id: ID!) { reconnectMeter(id: $id) {" + COMMAND + "} }"
SYNC = "mutation($id: ID!) { synchronizeMeterClock(id: $id) {" + COMMAND + "} }"
READ = (
    "mutation($id: ID!, $q: [String!]!) { readMeterOnDemand(id: $id, quantities: $q) {"
    + COMMAND
    + "} }"
)
RETRY = (
    "mutation($id: ID!, $c: ID!) { retryRemoteCommand(id: $id, commandId: $c) {" + COMMAND + "} }"
)
ONE = (
    "query($id: ID!) { remoteCommand(id: $id) {"
    + COMMAND.split("... on ValidationError")[0]
    + "} }"
)


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[SimulatedFleet]:
    """Two simulated meters on free ports."""
    running = await start_simulated_meters(2, free_ports(2))
    yield running
    await running.close()


@pytest.fixture(scope="module")
async def service(settings: Settings) -> AsyncIterator[DlmsService]:
    """The DLMS side, opened on the test schema."""
    dlms = DlmsService(dlms_settings(settings))
    await dlms.open()
    yield dlms
    await dlms.close()


@pytest.fixture(scope="module")
def executor(service: DlmsService) -> CommandExecutor:
    """The remote-command executor (run a round with ``run_once``)."""
    return service.executor()


async def hls_meter(
    settings: Settings,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    index: int,
    transport: Transport,
) -> UUID:
    """A registered HLS meter pointing at simulated meter ``index``, keys set."""
    meter = register(registry, profile(fleet.ports[index], transport, SecurityLevel.HLS_GMAC))
    version = set_simulated_keys(settings, registry, meter, fleet.serials[index])
    await meter_visible(settings, meter, version)
    return meter


async def run_until_done(
    client: Client, auth: Auth, executor: CommandExecutor, command_id: str
) -> dict[str, Any]:
    """Run executor rounds until the command is CONFIRMED or FAILED; return it."""

    async def done() -> dict[str, Any] | None:
        await executor.run_once()
        body = await gql(client, ONE, {"id": command_id}, auth(Role.OPERATOR))
        command: dict[str, Any] | None = body["data"]["remoteCommand"]
        return command if command and command["status"] in ("CONFIRMED", "FAILED") else None

    return await eventually(done)


async def test_disconnect_opens_the_relay_confirmed_by_read_back_and_in_history(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
) -> None:
    meter = await hls_meter(settings, registry, fleet, 0, Transport.WRAPPER)
    assert fleet.meter(0).relay_connected

    body = await gql(
        client, DISCONNECT, {"id": str(meter), "key": "cut-1"}, auth(Role.OPERATOR, subject="olga")
    )
    requested = body["data"]["disconnectMeter"]
    assert requested["__typename"] == "RemoteCommand", requested
    assert (requested["status"], requested["kind"], requested["requestedBy"]) == (
        "REQUESTED",
        "DISCONNECT",
        "olga",
    )
    again = await gql(
        client, DISCONNECT, {"id": str(meter), "key": "cut-1"}, auth(Role.OPERATOR, subject="olga")
    )
    assert again["data"]["disconnectMeter"]["id"] == requested["id"]  # same key: same command

    confirmed = await run_until_done(client, auth, executor, requested["id"])

    assert confirmed["status"] == "CONFIRMED", confirmed
    assert confirmed["result"]["relayConnected"] is False
    assert not fleet.meter(0).relay_connected
    state = await gql(
        client,
        "query($id: ID!) { meterDlmsState(id: $id) { relayConnected } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    assert state["data"]["meterDlmsState"]["relayConnected"] is False
    history = await gql(
        client,
        "query($id: ID!) { history(aggregateId: $id) { type actor payload } }",
        {"id": str(meter)},
        auth(Role.AUDITOR),
    )
    events = [(e["type"], e["actor"]) for e in history["data"]["history"]]
    assert ("RemoteCommandRequested", "olga") in events
    assert ("RemoteCommandSent", "dlms-executor") in events
    confirmed_event = next(
        e for e in history["data"]["history"] if e["type"] == "RemoteCommandConfirmed"
    )
    assert confirmed_event["payload"]["result"]["relay_connected"] is False
    assert [e for e, _ in events].count("RemoteCommandRequested") == 1

    # The meter logged the remote disconnection; the next event-log read records it once.
    target = (await service.store.targets([meter]))[meter]
    await service.collector.collect(target, {Task.EVENTS})
    await service.collector.collect(target, {Task.EVENTS})
    kinds = await eventually(lambda: _log_kinds(client, auth, meter), seconds=10)
    assert kinds.count("RELAY_DISCONNECTED") == 1

    reconnect = await gql(client, RECONNECT, {"id": str(meter)}, auth(Role.ADMIN))
    done = await run_until_done(client, auth, executor, reconnect["data"]["reconnectMeter"]["id"])
    assert (done["status"], done["result"]["relayConnected"]) == ("CONFIRMED", True)
    assert fleet.meter(0).relay_connected


async def _log_kinds(client: Client, auth: Auth, meter: UUID) -> list[str] | None:
    body = await gql(
        client,
        "query($id: ID!) { meterLogEvents(id: $id) { kind code } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    kinds = [e["kind"] for e in body["data"]["meterLogEvents"]]
    return kinds if "RELAY_DISCONNECTED" in kinds else None


async def test_unreachable_meter_fails_cleanly_and_a_retry_succeeds(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    executor: CommandExecutor,
) -> None:
    port = free_ports(1)
    # LLS (clock setting needs more than the public client); nobody listens there yet
    meter = register(registry, profile(port, Transport.HDLC, SecurityLevel.LLS))
    version = set_simulated_keys(settings, registry, meter, "SIM0000000")
    await meter_visible(settings, meter, version)

    body = await gql(client, SYNC, {"id": str(meter)}, auth(Role.OPERATOR))
    command_id = body["data"]["synchronizeMeterClock"]["id"]
    failed = await run_until_done(client, auth, executor, command_id)
    assert failed["status"] == "FAILED"
    assert "no TCP connection" in failed["reason"] and str(port) in failed["reason"]
    assert failed["attempt"] == 1
    stats = await gql(
        client,
        "query($id: ID!) { meterCommunication(id: $id) {"
        " attempts successes successRate lastError } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    communication = stats["data"]["meterCommunication"]
    assert communication["attempts"] == settings.dlms.retries + 1
    assert communication["successRate"] == 0
    assert "no TCP connection" in communication["lastError"]

    late = await start_simulated_meters(1, port)  # the meter comes back
    try:
        retried = await gql(client, RETRY, {"id": str(meter), "c": command_id}, auth(Role.OPERATOR))
        assert retried["data"]["retryRemoteCommand"]["status"] == "REQUESTED"
        assert retried["data"]["retryRemoteCommand"]["attempt"] == 2
        done = await run_until_done(client, auth, executor, command_id)
    finally:
        await late.close()
    assert (done["status"], done["attempt"], done["reason"]) == ("CONFIRMED", 2, None)
    assert done["result"]["clockAfter"] is not None


async def test_on_demand_read_returns_scaled_values_and_feeds_the_pipeline(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    executor: CommandExecutor,
) -> None:
    meter = register(registry, profile(fleet.ports[1], Transport.HDLC))
    await meter_visible(settings, meter)
    body = await gql(
        client, READ, {"id": str(meter), "q": ["voltage_l1", "1.0.14.7.0.255"]}, auth(Role.OPERATOR)
    )
    assert body["data"]["readMeterOnDemand"]["quantities"] == ["1.0.32.7.0.255", "1.0.14.7.0.255"]
    done = await run_until_done(client, auth, executor, body["data"]["readMeterOnDemand"]["id"])
    values = {v["obis"]: (v["value"], v["unit"]) for v in done["result"]["values"]}
    assert 180 < values["1.0.32.7.0.255"][0] < 260 and values["1.0.32.7.0.255"][1] == "V"
    assert 49 < values["1.0.14.7.0.255"][0] < 51 and values["1.0.14.7.0.255"][1] == "Hz"

    async def stored() -> int:
        return int(
            await scalar(settings, "SELECT count(*) FROM {s}.readings WHERE meter_id = %s", meter)
        )

    assert await eventually(stored) == 2


async def test_relay_command_refused_by_a_public_association_fails_with_the_reason(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    executor: CommandExecutor,
) -> None:
    meter = register(registry, profile(fleet.ports[1]))  # public client: may not operate relays
    await meter_visible(settings, meter)
    body = await gql(client, DISCONNECT, {"id": str(meter)}, auth(Role.OPERATOR))
    failed = await run_until_done(client, auth, executor, body["data"]["disconnectMeter"]["id"])
    assert failed["status"] == "FAILED"
    assert "denied" in failed["reason"].lower()
    assert fleet.meter(1).relay_connected


async def test_roles_arguments_and_conflicts_are_refused_with_typed_errors(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
) -> None:
    meter = register(registry, profile(free_ports(1)))
    await meter_visible(settings, meter)
    viewer = await gql(client, DISCONNECT, {"id": str(meter)}, auth(Role.VIEWER))
    assert viewer["data"]["disconnectMeter"]["__typename"] == "ForbiddenError"
    bad = await gql(client, READ, {"id": str(meter), "q": ["nope"]}, auth(Role.OPERATOR))
    assert bad["data"]["readMeterOnDemand"]["fields"] == [
        {
            "field": "quantities[0]",
            "rule": "known",
            "message": "'nope' is not a known OBIS quantity",
        }
    ]
    first = await gql(client, DISCONNECT, {"id": str(meter)}, auth(Role.OPERATOR))
    assert first["data"]["disconnectMeter"]["status"] == "REQUESTED"
    second = await gql(client, RECONNECT, {"id": str(meter)}, auth(Role.OPERATOR))
    assert second["data"]["reconnectMeter"]["__typename"] == "ConflictError"
    unknown = await gql(
        client, SYNC, {"id": "00000000-0000-0000-0000-000000000000"}, auth(Role.OPERATOR)
    )
    assert unknown["data"]["synchronizeMeterClock"]["__typename"] == "NotFoundError"


async def test_rest_commands_and_admin_only_keys(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
) -> None:
    meter = register(registry, profile(free_ports(1)))
    await meter_visible(settings, meter)
    response = await client.post(
        f"/api/v1/commands/meters/{meter}/sync-clock",
        headers={**auth(Role.OPERATOR), "Idempotency-Key": "rest-sync-1"},
    )
    assert response.status_code == 202, response.text
    command = response.json()
    assert (command["kind"], command["status"]) == ("SYNC_CLOCK", "REQUESTED")
    listed = await client.get(f"/api/v1/meters/{meter}/remote-commands", headers=auth(Role.VIEWER))
    assert [c["id"] for c in listed.json()] == [command["id"]]

    keys = {
        "ek": "00" * 16,
        "ak": "11" * 16,
        "llsPassword": "secret-pw",
        "confirm": "setMeterKeys 1",
    }
    refused = await client.put(
        f"/api/v1/meters/{meter}/keys", json=keys, headers=auth(Role.OPERATOR)
    )
    assert refused.status_code == 403
    unconfirmed = await client.put(
        f"/api/v1/meters/{meter}/keys", json={**keys, "confirm": None}, headers=auth(Role.ADMIN)
    )
    assert unconfirmed.status_code == 422
    stored = await client.put(f"/api/v1/meters/{meter}/keys", json=keys, headers=auth(Role.ADMIN))
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"meterId": str(meter), "keyVersion": 1, "changed": ["LLS", "EK", "AK"]}
    assert "secret-pw" not in stored.text and "0000" not in stored.text
    sealed = await scalar(
        settings,
        "SELECT string_agg(encode(sealed, 'hex'), '') FROM {s}.dlms_keys WHERE meter_id = %s",
        meter,
    )
    assert b"secret-pw".hex() not in sealed and "11" * 16 not in sealed
    bad = await client.put(
        f"/api/v1/meters/{meter}/keys",
        json={"ek": "zz", "ak": "11" * 16, "confirm": "setMeterKeys 1"},
        headers=auth(Role.ADMIN),
    )
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["ek"]
    assert "zz" not in bad.json()["detail"]


async def test_a_command_left_sent_by_a_dead_executor_fails_and_can_be_retried(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    executor: CommandExecutor,
) -> None:
    meter = register(registry, profile(free_ports(1)))
    await meter_visible(settings, meter)
    body = await gql(client, SYNC, {"id": str(meter)}, auth(Role.OPERATOR))
    command_id = body["data"]["synchronizeMeterClock"]["id"]
    # An executor recorded "sent" and died before recording the outcome.
    registry.mark_command_sent(meter, UUID(command_id), ADMIN)

    async def sent() -> bool:
        status = await scalar(
            settings, "SELECT status FROM {s}.remote_commands WHERE command_id = %s", command_id
        )
        return bool(status == "SENT")

    await eventually(sent)
    assert await executor.fail_stale() == 0  # not stale yet
    await scalar(
        settings,
        "UPDATE {s}.remote_commands SET sent_at = now() - interval '1 hour' "
        "WHERE command_id = %s RETURNING 1",
        command_id,
    )
    assert await executor.fail_stale() == 1
    failed = await run_until_done(client, auth, executor, command_id)
    assert failed["status"] == "FAILED"
    assert "stopped mid-command" in failed["reason"]
    retried = await gql(client, RETRY, {"id": str(meter), "c": command_id}, auth(Role.OPERATOR))
    assert retried["data"]["retryRemoteCommand"]["attempt"] == 2


def test_key_import_cli_sets_keys_once_and_reports_bad_lines(
    settings: Settings, registry: MeterRegistry, tmp_path: Path
) -> None:
    meter = register(registry, profile(free_ports(1), Transport.WRAPPER, SecurityLevel.LLS))
    serial = registry.get(meter).spec.serial
    keys = simulated_keys("SIM0000077")
    csv = tmp_path / "keys.csv"
    csv.write_text(
        "serial,lls_password,ek_hex,ak_hex,system_title_hex\n"
        f"{serial},{keys.lls_password.decode()},{keys.ek.hex()},{keys.ak.hex()},"
        f"{keys.system_title.hex()}\n"
        "NO-SUCH-METER,pw123456,,,\n"
        f"{serial},has space,zz,,\n"
    )
    env = {
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_DATA_DIR": str(settings.runtime.data_dir),
    }
    first = CliRunner().invoke(app, ["dlms", "keys", "import", str(csv)], env=env)
    assert first.exit_code == 1, first.output
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [(r.get("line"), r.get("status")) for r in lines[:3]] == [
        (2, "changed"),
        (3, "error"),
        (4, "error"),
    ]
    assert lines[0]["changed"] == ["LLS", "EK", "AK"] and lines[0]["key_version"] == 1
    assert "no meter" in lines[1]["message"]
    assert lines[3] == {"rows": 3, "changed": 1, "unchanged": 0, "errors": 2}
    for secret in (keys.lls_password.decode(), keys.ek.hex(), keys.ak.hex(), "has space"):
        assert secret not in first.output
    again = CliRunner().invoke(app, ["dlms", "keys", "import", str(csv)], env=env)
    assert json.loads(again.stdout.splitlines()[0])["status"] == "unchanged"
