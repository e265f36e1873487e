"""Pure DLMS-side rules: profile ledger gaps, collection schedules, scaler application."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from adapters.dlms.cosem import ScalerUnit, ScalingError, scaled
from adapters.dlms.push_layout import DEFAULT_PUSH_LAYOUT_TEXT, PushLayout, PushLayoutError
from config.settings import Settings, SettingsError
from domain.collection import (
    ScheduleError,
    Schedules,
    Task,
    next_due,
    parse_schedules,
    retry_due,
)
from domain.profile_ledger import (
    LedgerDay,
    counts,
    mask_of,
    missing_ranges,
    record_read,
    slot,
)

P = 900
DAY = date(2025, 3, 1)
MIDNIGHT = datetime(2025, 3, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """``minutes`` after midnight of DAY."""
    return MIDNIGHT + timedelta(minutes=minutes)


# -- ledger ------------------------------------------------------------------------------


def test_empty_ledger_misses_everything_due_in_one_range() -> None:
    assert missing_ranges({}, at(0), at(60), P) == [(at(0), at(60))]
    # The window start is rounded up to the grid; the end is inclusive.
    assert missing_ranges({}, at(7), at(44), P) == [(at(15), at(30))]


def test_received_and_absent_slots_split_the_gaps() -> None:
    days: dict[date, LedgerDay] = {}
    record_read(days, P, (at(0), at(0)), [at(0), at(15)], settle_before=at(0))
    record_read(days, P, (at(60), at(75)), [at(75)], settle_before=at(24 * 60))
    assert days[DAY].received == mask_of("1100010")
    assert days[DAY].absent == mask_of("0000100")
    assert missing_ranges(days, at(0), at(120), P) == [(at(30), at(45)), (at(90), at(120))]
    assert counts(days[DAY], at(120)) == (9, 3, 1)


def test_slots_too_recent_to_settle_stay_missing() -> None:
    days: dict[date, LedgerDay] = {}
    # Asked up to 01:00 but the meter has captured only up to 00:30 yet: 00:45 and 01:00
    # are not declared absent when the read settles only slots before 00:40.
    record_read(days, P, (at(0), at(60)), [at(0), at(15), at(30)], settle_before=at(40))
    assert missing_ranges(days, at(0), at(60), P) == [(at(45), at(60))]
    assert days[DAY].absent == 0


def test_gaps_cross_midnight_and_are_capped() -> None:
    days: dict[date, LedgerDay] = {}
    end = at(24 * 60 + 30)
    received = [at(m) for m in range(0, 24 * 60 + 31, 15) if m not in (30, 24 * 60 - 15)]
    record_read(days, P, (at(0), end), received, settle_before=at(0))
    assert missing_ranges(days, at(0), end, P) == [(at(30), at(30)), (at(1425), at(1425))]
    assert missing_ranges(days, at(0), end, P, max_ranges=1) == [(at(30), at(30))]
    assert set(days) == {DAY, DAY + timedelta(days=1)}


def test_off_grid_rows_are_not_slots_and_later_receipt_clears_absent() -> None:
    assert slot(at(7), P) is None
    days: dict[date, LedgerDay] = {}
    record_read(days, P, (at(0), at(15)), [at(7)], settle_before=at(60))
    assert days[DAY].absent == mask_of("11")
    record_read(days, P, (at(15), at(15)), [at(15)], settle_before=at(60))
    assert (days[DAY].received, days[DAY].absent) == (mask_of("01"), mask_of("1"))
    assert days[DAY].bits(days[DAY].received).startswith("0100")
    assert len(days[DAY].bits(0)) == 96


# -- schedules ---------------------------------------------------------------------------


def test_schedules_parse_defaults_and_group_overrides() -> None:
    s = parse_schedules("registers=5m", "Zone A:events=30m,profile=6h; B:registers=1h")
    assert s.every("Zone C", Task.REGISTERS) == 300
    assert s.every("Zone C", Task.PROFILE) == 86_400
    assert s.every("Zone A", Task.EVENTS) == 1_800
    assert s.every("Zone A", Task.REGISTERS) == 300
    assert s.every("B", Task.REGISTERS) == 3_600
    assert Schedules().every("x", Task.EVENTS) == 3_600


@pytest.mark.parametrize(
    ("default", "groups", "message"),
    [
        ("registers", "", "task=duration"),
        ("voltage=5m", "", "not a task"),
        ("registers=5x", "", "not a duration"),
        ("registers=10s", "", "between 1m and 7d"),
        ("", "events=5m", "group:task=duration"),
    ],
)
def test_bad_schedules_name_the_part_and_rule(default: str, groups: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedules(default, groups)


def test_next_due_is_on_the_grid_plus_a_stable_spread_per_meter() -> None:
    meter = UUID(int=12345)
    now = datetime(2025, 3, 1, 10, 7, tzinfo=UTC)
    first = next_due(meter, 900, now)
    assert first > now
    offset = (first - datetime(2025, 3, 1, 10, 0, tzinfo=UTC)).total_seconds() % 900
    assert 0 <= offset < 300
    assert next_due(meter, 900, first) == first + timedelta(seconds=900)
    spreads = {next_due(uuid4(), 900, now).minute for _ in range(200)}
    assert len(spreads) > 3  # the fleet does not all start in the same minute


def test_retry_backs_off_beyond_the_interval_up_to_four_hours() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    delays = [(retry_due(n, 900, now) - now).total_seconds() for n in (1, 2, 3, 6, 20, 99)]
    assert delays == [30, 60, 120, 960, 14_400, 14_400]
    assert (retry_due(99, 86_400, now) - now).total_seconds() == 86_400


# -- scaler/unit ------------------------------------------------------------------------


def test_scaler_and_unit_are_applied_to_the_catalogue_unit() -> None:
    q, v = scaled("1.0.32.7.0.255", 2314, ScalerUnit(-1, 35))
    assert (q.alias, v) == ("voltage_l1", 231.4)
    assert scaled("1.0.1.8.0.255", 12345, ScalerUnit(3, 30))[1] == 12_345_000.0
    assert scaled("1.0.13.7.0.255", 987, ScalerUnit(-3, 255))[1] == 0.987
    assert scaled("1.0.31.7.0.255", 1234, ScalerUnit(-2, 33))[1] == 12.34


@pytest.mark.parametrize(
    ("obis", "raw", "su", "message"),
    [
        ("1.0.32.7.0.255", 2314, ScalerUnit(-1, 33), "unit code 33"),
        ("1.0.32.7.0.255", "230", ScalerUnit(0, 35), "not a number"),
        ("1.0.32.7.0.255", True, ScalerUnit(0, 35), "not a number"),
        ("1.0.99.7.0.255", 1, ScalerUnit(0, 35), "not a quantity"),
    ],
)
def test_values_that_cannot_be_readings_are_refused(
    obis: str, raw: object, su: ScalerUnit, message: str
) -> None:
    with pytest.raises(ScalingError, match=message):
        scaled(obis, raw, su)


def test_scaler_unit_attribute_shape_is_checked() -> None:
    assert ScalerUnit.parse([-1, 35], "x") == ScalerUnit(-1, 35)
    for bad in ([1], "ab", [1, 2, 3], [True, 35], [40, 35]):
        with pytest.raises(ScalingError):
            ScalerUnit.parse(bad, "x")


def test_push_layouts_are_parsed_and_checked_against_the_catalogue() -> None:
    layout = PushLayout.parse(" 1.0.1.8.0.255:3:30 , 1.0.32.7.0.255:-1:35")
    assert layout.values == (
        ("1.0.1.8.0.255", ScalerUnit(3, 30)),
        ("1.0.32.7.0.255", ScalerUnit(-1, 35)),
    )
    assert [s.apply(r) for s, r in zip(layout.scalings, (12, 2314), strict=True)] == [
        12_000.0,
        231.4,
    ]
    assert len(PushLayout.parse(DEFAULT_PUSH_LAYOUT_TEXT)) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "push value 1 '': not OBIS:scaler:unit"),
        ("1.0.1.8.0.255:0", "not OBIS:scaler:unit"),
        ("1.0.1.8.0.255:x:30", "scaler and unit must be integers"),
        ("1.0.1.8.0.255:0:30,1.0.99.7.0.255:0:35", "push value 2: 1.0.99.7.0.255 is not a"),
        ("1.0.32.7.0.255:0:30", "push value 1: 1.0.32.7.0.255 is reported in unit code 30"),
        ("1.0.1.8.0.255:13:30", "scaler outside -12..12"),
    ],
)
def test_bad_push_layouts_name_the_value_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(PushLayoutError, match=re.escape(message)):
        PushLayout.parse(text)
    with pytest.raises(SettingsError, match="HES_DLMS_PUSH_LAYOUT: push value"):
        Settings.of(dlms_push_layout=text)
