"""Validation rules of incoming readings: physical range, time window, register monotonicity."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import msgspec

from domain.obis import BY_ID, Kind, Quantity
from domain.readings import Quality, Reading

NOMINAL_VOLTAGE = 230.0
"""Nominal low-voltage supply (IEC 60038), V."""
SUSPECT_VOLTAGE_RATIO = 0.5
"""Voltages below this share of nominal (0 V included) are kept but flagged ``SUSPECT``."""
VOLTAGES: frozenset[int] = frozenset(
    q.id for q in BY_ID.values() if q.alias in ("voltage_l1", "voltage_l2", "voltage_l3")
)

TIME_RULES: frozenset[str] = frozenset({"future", "too-old", "duplicate"})
"""Rules broken by a reading's timestamp rather than by its value."""


class Violation(msgspec.Struct, frozen=True):
    """A broken rule and a message naming the value and the limit."""

    rule: str
    message: str


class TimeWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The span of timestamps the head-end accepts at ``now``."""

    now: datetime
    future_tolerance: timedelta
    """How far ahead of ``now`` a timestamp may be (meters' clocks drift)."""
    max_age: timedelta
    """How far behind ``now`` a timestamp may be (the raw-readings retention)."""


class RegisterState(msgspec.Struct, frozen=True):
    """The last value of a cumulative register the head-end already holds."""

    value: float
    ts: datetime


class Proposed(msgspec.Struct, frozen=True):
    """A reading awaiting validation and the name its sender gave it (used in messages)."""

    reading: Reading
    label: str


class Checked(msgspec.Struct, frozen=True):
    """Outcome of ``check_meter``: positions in the input, accepted or with their violation."""

    accepted: list[tuple[int, Reading]]
    """Accepted readings with their quality flags (``SUSPECT`` added where it applies)."""
    rejected: list[tuple[int, Violation]]


def _num(value: float) -> str:
    return f"{value:g}"


def _with_unit(value: str, quantity: Quantity) -> str:
    return value if quantity.unit == "1" else f"{value} {quantity.unit}"


def check_value(quantity: Quantity, value: float, label: str) -> Violation | None:
    """The broken rule of ``value`` for ``quantity``: not finite, or outside its physical range."""
    if not math.isfinite(value):
        return Violation("not-finite", f"{label} {value} is not a finite number")
    if value > quantity.maximum:
        return Violation(
            "range",
            f"{label} {_with_unit(repr(value), quantity)} is above the maximum "
            f"{_with_unit(_num(quantity.maximum), quantity)}",
        )
    if value < quantity.minimum:
        return Violation(
            "range",
            f"{label} {_with_unit(repr(value), quantity)} is below the minimum "
            f"{_with_unit(_num(quantity.minimum), quantity)}",
        )
    return None


def check_time(ts: datetime, window: TimeWindow) -> Violation | None:
    """The broken rule of a timestamp: too far in the future, or older than the maximum age."""
    ahead = ts - window.now
    if ahead > window.future_tolerance:
        return Violation(
            "future",
            f"timestamp {ts.isoformat()} is {_num(ahead.total_seconds())} s ahead of the "
            f"head-end clock (tolerance {_num(window.future_tolerance.total_seconds())} s)",
        )
    if -ahead > window.max_age:
        return Violation(
            "too-old",
            f"timestamp {ts.isoformat()} is older than the maximum age of {_age(window.max_age)}",
        )
    return None


def _age(age: timedelta) -> str:
    if age.total_seconds() % 86400 == 0:
        days = int(age.total_seconds() // 86400)
        return f"{days} day" if days == 1 else f"{days} days"
    return f"{_num(age.total_seconds())} s"


def quality_of(quantity: Quantity, value: float, quality: int) -> int:
    """``quality`` with ``SUSPECT`` added when a valid value looks like an outage or a fault."""
    if quantity.id in VOLTAGES and value < NOMINAL_VOLTAGE * SUSPECT_VOLTAGE_RATIO:
        return quality | Quality.SUSPECT
    return quality


def check_meter(
    proposed: Sequence[Proposed],
    window: TimeWindow,
    last: Mapping[int, RegisterState] | None = None,
) -> Checked:
    """Validate one meter's readings together: each alone, then duplicates and registers.

    ``last`` holds, per register quantity id, the latest value already stored. A register
    reading lower than an earlier-timestamped one (in this input, or ``last`` when the reading
    is not older than it) breaks rule ``decreasing``. A second reading of the same quantity and
    timestamp breaks rule ``duplicate``; the first one given wins.
    """
    rejected: list[tuple[int, Violation]] = []
    survivors: list[int] = []
    for index, item in enumerate(proposed):
        reading = item.reading
        quantity = BY_ID[reading.quantity]
        violation = check_value(quantity, reading.value, item.label) or check_time(
            reading.ts, window
        )
        if violation is None:
            survivors.append(index)
        else:
            rejected.append((index, violation))

    seen: set[tuple[int, datetime]] = set()
    unique: list[int] = []
    for index in survivors:
        reading = proposed[index].reading
        key = (reading.quantity, reading.ts)
        if key in seen:
            rejected.append(
                (
                    index,
                    Violation(
                        "duplicate",
                        f"{reading.ts.isoformat()} is given more than once for this "
                        "meter and quantity",
                    ),
                )
            )
        else:
            seen.add(key)
            unique.append(index)

    decreasing = _decreasing(proposed, unique, last or {})
    rejected.extend(decreasing.items())
    accepted: list[tuple[int, Reading]] = []
    for index in unique:
        if index in decreasing:
            continue
        reading = proposed[index].reading
        quality = quality_of(BY_ID[reading.quantity], reading.value, reading.quality)
        if quality != reading.quality:
            reading = msgspec.structs.replace(reading, quality=quality)
        accepted.append((index, reading))
    rejected.sort(key=lambda pair: pair[0])
    return Checked(accepted=accepted, rejected=rejected)


def _decreasing(
    proposed: Sequence[Proposed], indexes: list[int], last: Mapping[int, RegisterState]
) -> dict[int, Violation]:
    by_register: dict[int, list[int]] = {}
    for index in indexes:
        quantity_id = proposed[index].reading.quantity
        if BY_ID[quantity_id].kind is Kind.REGISTER:
            by_register.setdefault(quantity_id, []).append(index)

    found: dict[int, Violation] = {}
    for quantity_id, group in by_register.items():
        quantity = BY_ID[quantity_id]
        group.sort(key=lambda i: proposed[i].reading.ts)
        known = last.get(quantity_id)
        # The highest accepted value so far, in timestamp order, and where it came from.
        peak: tuple[float, datetime] | None = None
        for index in group:
            reading = proposed[index].reading
            floor = peak
            if (
                known is not None
                and reading.ts >= known.ts
                and (floor is None or known.value > floor[0])
            ):
                floor = (known.value, known.ts)
            if floor is not None and reading.value < floor[0]:
                found[index] = Violation(
                    "decreasing",
                    f"{proposed[index].label} {_with_unit(repr(reading.value), quantity)} at "
                    f"{reading.ts.isoformat()} is below "
                    f"{_with_unit(repr(floor[0]), quantity)} at {floor[1].isoformat()}: "
                    "a cumulative register never decreases",
                )
                continue
            if peak is None or reading.value >= peak[0]:
                peak = (reading.value, reading.ts)
    return found
