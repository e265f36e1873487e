"""Detector rules: overload windows, anomaly baseline and confidence, comm loss, meter events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.alert import AlertType, Severity
from domain.detection import (
    WINDOW,
    AnomalyRule,
    CommFailureRule,
    MeterEvent,
    OverloadRule,
    Verdict,
    anomaly_confidence,
    baseline,
    bucket_start,
    decide_meter_event,
    detect_anomaly,
    detect_comm_failure,
    detect_overload,
)

NOW = datetime(2025, 3, 3, 12, 7, tzinfo=UTC)  # a Monday, 7 minutes into the 12:00 window
CURRENT = bucket_start(NOW)
METER = uuid4()
RULE = OverloadRule()


def windows(*loads: float) -> list[tuple[datetime, float]]:
    """Rows for the current window and the ones before it, newest last."""
    n = len(loads)
    return [(CURRENT - (n - 1 - i) * WINDOW, load) for i, load in enumerate(loads)]


# -- overload ----------------------------------------------------------------------------


def test_three_windows_above_threshold_raise() -> None:
    found = detect_overload("North", windows(86, 90, 95), NOW, RULE)

    assert found.verdict is Verdict.RAISE
    assert found.dedup_key == "OVERLOAD:North"
    assert found.alert_type is AlertType.OVERLOAD
    assert found.evidence["windowsAbove"] == 3
    assert found.severity is Severity.HIGH


def test_two_windows_above_keep_and_none_above_clear() -> None:
    assert detect_overload("North", windows(70, 90, 95), NOW, RULE).verdict is Verdict.KEEP
    assert detect_overload("North", windows(70, 80, 85), NOW, RULE).verdict is Verdict.CLEAR


def test_windows_older_than_the_span_do_not_count() -> None:
    rows = windows(99, 99, 99, 99)  # the oldest starts 45 min before the current window
    rows[1:] = [(b, 10.0) for b, _ in rows[1:]]

    found = detect_overload("North", rows, NOW, RULE)

    assert found.verdict is Verdict.CLEAR
    assert found.evidence["windowsConsidered"] == 3


def test_a_current_window_without_readings_yet_is_no_evidence() -> None:
    hot_before = [(b - WINDOW, load) for b, load in windows(90, 95, 99)]  # none in the current

    found = detect_overload("North", hot_before, NOW, RULE)

    assert found.verdict is Verdict.RAISE
    assert found.evidence["windowsConsidered"] == 3
    assert found.evidence["to"] == CURRENT.isoformat()


def test_a_current_window_with_readings_counts_even_when_cool() -> None:
    found = detect_overload("North", windows(90, 95, 99, 10), NOW, RULE)

    assert found.verdict is Verdict.KEEP
    assert found.evidence["windowsAbove"] == 2


def test_a_peak_at_full_capacity_is_critical() -> None:
    found = detect_overload("North", windows(90, 95, 101), NOW, RULE)

    assert found.severity is Severity.CRITICAL


def test_window_count_and_threshold_are_configurable() -> None:
    rule = OverloadRule(threshold_pct=70, windows_required=2)

    assert detect_overload("North", windows(10, 75, 80), NOW, rule).verdict is Verdict.RAISE


loads = st.floats(min_value=0, max_value=200, allow_nan=False)


@given(st.lists(loads, min_size=0, max_size=6), st.integers(min_value=1, max_value=5))
def test_overload_never_raises_with_fewer_windows_above_than_required(
    values: list[float], required: int
) -> None:
    rule = OverloadRule(windows_required=required)
    rows = windows(*values)
    first, last = rule.considered(NOW)
    above = sum(1 for b, v in rows if first <= b <= last and v > rule.threshold_pct)

    found = detect_overload("North", rows, NOW, rule)

    assert (found.verdict is Verdict.RAISE) == (above >= required)


# -- anomaly -----------------------------------------------------------------------------

SLOT = CURRENT


def history(*values: float) -> list[tuple[datetime, float]]:
    """The same slot in each of the last weeks (1 week ago first)."""
    return [(SLOT - timedelta(weeks=k + 1), v) for k, v in enumerate(values)]


def test_baseline_uses_only_the_same_weekday_and_slot_of_recent_weeks() -> None:
    rows = [
        *history(100, 120, 80, 100),
        (SLOT - timedelta(weeks=5), 1000.0),  # too old
        (SLOT - timedelta(days=1), 1000.0),  # other weekday
        (SLOT - timedelta(weeks=1, minutes=15), 1000.0),  # other slot
    ]

    base = baseline(rows, NOW, AnomalyRule())

    assert base is not None
    assert (base.mean, base.samples) == (100.0, 4)
    assert base.stdev > 0


@pytest.mark.parametrize(
    ("value", "verdict", "kind"),
    [(201.0, Verdict.RAISE, "spike"), (49.0, Verdict.RAISE, "drop"), (150.0, Verdict.CLEAR, None)],
)
def test_spikes_and_drops_against_the_baseline(
    value: float, verdict: Verdict, kind: str | None
) -> None:
    found = detect_anomaly(METER, "North", NOW, value, history(100, 100, 100, 100), AnomalyRule())

    assert found.verdict is verdict
    assert found.evidence.get("kind") == kind
    assert found.dedup_key == f"ANOMALY:{METER}"
    assert found.confidence is not None and 0 < found.confidence < 100


def test_no_judgment_without_minimum_history() -> None:
    found = detect_anomaly(METER, "North", NOW, 1000.0, history(100, 100), AnomalyRule())

    assert found.verdict is Verdict.KEEP
    assert found.confidence is None
    assert anomaly_confidence(2, 5.0, AnomalyRule()) is None


samples = st.integers(min_value=0, max_value=60)
deviations = st.floats(min_value=-1, max_value=50, allow_nan=False)


@given(samples, deviations)
def test_confidence_is_within_0_and_100(n: int, deviation: float) -> None:
    confidence = anomaly_confidence(n, deviation, AnomalyRule())

    assert confidence is None or 0 <= confidence <= 100
    assert (confidence is None) == (n < AnomalyRule().min_samples)


@given(samples, samples, deviations)
def test_confidence_does_not_fall_with_more_history(a: int, b: int, deviation: float) -> None:
    rule = AnomalyRule(min_samples=0)
    low = anomaly_confidence(min(a, b), deviation, rule)
    high = anomaly_confidence(max(a, b), deviation, rule)

    assert low is not None and high is not None and low <= high


@given(samples, deviations, deviations)
def test_confidence_does_not_fall_with_a_larger_deviation(n: int, a: float, b: float) -> None:
    rule = AnomalyRule(min_samples=0)
    for sign in (1, -1):
        small, large = sorted((abs(a), abs(b)))
        if sign < 0:
            small, large = min(small, 1.0), min(large, 1.0)  # a drop is at most -100 %
        low = anomaly_confidence(n, sign * small, rule)
        high = anomaly_confidence(n, sign * large, rule)
        assert low is not None and high is not None and low <= high


# -- communication failure ---------------------------------------------------------------


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=40))
def test_comm_failure_flips_exactly_at_n_missed_intervals(n: int, silent: int) -> None:
    rule = CommFailureRule(missed_intervals=n)
    last_seen = NOW - silent * rule.interval

    found = detect_comm_failure(METER, "North", last_seen, NOW, rule)
    just_before = detect_comm_failure(
        METER, "North", last_seen, NOW - timedelta(microseconds=1), rule
    )

    assert found.verdict is (Verdict.RAISE if silent >= n else Verdict.CLEAR)
    if silent == n:
        assert just_before.verdict is Verdict.CLEAR
    assert found.dedup_key == f"COMM_FAILURE:{METER}"


def test_a_meter_that_never_reported_is_left_alone() -> None:
    found = detect_comm_failure(METER, "North", None, NOW, CommFailureRule())

    assert found.verdict is Verdict.KEEP


# -- meter events ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alert_type", "verdict", "severity"),
    [
        (MeterEvent.COVER_OPENED, AlertType.TAMPER, Verdict.RAISE, Severity.HIGH),
        (MeterEvent.MAGNETIC_INTERFERENCE, AlertType.TAMPER, Verdict.RAISE, Severity.CRITICAL),
        (MeterEvent.POWER_DOWN, AlertType.OUTAGE, Verdict.RAISE, Severity.HIGH),
        (MeterEvent.POWER_UP, AlertType.OUTAGE, Verdict.CLEAR, Severity.HIGH),
    ],
)
def test_meter_events_become_alert_decisions(
    kind: MeterEvent, alert_type: AlertType, verdict: Verdict, severity: Severity
) -> None:
    found = decide_meter_event(METER, "North", kind, NOW, code=40)

    assert (found.alert_type, found.verdict, found.severity) == (alert_type, verdict, severity)
    assert found.dedup_key == f"{alert_type.value}:{METER}"
    assert found.meter == METER
