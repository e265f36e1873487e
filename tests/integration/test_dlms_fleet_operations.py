"""Firmware image transfer, time-of-use calendars and load limits through the head-end's own
DLMS session (gurux) against simulated meters over TCP on loopback, HLS-GMAC ciphered; the
calendar is also read back by an independent client (dlms-cosem)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

import pytest
from dlms_cosem import cosem, enumerations  # type: ignore[import-untyped]

from adapters.dlms import axdr
from adapters.dlms.activity_calendar import decode_calendar, read_calendar, write_calendar
from adapters.dlms.gurux_session import GuruxSession
from adapters.dlms.image_transfer import (
    ImageTransferFailed,
    activate_image,
    active_firmware,
    schedule_activation,
    transfer_image,
    verify_image,
)
from adapters.dlms.load_limiter import read_load_limit, write_load_limit
from adapters.dlms.session import (
    AttributeRef,
    CounterRejected,
    Credentials,
    DataAccessError,
    LinkError,
    MeterTarget,
)
from adapters.dlms.simulator import (
    Behaviour,
    Limits,
    SimulatedFleet,
    simulated_keys,
    start_simulated_meters,
)
from domain.load_limit import EmergencyProfile, LoadLimit
from domain.meter_keys import MeterKeys
from domain.tou_calendar import DayProfile, DaySwitch, Season, SpecialDay, TouCalendar, WeekProfile
from domain.values import ConnectionProfile, SecurityLevel, Transport
from tests.integration.dlms_clients import cosem_client
from tests.integration.dlms_support import free_ports

pytestmark = pytest.mark.integration

CLIENT_TITLE = b"HESFLEET"
DROPPING, CALENDAR, LIMITED, REFUSING, HDLC_METER, LARGE_BLOCKS, SCHEDULED = range(7)


class MemoryCounters:
    """Invocation counters of one meter kept in memory for the test's sessions."""

    def __init__(self) -> None:
        self.next = int(datetime.now(UTC).timestamp()) * 10
        self.server = -1

    async def reserve(self, count: int, at_least: int) -> int:
        first = max(self.next, at_least)
        self.next = first + count
        return first

    async def accept_server(self, invocation_counter: int) -> None:
        if invocation_counter <= self.server:
            raise CounterRejected(f"server counter {invocation_counter} did not increase")
        self.server = invocation_counter

    async def note_meter_counter(self, value: int) -> None:
        return None

    async def flush(self) -> None:
        return None


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[SimulatedFleet]:
    def behaviour(index: int) -> Behaviour:
        if index == DROPPING:
            return Behaviour(drop_at_block=40, image_verify_s=0.3)
        if index == REFUSING:
            return Behaviour(set_result=1)
        if index == HDLC_METER:
            return Behaviour(drop_at_block=7)
        if index == LARGE_BLOCKS:
            return Behaviour(image_block_size=1000)
        return Behaviour()

    running = await start_simulated_meters(
        7,
        free_ports(7),
        limits=Limits(idle_timeout=10.0, frame_timeout=2.0),
        behaviour=behaviour,
    )
    yield running
    await running.close()


_counters: dict[int, MemoryCounters] = {}


async def _session(
    fleet: SimulatedFleet, index: int, transport: Transport = Transport.WRAPPER
) -> GuruxSession:
    serial = fleet.serials[index]
    sim = simulated_keys(serial)
    hdlc = transport is Transport.HDLC
    target = MeterTarget(
        id=uuid.uuid4(),
        serial=serial,
        region="North",
        area="Fleet",
        status="INSTALLED",
        connection=ConnectionProfile(
            host="127.0.0.1",
            port=fleet.ports[index],
            transport=transport,
            client_address=1,
            server_address=1,
            physical_address=17 if hdlc else None,
            security=SecurityLevel.HLS_GMAC,
        ),
    )
    credentials = Credentials(
        keys=MeterKeys(ek=sim.ek, ak=sim.ak),
        client_system_title=CLIENT_TITLE,
        counters=_counters.setdefault(index, MemoryCounters()),
    )
    return await GuruxSession.open(target, credentials, 5.0)


