"""Typed DLMS values and the encoders of image transfer, activity calendar and limiter."""

from __future__ import annotations

import time as time_module
from datetime import UTC, date, datetime, time, timedelta, timezone

import msgspec
import pytest

from adapters.dlms import axdr
from adapters.dlms.activity_calendar import (
    CalendarFormatError,
    decode_calendar,
    encode_calendar,
    encode_special_days,
)
from adapters.dlms.activity_calendar import as_meter_keeps as as_meter_keeps_calendar
from adapters.dlms.axdr import AxdrError, Data, Tag
from adapters.dlms.image_transfer import ImageTransferFailed, execution_time, missing_blocks
from adapters.dlms.load_limiter import (
    LimiterFormatError,
    decode_load_limit,
    encode_load_limit,
)
from adapters.dlms.load_limiter import as_meter_keeps as as_meter_keeps_limit
from adapters.dlms.session import CosemValue
from adapters.dlms.simulator import BehaviourError, SimulatedMeter, apdu, behaviour
from adapters.dlms.simulator.association import Association, Phase
from adapters.dlms.simulator.cosem_objects import AssociationInfo, Role
from domain.load_limit import EmergencyProfile, LoadLimit
from domain.tou_calendar import DayProfile, DaySwitch, Season, SpecialDay, TouCalendar, WeekProfile


@pytest.mark.parametrize(
    ("value", "kind", "encoded"),
    [
        (5, Tag.UNSIGNED, "1105"),
        (5, Tag.LONG_UNSIGNED, "120005"),
        (5, Tag.DOUBLE_LONG_UNSIGNED, "0600000005"),
        (-2, Tag.INTEGER, "0FFE"),
        (3, Tag.ENUM, "1603"),
        (True, Tag.BOOLEAN, "03FF"),
        (b"AB", Tag.OCTET_STRING, "09024142"),
        ("AB", Tag.VISIBLE_STRING, "0A024142"),
        ("1011", Tag.BIT_STRING, "0404B0"),
        (1.5, Tag.FLOAT32, "173FC00000"),
        (None, Tag.NULL, "00"),
        (
            datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
            Tag.OCTET_STRING,
            "090C07EB01020603040500000000",  # a Saturday, UTC, deviation 0
        ),
        ([axdr.u8(1), axdr.octets(b"")], Tag.STRUCTURE, "0202110109 00".replace(" ", "")),
    ],
)
def test_typed_values_encode_exactly(value: object, kind: Tag, encoded: str) -> None:
    assert axdr.encode(axdr.typed(value, kind)).hex().upper() == encoded


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (True, Tag.UNSIGNED, "needs an integer"),
        (256, Tag.UNSIGNED, "does not fit"),
        ("AB", Tag.OCTET_STRING, "cannot hold a str"),
        (b"AB", Tag.VISIBLE_STRING, "cannot hold a bytes"),
        ("102", Tag.BIT_STRING, "0 and 1"),
        (b"\x00" * 11, Tag.DATE_TIME, "needs 12 bytes"),
        (datetime(2027, 1, 1), Tag.OCTET_STRING, "timezone-aware"),
        ([1, 2], Tag.ARRAY, "sequence of typed values"),
        (0, Tag.NULL, "no value"),
    ],
)
def test_typed_values_refuse_what_would_not_encode_exactly(
    value: object, kind: Tag, message: str
) -> None:
    with pytest.raises(AxdrError, match=message):
        axdr.typed(value, kind)


def _plain(data: Data) -> CosemValue:
    """A value as a session hands it over (what gurux makes of it)."""
    if isinstance(data.value, tuple):
        return [_plain(d) for d in data.value]
    return data.value


