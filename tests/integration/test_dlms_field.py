"""Meters that behave like ones this project did not write, read through the real collector,
executor and push listener: no invocation-counter object or one per client, a unit outside
the Blue Book, objects missing or denied to the client, a SET/ACTION answered with
hardware-fault or a malformed reply, DSMR and vendor event tables, a small PDU with HDLC
segmentation and repeated flags; discovery of a model's association view, model profiles
(built in and from HES_DLMS_PROFILE_DIR), client addresses that follow the security level,
several push layouts side by side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient

from adapters.dlms import wrapper
from adapters.dlms.executor import CommandExecutor
from adapters.dlms.push_layout import PushLayout
from adapters.dlms.push_listener import (
    PushListener,
    PushRejection,
    Received,
    encode_notification,
)
from adapters.dlms.session import AssociationRefused
from adapters.dlms.simulator import SimulatedFleet, behaviour, start_simulated_meters
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.collection import Task
from domain.obis import BY_OBIS
from domain.readings import Quality
from domain.remote_commands import CommandArgs, CommandKind
from domain.values import SecurityLevel, Transport
from projections.dlms_queries import DlmsQueries, RemoteCommandRow
from tests.conftest import new_serial
from tests.integration.dlms_support import (
    ADMIN,
    commission,
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

BEHAVIOURS = [
    "no-counter",  # 0
    "per-client-counter",  # 1
    "odd-unit,wrong-unit",  # 2
    "denied-register,missing-log",  # 3
    "set-hardware-fault,action-hardware-fault",  # 4
    "dsmr-events",  # 5
    "vendor-events",  # 6
    "small-pdu,hdlc-flags",  # 7
    "set-malformed-reply",  # 8
    "idis",  # 9
    "idis",  # 10
]
PER_CLIENT_PROFILE = """
format = 1
name = "per-client-counter"
version = "1"
description = "Meters keeping the invocation counter of each client in 0.0.43.1.<client>.255."

[invocation_counter]
source = "object"
object = "0.0.43.1.{client}.255"
"""
PF = BY_OBIS["1.0.13.7.0.255"].id
COMMAND = """
  __typename
  ... on RemoteCommand { id status reason kind
    result { relayConnected clockAfter objects values { obis value unverified }
             failures { obis reason } } }
"""


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[SimulatedFleet]:
    """Simulated meters, each behaving as ``BEHAVIOURS`` says."""
    running = await start_simulated_meters(
        len(BEHAVIOURS),
        free_ports(len(BEHAVIOURS)),
        behaviour=lambda i: behaviour(BEHAVIOURS[i]),
    )
    yield running
    await running.close()


@pytest.fixture(scope="module")
async def service(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DlmsService]:
    """The DLMS side, with an operator's profile directory next to the built-in profiles."""
    directory: Path = tmp_path_factory.mktemp("dlms-profiles")
    (directory / "per-client-counter.toml").write_text(PER_CLIENT_PROFILE)
    dlms = DlmsService(dlms_settings(settings).replace(dlms_profile_dir=directory))
    await dlms.open()
    yield dlms
    await dlms.close()


@pytest.fixture(scope="module")
def executor(service: DlmsService) -> CommandExecutor:
    """The remote-command executor."""
    return service.executor()


@pytest.fixture(scope="module")
def queries(service: DlmsService) -> DlmsQueries:
    """The DLMS read-model queries."""
    return DlmsQueries(service.pool, service.settings.database.schema)


async def quirky_meter(
    settings: Settings,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    index: int,
    transport: Transport,
    security: SecurityLevel,
    *,
    manufacturer: str = "HES",
    client: int | None = -1,
) -> UUID:
    """A meter of its own model (named after the behaviour) pointing at simulated ``index``."""
    model = f"Sim {BEHAVIOURS[index]}".replace(",", " ")
    meter = register(
        registry,
        profile(fleet.ports[index], transport, security, client),
        manufacturer=manufacturer,
        model=model[:64],
    )
    commission(registry, meter)  # the scheduler collects commissioned meters only
    version = 0
    if security is not SecurityLevel.NONE:
        version = set_simulated_keys(settings, registry, meter, fleet.serials[index])
    await meter_visible(settings, meter, version)

    async def commissioned() -> bool:
        status = await scalar(settings, "SELECT status FROM {s}.meters WHERE id = %s", meter)
        return bool(status == "COMMISSIONED")

    await eventually(commissioned)
    return meter