def _image(blocks: int, block_size: int = 200) -> bytes:
    out = bytearray()
    seed = b"firmware"
    while len(out) < blocks * block_size - 57:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[: blocks * block_size - 57])  # the last block is short


async def test_a_transfer_dropped_at_block_40_resumes_with_only_the_missing_blocks(
    fleet: SimulatedFleet,
) -> None:
    image = _image(100)
    progress: list[tuple[int, int]] = []

    async def on_block(done: int, total: int) -> None:
        progress.append((done, total))

    session = await _session(fleet, DROPPING)
    try:
        with pytest.raises(LinkError):
            await transfer_image(session, "FW-2.0", image, on_block=on_block)
    finally:
        await session.close()
    assert progress[-1] == (40, 100)

    session = await _session(fleet, DROPPING)
    try:
        outcome = await transfer_image(session, "FW-2.0", image, on_block=on_block)
        assert outcome.blocks_total == 100
        assert outcome.block_size == 200
        assert outcome.blocks_already_on_meter >= 39
        assert outcome.blocks_sent <= 61
        assert outcome.blocks_already_on_meter + outcome.blocks_sent == 100
        assert progress[-1] == (100, 100)
        assert await active_firmware(session) == "1.0"
        await verify_image(session, poll_s=0.1)
        await activate_image(session)
        assert await active_firmware(session) == "FW-2.0"
    finally:
        await session.close()
    # The meter accepted each block once: nothing was sent twice.
    assert fleet.meter(DROPPING).objects.image_transfer.blocks_received == 100

    session = await _session(fleet, DROPPING)  # confirmed by a new association too
    try:
        assert await active_firmware(session) == "FW-2.0"
    finally:
        await session.close()


async def test_a_transfer_over_hdlc_resumes_and_an_unverified_image_is_refused(
    fleet: SimulatedFleet,
) -> None:
    image = _image(12)
    session = await _session(fleet, HDLC_METER, Transport.HDLC)
    try:
        with pytest.raises(LinkError):
            await transfer_image(session, "FW-H", image)
    finally:
        await session.close()
    session = await _session(fleet, HDLC_METER, Transport.HDLC)
    try:
        with pytest.raises(ImageTransferFailed) as refused:
            await activate_image(session)
        assert refused.value.step == "image_activate"
        assert refused.value.result == 2
        assert "temporary-failure" in str(refused.value)
        outcome = await transfer_image(session, "FW-H", image)
        assert (outcome.blocks_already_on_meter, outcome.blocks_sent) == (7, 5)
        await verify_image(session)
        again = await transfer_image(session, "FW-H", image)  # verified: nothing to send
        assert (again.blocks_already_on_meter, again.blocks_sent) == (12, 0)
        await activate_image(session)
        assert await active_firmware(session) == "FW-H"
    finally:
        await session.close()


@pytest.mark.parametrize("transport", [Transport.WRAPPER, Transport.HDLC])
async def test_image_blocks_larger_than_the_pdu_go_in_action_blocks(
    fleet: SimulatedFleet, transport: Transport
) -> None:
    image = _image(6, 1000)
    identifier = f"FW-L-{transport.value}"
    stats = fleet.meter(LARGE_BLOCKS).stats
    before = stats.blocks_received
    session = await _session(fleet, LARGE_BLOCKS, transport)
    try:
        outcome = await transfer_image(session, identifier, image)
        assert (outcome.block_size, outcome.blocks_sent) == (1000, 6)
        assert stats.blocks_received - before >= 10  # each full image block in two or more
        await verify_image(session)
        await activate_image(session)
        assert await active_firmware(session) == identifier
    finally:
        await session.close()


async def test_a_scheduled_activation_happens_at_its_time_on_the_meter(
    fleet: SimulatedFleet,
) -> None:
    session = await _session(fleet, SCHEDULED)
    try:
        await transfer_image(session, "FW-S", _image(3))
        await verify_image(session)
        at = datetime.now(UTC) + timedelta(seconds=2)
        await schedule_activation(session, at)
        assert await active_firmware(session) == "1.0"
        await asyncio.sleep((at - datetime.now(UTC)).total_seconds() + 0.3)
        assert await active_firmware(session) == "FW-S"
    finally:
        await session.close()
    session = await _session(fleet, REFUSING)
    try:
        with pytest.raises(ImageTransferFailed, match="schedule image activation") as refused:
            await schedule_activation(session, at)
        assert refused.value.result == 1
    finally:
        await session.close()


