"""Reading validation rules: range, finiteness, time window, suspect voltages, registers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.obis import BY_ALIAS, ENERGY_IMPORT
from domain.reading_rules import (
    Checked,
    Proposed,
    RegisterState,
    TimeWindow,
    Violation,
    check_meter,
    check_time,
    check_value,
    quality_of,
)
from domain.readings import Quality, Reading

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = TimeWindow(now=NOW, future_tolerance=timedelta(minutes=5), max_age=timedelta(days=7))
VOLTAGE = BY_ALIAS["voltage_l1"]
FREQUENCY = BY_ALIAS["frequency"]
POWER_FACTOR = BY_ALIAS["power_factor"]
EXPORT = BY_ALIAS["energy_export"]


def at(minutes: float) -> datetime:
    """``NOW`` shifted by ``minutes``."""
    return NOW + timedelta(minutes=minutes)


def proposed(alias: str, value: float, minutes: float = 0, quality: int = 0) -> Proposed:
    """A reading of ``alias`` at ``NOW + minutes``, labelled with the alias."""
    quantity = BY_ALIAS[alias]
    return Proposed(Reading(quantity.id, at(minutes), value, quality), alias)


def rules(checked: Checked) -> list[tuple[int, str]]:
    """(input position, rule) of each rejection."""
    return [(index, v.rule) for index, v in checked.rejected]


# -- single values -----------------------------------------------------------------------


def test_value_above_maximum_names_the_limit() -> None:
    assert check_value(VOLTAGE, 612.0, "voltage") == Violation(
        "range", "voltage 612.0 V is above the maximum 500 V"
    )


def test_value_below_minimum_names_the_limit() -> None:
    assert check_value(FREQUENCY, 12.5, "frequency") == Violation(
        "range", "frequency 12.5 Hz is below the minimum 45 Hz"
    )


def test_dimensionless_limit_has_no_unit() -> None:
    violation = check_value(POWER_FACTOR, 1.2, "power_factor")
    assert violation == Violation("range", "power_factor 1.2 is above the maximum 1")


def test_negative_energy_is_out_of_range() -> None:
    violation = check_value(ENERGY_IMPORT, -1.0, "energy_kwh")
    assert violation is not None
    assert violation.rule == "range"
    assert "below the minimum 0 Wh" in violation.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_break_finite(value: float) -> None:
    violation = check_value(VOLTAGE, value, "voltage")
    assert violation is not None
    assert violation.rule == "not-finite"


@pytest.mark.parametrize(
    ("alias", "value"),
    [("voltage_l1", 0.0), ("voltage_l1", 500.0), ("frequency", 45.0), ("power_factor", -1.0)],
)
def test_limits_are_inclusive(alias: str, value: float) -> None:
    assert check_value(BY_ALIAS[alias], value, alias) is None


def test_time_within_tolerance_is_fine() -> None:
    assert check_time(at(5), WINDOW) is None
    assert check_time(NOW - timedelta(days=7), WINDOW) is None


def test_time_too_far_ahead_breaks_future() -> None:
    violation = check_time(at(6), WINDOW)
    assert violation is not None
    assert violation.rule == "future"
    assert "360 s ahead" in violation.message
    assert "tolerance 300 s" in violation.message


def test_time_older_than_retention_breaks_too_old() -> None:
    violation = check_time(NOW - timedelta(days=7, seconds=1), WINDOW)
    assert violation is not None
    assert violation.rule == "too-old"
    assert "7 days" in violation.message


@pytest.mark.parametrize(("value", "suspect"), [(0.0, True), (100.0, True), (115.0, False)])
def test_low_voltage_is_kept_but_suspect(value: float, suspect: bool) -> None:
    quality = quality_of(VOLTAGE, value, Quality.ESTIMATED)
    assert bool(quality & Quality.SUSPECT) is suspect
    assert quality & Quality.ESTIMATED


def test_low_values_of_other_quantities_are_not_suspect() -> None:
    assert quality_of(BY_ALIAS["current_l1"], 0.0, Quality.VALID) == Quality.VALID


# -- one meter's readings together --------------------------------------------------------


def test_check_meter_sorts_accepted_from_rejected_by_position() -> None:
    checked = check_meter(
        [
            proposed("voltage_l1", 231.0),
            proposed("voltage_l1", 612.0, 1),
            proposed("frequency", 50.0, 60),
            proposed("voltage_l1", 0.0, 2),
        ],
        WINDOW,
    )
    assert rules(checked) == [(1, "range"), (2, "future")]
    assert [(i, r.quality) for i, r in checked.accepted] == [
        (0, Quality.VALID),
        (3, Quality.SUSPECT),
    ]


def test_same_quantity_and_time_twice_is_a_duplicate() -> None:
    checked = check_meter(
        [proposed("voltage_l1", 231.0), proposed("voltage_l1", 232.0), proposed("current_l1", 1)],
        WINDOW,
    )
    assert rules(checked) == [(1, "duplicate")]
    assert [i for i, _ in checked.accepted] == [0, 2]


def test_register_decreasing_within_request_in_time_order() -> None:
    # Given out of order: sorted by time, 1000 → 900 decreases, 1100 is fine.
    checked = check_meter(
        [
            proposed("energy_import", 1100.0, -1),
            proposed("energy_import", 1000.0, -3),
            proposed("energy_import", 900.0, -2),
        ],
        WINDOW,
    )
    assert rules(checked) == [(2, "decreasing")]
    message = checked.rejected[0][1].message
    assert "900.0 Wh" in message
    assert "1000.0 Wh" in message


def test_equal_register_values_are_not_decreasing() -> None:
    checked = check_meter(
        [proposed("energy_import", 1000.0, -2), proposed("energy_import", 1000.0, -1)], WINDOW
    )
    assert checked.rejected == []


def test_rejected_register_value_does_not_lower_the_floor() -> None:
    checked = check_meter(
        [
            proposed("energy_import", 1000.0, -3),
            proposed("energy_import", 500.0, -2),
            proposed("energy_import", 700.0, -1),
        ],
        WINDOW,
    )
    assert rules(checked) == [(1, "decreasing"), (2, "decreasing")]


def test_registers_are_compared_per_quantity() -> None:
    checked = check_meter(
        [proposed("energy_import", 1000.0, -2), proposed("energy_export", 10.0, -1)], WINDOW
    )
    assert checked.rejected == []


def test_later_reading_below_last_known_is_decreasing() -> None:
    last = {ENERGY_IMPORT.id: RegisterState(5000.0, at(-10))}
    checked = check_meter([proposed("energy_import", 4000.0, -5)], WINDOW, last)
    assert rules(checked) == [(0, "decreasing")]


def test_reading_at_last_known_time_must_not_be_lower() -> None:
    last = {ENERGY_IMPORT.id: RegisterState(5000.0, at(-10))}
    assert rules(check_meter([proposed("energy_import", 4999.0, -10)], WINDOW, last)) == [
        (0, "decreasing")
    ]
    assert rules(check_meter([proposed("energy_import", 5000.0, -10)], WINDOW, last)) == []


def test_reading_older_than_last_known_is_only_compared_within_request() -> None:
    last = {ENERGY_IMPORT.id: RegisterState(5000.0, at(-10))}
    checked = check_meter(
        [
            proposed("energy_import", 3000.0, -20),
            proposed("energy_import", 2000.0, -15),
            proposed("energy_import", 5100.0, -5),
        ],
        WINDOW,
        last,
    )
    assert rules(checked) == [(1, "decreasing")]


def test_last_known_of_another_register_does_not_apply() -> None:
    last = {EXPORT.id: RegisterState(5000.0, at(-10))}
    assert check_meter([proposed("energy_import", 10.0, -5)], WINDOW, last).rejected == []


def test_out_of_range_register_value_is_not_a_floor() -> None:
    checked = check_meter(
        [proposed("energy_import", 2e13, -2), proposed("energy_import", 10.0, -1)], WINDOW
    )
    assert rules(checked) == [(0, "range")]


def test_negative_register_breaks_range_not_decreasing() -> None:
    checked = check_meter(
        [proposed("energy_import", 100.0, -2), proposed("energy_import", -5.0, -1)], WINDOW
    )
    assert rules(checked) == [(1, "range")]