async def target_of(service: DlmsService, meter: UUID) -> Any:
    """The meter as the DLMS side loads it (fresh: profile assignments included)."""
    return (await service.store.targets([meter]))[meter]


async def finished(executor: CommandExecutor, queries: DlmsQueries, command_id: UUID) -> Any:
    """Run executor rounds until the command is CONFIRMED or FAILED; its read-model row."""

    async def done() -> RemoteCommandRow | None:
        await executor.run_once()
        row = await queries.command(command_id)
        return row if row is not None and row.status in ("CONFIRMED", "FAILED") else None

    return await eventually(done)


async def command(
    registry: MeterRegistry,
    executor: CommandExecutor,
    queries: DlmsQueries,
    meter: UUID,
    kind: CommandKind,
    args: CommandArgs | None = None,
) -> Any:
    """Request a remote command, run the executor, return the command's final row."""
    outcome = await asyncio.to_thread(
        registry.request_remote_command, meter, kind, args or CommandArgs(), ADMIN
    )
    return await finished(executor, queries, outcome.command.id)


async def history(settings: Settings, meter: UUID, topic_part: str) -> int:
    """Events of the meter whose topic contains ``topic_part``."""
    return int(
        await scalar(
            settings,
            "SELECT count(*) FROM {s}.meters_events WHERE originator_id = %s AND topic LIKE %s",
            meter,
            f"%{topic_part}%",
        )
    )


# -- invocation counters ---------------------------------------------------------------