def _calendar(activate_at: datetime | None) -> TouCalendar:
    return TouCalendar(
        name="TOU2027",
        seasons=(
            Season(name="Winter", start=date(2000, 10, 1), week="WK"),
            Season(name="Summer", start=date(2000, 4, 1), week="WE"),
        ),
        weeks=(
            WeekProfile(name="WK", days=(1, 1, 1, 1, 1, 2, 2)),
            WeekProfile(name="WE", days=(1, 1, 1, 1, 2, 2, 2)),
        ),
        days=(
            DayProfile(
                day_id=1,
                switches=(
                    DaySwitch(start=time(0, 0), tier=2),
                    DaySwitch(start=time(7, 30), tier=1),
                    DaySwitch(start=time(22, 0), tier=2),
                ),
            ),
            DayProfile(day_id=2, switches=(DaySwitch(start=time(0, 0), tier=2),)),
        ),
        special_days=(
            SpecialDay(index=1, on=date(2026, 12, 25), day_id=2),
            SpecialDay(index=2, on=date(2027, 1, 1), day_id=2),
        ),
        activate_at=activate_at,
    )


def _cosem_calendar(port: int, serial: str, attrs: tuple[int, ...]) -> list[object]:
    """The calendar attributes and special days as dlms-cosem reads them (LLS client)."""
    client = cosem_client(port, "wrapper", "lls", simulated_keys(serial))
    values = []
    with client.session():
        for attr in attrs:
            values.append(_cosem_plain(client, 20, "0.0.13.0.0.255", attr))
        values.append(_cosem_plain(client, 11, "0.0.11.0.0.255", 2))
    return values


def _cosem_plain(client: object, class_id: int, obis: str, attr: int) -> object:
    from dlms_cosem.utils import parse_as_dlms_data  # type: ignore[import-untyped]

    raw = client.get(  # type: ignore[attr-defined]
        cosem.CosemAttribute(
            interface=enumerations.CosemInterface(class_id),
            instance=cosem.Obis.from_string(obis),
            attribute=attr,
        )
    )
    return _plain(parse_as_dlms_data(raw))


def _plain(value: object) -> object:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytearray):
        return bytes(value)
    return value


async def test_a_calendar_written_reads_back_equal_by_ours_and_by_dlms_cosem(
    fleet: SimulatedFleet,
) -> None:
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    scheduled = _calendar(later)
    session = await _session(fleet, CALENDAR)
    try:
        await write_calendar(session, scheduled)
        assert await read_calendar(session) == scheduled
        active = await read_calendar(session, passive=False)
        assert active.name == "STD"  # not yet activated
    finally:
        await session.close()
    port, serial = fleet.ports[CALENDAR], fleet.serials[CALENDAR]
    passive = await asyncio.to_thread(_cosem_calendar, port, serial, (6, 7, 8, 9, 10))
    name, seasons, weeks, days, activation, special = passive
    got = decode_calendar(name, seasons, weeks, days, special, activation)  # type: ignore[arg-type]
    assert got == scheduled

    at_once = _calendar(None)
    session = await _session(fleet, CALENDAR)
    try:
        await write_calendar(session, at_once)
        assert await read_calendar(session, passive=False) == at_once
        assert await read_calendar(session) == at_once
    finally:
        await session.close()
    active_by_cosem = await asyncio.to_thread(_cosem_calendar, port, serial, (2, 3, 4, 5))
    assert decode_calendar(*active_by_cosem) == at_once  # type: ignore[arg-type]


