"""The consumption analysis on small labelled fleets: theft, stuck meters, failing phases,
holidays and a heat wave; forecasts and their intervals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from processes.insights.analysis import (
    SLOTS_PER_DAY,
    Assessment,
    Feature,
    MeterEvidence,
    SuspicionKind,
    assess,
    day_features,
    patterns,
    reason_text,
)
from processes.insights.forecast import (
    forecast_meters,
    forecast_regions,
    mase,
    seasonal_naive,
)
from simulation.labelled_fleet import Case, FleetSpec, LabelledFleet

SPEC = FleetSpec(meters=1000, seed=5, theft_share=0.02, stuck_share=0.01, failing_phase_share=0.02)


@pytest.fixture(scope="module")
def fleet() -> LabelledFleet:
    return LabelledFleet(SPEC)


@pytest.fixture(scope="module")
def power(fleet: LabelledFleet) -> np.ndarray:
    return fleet.curves(0, fleet.meters)


@pytest.fixture(scope="module")
def result(fleet: LabelledFleet, power: np.ndarray) -> Assessment:
    return assess(
        day_features(power), fleet.areas, fleet.evidence, fleet.start, regions=fleet.regions
    )


def _found(result: Assessment, kind: SuspicionKind) -> set[int]:
    return {s.meter for s in result.suspicions if s.kind is kind}


def test_the_fleet_carries_every_case(fleet: LabelledFleet) -> None:
    for case in Case:
        assert fleet.truth(case).sum() > 0, case


def test_theft_is_detected_with_its_evidence_and_confidence(
    fleet: LabelledFleet, result: Assessment
) -> None:
    thieves = set(np.flatnonzero(fleet.truth(Case.THEFT)).tolist())
    found = _found(result, SuspicionKind.THEFT)
    assert len(found & thieves) >= 0.8 * len(thieves)
    assert len(found & thieves) >= 0.9 * len(found)
    for s in result.suspicions:
        if s.kind is SuspicionKind.THEFT and s.meter in thieves:
            assert 0.6 <= s.confidence <= 1.0
            assert any("fell" in e and "stayed down" in e for e in s.evidence)
            assert abs(s.since_day - int(fleet.since[s.meter])) <= 2  # a weekend blurs it
            if fleet.evidence.tamper_events[s.meter]:
                assert any("tamper" in e for e in s.evidence)


def test_a_stuck_meter_is_flagged_as_a_fault(fleet: LabelledFleet, result: Assessment) -> None:
    stuck = set(np.flatnonzero(fleet.truth(Case.STUCK)).tolist())
    assert _found(result, SuspicionKind.STUCK_METER) == stuck
    meter = min(stuck)
    day = int(fleet.since[meter]) + 1
    assert result.scores[meter, day] == 95.0
    assert result.reasons[meter, day] == Feature.CONSTANT
    assert "constant" in reason_text(
        int(result.reasons[meter, day]), float(result.ratios[meter, day]), 1.0
    )


def test_a_failing_phase_is_a_fault_not_theft(fleet: LabelledFleet, result: Assessment) -> None:
    failing = set(np.flatnonzero(fleet.truth(Case.FAILING_PHASE)).tolist())
    assert failing <= _found(result, SuspicionKind.FAILING_PHASE)
    assert not failing & _found(result, SuspicionKind.THEFT)


def test_holidays_and_the_heat_wave_are_not_theft_nor_high_scores(
    fleet: LabelledFleet, result: Assessment
) -> None:
    normal = fleet.truth(Case.NORMAL)
    assert not normal[list(_found(result, SuspicionKind.THEFT))].any()
    quiet_day = 23  # a weekday with nothing fleet-wide going on
    for day in (*SPEC.holidays, *range(*SPEC.heat_wave)):
        flagged = (result.scores[normal, day] >= 90).mean()
        assert flagged <= (result.scores[normal, quiet_day] >= 90).mean() + 0.01, day
    # the area moved, and the score's reason says so rather than blaming the meter
    assert np.median(result.area_factor[fleet.regions == 0, SPEC.heat_wave[0]]) > 1.1


def test_a_holiday_shape_alone_does_not_make_theft() -> None:
    """A week of holidays: every meter on its weekend shape, offices far below their usual.
    Each meter has enough peers of its habit in its region (``MIN_PEERS``) to see it is not
    alone."""
    spec = replace(
        SPEC,
        meters=300,
        regions=1,
        theft_share=0,
        stuck_share=0,
        failing_phase_share=0,
        holidays=tuple(range(20, 27)),
    )
    fleet = LabelledFleet(spec)
    power = fleet.curves(0, fleet.meters)
    found = assess(
        day_features(power), fleet.areas, fleet.evidence, fleet.start, regions=fleet.regions
    )
    assert not [s for s in found.suspicions if s.kind is SuspicionKind.THEFT]


def test_one_piece_of_evidence_alone_stays_below_the_reporting_confidence() -> None:
    spec = replace(SPEC, meters=200, theft_share=0, stuck_share=0, failing_phase_share=0)
    fleet = LabelledFleet(spec)
    power = fleet.curves(0, fleet.meters)
    evidence = MeterEvidence.none(fleet.meters)
    evidence.tamper_events[:10] = 1
    found = assess(day_features(power), fleet.areas, evidence, fleet.start)
    assert not found.suspicions
    evidence.reverse_energy[:5] = True  # tamper + reverse flow together are reported
    found = assess(day_features(power), fleet.areas, evidence, fleet.start)
    assert {s.meter for s in found.suspicions} == set(range(5))
    assert all(any("reverse" in e for e in s.evidence) for s in found.suspicions)


def test_patterns_describe_the_profile(fleet: LabelledFleet, power: np.ndarray) -> None:
    p = patterns(power, fleet.start)
    assert p.daily_profile.shape == (fleet.meters, SLOTS_PER_DAY)
    assert p.weekly_kwh.shape == (fleet.meters, 7)
    assert (p.base_w <= p.mean_w).all() and (p.mean_w <= p.peak_w).all()
    homes = (fleet.profiles == 0) & fleet.truth(Case.NORMAL)
    evening = p.daily_profile[homes, 19 * 4].mean()
    night = p.daily_profile[homes, 3 * 4].mean()
    assert evening > 2.5 * night  # the evening peak of a household
    offices = (fleet.profiles == 1) & fleet.truth(Case.NORMAL)
    assert (p.weekly_kwh[offices, 6] < p.weekly_kwh[offices, 2]).mean() > 0.95


def test_a_rising_meter_has_a_positive_trend(fleet: LabelledFleet, power: np.ndarray) -> None:
    rising = power[:5] * np.linspace(0.8, 1.2, power.shape[1], dtype=np.float32)
    assert (patterns(rising, fleet.start).trend_pct_week > 5).all()


def test_missing_slots_do_not_look_like_theft(fleet: LabelledFleet, power: np.ndarray) -> None:
    holes = power[:200].copy()
    rng = np.random.default_rng(1)
    holes[rng.random(holes.shape) < 0.3] = np.nan
    found = assess(day_features(holes), fleet.areas[:200], MeterEvidence.none(200), fleet.start)
    normal = set(np.flatnonzero(fleet.truth(Case.NORMAL)[:200]).tolist())
    assert not normal & {s.meter for s in found.suspicions}


def test_forecast_intervals_contain_most_actuals_and_beat_seasonal_naive(
    fleet: LabelledFleet, power: np.ndarray
) -> None:
    end = power.shape[1] - SLOTS_PER_DAY
    normal = fleet.truth(Case.NORMAL)
    f = forecast_meters(power[normal], end=end)
    actual = power[normal, end:]
    inside = (actual >= f.lower) & (actual <= f.upper)
    assert inside.mean() >= 0.8
    assert (f.lower <= f.mean).all() and (f.mean <= f.upper).all()
    history = power[normal, :end]
    ours = np.nanmean(mase(f.mean, actual, history))
    naive = np.nanmean(mase(seasonal_naive(power[normal], end, SLOTS_PER_DAY), actual, history))
    assert ours < naive


def test_region_forecasts_choose_a_model_and_cover_the_next_day(
    fleet: LabelledFleet, power: np.ndarray
) -> None:
    end = power.shape[1] - SLOTS_PER_DAY
    totals = np.stack([power[fleet.regions == r, :end].sum(0) for r in range(2)])
    f, models = forecast_regions(totals)
    assert f.mean.shape == (2, SLOTS_PER_DAY)
    assert set(models) <= {"weekly-profile", "holt-winters"}
    actual = np.stack([power[fleet.regions == r, end:].sum(0) for r in range(2)])
    assert ((actual >= f.lower) & (actual <= f.upper)).mean() >= 0.7
    assert np.abs(f.mean - actual).mean() / actual.mean() < 0.15


def test_the_matrix_must_hold_whole_days() -> None:
    with pytest.raises(ValueError, match="whole days"):
        day_features(np.zeros((2, 100), np.float32))


def test_region_forecasts_keep_the_profile_method_past_the_fitting_budget(
    fleet: LabelledFleet, power: np.ndarray
) -> None:
    totals = np.stack([power[fleet.regions == r].sum(0) for r in range(3)])
    f, models = forecast_regions(totals, budget_seconds=0.0)
    assert models == ["weekly-profile"] * 3
    assert np.allclose(f.mean, forecast_meters(totals).mean)
