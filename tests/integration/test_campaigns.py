"""Campaigns on real PostgreSQL: the runner's limits, pause/resume/cancel, retries, restarts,
no double start, and the fleet commands' events — with the meter end replaced by a double
(tests/integration/fleet_doubles.py); the real DLMS end is in test_fleet_dlms.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from uuid import UUID

import pytest

from adapters.dlms.session import SessionFactory
from bootstrap.applications import fleet_operations
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.campaign import (
    Campaign,
    CampaignKind,
    CampaignLimits,
    CampaignSpec,
    CampaignStatus,
    CohortFilter,
    MeterState,
    campaign_command_id,
)
from domain.load_limit import LoadLimit
from domain.meta import EventMeta
from domain.meter import Meter, meter_id
from domain.remote_commands import CommandStatus
from domain.tou_calendar import DayProfile, DaySwitch, Season, TouCalendar, WeekProfile
from domain.values import ConnectionProfile, MeterSpec
from projections.fleet_queries import get_campaign, resolve_cohort
from tests.conftest import new_serial
from tests.integration.dlms_support import ADMIN, dlms_settings, eventually, scalar
from tests.integration.fleet_doubles import FakeDevice, FakeFactory, FakeMeter

pytestmark = pytest.mark.integration

LIMIT = LoadLimit(threshold_normal_w=6000.0, threshold_emergency_w=3000.0)
CALENDAR = TouCalendar(
    name="TOU1",
    seasons=(Season(name="All", start=date(2000, 1, 1), week="WK"),),
    weeks=(WeekProfile(name="WK", days=(1, 1, 1, 1, 1, 1, 1)),),
    days=(
        DayProfile(
            day_id=1,
            switches=(DaySwitch(start=time(0, 0), tier=1), DaySwitch(start=time(7, 0), tier=2)),
        ),
    ),
)


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    """The meter registry of the test schema."""
    app = MeterRegistry(env=settings.database.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture(scope="module")
def fleet(settings: Settings) -> Iterator[FleetOperations]:
    """The fleet operations application of the test schema."""
    app = fleet_operations(settings.database)
    yield app
    app.close()


@pytest.fixture
async def device() -> FakeDevice:
    """A fresh meter-end double for each test."""
    return FakeDevice(hold=0.05)


@pytest.fixture
async def service(
    settings: Settings,
    device: FakeDevice,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    fleet_worker: SupervisedProjection,
) -> AsyncIterator[DlmsService]:
    """The DLMS side over the double, opened on the test schema."""
    dlms = DlmsService(
        dlms_settings(settings), factory=cast(SessionFactory, FakeFactory()), device=device
    )
    await dlms.open()
    yield dlms
    await dlms.close()


def register(
    registry: MeterRegistry, device: FakeDevice, cell: str | None, model: str = "X1"
) -> str:
    """A meter on a (never dialled for real) loopback address, in concentrator ``cell``."""
    serial = new_serial("FLT")
    spec = MeterSpec(
        serial=serial,
        manufacturer="ACME",
        model=model,
        firmware="1.0",
        phases=3,
        region="FleetTest",
        area="A",
        connection=ConnectionProfile(host="127.0.0.1", port=4059),
        concentrator_id=cell,
    )
    registry.register_meter(spec, ADMIN)
    device.cells[serial] = cell or serial
    return serial


async def visible(settings: Settings, serials: list[str]) -> None:
    """Wait until the meters read model shows every serial."""

    async def check() -> bool:
        n = await scalar(
            settings, "SELECT count(*) FROM {s}.meters WHERE serial = ANY(%s)", serials
        )
        return bool(n == len(serials))

    await eventually(check)


async def start(
    settings: Settings,
    service: DlmsService,
    serials: list[str],
    kind: CampaignKind = CampaignKind.LOAD_LIMIT,
    **extra: Any,
) -> UUID:
    """Start a campaign over ``serials`` (resolved from the read model, as the API does)."""
    limits = extra.pop("limits", CampaignLimits())
    spec = CampaignSpec(
        name=f"test {kind}",
        kind=kind,
        cohort=CohortFilter(serials=tuple(serials)),
        limits=limits,
        load_limit=LIMIT if kind is CampaignKind.LOAD_LIMIT else None,
        **extra,
    )
    await visible(settings, serials)
    cohort = await resolve_cohort(service.pool, settings.database.schema, spec.cohort)
    outcome = await asyncio.to_thread(service.fleet.start_campaign, spec, cohort, ADMIN)
    campaign_id = outcome.aggregate.id

    async def projected() -> bool:
        return await get_campaign(service.pool, settings.database.schema, campaign_id) is not None

    await eventually(projected)
    return campaign_id


async def settle(service: DlmsService, campaign_id: UUID, statuses: tuple[str, ...]) -> None:
    """Wait until the read model shows each running meter's command at its attempt in one of
    ``statuses`` (the executor and the runner read that projection)."""

    async def caught_up() -> bool:
        campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
        running = {
            campaign_command_id(campaign_id, s): p.attempts
            for s, p in campaign.meters.items()
            if p.state is MeterState.RUNNING
        }
        rows = await rows_of(service, list(running))
        return all(
            (cid in rows and rows[cid][1] == attempt and rows[cid][0] in statuses)
            for cid, attempt in running.items()
        )

    await eventually(caught_up)


async def rows_of(service: DlmsService, ids: list[UUID]) -> dict[UUID, tuple[str, int]]:
    """Status and attempt of these commands in the remote_commands read model."""
    async with service.pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT command_id, status, attempt FROM {service.settings.database.schema}"
            ".remote_commands WHERE command_id = ANY(%s)",
            (ids,),
        )
        return {r[0]: (r[1], r[2]) for r in await cursor.fetchall()}


async def drive(
    service: DlmsService,
    campaign_id: UUID,
    *,
    runners: int = 1,
    rounds: int = 60,
    check: Any = None,
) -> Campaign:
    """Run runner rounds and executor rounds until the campaign is over."""
    pool = [service.campaign_runner() for _ in range(runners)]
    executor = service.executor()
    for _ in range(rounds):
        await asyncio.gather(*(r.run_once() for r in pool))
        campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
        if check is not None:
            check(campaign)
        if campaign.status not in (CampaignStatus.RUNNING,) and not any(
            p.state is MeterState.RUNNING for p in campaign.meters.values()
        ):
            return campaign
        await settle(service, campaign_id, ("REQUESTED", "CONFIRMED", "FAILED"))
        await executor.run_once()
        await settle(service, campaign_id, ("CONFIRMED", "FAILED"))
    raise AssertionError("campaign did not finish")


def within_limits(limits: CampaignLimits) -> Any:
    """A check that the aggregate never holds more running meters than the limits allow."""

    def check(campaign: Campaign) -> None:
        running = [p for p in campaign.meters.values() if p.state is MeterState.RUNNING]
        assert len(running) <= limits.concurrency
        cells: dict[str, int] = {}
        for p in running:
            cells[p.member.cell] = cells.get(p.member.cell, 0) + 1
        assert max(cells.values(), default=0) <= limits.per_cell

    return check


def commands_requested(registry: MeterRegistry, serial: str, command_id: UUID) -> int:
    """How many times the meter's history requests the command (must be once)."""
    events = registry.repository.event_store.get(meter_id(serial))
    return sum(
        1
        for e in events
        if isinstance(e, Meter.RemoteCommandRequested) and e.command_id == command_id
    )


