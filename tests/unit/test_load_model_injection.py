"""The live simulator's labelled cases: theft, a stuck meter, a failing phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simulation.load_model import (
    CURRENT,
    ENERGY,
    POWER,
    Disturbances,
    Fleet,
    Injected,
    Injection,
    MeterReadings,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
CALM = Disturbances(spike=0.0, drop=0.0, outage=0.0)
STEP = timedelta(minutes=15)
SINCE = MONDAY + timedelta(days=1)


def run(fleet: Fleet, n: int) -> list[dict[str, dict[str, float]]]:
    """Each tick's values by serial and OBIS code."""
    out = []
    for k in range(n):
        tick: list[MeterReadings] = fleet.tick(MONDAY + k * STEP)
        out.append({serial: {r.obis: r.value for r in rs} for serial, rs in tick})
    return out


def injected(**shares: float) -> Fleet:
    return Fleet(40, 3, 2, MONDAY, disturbances=CALM, injection=Injection(SINCE, SINCE, **shares))


def test_without_a_case_the_fleet_is_the_same_and_labels_are_empty() -> None:
    plain = run(Fleet(40, 3, 2, MONDAY, disturbances=CALM), 120)
    none = injected()
    assert run(none, 120) == plain and none.labels() == []


def test_theft_lowers_the_register_and_power_from_its_start_only() -> None:
    plain = run(Fleet(40, 3, 2, MONDAY, disturbances=CALM), 120)
    thieves = injected(theft=1.0)
    stolen = run(thieves, 120)
    labels = {x.serial: x for x in thieves.labels()}
    assert len(labels) == 40 and {x.case for x in labels.values()} == {Injected.THEFT}
    before, after = 96 - 1, 119  # the last tick before SINCE, the last tick
    for serial, label in labels.items():
        assert 0.35 <= label.metered <= 0.65 and label.since == SINCE
        assert stolen[before][serial] == plain[before][serial]
        used = plain[after][serial][ENERGY] - plain[96][serial][ENERGY]
        metered = stolen[after][serial][ENERGY] - stolen[96][serial][ENERGY]
        assert metered == pytest.approx(label.metered * used, abs=2.0)
        assert stolen[after][serial][POWER] == pytest.approx(
            label.metered * plain[after][serial][POWER], abs=0.1
        )


def test_a_stuck_meter_freezes_register_and_power() -> None:
    stuck = injected(stuck=1.0)
    ticks = run(stuck, 130)
    serial = stuck.labels()[0].serial
    frozen = ticks[96][serial]
    assert all(t[serial][ENERGY] == frozen[ENERGY] for t in ticks[96:])
    assert all(t[serial][POWER] == frozen[POWER] for t in ticks[96:])
    assert ticks[95][serial][ENERGY] < frozen[ENERGY] or ticks[95][serial][POWER] != frozen[POWER]


def test_a_failing_phase_is_only_on_three_phase_meters_and_blanks_its_current() -> None:
    failing = injected(failing_phase=1.0)
    ticks = run(failing, 100)
    phases = {m.serial: m.phases for m in failing.describe()}
    labels = failing.labels()
    assert labels and all(phases[x.serial] == 3 for x in labels)
    assert len(labels) == sum(1 for p in phases.values() if p == 3)
    for x in labels:
        assert ticks[99][x.serial][CURRENT[0]] == 0.0
        assert ticks[99][x.serial][CURRENT[1]] > 0.0
        assert ticks[95][x.serial][CURRENT[0]] > 0.0
