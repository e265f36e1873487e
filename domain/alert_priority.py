"""Alert priority 0-100 from severity, age, affected load and customers, and recurrence."""

from __future__ import annotations

import msgspec

from domain.alert import Severity

WEIGHTS = {"severity": 40.0, "age": 15.0, "load": 15.0, "customers": 15.0, "recurrence": 15.0}
"""Points each factor can add; they sum to 100."""
AGE_HALF_HOURS = 6.0
"""An alert this old has half the age points (waiting longer makes it more urgent)."""
LOAD_HALF_KW = 50.0
"""Affected load at which half the load points are reached."""
CUSTOMERS_HALF = 10.0
"""Affected customers at which half the customer points are reached."""
RECURRENCE_HALF = 3.0
"""Earlier occurrences and generations at which half the recurrence points are reached."""


class PriorityFactors(msgspec.Struct, frozen=True, kw_only=True):
    """What an open alert's priority is made of (each part in points)."""

    severity: float
    age: float
    load: float
    customers: float
    recurrence: float

    @property
    def score(self) -> float:
        """The priority, 0..100."""
        return round(self.severity + self.age + self.load + self.customers + self.recurrence, 2)


def _saturating(value: float, half: float) -> float:
    """0 at 0, ½ at ``half``, towards 1 as ``value`` grows (negative values count as 0)."""
    value = max(0.0, value)
    return value / (value + half)


def alert_priority(
    severity: Severity,
    age_seconds: float,
    affected_kw: float,
    customers: int,
    occurrences: int,
    generation: int,
) -> PriorityFactors:
    """Priority factors of one open alert; the score is non-decreasing in every input.

    Severity gives 10, 20, 30 or 40 points (low..critical); the others saturate towards their
    weight: age in hours, affected load in kW, affected customers, and recurrence counted as the
    occurrences beyond the first plus the earlier alerts of the same cause (generation - 1).
    """
    recurrence = max(0, occurrences - 1) + max(0, generation - 1)
    return PriorityFactors(
        severity=WEIGHTS["severity"] * (severity.rank + 1) / 4,
        age=WEIGHTS["age"] * _saturating(age_seconds / 3600.0, AGE_HALF_HOURS),
        load=WEIGHTS["load"] * _saturating(affected_kw, LOAD_HALF_KW),
        customers=WEIGHTS["customers"] * _saturating(float(customers), CUSTOMERS_HALF),
        recurrence=WEIGHTS["recurrence"] * _saturating(float(recurrence), RECURRENCE_HALF),
    )


def ordered(items: list[tuple[str, PriorityFactors]]) -> list[tuple[str, PriorityFactors]]:
    """Items highest priority first (ties by key, for a stable order)."""
    return sorted(items, key=lambda item: (-item[1].score, item[0]))