async def test_runner_respects_concurrency_and_cell_limits(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    serials = [register(registry, device, "C1") for _ in range(3)]
    serials += [register(registry, device, "C2") for _ in range(2)]
    serials += [register(registry, device, None) for _ in range(2)]
    limits = CampaignLimits(concurrency=3, per_cell=1, max_attempts=1)
    campaign_id = await start(settings, service, serials, limits=limits)

    done = await drive(service, campaign_id, check=within_limits(limits))

    assert done.status is CampaignStatus.COMPLETED
    assert done.counts()[MeterState.SUCCEEDED] == 7
    assert device.max_active <= 3 and device.max_per_cell <= 1
    assert all(device.meters[s].limit == LIMIT for s in serials)
    progress = await eventually(
        lambda: _finished_progress(service, settings, campaign_id), seconds=20
    )
    assert (progress.succeeded, progress.pending, progress.running) == (7, 0, 0)
    assert progress.throughput_per_minute and progress.eta_seconds == 0.0


async def _finished_progress(service: DlmsService, settings: Settings, campaign_id: UUID) -> Any:
    progress = await get_campaign(service.pool, settings.database.schema, campaign_id)
    return progress if progress and progress.status is CampaignStatus.COMPLETED else None


async def test_failed_meters_are_retried_up_to_the_bound(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    flaky, broken, fine = (register(registry, device, None) for _ in range(3))
    device.fail_writes[flaky] = 1
    device.fail_writes[broken] = 5
    limits = CampaignLimits(concurrency=5, per_cell=1, max_attempts=2)
    campaign_id = await start(settings, service, [flaky, broken, fine], limits=limits)

    done = await drive(service, campaign_id)

    assert done.meters[flaky].state is MeterState.SUCCEEDED
    assert done.meters[flaky].attempts == 2
    assert done.meters[broken].state is MeterState.FAILED
    assert done.meters[broken].attempts == 2
    assert "write refused" in (done.meters[broken].reason or "")
    assert done.meters[fine].state is MeterState.SUCCEEDED
    command = registry.get(meter_id(broken)).command(campaign_command_id(campaign_id, broken))
    assert command.status is CommandStatus.FAILED and command.attempt == 2
    assert commands_requested(registry, broken, command.id) == 1


async def test_pause_resume_and_cancel(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    serials = [register(registry, device, "P1") for _ in range(4)]
    limits = CampaignLimits(concurrency=1, per_cell=1, max_attempts=1)
    campaign_id = await start(settings, service, serials, limits=limits)
    runner = service.campaign_runner()
    executor = service.executor()

    assert await runner.run_once() == 1
    await asyncio.to_thread(service.fleet.pause_campaign, campaign_id, ADMIN)
    await settle(service, campaign_id, ("REQUESTED",))
    await executor.run_once()
    await settle(service, campaign_id, ("CONFIRMED", "FAILED"))
    assert await runner.run_once() == 0  # paused: the running meter finishes, none starts
    paused = await asyncio.to_thread(service.fleet.campaign, campaign_id)
    assert paused.status is CampaignStatus.PAUSED
    assert paused.counts()[MeterState.SUCCEEDED] == 1
    assert paused.counts()[MeterState.PENDING] == 3

    await asyncio.to_thread(service.fleet.resume_campaign, campaign_id, ADMIN)
    assert await runner.run_once() == 1
    await asyncio.to_thread(service.fleet.cancel_campaign, campaign_id, "enough", ADMIN)
    done = await drive(service, campaign_id)
    assert done.status is CampaignStatus.CANCELLED
    assert done.counts() == {
        MeterState.PENDING: 0,
        MeterState.RUNNING: 0,
        MeterState.AWAITING_ACTIVATION: 0,
        MeterState.SUCCEEDED: 2,
        MeterState.FAILED: 0,
        MeterState.SKIPPED: 2,
    }

    async def shown() -> bool:
        row = await get_campaign(service.pool, settings.database.schema, campaign_id)
        return row is not None and (row.status, row.skipped, row.succeeded) == (
            CampaignStatus.CANCELLED,
            2,
            2,
        )

    await eventually(shown)


async def test_a_restarted_runner_continues_and_never_double_starts(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    serials = [register(registry, device, None) for _ in range(4)]
    limits = CampaignLimits(concurrency=4, per_cell=1, max_attempts=1)
    campaign_id = await start(settings, service, serials, limits=limits)

    # A runner died after recording MeterStarted for two meters, before asking them.
    def started_then_died(c: Campaign, meta: EventMeta) -> None:
        for serial in serials[:2]:
            c.start_meter(serial, meta)

    await asyncio.to_thread(service.fleet.record_campaign, campaign_id, started_then_died, ADMIN)

    # Three fresh runners (one per restarted process) race on the same campaign.
    done = await drive(service, campaign_id, runners=3)

    assert done.counts()[MeterState.SUCCEEDED] == 4
    for serial in serials:
        command_id = campaign_command_id(campaign_id, serial)
        assert commands_requested(registry, serial, command_id) == 1
        assert registry.get(meter_id(serial)).command(command_id).attempt == 1
    starts = [
        e
        for e in service.fleet.repository.event_store.get(campaign_id)
        if isinstance(e, Campaign.MeterStarted)
    ]
    assert sorted(e.serial for e in starts) == sorted(serials)


async def test_firmware_campaign_records_every_step_and_resumes_a_dropped_transfer(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    image = bytes(range(256)) * 40  # 10,240 bytes: 103 blocks of the double's 100
    outcome = await asyncio.to_thread(
        service.fleet.upload_image, image, "FW-2.0", "ACME", "X1", ADMIN
    )
    image_id = outcome.aggregate.id
    dropping, refusing, fine = (register(registry, device, "F1") for _ in range(3))
    other_model = register(registry, device, "F1", model="Y9")
    device.drop_at_block[dropping] = 40
    device.refuse_verify[refusing] = 2
    limits = CampaignLimits(concurrency=3, per_cell=3, max_attempts=1)
    campaign_id = await start(
        settings,
        service,
        [dropping, refusing, fine, other_model],
        CampaignKind.FIRMWARE,
        image_id=image_id,
        limits=limits,
    )

    done = await drive(service, campaign_id)

    assert done.meters[other_model].state is MeterState.SKIPPED
    assert "not the image's target" in (done.meters[other_model].reason or "")
    assert done.meters[fine].state is MeterState.SUCCEEDED
    assert done.meters[dropping].state is MeterState.SUCCEEDED
    assert device.blocks_sent[dropping] == 103  # resumed: no block sent twice
    assert done.meters[refusing].state is MeterState.FAILED
    assert "step verify with meter result code 2" in (done.meters[refusing].reason or "")

    events = list(registry.repository.event_store.get(meter_id(dropping)))
    steps = [e.step.value for e in events if isinstance(e, Meter.FirmwareUpdateStepped)]
    assert steps[0] == "TRANSFER_STARTED"
    assert steps.count("PROGRESS") == 9  # 10 % .. 90 %, each once, across the two sessions
    assert steps[-3:] == ["TRANSFERRED", "VERIFIED", "ACTIVATED"]
    assert registry.get(meter_id(dropping)).spec.firmware == "FW-2.0"
    failed = [
        e
        for e in registry.repository.event_store.get(meter_id(refusing))
        if isinstance(e, Meter.FirmwareUpdateStepped) and e.step.value == "FAILED"
    ]
    assert [(e.failed_step, e.result_code) for e in failed] == [("verify", 2)]

    async def firmware_shown() -> bool:
        shown = await scalar(
            settings, "SELECT firmware FROM {s}.meters WHERE serial = %s", dropping
        )
        return bool(shown == "FW-2.0")

    await eventually(firmware_shown)


async def test_calendar_campaign_compares_the_read_back(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    plan = await asyncio.to_thread(
        service.fleet.save_tou_plan, f"TOU {new_serial('P')}", CALENDAR, ADMIN
    )
    good, twisted = (register(registry, device, None) for _ in range(2))
    device.calendar_twist.add(twisted)
    campaign_id = await start(
        settings,
        service,
        [good, twisted],
        CampaignKind.CALENDAR,
        tou_plan_id=plan.aggregate.id,
        tou_plan_version=1,
        limits=CampaignLimits(max_attempts=1),
    )

    done = await drive(service, campaign_id)

    assert done.meters[good].state is MeterState.SUCCEEDED
    assert device.meters[good].passive == CALENDAR
    assert done.meters[twisted].state is MeterState.FAILED
    assert "differs in name" in (done.meters[twisted].reason or "")


async def test_a_scheduled_activation_frees_the_slot_and_is_confirmed_after_its_time(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    outcome = await asyncio.to_thread(
        service.fleet.upload_image, b"\x07" * 500, "FW-3.0", "ACME", "X1", ADMIN
    )
    serials = [register(registry, device, "S1") for _ in range(3)]
    at = datetime.now(UTC) + timedelta(seconds=4)
    campaign_id = await start(
        settings,
        service,
        serials,
        CampaignKind.FIRMWARE,
        image_id=outcome.aggregate.id,
        activate_at=at,
        limits=CampaignLimits(concurrency=1, per_cell=1, max_attempts=1),
    )
    runner, executor = service.campaign_runner(), service.executor()
    executor.activation_grace = 0.0

    async def all_awaiting() -> bool:
        await runner.run_once()
        await executor.run_once()
        campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
        return campaign.counts()[MeterState.AWAITING_ACTIVATION] == 3

    await eventually(all_awaiting)  # one at a time, each freeing its slot once verified
    assert datetime.now(UTC) < at, "the transfers took longer than the test allows"
    assert all(device.meters[s].firmware == "1.0" for s in serials)

    async def all_done() -> bool:
        await runner.run_once()
        await executor.run_once()
        campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
        return campaign.status is CampaignStatus.COMPLETED

    await eventually(all_done)
    campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
    assert campaign.counts()[MeterState.SUCCEEDED] == 3
    meter = registry.get(meter_id(serials[0]))
    assert meter.spec.firmware == "FW-3.0"
    steps = [
        e.step.value
        for e in registry.repository.event_store.get(meter.id)
        if isinstance(e, Meter.FirmwareUpdateStepped)
    ]
    assert steps[-4:] == ["TRANSFERRED", "VERIFIED", "ACTIVATION_SCHEDULED", "ACTIVATED"]


async def test_a_transfer_cut_by_a_dead_executor_resumes_on_the_next_attempt(
    settings: Settings, registry: MeterRegistry, service: DlmsService, device: FakeDevice
) -> None:
    image = bytes(range(256)) * 40  # 103 blocks of the double's 100 bytes
    outcome = await asyncio.to_thread(
        service.fleet.upload_image, image, "FW-R", "ACME", "X1", ADMIN
    )
    serial = register(registry, device, None)
    campaign_id = await start(
        settings,
        service,
        [serial],
        CampaignKind.FIRMWARE,
        image_id=outcome.aggregate.id,
        limits=CampaignLimits(max_attempts=2),
    )
    assert await service.campaign_runner().run_once() == 1
    await settle(service, campaign_id, ("REQUESTED",))
    # An executor marked the command SENT, put 50 blocks on the meter, and died.
    command_id = campaign_command_id(campaign_id, serial)
    await asyncio.to_thread(registry.mark_command_sent, meter_id(serial), command_id, ADMIN)
    device.meters[serial] = FakeMeter(image="FW-R", blocks=set(range(50)))
    await settle(service, campaign_id, ("SENT",))

    restarted = service.executor()
    restarted.stale_after = 0.0
    assert await restarted.fail_stale() == 1
    done = await drive(service, campaign_id)

    assert done.meters[serial].state is MeterState.SUCCEEDED
    assert done.meters[serial].attempts == 2
    command = registry.get(meter_id(serial)).command(command_id)
    assert command.result is not None
    assert (command.result.blocks_total, command.result.blocks_sent) == (103, 53)
    assert device.blocks_sent[serial] == 53
