"""Collection from simulated meters over wrapper and HDLC, without security, LLS and HLS-GMAC,
into the read models; ledger-driven catch-up; wrong keys; the scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from adapters.dlms.cosem import CLOCK, CLOCK_OBIS, LOAD_PROFILE
from adapters.dlms.session import (
    AssociationRefused,
    AttributeRef,
    CounterRejected,
    MeterSession,
    NotDialled,
)
from adapters.dlms.simulator import SimulatedFleet, start_simulated_meters
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.collection import Schedules, Task
from domain.obis import BY_OBIS
from domain.values import SecurityLevel, Transport
from tests.integration.dlms_support import (
    ADMIN,
    commission,
    dlms_settings,
    eventually,
    free_ports,
    meter_visible,
    meters_status,
    profile,
    register,
    scalar,
    set_simulated_keys,
)
from tests.worker_thread import WorkerThread

pytestmark = pytest.mark.integration
METERS = 6
E_IMPORT = BY_OBIS["1.0.1.8.0.255"].id
VOLTAGE = BY_OBIS["1.0.32.7.0.255"].id


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[SimulatedFleet]:
    """Simulated meters on free ports."""
    running = await start_simulated_meters(METERS, free_ports(METERS))
    yield running
    await running.close()


@pytest.fixture(scope="module")
async def service(settings: Settings) -> AsyncIterator[DlmsService]:
    """The DLMS side of the head-end, opened on the test schema and streams."""
    dlms = DlmsService(dlms_settings(settings))
    await dlms.open()
    yield dlms
    await dlms.close()


async def readings(settings: Settings, meter: UUID, quantity: int) -> int:
    """Stored raw readings of one meter and quantity."""
    return int(
        await scalar(
            settings,
            "SELECT count(*) FROM {s}.readings WHERE meter_id = %s AND quantity = %s",
            meter,
            quantity,
        )
    )


@pytest.mark.parametrize(
    ("index", "transport", "security"),
    [
        (0, Transport.WRAPPER, SecurityLevel.NONE),
        (1, Transport.HDLC, SecurityLevel.NONE),
        (2, Transport.WRAPPER, SecurityLevel.LLS),
        (3, Transport.HDLC, SecurityLevel.LLS),
        (4, Transport.WRAPPER, SecurityLevel.HLS_GMAC),
        (5, Transport.HDLC, SecurityLevel.HLS_GMAC),
    ],
)
async def test_registers_profile_and_event_log_reach_the_read_models(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
    index: int,
    transport: Transport,
    security: SecurityLevel,
) -> None:
    port = fleet.ports[index]
    meter = register(registry, profile(port, transport, security))
    version = 0
    if security is not SecurityLevel.NONE:
        version = set_simulated_keys(settings, registry, meter, fleet.serials[index])
    await meter_visible(settings, meter, version)
    target = (await service.store.targets([meter]))[meter]

    outcome = await service.collector.collect(target, set(Task))

    assert outcome[Task.REGISTERS].ok and outcome[Task.PROFILE].ok
    if security is SecurityLevel.NONE:
        # the public client may not read event logs: a refusal, not a failure to retry
        assert outcome[Task.EVENTS].denied
    else:
        assert outcome[Task.EVENTS].ok
    # registers: every quantity of a three-phase meter, scaled (volts around 230)
    await eventually(lambda: _at_least(settings, meter, VOLTAGE, 1))
    first = (
        "SELECT {c} FROM {{s}}.readings WHERE meter_id = %s AND quantity = %s ORDER BY ts LIMIT 1"
    )
    voltage = await scalar(settings, first.format(c="value"), meter, VOLTAGE)
    read_at = await scalar(settings, first.format(c="ts"), meter, VOLTAGE)
    if fleet.meter(index).model.in_outage(read_at.timestamp()):
        assert voltage == 0.0  # the simulated supply happened to be down at that minute
    else:
        assert 180 < voltage < 260
    # load profile: the configured days of 15-minute intervals, on the grid
    expected = service.settings.dlms.profile_days * 96 - 8
    await eventually(lambda: _at_least(settings, meter, E_IMPORT, expected))
    off_grid = await scalar(
        settings,
        "SELECT count(*) FROM {s}.readings WHERE meter_id = %s AND quantity = %s "
        "AND extract(epoch FROM ts)::bigint %% 900 <> 0",
        meter,
        E_IMPORT,
    )
    assert off_grid <= 1  # the register read itself may land off the grid
    received = await scalar(
        settings,
        "SELECT sum(length(replace(received::text, '0', ''))) FROM {s}.dlms_profile_ledger "
        "WHERE meter_id = %s AND profile = %s",
        meter,
        LOAD_PROFILE,
    )
    assert received >= expected
    stats = await scalar(
        settings, "SELECT successes FROM {s}.dlms_comm_stats WHERE meter_id = %s", meter
    )
    assert stats == 1
    if security is SecurityLevel.HLS_GMAC:
        counters = await scalar(
            settings,
            "SELECT server_last > 0 AND client_next > meter_reported "
            "FROM {s}.dlms_invocation_counters WHERE meter_id = %s",
            meter,
        )
        assert counters is True


async def _at_least(settings: Settings, meter: UUID, quantity: int, count: int) -> bool:
    return await readings(settings, meter, quantity) >= count


async def test_second_collection_reads_only_the_gap_the_ledger_shows(
    settings: Settings,
    projection: SupervisedProjection,
    reading_worker: WorkerThread,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    meter = register(registry, profile(fleet.ports[0]))
    await meter_visible(settings, meter)
    target = (await service.store.targets([meter]))[meter]
    await service.collector.collect(target, {Task.PROFILE})
    # Forget two hours of yesterday: the next run reads exactly that gap (and the newest slot).
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    await scalar(
        settings,
        "UPDATE {s}.dlms_profile_ledger SET received = overlay(received placing "
        "B'00000000' from 41) WHERE meter_id = %s AND day = %s RETURNING 1",
        meter,
        yesterday,
    )
    reads: list[tuple[datetime, datetime]] = []
    original = service.collector._read_profile

    async def spy(session, target, now, horizon, ledger, out):  # type: ignore[no-untyped-def]
        await original(session, target, now, horizon, ledger, out)
        reads.extend(requested for requested, _ in out.profile_reads)

    service.collector._read_profile = spy  # type: ignore[method-assign]
    try:
        await service.collector.collect(target, {Task.PROFILE})
    finally:
        service.collector._read_profile = original  # type: ignore[method-assign]
    midnight = datetime.combine(yesterday, datetime.min.time(), UTC)
    gap = (midnight + timedelta(minutes=15 * 40), midnight + timedelta(minutes=15 * 47))
    assert gap in reads
    assert len(reads) <= 2  # the gap, and at most the interval captured since the first run
    missing = await scalar(
        settings,
        "SELECT count(*) FROM {s}.dlms_profile_ledger WHERE meter_id = %s AND day = %s "
        "AND substring(received::text from 41 for 8) = '11111111'",
        meter,
        yesterday,
    )
    assert missing == 1


async def test_wrong_keys_fail_clearly_and_store_nothing(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    meter = register(registry, profile(fleet.ports[4], Transport.WRAPPER, SecurityLevel.HLS_GMAC))
    version = set_simulated_keys(settings, registry, meter, fleet.serials[4], wrong=True)
    await meter_visible(settings, meter, version)
    target = (await service.store.targets([meter]))[meter]

    with pytest.raises(AssociationRefused, match="HLS_GMAC") as refused:
        await service.collector.collect(target, set(Task))

    assert "wrong keys" in refused.value.message or "refused" in refused.value.message
    assert await readings(settings, meter, E_IMPORT) == 0
    assert (
        await scalar(
            settings, "SELECT count(*) FROM {s}.dlms_profile_ledger WHERE meter_id = %s", meter
        )
        == 0
    )
    last_error = await scalar(
        settings, "SELECT last_error FROM {s}.dlms_comm_stats WHERE meter_id = %s", meter
    )
    assert "HLS_GMAC" in last_error
    assert (
        await scalar(
            settings, "SELECT successes FROM {s}.dlms_comm_stats WHERE meter_id = %s", meter
        )
        == 0
    )


async def test_a_replayed_server_counter_is_rejected(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    meter = register(registry, profile(fleet.ports[5], Transport.WRAPPER, SecurityLevel.HLS_GMAC))
    version = set_simulated_keys(settings, registry, meter, fleet.serials[5])
    await meter_visible(settings, meter, version)
    # The head-end has seen a counter far above anything the meter will send next.
    await scalar(
        settings,
        "INSERT INTO {s}.dlms_invocation_counters (meter_id, key_version, client_next, "
        "server_last) VALUES (%s, %s, 0, 4294967000) RETURNING 1",
        meter,
        version,
    )
    target = (await service.store.targets([meter]))[meter]
    with pytest.raises((CounterRejected, AssociationRefused), match=r"invocation counter|replay"):
        await service.collector.collect(target, {Task.REGISTERS})
    assert await readings(settings, meter, VOLTAGE) == 0


async def test_scheduler_collects_due_meters_and_plans_the_next_run(
    settings: Settings,
    projection: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    area = "Scheduled Zone"
    meter = register(registry, profile(fleet.ports[1], Transport.HDLC), area=area)
    unreachable = register(registry, profile(free_ports(1)), area=area)
    commission(registry, meter, unreachable)
    await meters_status(settings, "COMMISSIONED", meter, unreachable)
    scheduler = service.scheduler()
    scheduler.schedules = Schedules(groups={area: {Task.REGISTERS: 300.0}})
    await scheduler.store.sync_tasks()
    # Only this test's meters are due now (others of the session are pushed into the future).
    await scalar(
        settings,
        "UPDATE {s}.dlms_collection_tasks SET next_due = now() + interval '1 day' "
        "WHERE meter_id NOT IN (%s, %s) RETURNING 1",
        meter,
        unreachable,
    )
    ran = await scheduler.run_once()
    assert ran == 2
    due = {
        task: await scalar(
            settings,
            "SELECT extract(epoch FROM next_due - now()) FROM {s}.dlms_collection_tasks "
            "WHERE meter_id = %s AND task = %s",
            meter,
            task.value,
        )
        for task in Task
    }
    assert 0 < due[Task.REGISTERS] <= 300
    assert 0 < due[Task.EVENTS] <= 3600  # the refused event log keeps its schedule
    failures = await scalar(
        settings,
        "SELECT min(failures) FROM {s}.dlms_collection_tasks WHERE meter_id = %s",
        unreachable,
    )
    assert failures == 1
    retry_in = await scalar(
        settings,
        "SELECT max(extract(epoch FROM next_due - now())) FROM {s}.dlms_collection_tasks "
        "WHERE meter_id = %s",
        unreachable,
    )
    assert retry_in <= 31
    error = await scalar(
        settings, "SELECT last_error FROM {s}.dlms_comm_stats WHERE meter_id = %s", unreachable
    )
    assert "no TCP connection" in error
    attempts = await scalar(
        settings, "SELECT attempts FROM {s}.dlms_comm_stats WHERE meter_id = %s", unreachable
    )
    assert attempts == settings.dlms.retries + 1


async def test_one_session_per_meter_at_a_time_but_meters_in_parallel(
    settings: Settings,
    projection: SupervisedProjection,
    registry: MeterRegistry,
    fleet: SimulatedFleet,
    service: DlmsService,
) -> None:
    first = register(registry, profile(fleet.ports[0]))
    second = register(registry, profile(fleet.ports[1], Transport.HDLC))
    await meter_visible(settings, second)
    targets = await service.store.targets([first, second])
    active: dict[UUID, int] = {first: 0, second: 0}
    most: dict[UUID, int] = {first: 0, second: 0}
    overlap = 0

    def job(meter: UUID) -> Callable[[MeterSession], Awaitable[object]]:
        async def run(session: MeterSession) -> object:
            nonlocal overlap
            active[meter] += 1
            most[meter] = max(most[meter], active[meter])
            overlap = max(overlap, sum(active.values()))
            value = await session.get(AttributeRef(CLOCK, CLOCK_OBIS, 2))
            await asyncio.sleep(0.05)
            active[meter] -= 1
            return value

        return run

    jobs = [service.access.run(targets[m], job(m)) for m in (first, second) * 4]
    await asyncio.gather(*jobs)

    assert most == {first: 1, second: 1}
    assert overlap == 2  # the two meters did run at the same time


async def test_only_commissioned_dialled_meters_get_collection_tasks(
    settings: Settings,
    projection: SupervisedProjection,
    registry: MeterRegistry,
    service: DlmsService,
) -> None:
    """Registered (not installed), NONE (push/HTTP only) and decommissioned meters: no tasks."""
    port = free_ports(1)
    collected = register(registry, profile(port))
    registered = register(registry, profile(port))
    never_dialled = register(registry, profile(port, Transport.NONE))
    retired = register(registry, profile(port))
    commission(registry, collected, never_dialled, retired)
    registry.decommission_meter(retired, "removed from site", ADMIN)
    await meters_status(settings, "COMMISSIONED", collected, never_dialled)
    await meters_status(settings, "DECOMMISSIONED", retired)
    await meters_status(settings, "REGISTERED", registered)
    await service.store.sync_tasks()

    async def tasks(meter: UUID) -> int:
        return int(
            await scalar(
                settings,
                "SELECT count(*) FROM {s}.dlms_collection_tasks WHERE meter_id = %s",
                meter,
            )
        )

    assert await tasks(collected) == len(Task)
    assert [await tasks(m) for m in (registered, never_dialled, retired)] == [0, 0, 0]
    # A meter that changes to NONE loses its tasks at the next sync; and nothing dials it.
    registry.change_connection_profile(collected, profile(port, Transport.NONE), ADMIN)

    async def none_shown() -> bool:
        transport = await scalar(
            settings, "SELECT connection->>'transport' FROM {s}.meters WHERE id = %s", collected
        )
        return bool(transport == "NONE")

    await eventually(none_shown)
    await service.store.sync_tasks()
    assert await tasks(collected) == 0
    target = (await service.store.targets([never_dialled]))[never_dialled]
    with pytest.raises(NotDialled, match="never dialled"):
        await service.access.run(
            target, lambda session: session.get(AttributeRef(CLOCK, CLOCK_OBIS, 2))
        )