CALENDAR = TouCalendar(
    name="TOU1",
    seasons=(Season(name="Summer", start=date(2000, 4, 1), week="WE"),),
    weeks=(WeekProfile(name="WE", days=(1, 1, 1, 1, 1, 2, 2)),),
    days=(
        DayProfile(
            day_id=1,
            switches=(DaySwitch(start=time(0, 0), tier=2), DaySwitch(start=time(7, 30), tier=1)),
        ),
        DayProfile(day_id=2, switches=(DaySwitch(start=time(0, 0), tier=2),)),
    ),
    special_days=(
        SpecialDay(index=3, on=date(2027, 1, 1), day_id=2),
        SpecialDay(index=1, on=date(2026, 12, 25), day_id=2),
    ),
    activate_at=datetime(2027, 3, 1, 0, 0, tzinfo=UTC),
)


def test_the_calendar_is_encoded_as_cosem_types_it() -> None:
    name, seasons, weeks, days = encode_calendar(CALENDAR)
    assert axdr.encode(name).hex().upper() == "0904544F5531"
    season = seasons.items()[0].items()
    assert season[1].octets().hex().upper() == "FFFF0401FF00000000 8000FF".replace(" ", "")
    assert [d.tag for d in weeks.items()[0].items()] == [Tag.OCTET_STRING] + [Tag.UNSIGNED] * 7
    switch = days.items()[0].items()[1].items()[1].items()
    assert [s.octets() for s in switch[:2]] == [
        bytes((7, 30, 0, 0)),
        bytes((0, 0, 10, 0, 100, 255)),
    ]
    assert switch[2] == axdr.u16(1)
    special = encode_special_days(CALENDAR.special_days).items()
    assert [s.items()[0].integer() for s in special] == [1, 3]  # by index
    assert special[0].items()[1].octets() == bytes((0x07, 0xEA, 12, 25, 5))  # a Friday


def test_a_calendar_decodes_back_equal_with_special_days_by_index() -> None:
    values = [_plain(v) for v in encode_calendar(CALENDAR)]
    special = _plain(encode_special_days(CALENDAR.special_days))
    activation = bytes.fromhex("07EA0C1F07000000008000FF")
    name, seasons, weeks, days = values
    got = decode_calendar(name, seasons, weeks, days, special, activation)
    assert got.special_days == tuple(sorted(CALENDAR.special_days, key=lambda s: s.index))
    assert got.seasons == CALENDAR.seasons and got.days == CALENDAR.days
    assert got.activate_at == datetime(2026, 12, 31, 0, 0, tzinfo=UTC)
    unspecified = decode_calendar(
        name, seasons, weeks, days, None, bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
    )
    assert unspecified.activate_at is None and unspecified.special_days == ()


@pytest.mark.parametrize(
    ("index", "bad", "message"),
    [
        (1, [b"S"], "season_profile\\[0\\] is not a structure"),
        (2, [[b"W", 1, 2]], "week_profile_table\\[0\\] is not a structure"),
        (3, [[1, [[b"\x19\x00\x00\x00", b"", 1]]]], "start_time is no time"),
        (0, 7, "calendar_name is not an octet-string"),
    ],
)
def test_a_malformed_calendar_from_the_meter_is_refused(
    index: int, bad: object, message: str
) -> None:
    values: list[CosemValue] = [_plain(v) for v in encode_calendar(CALENDAR)]
    values[index] = bad  # type: ignore[call-overload]
    with pytest.raises(CalendarFormatError, match=message):
        decode_calendar(*values)


def test_a_load_limit_encodes_and_decodes_back_equal() -> None:
    limit = LoadLimit(
        threshold_normal_w=6000.0,
        threshold_emergency_w=2500.0,
        min_over_threshold_s=15,
        emergency=EmergencyProfile(
            profile_id=4, activation=datetime(2027, 2, 1, 18, tzinfo=UTC), duration_s=3600
        ),
    )
    encoded = encode_load_limit(limit)
    assert list(encoded) == [2, 4, 5, 6, 7, 8, 9]
    assert axdr.encode(encoded[2]).hex().upper() == "020312000309060100010700FF0F02"
    assert encoded[4] == axdr.u32(6000)
    assert encoded[9] == axdr.array([axdr.u16(4)])
    assert decode_load_limit(*(_plain(encoded[a]) for a in (4, 5, 6, 7, 8))) == limit
    plain = LoadLimit(threshold_normal_w=1000.0, threshold_emergency_w=500.0)
    encoded = encode_load_limit(plain)
    assert encoded[9] == axdr.array([])
    assert decode_load_limit(*(_plain(encoded[a]) for a in (4, 5, 6, 7, 8))) == plain
    with pytest.raises(LimiterFormatError, match="threshold_normal is not a number"):
        decode_load_limit(b"x", 1, 1, 1, [0, b"", 0])


