"""Time-of-use calendar and load limit values: their rules and the tier a calendar applies."""

from datetime import UTC, date, datetime, time

import pytest

from domain.errors import ValidationFailed
from domain.load_limit import EmergencyProfile, LoadLimit
from domain.tou_calendar import DayProfile, DaySwitch, Season, SpecialDay, TouCalendar, WeekProfile


def calendar(**changes: object) -> TouCalendar:
    base = TouCalendar(
        name="TOU1",
        seasons=(
            Season(name="Winter", start=date(2000, 10, 1), week="WK"),
            Season(name="Summer", start=date(2000, 4, 1), week="WE"),
        ),
        weeks=(
            WeekProfile(name="WK", days=(1, 1, 1, 1, 1, 2, 2)),
            WeekProfile(name="WE", days=(2, 2, 2, 2, 2, 2, 2)),
        ),
        days=(
            DayProfile(
                day_id=1,
                switches=(
                    DaySwitch(start=time(0, 0), tier=1),
                    DaySwitch(start=time(7, 0), tier=3),
                    DaySwitch(start=time(22, 0), tier=1),
                ),
            ),
            DayProfile(day_id=2, switches=(DaySwitch(start=time(0, 0), tier=2),)),
        ),
        special_days=(SpecialDay(index=1, on=date(2026, 12, 25), day_id=2),),
    )
    return TouCalendar(**{**{f: getattr(base, f) for f in base.__struct_fields__}, **changes})  # type: ignore[arg-type]


def fields(exc: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_a_well_formed_calendar_passes_and_applies_its_tiers() -> None:
    cal = calendar()
    cal.check()
    assert cal.tier_at(datetime(2026, 12, 1, 8, 0)) == 3  # winter Tuesday peak
    assert cal.tier_at(datetime(2026, 12, 1, 23, 0)) == 1
    assert cal.tier_at(datetime(2026, 12, 5, 8, 0)) == 2  # winter Saturday
    assert cal.tier_at(datetime(2026, 12, 25, 8, 0)) == 2  # special day (a Friday)
    assert cal.tier_at(datetime(2026, 6, 2, 8, 0)) == 2  # summer
    assert cal.tier_at(datetime(2026, 1, 6, 8, 0)) == 3  # before April: last year's winter


def test_every_broken_rule_is_named() -> None:
    bad = calendar(
        name="much too long",
        weeks=(WeekProfile(name="WK", days=(1, 1, 1, 1, 1, 9, 2)),),
        days=(
            DayProfile(
                day_id=1,
                switches=(
                    DaySwitch(start=time(1, 0), tier=9),
                    DaySwitch(start=time(0, 30), tier=1),
                ),
            ),
            DayProfile(day_id=2, switches=(DaySwitch(start=time(0, 0), tier=2),)),
        ),
        special_days=(SpecialDay(index=1, on=date(2026, 12, 25), day_id=7),),
        activate_at=datetime(2026, 12, 1, 0, 0),
    )
    with pytest.raises(ValidationFailed) as exc:
        bad.check()
    assert fields(exc) >= {
        "name",
        "weeks[0].days[5]",
        "days[0].switches[0].start",
        "days[0].switches",
        "days[0].switches[0].tier",
        "seasons[1].week",
        "specialDays[0].dayId",
        "activateAt",
    }


def test_load_limit_rules() -> None:
    LoadLimit(threshold_normal_w=5000, threshold_emergency_w=2000).check()
    with pytest.raises(ValidationFailed) as exc:
        LoadLimit(
            threshold_normal_w=0,
            threshold_emergency_w=3000,
            min_over_threshold_s=-1,
            emergency=EmergencyProfile(profile_id=1, activation=datetime(2026, 1, 1), duration_s=0),
        ).check()
    assert fields(exc) == {
        "thresholdNormalW",
        "thresholdEmergencyW",
        "minOverThresholdS",
        "emergency.durationS",
        "emergency.activation",
    }
    LoadLimit(
        threshold_normal_w=5000,
        threshold_emergency_w=2000,
        emergency=EmergencyProfile(
            profile_id=1, activation=datetime(2026, 1, 1, tzinfo=UTC), duration_s=3600
        ),
    ).check()