async def test_hls_without_a_counter_object_uses_the_persisted_counter_and_resynchronises(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    sim = fleet.meter(0)
    meter = await quirky_meter(
        settings, registry, fleet, 0, Transport.WRAPPER, SecurityLevel.HLS_GMAC
    )
    # Another head-end used this meter's counters up to 500; it has no object that says so.
    assert sim.state.accept_client_ic(500)

    outcome = await service.collector.collect(await target_of(service, meter), {Task.REGISTERS})

    assert outcome[Task.REGISTERS].status == "OK", outcome
    assert sim.state.client_ic_last > 500
    assert await history(settings, meter, "InvocationCounterResynchronised") == 1
    strategy = await eventually(
        lambda: scalar(
            settings,
            "SELECT counter_resync_strategy FROM {s}.dlms_meter_state WHERE meter_id = %s",
            meter,
        )
    )
    assert strategy == "step"
    # The next session needs no resynchronisation.
    await service.collector.collect(await target_of(service, meter), {Task.REGISTERS})
    assert await history(settings, meter, "InvocationCounterResynchronised") == 1
    # A counter further ahead than one step: refused, saying what was tried.
    assert sim.state.accept_client_ic(sim.state.client_ic_last + 10_000_000)
    with pytest.raises(AssociationRefused, match=r"also after moving the invocation counter"):
        await service.collector.collect(await target_of(service, meter), {Task.REGISTERS})


async def test_a_counter_object_per_client_from_an_operators_profile(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    sim = fleet.meter(1)
    meter = await quirky_meter(settings, registry, fleet, 1, Transport.HDLC, SecurityLevel.HLS_GMAC)
    assert "per-client-counter" in service.catalogue  # loaded from HES_DLMS_PROFILE_DIR
    await asyncio.to_thread(
        registry.assign_dlms_profile, meter, "per-client-counter", service.catalogue.names, ADMIN
    )
    await eventually(
        lambda: scalar(
            settings, "SELECT profile FROM {s}.dlms_meter_state WHERE meter_id = %s", meter
        )
    )
    assert sim.state.accept_client_ic(7_000)

    outcome = await service.collector.collect(await target_of(service, meter), {Task.REGISTERS})

    assert outcome[Task.REGISTERS].ok
    reported = await scalar(
        settings,
        "SELECT meter_reported FROM {s}.dlms_invocation_counters WHERE meter_id = %s",
        meter,
    )
    assert reported == 7_000  # read from 0.0.43.1.1.255, the management client's own
    assert await history(settings, meter, "InvocationCounterResynchronised") == 0


# -- partial reads ---------------------------------------------------------------------


async def test_a_register_in_an_unknown_unit_is_stored_flagged_with_its_raw_unit_code(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    meter = await quirky_meter(settings, registry, fleet, 2, Transport.WRAPPER, SecurityLevel.NONE)

    outcome = await service.collector.collect(await target_of(service, meter), {Task.REGISTERS})

    registers = outcome[Task.REGISTERS]
    assert registers.status == "PARTIAL"
    flagged, wrong = sorted(registers.problems, key=lambda p: p.obis)
    assert (flagged.obis, flagged.stored) == ("1.0.13.7.0.255", True)
    serial = (await target_of(service, meter)).serial
    assert "unit_unverified" in flagged.reason and f"meter {serial}" in flagged.reason
    # Frequency in amperes is another quantity: not stored as frequency, named with its unit.
    assert (wrong.obis, wrong.stored) == ("1.0.14.7.0.255", False)
    assert "unit code 33 (A)" in wrong.reason and f"meter {serial}" in wrong.reason
    quantities = await eventually(
        lambda: scalar(
            settings,
            "SELECT count(DISTINCT quantity) FROM {s}.readings WHERE meter_id = %s HAVING "
            "count(DISTINCT quantity) = 11",
            meter,
        )
    )
    assert quantities == 11  # every other register stored, the odd one flagged
    quality = await scalar(
        settings,
        "SELECT quality FROM {s}.readings WHERE meter_id = %s AND quantity = %s",
        meter,
        PF,
    )
    assert quality & Quality.UNIT_UNVERIFIED
    unit = await scalar(
        settings,
        "SELECT unit_code::text || ':' || verified::text FROM {s}.dlms_register_units "
        "WHERE meter_id = %s AND obis = '1.0.13.7.0.255'",
        meter,
    )
    assert unit == "0:false"
    wrong_unit = await scalar(
        settings,
        "SELECT unit_code FROM {s}.dlms_register_units WHERE meter_id = %s "
        "AND obis = '1.0.14.7.0.255' AND NOT verified",
        meter,
    )
    assert wrong_unit == 33

    # On demand: the odd register is read and flagged, not an internal error.
    row = await command(
        registry,
        executor,
        queries,
        meter,
        CommandKind.READ_ON_DEMAND,
        CommandArgs(quantities=("power_factor", "voltage_l1")),
    )
    assert row.status == "CONFIRMED", row.reason
    flags = {v.obis: v.unverified for v in row.result.values}
    assert flags == {"1.0.13.7.0.255": True, "1.0.32.7.0.255": False}


async def test_denied_and_missing_objects_are_planned_out_and_the_task_is_partial(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    meter = await quirky_meter(settings, registry, fleet, 3, Transport.HDLC, SecurityLevel.LLS)
    scheduler = service.scheduler()
    await service.store.sync_tasks()
    await scalar(
        settings,
        "UPDATE {s}.dlms_collection_tasks SET next_due = CASE WHEN meter_id = %s THEN now() "
        "ELSE now() + interval '1 day' END RETURNING 1",
        meter,
    )

    assert await scheduler.run_once() == 1

    body = await gql(
        client,
        "query($id: ID!) { meterCollection(id: $id) { task status lastError"
        " problems { step obis reason stored } } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    tasks = {t["task"]: t for t in body["data"]["meterCollection"]}
    assert tasks["registers"]["status"] == "PARTIAL", tasks
    assert [p["obis"] for p in tasks["registers"]["problems"]] == ["1.0.14.7.0.255"]
    assert "may not be read by client 17" in tasks["registers"]["problems"][0]["reason"]
    assert tasks["events"]["status"] == "PARTIAL", tasks
    (missing,) = tasks["events"]["problems"]
    assert missing["obis"] == "0.0.99.98.2.255"
    assert "not in the association view" in missing["reason"]
    assert tasks["profile"]["status"] == "OK"
    stored = await eventually(
        lambda: scalar(
            settings,
            "SELECT count(DISTINCT quantity) FROM {s}.readings WHERE meter_id = %s "
            "HAVING count(DISTINCT quantity) >= 11",
            meter,
        )
    )
    assert stored == 11  # every register but the denied frequency
    caps = await gql(
        client,
        "query($id: ID!) { dlmsCapabilities(id: $id) { clientAddress clientAddressSource"
        " profile { name } plan { step obis attribute method status reason } } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    plan = caps["data"]["dlmsCapabilities"]
    assert (plan["clientAddress"], plan["profile"]["name"]) == (17, "idis")
    status = {(i["obis"], i["attribute"], i["method"]): i["status"] for i in plan["plan"]}
    assert status[("1.0.14.7.0.255", 2, 0)] == "DENIED"
    assert status[("0.0.99.98.2.255", 2, 0)] == "MISSING"
    assert status[("1.0.32.7.0.255", 2, 0)] == "READ"
    assert status[("0.0.96.3.10.255", 0, 1)] == "DENIED"  # the reader may not disconnect


# -- results are read, not guessed -----------------------------------------------------


async def test_hardware_fault_answers_fail_set_and_action_commands(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    sim = fleet.meter(4)
    meter = await quirky_meter(settings, registry, fleet, 4, Transport.HDLC, SecurityLevel.HLS_GMAC)
    before = sim.meter_now()

    sync = await command(registry, executor, queries, meter, CommandKind.SYNC_CLOCK)

    # The clock was close enough to pass a read-back check: only the SET result tells.
    assert abs(before - datetime.now(UTC).timestamp()) < 5
    assert sync.status == "FAILED"
    assert "hardware-fault" in sync.reason and "SET 8/0.0.1.0.0.255/2" in sync.reason
    assert f"meter {(await target_of(service, meter)).serial}" in sync.reason

    cut = await command(registry, executor, queries, meter, CommandKind.DISCONNECT)

    assert cut.status == "FAILED"
    assert "hardware-fault" in cut.reason and "0.0.96.3.10.255 method 1" in cut.reason
    assert sim.relay_connected


async def test_a_malformed_set_reply_is_a_failed_command_never_a_success(
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    settings: Settings,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    meter = await quirky_meter(
        settings, registry, fleet, 8, Transport.WRAPPER, SecurityLevel.HLS_GMAC
    )

    sync = await command(registry, executor, queries, meter, CommandKind.SYNC_CLOCK)

    assert sync.status == "FAILED"
    assert "not a SET response" in sync.reason and "outcome is unknown" in sync.reason


# -- event tables ----------------------------------------------------------------------


async def _kinds(client: Client, auth: Auth, meter: UUID, code: int) -> dict[int, set[str]]:
    """The kinds logged per event code, once ``code`` is among them (else empty)."""
    body = await gql(
        client,
        "query($id: ID!) { meterLogEvents(id: $id, first: 500) { code kind } }",
        {"id": str(meter)},
        auth(Role.VIEWER),
    )
    out: dict[int, set[str]] = {}
    for event in body["data"]["meterLogEvents"]:
        out.setdefault(event["code"], set()).add(event["kind"])
    return out if code in out else {}


async def test_dsmr_and_vendor_event_tables_classify_their_own_codes(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    dsmr = await quirky_meter(settings, registry, fleet, 5, Transport.WRAPPER, SecurityLevel.LLS)
    chosen = await gql(
        client,
        'mutation($id: ID!) { setMeterDlmsProfile(id: $id, profile: "dsmr") {'
        " __typename ... on DlmsProfileAssignment { profile effectiveProfile } } }",
        {"id": str(dsmr)},
        auth(Role.OPERATOR),
    )
    assert chosen["data"]["setMeterDlmsProfile"]["effectiveProfile"] == "dsmr", chosen
    await eventually(
        lambda: scalar(
            settings, "SELECT profile FROM {s}.dlms_meter_state WHERE meter_id = %s", dsmr
        )
    )
    outcome = await service.collector.collect(await target_of(service, dsmr), {Task.EVENTS})
    assert outcome[Task.EVENTS].ok
    kinds = await eventually(lambda: _kinds(client, auth, dsmr, 47))
    assert kinds[47] == {"OTHER"}  # DSMR's configuration change, not IDIS's magnetic tamper

    # A vendor model (matched by manufacturer): disconnector events at 30..35.
    vendor = await quirky_meter(
        settings,
        registry,
        fleet,
        6,
        Transport.WRAPPER,
        SecurityLevel.HLS_GMAC,
        manufacturer="Example Vendor",
    )
    cut = await command(registry, executor, queries, vendor, CommandKind.DISCONNECT)
    assert cut.status == "CONFIRMED", cut.reason
    shifted = await command(registry, executor, queries, vendor, CommandKind.SYNC_CLOCK)
    assert shifted.status == "CONFIRMED", shifted.reason  # the profile's clock method: shift
    await service.collector.collect(await target_of(service, vendor), {Task.EVENTS})
    kinds = await eventually(lambda: _kinds(client, auth, vendor, 33))
    assert kinds[33] == {"RELAY_DISCONNECTED"}
    assert kinds[62] == {"OTHER"}  # overcurrent on this table, not a remote disconnection


# -- link sizes ------------------------------------------------------------------------


async def test_small_pdu_and_hdlc_segments_with_repeated_flags_through_the_collector(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    sim = fleet.meter(7)
    meter = await quirky_meter(settings, registry, fleet, 7, Transport.HDLC, SecurityLevel.HLS_GMAC)

    outcome = await service.collector.collect(await target_of(service, meter), set(Task))

    assert {t: o.status for t, o in outcome.items()} == {t: "OK" for t in Task}, outcome
    assert sim.stats.blocks_sent > 10  # the view, the registers and the profile in blocks
    assert sim.stats.segmented_replies > 10
    rows = await eventually(
        lambda: scalar(
            settings,
            "SELECT count(*) FROM {s}.readings WHERE meter_id = %s HAVING count(*) > 100",
            meter,
        )
    )
    assert rows > 100


# -- discovery, profiles, client addresses ---------------------------------------------


async def test_a_models_view_is_read_once_kept_and_refreshed_on_command(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    model = f"Discovery {new_serial('M')}"
    first = register(
        registry, profile(fleet.ports[9], Transport.WRAPPER, SecurityLevel.LLS, None), model=model
    )
    second = register(
        registry, profile(fleet.ports[10], Transport.HDLC, SecurityLevel.LLS, None), model=model
    )
    for meter, index in ((first, 9), (second, 10)):
        version = set_simulated_keys(settings, registry, meter, fleet.serials[index])
        await meter_visible(settings, meter, version)
    before = [fleet.meter(i).objects.object_list_reads for i in (9, 10)]

    # Client addresses follow the security level: the meters registered none, LLS gives 17.
    for meter in (first, second):
        outcome = await service.collector.collect(await target_of(service, meter), {Task.EVENTS})
        assert outcome[Task.EVENTS].status == "OK", outcome

    reads = [
        fleet.meter(i).objects.object_list_reads - b for i, b in zip((9, 10), before, strict=True)
    ]
    assert reads == [1, 0]  # the model's view was read once, from the first meter
    query = (
        "query($id: ID!) { meter(id: $id) { dlmsCapabilities { clientAddress"
        " clientAddressSource discoveredFrom objects { obis } plan { obis status } } } }"
    )
    body = await gql(client, query, {"id": str(second)}, auth(Role.VIEWER))
    caps = body["data"]["meter"]["dlmsCapabilities"]
    assert (caps["clientAddress"], caps["clientAddressSource"]) == (17, "profile")
    assert caps["discoveredFrom"] == (await target_of(service, first)).serial
    assert "0.0.99.98.2.255" in {o["obis"] for o in caps["objects"]}
    assert {p["status"] for p in caps["plan"]} <= {"READ", "DENIED"}

    refreshed = await gql(
        client,
        "mutation($id: ID!) { refreshDlmsCapabilities(id: $id, waitSeconds: 0) {" + COMMAND + "} }",
        {"id": str(second)},
        auth(Role.OPERATOR),
    )
    command_id = refreshed["data"]["refreshDlmsCapabilities"]["id"]
    row = await finished(executor, queries, UUID(command_id))
    assert row.status == "CONFIRMED" and row.result.objects > 10, row
    assert fleet.meter(10).objects.object_list_reads - before[1] == 1


# -- pushes ----------------------------------------------------------------------------


async def test_models_push_with_their_own_layouts_side_by_side(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    fleet_meter = register(registry, profile(free_ports(1)), serial=new_serial("PUSHF"))
    vendor_meter = register(
        registry,
        profile(free_ports(1)),
        serial=new_serial("PUSHV"),
        manufacturer="Example Vendor",
    )
    await meter_visible(settings, vendor_meter)
    rejected_pushes: list[PushRejection] = []

    class Kept:
        """Dead letters kept here (the session's stream is counted by test_dlms_push)."""

        async def reject(self, rejections: Sequence[PushRejection]) -> None:
            rejected_pushes.extend(rejections)

    wired = service.listener
    listener = PushListener(wired.outlet, Kept(), wired.directory, "127.0.0.1", 0)
    vendor = service.catalogue.get("vendor-example")
    energy, instant = (PushLayout.of(spec) for spec in vendor.push)
    serials = {m: (await target_of(service, m)).serial for m in (fleet_meter, vendor_meter)}
    at = datetime.now(UTC).replace(microsecond=0)

    def push(meter: UUID, values: tuple[int, ...], layout: PushLayout | None = None) -> Received:
        apdu = (
            encode_notification(f"HES{serials[meter]}", at, values, layout=layout)
            if layout is not None
            else encode_notification(f"HES{serials[meter]}", at, values)
        )
        return Received("127.0.0.1:1", wrapper.decode(wrapper.encode(1, 1, apdu)).apdu, at)

    accepted, rejected = await listener.process(
        [
            push(fleet_meter, (1000, 0, 2301, 512)),
            push(vendor_meter, (2000, 5), energy),
            push(vendor_meter, (2302, 611, 5001), instant),
            push(vendor_meter, (1000, 0, 2301, 512)),  # the fleet's layout is not this model's
        ]
    )

    assert (accepted, rejected) == (3, 1)
    (letter,) = rejected_pushes
    assert letter.rule == "malformed" and "matches none of its model's push layouts" in (
        letter.message
    )
    count = "SELECT count(*) FROM {s}.readings WHERE meter_id = %s HAVING count(*) >= %s"
    assert await eventually(lambda: scalar(settings, count, fleet_meter, 4)) == 4
    assert await eventually(lambda: scalar(settings, count, vendor_meter, 5)) == 5
    frequency = await scalar(
        settings,
        "SELECT value FROM {s}.readings WHERE meter_id = %s AND quantity = %s",
        vendor_meter,
        BY_OBIS["1.0.14.7.0.255"].id,
    )
    assert frequency == 50.01


# -- REST ------------------------------------------------------------------------------


async def test_profiles_assignment_discovery_and_capabilities_over_rest(
    settings: Settings,
    client: Client,
    auth: Auth,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    executor: CommandExecutor,
    queries: DlmsQueries,
) -> None:
    listed = await client.get("/api/v1/dlms/profiles", headers=auth(Role.VIEWER))
    assert listed.status_code == 200, listed.text
    profiles = {p["name"]: p for p in listed.json()}
    assert {"idis", "dsmr", "vendor-example"} <= set(profiles)
    assert profiles["idis"]["default"] and profiles["idis"]["eventTable"] == "IDIS"
    assert profiles["idis"]["pushLayouts"][0]["values"] == settings.dlms.push_layout.split(",")
    assert profiles["vendor-example"]["counterSource"] == "persisted"

    meter = register(
        registry,
        profile(fleet.ports[9], Transport.WRAPPER, SecurityLevel.NONE, None),
        model=f"Rest {new_serial('M')}",
    )
    await meter_visible(settings, meter)
    path = f"/api/v1/meters/{meter}/dlms-profile"
    unknown = await client.put(path, json={"profile": "nope"}, headers=auth(Role.OPERATOR))
    assert unknown.status_code == 422 and "no DLMS profile 'nope'" in unknown.text
    viewer = await client.put(path, json={"profile": "dsmr"}, headers=auth(Role.VIEWER))
    assert viewer.status_code == 403
    chosen = await client.put(path, json={"profile": "dsmr"}, headers=auth(Role.OPERATOR))
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["effectiveProfile"] == "dsmr"

    requested = await client.post(
        f"/api/v1/commands/meters/{meter}/discover", headers=auth(Role.OPERATOR)
    )
    assert requested.status_code == 202, requested.text
    assert requested.json()["kind"] == "DISCOVER"
    row = await finished(executor, queries, UUID(requested.json()["id"]))
    assert row.status == "CONFIRMED" and row.result.objects, row

    async def capabilities() -> dict[str, Any] | None:
        got = await client.get(
            f"/api/v1/meters/{meter}/dlms-capabilities", headers=auth(Role.VIEWER)
        )
        body: dict[str, Any] = got.json()
        return body if body["profile"]["name"] == "dsmr" and body["objects"] else None

    caps = await eventually(capabilities)
    assert (caps["clientAddress"], caps["clientAddressSource"]) == (16, "profile")
    plan = {(i["obis"], i["attribute"]): i["status"] for i in caps["plan"]}
    assert plan[("0.0.99.98.0.255", 2)] == "DENIED"  # no event logs for the public client
    assert plan[("0.0.99.98.1.255", 2)] == "MISSING"  # DSMR's fraud log: not on this meter
    collection = await client.get(f"/api/v1/meters/{meter}/collection", headers=auth(Role.VIEWER))
    assert collection.status_code == 200 and isinstance(collection.json(), list)
    refused = await client.get(
        f"/api/v1/meters/{meter}/dlms-capabilities", headers=auth(Role.CUSTOMER, customer="X")
    )
    assert refused.status_code == 403