def test_missing_blocks_come_from_the_bit_string_else_the_first_missing_block() -> None:
    assert missing_blocks("1101", 2, 6) == [2, 4, 5]
    assert missing_blocks("", 3, 5) == [3, 4]
    assert missing_blocks(None, None, 3) == [0, 1, 2]


def test_an_image_transfer_failure_names_the_step_and_the_result() -> None:
    failed = ImageTransferFailed("image_block_transfer of block 7", 2)
    assert str(failed) == (
        "image transfer failed at image_block_transfer of block 7: "
        "the meter answered temporary-failure (2)"
    )
    detailed = ImageTransferFailed("image_activate", 1, "meter SIM0000001: hardware-fault")
    assert str(detailed).endswith("hardware-fault [result hardware-fault (1)]")
    assert failed.retryable
    assert not ImageTransferFailed("image_verify", None, "verification failed").retryable


def test_image_transfer_behaviour_settings_parse_and_refuse_bad_values() -> None:
    b = behaviour("no-counter,image-block-size=512,drop-at-block=40,image-verify-s=0.5")
    assert (b.image_block_size, b.drop_at_block, b.image_verify_s) == (512, 40, 0.5)
    assert b.counter_object == "none"
    for bad, message in (
        ("image-block-size=8", "out of range"),
        ("drop-at-block=x", "not a number"),
        ("colour=2", "unknown meter setting"),
    ):
        with pytest.raises(BehaviourError, match=message):
            behaviour(bad)


def _sim_meter() -> SimulatedMeter:
    return SimulatedMeter(0, history_start=time_module.time() - 86_400)


def test_the_simulator_reads_set_and_action_requests_in_blocks() -> None:
    descriptor = bytes.fromhex("0014") + bytes((0, 0, 13, 0, 0, 255)) + b"\x06"
    first = apdu.parse_request(
        bytes.fromhex("C10241")
        + descriptor
        + bytes.fromhex("00 00 00000001 03 090241".replace(" ", ""))
    )
    assert first == apdu.BlockRequest(
        apdu.SET_REQUEST,
        0x41,
        apdu.Reference(20, descriptor[2:8], 6),
        False,
        1,
        bytes.fromhex("090241"),
    )
    nxt = apdu.parse_request(bytes.fromhex("C10341 01 00000002 01 42".replace(" ", "")))
    assert nxt == apdu.BlockRequest(apdu.SET_REQUEST, 0x41, None, True, 2, b"\x42")
    action = apdu.parse_request(bytes.fromhex("C30641 01 00000003 02 0000".replace(" ", "")))
    assert isinstance(action, apdu.BlockRequest) and action.service == apdu.ACTION_REQUEST


def test_the_simulator_refuses_a_block_out_of_sequence() -> None:
    association = Association(_sim_meter(), 16, "test")
    association.phase = Phase.ASSOCIATED
    stray = bytes.fromhex("C10341 01 00000002 01 42".replace(" ", ""))
    assert association.handle(stray) == bytes.fromhex("C50341 13 00000002".replace(" ", ""))
    stray_action = bytes.fromhex("C30641 01 00000002 01 42".replace(" ", ""))
    assert association.handle(stray_action)[:4] == bytes.fromhex("C7014113")