async def test_the_largest_calendar_goes_in_set_blocks_over_hdlc(fleet: SimulatedFleet) -> None:
    days = tuple(
        DayProfile(
            day_id=d,
            switches=tuple(
                DaySwitch(start=time(h, 15 if h else 0), tier=1 + h % 8) for h in range(16)
            ),
        )
        for d in range(1, 33)
    )
    big = TouCalendar(
        name="BIGCAL",
        seasons=tuple(
            Season(name=f"S{m}", start=date(2000, m, 1), week=f"W{m % 8}") for m in range(1, 13)
        ),
        weeks=tuple(WeekProfile(name=f"W{w}", days=(1, 2, 3, 4, 5, 6, 32)) for w in range(8)),
        days=days,
        special_days=tuple(
            SpecialDay(index=i, on=date(2027, 1, 1) + timedelta(days=i), day_id=32)
            for i in range(64)
        ),
    )
    big.check()
    stats = fleet.meter(CALENDAR).stats
    before = stats.blocks_received
    session = await _session(fleet, CALENDAR, Transport.HDLC)
    try:
        await write_calendar(session, big)
        assert stats.blocks_received - before >= 10
        assert await read_calendar(session, passive=False) == big
    finally:
        await session.close()


async def test_a_load_limit_round_trips_and_a_refused_set_names_the_result(
    fleet: SimulatedFleet,
) -> None:
    limit = LoadLimit(
        threshold_normal_w=7000.0,
        threshold_emergency_w=3000.0,
        min_over_threshold_s=30,
        min_under_threshold_s=120,
        emergency=EmergencyProfile(
            profile_id=7,
            activation=datetime(2027, 1, 15, 17, 0, tzinfo=UTC),
            duration_s=7200,
        ),
    )
    session = await _session(fleet, LIMITED)
    try:
        await write_load_limit(session, limit)
        assert await read_load_limit(session) == limit
        plain = LoadLimit(threshold_normal_w=9000.0, threshold_emergency_w=9000.0)
        await write_load_limit(session, plain)
        assert await read_load_limit(session) == plain
    finally:
        await session.close()

    session = await _session(fleet, REFUSING)
    try:
        with pytest.raises(DataAccessError, match="hardware-fault") as refused:
            await write_load_limit(session, limit)
        assert refused.value.result == 1
        assert refused.value.result_name == "hardware-fault"
    finally:
        await session.close()
    session = await _session(fleet, LIMITED)
    try:
        ref = AttributeRef(71, "0.0.17.0.0.255", 6)
        with pytest.raises(DataAccessError, match="type-unmatched") as unmatched:
            await session.set(ref, "30", kind=axdr.Tag.VISIBLE_STRING)
        assert unmatched.value.result == 12
        await session.set(ref, 45, kind=axdr.Tag.DOUBLE_LONG_UNSIGNED)
        assert (await read_load_limit(session)).min_over_threshold_s == 45
    finally:
        await session.close()


async def test_the_new_objects_are_in_the_association_view(fleet: SimulatedFleet) -> None:
    session = await _session(fleet, LIMITED)
    try:
        view = await session.get(AttributeRef(15, "0.0.40.0.0.255", 2))
    finally:
        await session.close()
    assert isinstance(view, list)
    listed = {(entry[0], ".".join(str(b) for b in entry[2])) for entry in view}  # type: ignore[index,union-attr]
    assert {
        (18, "0.0.44.0.0.255"),
        (20, "0.0.13.0.0.255"),
        (11, "0.0.11.0.0.255"),
        (71, "0.0.17.0.0.255"),
        (1, "1.0.0.2.0.255"),
    } <= listed


async def test_empty_arrays_read_in_one_get_with_list(fleet: SimulatedFleet) -> None:
    session = await _session(fleet, REFUSING)  # it refuses every SET: its tables stay empty
    try:
        values = await session.get_many(
            [
                AttributeRef(11, "0.0.11.0.0.255", 2),
                AttributeRef(18, "0.0.44.0.0.255", 6),
                AttributeRef(71, "0.0.17.0.0.255", 9),
                AttributeRef(18, "0.0.44.0.0.255", 7),
                AttributeRef(18, "0.0.44.0.0.255", 2),
            ]
        )
    finally:
        await session.close()
    assert values == [[], 0, [], [], 200]
