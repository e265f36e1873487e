"""What the head-end collects from meters and when: tasks, per-group schedules, due times."""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec


class Task(enum.StrEnum):
    """A kind of collection run against a meter."""

    REGISTERS = "registers"
    """Energy registers and instantaneous values."""
    PROFILE = "profile"
    """Load profile intervals not received yet."""
    EVENTS = "events"
    """Event logs (power failures, tamper, relay changes)."""


DEFAULT_EVERY: dict[Task, float] = {
    Task.REGISTERS: 900.0,
    Task.PROFILE: 86_400.0,
    Task.EVENTS: 3_600.0,
}
MAX_SPREAD_S = 3_600.0
MAX_RETRY_S = 4 * 3_600.0
"""Meters run a task at most this long after its slot starts (spread by meter id)."""

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*\Z")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}


class ScheduleError(ValueError):
    """A schedule text that cannot be used; the message names the part and the rule."""


class Schedules(msgspec.Struct, frozen=True, kw_only=True):
    """How often each task runs: defaults, and overrides per meter group (area)."""

    default: dict[Task, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_EVERY))
    groups: dict[str, dict[Task, float]] = msgspec.field(default_factory=dict)

    def every(self, group: str, task: Task) -> float:
        """Seconds between runs of ``task`` for a meter of ``group``."""
        return self.groups.get(group, {}).get(task, self.default[task])


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``1h`` or ``1d`` (bare numbers are seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ScheduleError(f"{text!r} is not a duration such as 15m, 1h or 1d")
    seconds = float(match[1]) * _UNIT_S[match[2] or "s"]
    if not 60.0 <= seconds <= 7 * 86_400.0:
        raise ScheduleError(f"{text!r}: a collection interval must be between 1m and 7d")
    return seconds


def parse_intervals(text: str) -> dict[Task, float]:
    """``registers=15m,profile=1d,events=1h`` (any subset) as seconds per task."""
    result: dict[Task, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, duration = part.partition("=")
        if not sep:
            raise ScheduleError(f"{part!r}: expected task=duration, e.g. registers=15m")
        try:
            task = Task(name.strip())
        except ValueError:
            choices = ", ".join(t.value for t in Task)
            raise ScheduleError(f"{name.strip()!r} is not a task ({choices})") from None
        result[task] = parse_duration(duration)
    return result


def parse_schedules(default: str, groups: str) -> Schedules:
    """Schedules from the default text and ``group:task=duration,...;group2:...`` overrides."""
    base = dict(DEFAULT_EVERY)
    base.update(parse_intervals(default))
    per_group: dict[str, dict[Task, float]] = {}
    for part in filter(None, (p.strip() for p in groups.split(";"))):
        group, sep, intervals = part.rpartition(":")
        if not sep or not group.strip():
            raise ScheduleError(f"{part!r}: expected group:task=duration,...")
        per_group[group.strip()] = parse_intervals(intervals)
    return Schedules(default=base, groups=per_group)


def spread(meter: UUID, every: float) -> float:
    """Seconds after a slot start at which this meter runs (stable per meter)."""
    fraction = int.from_bytes(hashlib.blake2b(meter.bytes, digest_size=4).digest(), "big") / 2**32
    return fraction * min(every / 3.0, MAX_SPREAD_S)


def next_due(meter: UUID, every: float, after: datetime) -> datetime:
    """The meter's next run time strictly after ``after``: slot grid plus the meter's spread."""
    # Whole milliseconds, so that a due time fed back in gives exactly the next one.
    offset = round(spread(meter, every) * 1000)
    period = round(every * 1000)
    now = round(after.astimezone(UTC).timestamp() * 1000)
    due = (now - offset) // period * period + offset + period
    return datetime.fromtimestamp(due / 1000, UTC)


def retry_due(failures: int, every: float, now: datetime) -> datetime:
    """When to try again after ``failures`` failures in a row.

    30 s, doubling per failure, up to the larger of the interval and ``MAX_RETRY_S``: a meter
    that stays unreachable is tried less and less often instead of occupying sessions.
    """
    delay = min(30.0 * 2.0 ** min(max(0, failures - 1), 30), max(every, MAX_RETRY_S))
    return now + timedelta(seconds=delay)
