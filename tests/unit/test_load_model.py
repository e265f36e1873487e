"""The simulated fleet: determinism, physics, daily shapes, disturbances and its import CSV."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from commands.meter_csv import parse_meter_csv
from domain.obis import BY_OBIS
from domain.values import Transport
from simulation.load_model import (
    CURRENT,
    ENERGY,
    FREQUENCY,
    POWER,
    POWER_FACTOR,
    VOLTAGE,
    Disturbances,
    Fleet,
    MeterReadings,
    Profile,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
CALM = Disturbances(spike=0.0, drop=0.0, outage=0.0)


def ticks(fleet: Fleet, start: datetime, step: timedelta, n: int) -> list[list[MeterReadings]]:
    """``n`` ticks of ``fleet`` at ``start``, ``start + step``, …"""
    return [fleet.tick(start + k * step) for k in range(n)]


def values(tick: list[MeterReadings]) -> dict[str, dict[str, float]]:
    """Each reporting meter's values by OBIS code."""
    return {serial: {r.obis: r.value for r in readings} for serial, readings in tick}


def power_by_profile(fleet: Fleet, at: datetime) -> dict[Profile, float]:
    """Total power of each profile's meters at ``at`` (a fresh calm fleet ticks once)."""
    profile = {m.serial: m.profile for m in fleet.describe()}
    totals: dict[Profile, float] = defaultdict(float)
    for serial, power in ((s, v[POWER]) for s, v in values(fleet.tick(at)).items()):
        totals[profile[serial]] += power
    return totals


def test_same_seed_same_values_other_seed_other_values() -> None:
    step = timedelta(minutes=15)
    first = ticks(Fleet(300, 7, 4, MONDAY), MONDAY, step, 20)
    again = ticks(Fleet(300, 7, 4, MONDAY), MONDAY, step, 20)
    other = ticks(Fleet(300, 8, 4, MONDAY), MONDAY, step, 20)
    assert first == again
    assert [values(t) for t in first] != [values(t) for t in other]
    assert first[3][0].readings[0].ts == MONDAY + 3 * step


def test_energy_never_decreases_within_and_across_runs() -> None:
    stormy = Disturbances(spike=0.05, drop=0.05, outage=0.02, outage_ticks=(1, 12))
    fleet = Fleet(100, 3, 4, MONDAY, disturbances=stormy)
    last: dict[str, float] = {}
    step = timedelta(minutes=15)
    for tick in ticks(fleet, MONDAY, step, 700):  # a week
        for serial, reading in values(tick).items():
            if ENERGY in reading:
                assert reading[ENERGY] >= last.get(serial, 0.0), serial
                last[serial] = reading[ENERGY]
    # A later run with the same seed starts above everything the earlier one sent.
    restart = MONDAY + 700 * step
    later = values(Fleet(100, 3, 4, restart, disturbances=CALM).tick(restart))
    assert all(later[serial][ENERGY] >= energy for serial, energy in last.items())


def test_values_stay_within_the_catalogue_and_physics() -> None:
    stormy = Disturbances(spike=0.05, drop=0.0, outage=0.01)
    fleet = Fleet(200, 5, 4, MONDAY, disturbances=stormy)
    seen: set[str] = set()
    for tick in ticks(fleet, MONDAY, timedelta(minutes=37), 200):
        for _, readings in tick:
            for obis, _ts, value in readings:
                quantity = BY_OBIS[obis]
                assert quantity.minimum <= value <= quantity.maximum, (quantity.alias, value)
                seen.add(obis)
            reading = {r.obis: r.value for r in readings}
            if reading[VOLTAGE[0]] == 0.0:  # last gasp of a supply outage
                assert reading[POWER] == 0.0 and POWER_FACTOR not in reading
                continue
            assert 0.85 <= reading[POWER_FACTOR] <= 0.99
            assert 49.95 <= reading[FREQUENCY] <= 50.05
            volts = [reading[v] for v in VOLTAGE if v in reading]
            assert all(207.0 <= v <= 253.0 for v in volts)
            amps = [reading[c] for c in CURRENT if c in reading]
            # current = P / (V · pf), per phase
            apparent = sum(v * i for v, i in zip(volts, amps, strict=True))
            assert apparent * reading[POWER_FACTOR] == pytest.approx(reading[POWER], rel=0.01)
    assert seen == {ENERGY, POWER, *VOLTAGE, *CURRENT, POWER_FACTOR, FREQUENCY}


def test_daily_shapes_by_profile_and_weekday() -> None:
    def at(day: int, hour: int) -> dict[Profile, float]:
        when = MONDAY + timedelta(days=day, hours=hour)
        return power_by_profile(Fleet(2000, 11, 4, when, disturbances=CALM), when)

    wednesday_3, wednesday_11 = at(2, 3), at(2, 11)
    wednesday_19, wednesday_23 = at(2, 19), at(2, 23)
    saturday_11 = at(5, 11)
    home, office, plant = Profile.RESIDENTIAL, Profile.COMMERCIAL, Profile.INDUSTRIAL
    assert wednesday_19[home] > 3 * wednesday_3[home]  # evening peak
    assert wednesday_11[office] > 3 * wednesday_23[office]  # office hours
    assert saturday_11[office] < 0.5 * wednesday_11[office]  # closed at the weekend
    assert 0.6 < wednesday_3[plant] / wednesday_11[plant] < 0.8  # night dip, still running
    assert saturday_11[plant] < 0.7 * wednesday_11[plant]
    assert saturday_11[home] > wednesday_11[home]  # people at home


