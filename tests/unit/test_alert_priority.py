"""Alert priority 0-100: severity, age, affected load and customers, recurrence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.alert import Severity
from domain.alert_priority import WEIGHTS, alert_priority, ordered

HOUR = 3600.0


def test_weights_add_up_to_one_hundred() -> None:
    assert sum(WEIGHTS.values()) == 100.0


def test_a_fresh_low_alert_scores_low_and_a_critical_one_high() -> None:
    low = alert_priority(Severity.LOW, 0, 0, 0, 1, 1)
    assert low.score == 10.0
    worst = alert_priority(Severity.CRITICAL, 1e9, 1e9, 10**9, 10**9, 10**9)
    assert 99.0 < worst.score <= 100.0


def test_priority_ordering_of_typical_alerts() -> None:
    items = [
        ("old-medium-recurring", alert_priority(Severity.MEDIUM, 48 * HOUR, 2.0, 1, 9, 3)),
        ("fresh-critical-region", alert_priority(Severity.CRITICAL, 0.1 * HOUR, 800.0, 400, 1, 1)),
        ("fresh-low-meter", alert_priority(Severity.LOW, 0.1 * HOUR, 0.5, 1, 1, 1)),
        ("fresh-high-meter", alert_priority(Severity.HIGH, 0.1 * HOUR, 0.5, 1, 1, 1)),
    ]
    assert [key for key, _ in ordered(items)] == [
        "fresh-critical-region",
        "old-medium-recurring",
        "fresh-high-meter",
        "fresh-low-meter",
    ]


def test_recurrence_counts_occurrences_and_earlier_generations() -> None:
    once = alert_priority(Severity.MEDIUM, HOUR, 1.0, 1, 1, 1)
    again = alert_priority(Severity.MEDIUM, HOUR, 1.0, 1, 4, 1)
    reopened = alert_priority(Severity.MEDIUM, HOUR, 1.0, 1, 1, 4)
    assert once.recurrence == 0.0
    assert again.recurrence == reopened.recurrence > 0


@given(
    st.sampled_from(list(Severity)),
    st.floats(-HOUR, 1e7),
    st.floats(-10, 1e5),
    st.integers(-5, 10**6),
    st.integers(0, 10**4),
    st.integers(0, 10**3),
    st.sampled_from(["age", "load", "customers", "occurrences"]),
)
def test_priority_never_falls_when_an_input_grows(
    severity: Severity,
    age: float,
    load: float,
    customers: int,
    occurrences: int,
    generation: int,
    grow: str,
) -> None:
    base = alert_priority(severity, age, load, customers, occurrences, generation)
    bigger = {
        "age": (age * 2 + HOUR, load, customers, occurrences),
        "load": (age, load * 2 + 1, customers, occurrences),
        "customers": (age, load, customers * 2 + 1, occurrences),
        "occurrences": (age, load, customers, occurrences + 1),
    }[grow]
    after = alert_priority(severity, *bigger, generation)
    assert after.score >= base.score
    assert 0 <= base.score <= 100
