"""THE REAL ONE: fleet operations end to end through the head-end's DLMS side and the DLMS
simulator over TCP on loopback (HLS-GMAC) — campaigns, executor, gurux sessions, the real
``image_transfer``, ``activity_calendar`` and ``load_limiter`` modules, no test double.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.dlms.simulator import SimulatedFleet, start_simulated_meters
from adapters.dlms.simulator.behaviour import Behaviour, behaviour
from bootstrap.applications import fleet_operations
from bootstrap.dlms_process import DlmsService
from bootstrap.workers import SupervisedProjection
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from config.settings import Settings
from domain.campaign import CampaignKind, CampaignLimits, CampaignStatus, MeterState
from domain.meter import Meter
from domain.remote_commands import CommandStatus
from domain.values import SecurityLevel, Transport
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
from tests.integration.test_campaigns import CALENDAR, LIMIT, drive, start

pytestmark = pytest.mark.integration
METERS = 3
DROPPING = 1
IMAGE = bytes(range(200)) * 100  # 20,000 bytes: 100 blocks of the simulator's 200


@pytest.fixture(scope="module")
async def simulated() -> AsyncIterator[SimulatedFleet]:
    """Three simulated meters; the second drops its connection at image block 40 (once)."""

    def of(index: int) -> Behaviour:
        return behaviour("drop-at-block=40") if index == DROPPING else Behaviour()

    running = await start_simulated_meters(METERS, free_ports(METERS), behaviour=of)
    yield running
    await running.close()


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
async def service(
    settings: Settings,
    projection: SupervisedProjection,
    dlms_worker: SupervisedProjection,
    fleet_worker: SupervisedProjection,
) -> AsyncIterator[DlmsService]:
    """The real DLMS side (gurux sessions, the real fleet device) on the test schema."""
    dlms = DlmsService(dlms_settings(settings))
    await dlms.open()
    yield dlms
    await dlms.close()


async def meters(
    settings: Settings, registry: MeterRegistry, simulated: SimulatedFleet
) -> list[str]:
    """The simulated meters registered with their keys; their serials."""
    serials = []
    for index in range(METERS):
        meter = register(
            registry, profile(simulated.ports[index], Transport.WRAPPER, SecurityLevel.HLS_GMAC)
        )
        version = set_simulated_keys(settings, registry, meter, simulated.serials[index])
        await meter_visible(settings, meter, version)
        serials.append(registry.get(meter).spec.serial)
    return serials


async def test_a_firmware_campaign_resumes_a_transfer_dropped_at_block_40_of_100(
    settings: Settings,
    registry: MeterRegistry,
    simulated: SimulatedFleet,
    service: DlmsService,
) -> None:
    serials = await meters(settings, registry, simulated)
    image = await asyncio.to_thread(
        service.fleet.upload_image, IMAGE, "FW-REAL-2", "HES", "Simulated", ADMIN
    )
    campaign_id = await start(
        settings,
        service,
        serials,
        CampaignKind.FIRMWARE,
        image_id=image.aggregate.id,
        limits=CampaignLimits(concurrency=3, per_cell=1, max_attempts=1),
    )

    done = await drive(service, campaign_id, rounds=120)

    assert done.status is CampaignStatus.COMPLETED
    assert {s: p.state for s, p in done.meters.items()} == dict.fromkeys(
        serials, MeterState.SUCCEEDED
    )
    dropped = registry.get(done.meters[serials[DROPPING]].member.meter_id)
    command = next(iter(dropped.remote_commands.values()))
    assert command.status is CommandStatus.CONFIRMED
    assert command.result is not None
    assert (command.result.blocks_total, command.result.blocks_sent) == (100, 60)  # resumed
    assert command.result.firmware == "FW-REAL-2"
    assert dropped.spec.firmware == "FW-REAL-2"
    steps = [
        e.step.value
        for e in registry.repository.event_store.get(dropped.id)
        if isinstance(e, Meter.FirmwareUpdateStepped)
    ]
    assert steps[-3:] == ["TRANSFERRED", "VERIFIED", "ACTIVATED"]


async def test_a_calendar_campaign_and_a_load_limit_read_back_equal(
    settings: Settings,
    registry: MeterRegistry,
    simulated: SimulatedFleet,
    service: DlmsService,
) -> None:
    serials = await meters(settings, registry, simulated)
    plan = await asyncio.to_thread(service.fleet.save_tou_plan, "TOU real", CALENDAR, ADMIN)
    calendar = await start(
        settings,
        service,
        serials,
        CampaignKind.CALENDAR,
        tou_plan_id=plan.aggregate.id,
        tou_plan_version=plan.aggregate.version,
        limits=CampaignLimits(max_attempts=1),
    )
    done = await drive(service, calendar, rounds=60)
    assert done.counts()[MeterState.SUCCEEDED] == METERS, {
        s: p.reason for s, p in done.meters.items()
    }

    limited = await start(settings, service, serials, limits=CampaignLimits(max_attempts=1))
    done = await drive(service, limited, rounds=60)
    assert done.counts()[MeterState.SUCCEEDED] == METERS, {
        s: p.reason for s, p in done.meters.items()
    }
    shown = await scalar(
        settings,
        "SELECT result->'load_limit'->>'threshold_normal_w' FROM {s}.remote_commands "
        "WHERE kind = 'SET_LOAD_LIMIT' AND meter_id = %s",
        done.meters[serials[0]].member.meter_id,
    )
    assert float(shown) == LIMIT.threshold_normal_w


async def test_a_scheduled_activation_is_confirmed_after_its_time(
    settings: Settings,
    registry: MeterRegistry,
    simulated: SimulatedFleet,
    service: DlmsService,
) -> None:
    serials = await meters(settings, registry, simulated)
    image = await asyncio.to_thread(
        service.fleet.upload_image, IMAGE[:4000], "FW-REAL-S", "HES", "Simulated", ADMIN
    )
    at = datetime.now(UTC) + timedelta(seconds=6)
    campaign_id = await start(
        settings,
        service,
        serials,
        CampaignKind.FIRMWARE,
        image_id=image.aggregate.id,
        activate_at=at,
        limits=CampaignLimits(concurrency=1, per_cell=1, max_attempts=1),
    )
    runner, executor = service.campaign_runner(), service.executor()

    async def over() -> bool:
        await runner.run_once()
        await executor.run_once()
        campaign = await asyncio.to_thread(service.fleet.campaign, campaign_id)
        return campaign.status is CampaignStatus.COMPLETED

    await eventually(over, seconds=60)
    done = await asyncio.to_thread(service.fleet.campaign, campaign_id)
    assert done.counts()[MeterState.SUCCEEDED] == METERS, {
        s: p.reason for s, p in done.meters.items()
    }
    meter = registry.get(done.meters[serials[0]].member.meter_id)
    assert meter.spec.firmware == "FW-REAL-S"
    command = next(c for c in meter.remote_commands.values() if c.result is not None)
    assert command.updated_at is not None and command.updated_at >= at
