"""Ledger of a load profile's intervals: expected, received, absent; its gaps drive catch-up.

A profile captures one row every ``period`` seconds, stamped with the capture time (a multiple
of the period). Per UTC day the ledger keeps two bit masks over the day's slots (bit ``i`` is the
row stamped ``midnight + i * period``): ``received`` rows reached the head-end, ``absent`` rows
the meter was asked for and does not have (it was off, or its buffer no longer holds them).
Every other slot that is due is missing, and missing slots are read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta

import msgspec

DAY_SECONDS = 86_400
LOAD_PROFILE = "1.0.99.1.0.255"
"""The standard 15-minute load profile (class 7) the ledger tracks."""


class LedgerDay(msgspec.Struct, kw_only=True):
    """One UTC day of one meter's profile: which slots were received or are known absent."""

    day: date
    period_s: int
    received: int = 0
    absent: int = 0

    @property
    def slots(self) -> int:
        """Number of slots in the day."""
        return DAY_SECONDS // self.period_s

    @property
    def settled(self) -> int:
        """Mask of slots that need no further read."""
        return self.received | self.absent

    def bits(self, mask: int) -> str:
        """``mask`` as a bit string, slot 0 first (the database's ``varbit`` form)."""
        return "".join("1" if mask >> i & 1 else "0" for i in range(self.slots))


def mask_of(bits: str) -> int:
    """Mask from a bit string, slot 0 first."""
    return sum(1 << i for i, bit in enumerate(bits) if bit == "1")


def check_period(period_s: int) -> None:
    """Raise ``ValueError`` unless the period divides a day into whole slots."""
    if period_s <= 0 or DAY_SECONDS % period_s:
        raise ValueError(f"capture period {period_s} s does not divide a day")


def slot(ts: datetime, period_s: int) -> tuple[date, int] | None:
    """(UTC day, slot index) of a capture time; ``None`` when not on the period grid."""
    utc = ts.astimezone(UTC)
    seconds = utc.hour * 3600 + utc.minute * 60 + utc.second
    if utc.microsecond or seconds % period_s:
        return None
    return utc.date(), seconds // period_s


def slot_time(day: date, index: int, period_s: int) -> datetime:
    """Capture time of slot ``index`` of ``day``."""
    return datetime.combine(day, time(), UTC) + timedelta(seconds=index * period_s)


def due_slots(start: datetime, end: datetime, period_s: int) -> Iterator[tuple[date, int]]:
    """Every slot whose capture time lies in ``[start, end]``, oldest first."""
    check_period(period_s)
    first = _ceil(start, period_s)
    t = first
    while t <= end:
        found = slot(t, period_s)
        assert found is not None
        yield found
        t += timedelta(seconds=period_s)


def _ceil(ts: datetime, period_s: int) -> datetime:
    epoch = ts.astimezone(UTC).timestamp()
    return datetime.fromtimestamp(-(-epoch // period_s) * period_s, UTC)


def missing_ranges(
    days: Mapping[date, LedgerDay],
    start: datetime,
    end: datetime,
    period_s: int,
    *,
    max_ranges: int = 8,
) -> list[tuple[datetime, datetime]]:
    """Capture-time ranges ``[first, last]`` of missing slots in ``[start, end]``, oldest first.

    Adjacent missing slots merge into one range (one range read each); at most ``max_ranges``.
    """
    ranges: list[tuple[datetime, datetime]] = []
    run_start: datetime | None = None
    previous: datetime | None = None
    for day, index in due_slots(start, end, period_s):
        ledger = days.get(day)
        settled = ledger is not None and ledger.period_s == period_s and ledger.settled >> index & 1
        at = slot_time(day, index, period_s)
        if settled:
            if run_start is not None and previous is not None:
                ranges.append((run_start, previous))
                run_start = None
                if len(ranges) == max_ranges:
                    return ranges
        elif run_start is None:
            run_start = at
        previous = at
    if run_start is not None and previous is not None:
        ranges.append((run_start, previous))
    return ranges[:max_ranges]


def record_read(
    days: dict[date, LedgerDay],
    period_s: int,
    requested: tuple[datetime, datetime],
    received: Iterable[datetime],
    settle_before: datetime,
) -> set[date]:
    """Mark ``received`` capture times, and requested slots before ``settle_before`` the meter
    did not return as absent; return the days changed (``days`` is updated in place)."""
    changed: set[date] = set()
    got: set[tuple[date, int]] = set()
    for ts in received:
        found = slot(ts, period_s)
        if found is None:
            continue  # off-grid rows (clock adjusted mid-interval) are readings, not slots
        got.add(found)
        day = _day(days, found[0], period_s)
        if not day.received >> found[1] & 1:
            day.received |= 1 << found[1]
            day.absent &= ~(1 << found[1])
            changed.add(found[0])
    first, last = requested
    for day_index in due_slots(first, min(last, settle_before), period_s):
        if day_index in got:
            continue
        day = _day(days, day_index[0], period_s)
        if not day.settled >> day_index[1] & 1:
            day.absent |= 1 << day_index[1]
            changed.add(day_index[0])
    return changed


def _day(days: dict[date, LedgerDay], day: date, period_s: int) -> LedgerDay:
    ledger = days.get(day)
    if ledger is None or ledger.period_s != period_s:
        ledger = days[day] = LedgerDay(day=day, period_s=period_s)
    return ledger


def counts(day: LedgerDay, end: datetime) -> tuple[int, int, int]:
    """(expected, received, absent) slots of ``day`` up to ``end``."""
    start = slot_time(day.day, 0, day.period_s)
    expected = [
        i
        for d, i in due_slots(start, min(end, start + timedelta(days=1)), day.period_s)
        if d == day.day
    ]
    received = sum(day.received >> i & 1 for i in expected)
    absent = sum(day.absent >> i & 1 for i in expected)
    return len(expected), received, absent
