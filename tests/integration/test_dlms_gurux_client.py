"""The Gurux Python client (gurux-dlms over gurux-net, the way Gurux's own example reader
works) reads the simulator at none, LLS and HLS-GMAC over the wrapper and HDLC: association
view with access rights, clock, serial number, a register with its scaler and unit, load
profile rows by range; and again against a meter with a small PDU, segmented HDLC replies and
repeated flags. A second independent client beside dlms-cosem (test_dlms_interop.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gurux_dlms.enums import AccessMode, ObjectType

from adapters.dlms.simulator import (
    SimulatedFleet,
    behaviour,
    simulated_keys,
    start_simulated_meters,
)
from tests.integration.dlms_clients import Level, Transport
from tests.integration.dlms_support import free_ports
from tests.integration.gurux_net_client import GuruxNetReader

pytestmark = pytest.mark.integration
COMBOS: list[tuple[Transport, Level]] = [
    (t, lv) for t in ("wrapper", "hdlc") for lv in ("none", "lls", "hls")
]


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[SimulatedFleet]:
    """A meter as the simulator builds it, and one with small PDUs, segments and flags."""
    running = await start_simulated_meters(
        2,
        free_ports(2),
        behaviour=lambda i: behaviour("small-pdu,hdlc-flags" if i else "idis"),
    )
    yield running
    await running.close()


def _read(port: int, transport: Transport, level: Level, serial: str) -> dict[str, Any]:
    reader = GuruxNetReader(port, transport, level, simulated_keys(serial))
    counter = reader.open()
    try:
        view = reader.association_view()
        clock = reader.find(ObjectType.CLOCK, "0.0.1.0.0.255")
        number = reader.find(ObjectType.DATA, "0.0.96.1.0.255")
        energy = reader.find(ObjectType.REGISTER, "1.0.1.8.0.255")
        profile = reader.find(ObjectType.PROFILE_GENERIC, "1.0.99.1.0.255")
        log = reader.find(ObjectType.PROFILE_GENERIC, "0.0.99.98.0.255")
        reader.read(clock, 2)
        reader.read(number, 2)
        reader.read(energy, 3)
        reader.read(energy, 2)
        now = datetime.now(UTC)
        rows = reader.rows(profile, now - timedelta(hours=2), now)
        return {
            "counter": counter,
            "objects": len(view),
            "log_access": log.getAccess(2),
            "clock": clock.time.value,
            "serial": number.value,
            "scaler_unit": (energy.scaler, int(energy.unit)),
            "energy": energy.value,
            "rows": rows,
        }
    finally:
        reader.close()


@pytest.mark.parametrize(("transport", "level"), COMBOS)
async def test_the_gurux_client_reads_view_clock_register_and_profile(
    fleet: SimulatedFleet, transport: Transport, level: Level
) -> None:
    sim = fleet.meter(0)
    before = sim.state.client_ic_last
    result = await asyncio.to_thread(_read, fleet.ports[0], transport, level, sim.serial)

    assert result["objects"] == len(sim.objects.object_list)
    # the event log is not for the public client; LLS and HLS clients may read it
    expected = AccessMode.NO_ACCESS if level == "none" else AccessMode.READ
    assert result["log_access"] == expected
    clock = result["clock"]
    clock = clock if clock.tzinfo else clock.replace(tzinfo=UTC)
    assert abs((clock - datetime.now(UTC)).total_seconds()) < 10
    assert result["serial"] == sim.serial
    assert result["scaler_unit"] == (1.0, 30)  # gurux gives the scaler as a factor: 10^0
    assert abs(result["energy"] - sim.values()["1.0.1.8.0.255"]) < 10_000
    assert len(result["rows"]) >= 7  # two hours of 15-minute intervals
    assert all(isinstance(row[1], int) for row in result["rows"])
    if level == "hls":
        assert result["counter"] == max(before, 0)  # read through the public client
        assert sim.state.client_ic_last > result["counter"]


@pytest.mark.parametrize("level", ["none", "hls"])
async def test_the_gurux_client_reads_a_meter_with_small_pdus_and_segmented_replies(
    fleet: SimulatedFleet, level: Level
) -> None:
    sim = fleet.meter(1)
    blocks, segments = sim.stats.blocks_sent, sim.stats.segmented_replies

    result = await asyncio.to_thread(_read, fleet.ports[1], "hdlc", level, sim.serial)

    assert result["objects"] == len(sim.objects.object_list)
    assert len(result["rows"]) >= 7
    assert sim.stats.blocks_sent > blocks + 10
    assert sim.stats.segmented_replies > segments + 10