def test_voltage_sags_with_regional_load() -> None:
    def mean_voltage(when: datetime) -> float:
        fleet = Fleet(1000, 2, 4, when, disturbances=CALM)
        valley = {m.serial for m in fleet.describe() if m.region == "Valley"}
        volts = [v[VOLTAGE[0]] for s, v in values(fleet.tick(when)).items() if s in valley]
        return sum(volts) / len(volts)

    assert (
        mean_voltage(MONDAY + timedelta(hours=19)) < mean_voltage(MONDAY + timedelta(hours=3)) - 4
    )


def test_outages_are_silent_and_end() -> None:
    def run(share: float) -> tuple[list[set[str]], int, Fleet]:
        outages = Disturbances(outage=0.02, outage_ticks=(3, 5), power_outage_share=share)
        fleet = Fleet(400, 9, 4, MONDAY, disturbances=outages)
        silent, gasps = [], 0
        for tick in ticks(fleet, MONDAY, timedelta(seconds=10), 60):
            silent.append(set(fleet.serials()) - {serial for serial, _ in tick})
            gasps += sum(1 for _, r in tick if r[2].obis == VOLTAGE[0] and r[2].value == 0.0)
        return silent, gasps, fleet

    supply, gasps, fleet = run(1.0)
    assert all(supply[10:]) and gasps > 0
    # A supply outage reports its last gasp, then stays silent for 3..5 ticks, then returns.
    for serial in fleet.serials():
        streak = longest = 0
        for missing in supply:
            streak = streak + 1 if serial in missing else 0
            longest = max(longest, streak)
        assert longest <= 5
    communication, gasps, _ = run(0.0)
    assert all(communication[10:]) and gasps == 0


def test_drops_leave_single_readings_out() -> None:
    full = {m.serial: 6 if m.phases == 1 else 10 for m in Fleet(500, 4).describe()}
    calm = Fleet(500, 4, 4, MONDAY, disturbances=CALM).tick(MONDAY)
    assert {serial: len(r) for serial, r in calm} == full
    dropping = Fleet(500, 4, 4, MONDAY, disturbances=Disturbances(drop=0.05, outage=0.0))
    tick = dropping.tick(MONDAY)
    short = [len(r) for serial, r in tick if len(r) < full[serial]]
    assert len(tick) == 500 and short
    assert all(full[serial] - len(r) <= 1 for serial, r in tick)


def test_spikes_multiply_power_for_one_tick() -> None:
    def total_power(spike: float, at: datetime) -> float:
        fleet = Fleet(500, 4, 4, MONDAY, disturbances=Disturbances(spike, 0.0, 0.0))
        return sum(v[POWER] for v in values(fleet.tick(at)).values())

    assert 2.0 < total_power(1.0, MONDAY) / total_power(0.0, MONDAY) < 4.0


def test_csv_imports_cleanly_with_regions_and_phases() -> None:
    fleet = Fleet(1000, 21, 6, MONDAY)
    parsed = parse_meter_csv(fleet.csv())
    assert parsed.errors == []
    registered = {row.spec.serial: (row.spec.region, row.spec.phases) for row in parsed.rows}
    described = fleet.describe()
    assert registered == {m.serial: (m.region, m.phases) for m in described}
    assert {m.region for m in described} == {r.name for r in fleet.regions}
    assert {r.name for r in fleet.regions} == {
        "North",
        "Central",
        "Harbour",
        "Valley",
        "North 2",
        "Central 2",
    }
    assert {m.phases for m in described} == {1, 3}
    # A three-phase meter reports all three phases, a single-phase one only L1.
    for serial, readings in Fleet(1000, 21, 6, MONDAY, disturbances=CALM).tick(MONDAY):
        reported = {r.obis for r in readings}
        assert (VOLTAGE[2] in reported) == (registered[serial][1] == 3)
    slices = [fleet.csv(first, 300) for first in range(0, 1000, 300)]
    rows = [r.spec.serial for part in slices for r in parse_meter_csv(part).rows]
    assert rows == fleet.serials()


def test_simulated_meters_are_on_loopback_and_never_dialled() -> None:
    fleet = Fleet(70_000, 21, 6, MONDAY)
    connections = [row.spec.connection for row in parse_meter_csv(fleet.csv(65_530, 20)).rows]
    assert len(connections) == 20
    for connection in connections:
        assert ipaddress.ip_address(connection.host).is_loopback, connection.host
        assert connection.transport is Transport.NONE and not connection.dialled
    assert len({c.host for c in connections}) == 20  # one address per meter, past 65,536


def test_rejects_naive_and_backward_times() -> None:
    fleet = Fleet(3, 1, 4, MONDAY)
    with pytest.raises(ValueError, match="time zone"):
        fleet.tick(datetime(2026, 11, 23, 10))
    fleet.tick(MONDAY + timedelta(hours=1))
    with pytest.raises(ValueError, match="before the last one"):
        fleet.tick(MONDAY)
    with pytest.raises(ValueError, match="at least 1"):
        Fleet(0, 1)