def test_the_simulated_passive_calendar_becomes_active_at_its_activation_time() -> None:
    now = [1_800_000_000.0]
    meter = SimulatedMeter(0, history_start=now[0] - 86_400, clock=lambda: now[0])
    objects, manager = meter.objects, Role.MANAGER

    def ref(attr: int) -> apdu.Reference:
        return apdu.Reference(20, bytes((0, 0, 13, 0, 0, 255)), attr)

    for attr, value in zip((6, 7, 8, 9), encode_calendar(CALENDAR), strict=True):
        assert objects.set(ref(attr), value, manager) == apdu.DataAccessResult.SUCCESS
    at = datetime.fromtimestamp(now[0] + 60, UTC)
    assert objects.set(ref(10), axdr.typed(at, Tag.OCTET_STRING), manager) == 0
    info = AssociationInfo(1, manager)
    assert objects.get(ref(2), manager, info) == axdr.octets(b"STD")
    now[0] += 61
    assert objects.get(ref(2), manager, info) == axdr.octets(b"TOU1")
    assert objects.set(ref(7), axdr.octets(b"x"), manager) == apdu.DataAccessResult.TYPE_UNMATCHED
    assert (
        objects.set(ref(3), axdr.octets(b"x"), manager) == apdu.DataAccessResult.READ_WRITE_DENIED
    )


def test_the_activation_time_is_one_utc_time_and_date() -> None:
    at = datetime(2027, 1, 2, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    assert (
        axdr.encode(execution_time(at)).hex().upper() == "01010202090403050600" + "090507EB010206"
    )
    with pytest.raises(ValueError, match="UTC offset"):
        execution_time(datetime(2027, 1, 2))


def test_what_a_meter_keeps_is_what_reads_back() -> None:
    paris = timezone(timedelta(hours=1))
    calendar = msgspec.structs.replace(
        CALENDAR,
        seasons=(Season(name="Summer", start=date(2026, 4, 1), week="WE"),),
        activate_at=datetime(2027, 3, 1, 0, 0, 0, 123_456, tzinfo=paris),
    )
    name, seasons, weeks, days = (_plain(v) for v in encode_calendar(calendar))
    special = _plain(encode_special_days(calendar.special_days))
    activation = axdr.typed(calendar.activate_at, Tag.OCTET_STRING).octets()
    read = decode_calendar(name, seasons, weeks, days, special, activation)
    assert read == as_meter_keeps_calendar(calendar)
    assert read != calendar

    limit = LoadLimit(
        threshold_normal_w=5000.4,
        threshold_emergency_w=2999.6,
        emergency=EmergencyProfile(
            profile_id=1, activation=datetime(2027, 1, 1, 1, tzinfo=paris), duration_s=60
        ),
    )
    encoded = encode_load_limit(limit)
    read_limit = decode_load_limit(*(_plain(encoded[a]) for a in (4, 5, 6, 7, 8)))
    assert read_limit == as_meter_keeps_limit(limit)
    assert read_limit.threshold_normal_w == 5000.0


def test_the_simulator_aborts_a_set_in_blocks_beyond_64_kb() -> None:
    association = Association(_sim_meter(), 16, "test")
    association.phase = Phase.ASSOCIATED
    descriptor = bytes.fromhex("0014") + bytes((0, 0, 13, 0, 0, 255)) + b"\x09\x00"
    chunk = bytes(1000)
    head = bytes.fromhex("C10241") + descriptor + b"\x00" + (1).to_bytes(4, "big")
    reply = association.handle(head + axdr.encode_length(len(chunk)) + chunk)
    assert reply == bytes.fromhex("C5024100000001")
    for number in range(2, 70):
        block = bytes.fromhex("C10341") + b"\x00" + number.to_bytes(4, "big")
        reply = association.handle(block + axdr.encode_length(len(chunk)) + chunk)
        if reply[1] == 3:
            break
    assert reply[:4] == bytes.fromhex("C5034111")  # long-set-aborted
    assert number == 66
