"""What a simulated meter measures: daily load shape and noise, PV export, outages, tamper, relay.

Everything is a pure function of (meter seed, time) except the relay history, which the
meter's persisted state supplies. Each 900 s slot has a deterministic average power, so any
past instant can be computed lazily: energy registers integrate slot powers from the fleet's
history start (cached per completed day), load-profile rows are cumulative sums of slots.
No timers and no per-meter tasks: values move because time moves.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

SLOT_S = 900
DAY_S = 86_400
SLOTS_PER_DAY = DAY_S // SLOT_S
NOMINAL_V = 230.0

POWER_DOWN, POWER_UP = 1, 2
TERMINAL_COVER_OPENED, TERMINAL_COVER_CLOSED = 40, 41
METER_COVER_OPENED, METER_COVER_CLOSED = 44, 45
STRONG_MAGNETIC_FIELD = 47

_MASK = (1 << 64) - 1


def _mix(*parts: int) -> int:
    """splitmix64 over the parts: a fast deterministic hash for per-slot randomness."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & _MASK
        x ^= x >> 29
    return x


def _unit(*parts: int) -> float:
    """A deterministic number in [0, 1) from the parts."""
    return (_mix(*parts) >> 11) / float(1 << 53)


def _shape(hour: float) -> float:
    """Residential daily load shape in UTC hours: mean 1, night ~0.5, evening peak ~1.7."""
    return (
        1.0
        + 0.45 * math.cos(2 * math.pi * (hour - 18.0) / 24.0)
        + 0.25 * math.cos(4 * math.pi * (hour - 7.5) / 24.0)
    )


@dataclass(frozen=True, slots=True)
class Traits:
    """The fixed character of one meter, drawn from the simulator seed."""

    seed: int
    base_w: float
    pv_peak_w: float
    phase_share: tuple[float, float, float]
    voltage_bias: tuple[float, float, float]
    start_wh: tuple[float, float, float, float]
    """Import, export, reactive import, reactive export at the history start."""


def traits_for(seed: str, index: int) -> Traits:
    """Traits of meter ``index`` under ``seed``."""
    digest = hashlib.sha256(f"{seed}:{index}:model".encode()).digest()
    s = int.from_bytes(digest[:8], "big")
    shares = [0.25 + 0.5 * _unit(s, 10 + p) for p in range(3)]
    total = sum(shares)
    pv = _unit(s, 2) < 0.2
    return Traits(
        seed=s,
        base_w=250.0 + 1250.0 * _unit(s, 1),
        pv_peak_w=(2000.0 + 3000.0 * _unit(s, 3)) if pv else 0.0,
        phase_share=(shares[0] / total, shares[1] / total, shares[2] / total),
        voltage_bias=tuple(-3.0 + 6.0 * _unit(s, 20 + p) for p in range(3)),  # type: ignore[arg-type]
        start_wh=(
            1_000_000 + 40_000_000 * _unit(s, 4),
            (500_000 + 5_000_000 * _unit(s, 5)) if pv else 0.0,
            200_000 + 8_000_000 * _unit(s, 6),
            (50_000 + 500_000 * _unit(s, 7)) if pv else 0.0,
        ),
    )


@dataclass(frozen=True, slots=True)
class Instant:
    """Instantaneous values at one moment."""

    voltage: tuple[float, float, float]
    current: tuple[float, float, float]
    frequency: float
    power_factor: float
    active_power_w: float


Interval = tuple[float, float]
Totals = tuple[float, float, float, float]


def _overlap(intervals: Sequence[Interval], start: float, end: float) -> float:
    """Seconds of [start, end) covered by the union of ``intervals``."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if a < end and b > start)
    covered, cur_a, cur_b = 0.0, None, 0.0
    for a, b in clipped:
        if cur_a is None or a > cur_b:
            if cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None:
        covered += cur_b - cur_a
    return covered


class MeterModel:
    """Lazily computed measurements of one meter."""

    def __init__(
        self,
        traits: Traits,
        history_start: float,
        relay_open: Callable[[], Sequence[tuple[float, float | None]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.traits = traits
        self.history_start = history_start - history_start % DAY_S
        self._relay_open = relay_open
        self._clock = clock
        self._outages: dict[int, list[Interval]] = {}
        self._day_cum: list[Totals] = [(0.0, 0.0, 0.0, 0.0)]
        """Totals from the history start to the start of day ``history_day + i``."""

    # -- per-slot energy ----------------------------------------------------------------
    def slot_energy(self, slot: int) -> Totals:
        """Wh imported, exported, varh imported, exported in a fully supplied slot."""
        t = self.traits
        hour = ((slot * SLOT_S + SLOT_S / 2) % DAY_S) / 3600.0
        day = slot // SLOTS_PER_DAY
        weekend = 1.1 if (day + 3) % 7 >= 5 else 1.0  # day 0 (1970-01-01) was a Thursday
        load = t.base_w * _shape(hour) * weekend * (0.8 + 0.4 * _unit(t.seed, slot, 1))
        pv = 0.0
        if t.pv_peak_w and 6.0 < hour < 18.0:
            cloud = 0.3 + 0.7 * _unit(t.seed, day, 2)
            pv = t.pv_peak_w * math.sin(math.pi * (hour - 6.0) / 12.0) * cloud
            pv *= 0.9 + 0.2 * _unit(t.seed, slot, 3)
        net_wh = (load - pv) * SLOT_S / 3600.0
        imp, exp = max(net_wh, 0.0), max(-net_wh, 0.0)
        pf = 0.90 + 0.09 * _unit(t.seed, slot, 4)
        return imp, exp, imp * math.tan(math.acos(pf)), exp * 0.2

    def power_factor(self, slot: int) -> float:
        """Average power factor of a slot."""
        return 0.90 + 0.09 * _unit(self.traits.seed, slot, 4)

    # -- supply interruptions -------------------------------------------------------------
    def outages(self, day: int) -> list[Interval]:
        """Power outages starting on absolute day ``day`` (days since 1970-01-01)."""
        cached = self._outages.get(day)
        if cached is None:
            cached = []
            s = self.traits.seed
            if _unit(s, day, 100) < 0.12:
                start = day * DAY_S + _unit(s, day, 101) * (DAY_S - 3000)
                cached.append((start, start + 60 + 2340 * _unit(s, day, 102)))
            self._outages[day] = cached
        return cached

    def _interruptions(self, start: float, end: float) -> list[Interval]:
        """Outages and open-relay intervals that overlap [start, end)."""
        first, last = int(start // DAY_S) - 1, int(end // DAY_S)
        intervals = [iv for d in range(first, last + 1) for iv in self.outages(d)]
        now = self._clock()
        intervals += [(a, now if b is None else b) for a, b in self._relay_open()]
        return [(a, b) for a, b in intervals if a < end and b > start]

    def in_outage(self, t: float) -> bool:
        """Whether the supply is down at ``t``."""
        day = int(t // DAY_S)
        return any(a <= t < b for d in (day - 1, day) for a, b in self.outages(d))

    def relay_open_at(self, t: float) -> bool:
        """Whether the disconnector was open at ``t``."""
        now = self._clock()
        return any(a <= t < (now + 1 if b is None else b) for a, b in self._relay_open())

    def _slot_supplied(
        self, slot: int, until: float | None = None, cut: list[Interval] | None = None
    ) -> Totals:
        """Energy of a slot (up to ``until``) without the interruptions (``cut`` if known)."""
        start = slot * SLOT_S
        end = start + SLOT_S if until is None else until
        if cut is None:
            cut = self._interruptions(start, end)
        seconds = end - start - (_overlap(cut, start, end) if cut else 0.0)
        if seconds <= 0:
            return 0.0, 0.0, 0.0, 0.0
        f = seconds / SLOT_S
        a, b, c, d = self.slot_energy(slot)
        return a * f, b * f, c * f, d * f

    # -- registers ------------------------------------------------------------------------
    def _cum_to_day(self, day: int) -> Totals:
        first = int(self.history_start // DAY_S)
        now_day = int(self._clock() // DAY_S)
        # Only completed days are cached: the relay can still change today.
        while len(self._day_cum) <= day - first and first + len(self._day_cum) <= now_day:
            d = first + len(self._day_cum) - 1
            totals = list(self._day_cum[-1])
            cut = self._interruptions(d * DAY_S, (d + 1) * DAY_S)
            for slot in range(d * SLOTS_PER_DAY, (d + 1) * SLOTS_PER_DAY):
                for i, v in enumerate(self._slot_supplied(slot, cut=cut)):
                    totals[i] += v
            self._day_cum.append((totals[0], totals[1], totals[2], totals[3]))
        if day - first < len(self._day_cum):
            return self._day_cum[max(day - first, 0)]
        raise ValueError(f"day {day} is not complete yet")

    def registers(self, t: float) -> Totals:
        """Cumulative Wh/varh (import, export, reactive import, reactive export) at ``t``."""
        t = max(t, self.history_start)
        day = int(t // DAY_S)
        totals = list(self._cum_to_day(day))
        slot = day * SLOTS_PER_DAY
        last = int(t // SLOT_S)
        while slot <= last:
            part = self._slot_supplied(slot, None if slot < last else t)
            for i, v in enumerate(part):
                totals[i] += v
            slot += 1
        s = self.traits.start_wh
        return s[0] + totals[0], s[1] + totals[1], s[2] + totals[2], s[3] + totals[3]

    def series(self, first: float, count: int) -> Iterator[Totals]:
        """Register values at ``first`` (a slot boundary) and the ``count - 1`` boundaries after."""
        if count <= 0:
            return
        current = list(self.registers(first))
        yield current[0], current[1], current[2], current[3]
        slot = int(first // SLOT_S)
        cut = self._interruptions(first, first + count * SLOT_S)
        for _ in range(count - 1):
            for i, v in enumerate(self._slot_supplied(slot, cut=cut)):
                current[i] += v
            slot += 1
            yield current[0], current[1], current[2], current[3]

    # -- instantaneous values -------------------------------------------------------------
    def instant(self, t: float) -> Instant:
        """Voltages, currents, frequency, power factor and active power at ``t``."""
        if self.in_outage(t):
            return Instant((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, 0.0, 0.0)
        s, minute = self.traits.seed, int(t // 60)
        hour = (t % DAY_S) / 3600.0
        sag = -3.0 * math.cos(2 * math.pi * (hour - 19.0) / 24.0)
        rise = 2.0 * math.sin(math.pi * (hour - 6.0) / 12.0) if self.traits.pv_peak_w else 0.0
        volts = tuple(
            NOMINAL_V
            + self.traits.voltage_bias[p]
            + sag
            + max(rise, 0.0)
            + 3.0 * (_unit(s, minute, 200 + p) - 0.5)
            for p in range(3)
        )
        frequency = 50.0 + 0.08 * (_unit(s, minute, 210) - 0.5)
        if self.relay_open_at(t):
            return Instant(volts, (0.0, 0.0, 0.0), frequency, 1.0, 0.0)  # type: ignore[arg-type]
        slot = int(t // SLOT_S)
        imp, exp, _, _ = self.slot_energy(slot)
        power = (imp - exp) * 3600.0 / SLOT_S * (0.97 + 0.06 * _unit(s, minute, 220))
        amps = tuple(abs(power) * self.traits.phase_share[p] / volts[p] for p in range(3))
        return Instant(volts, amps, frequency, self.power_factor(slot), power)  # type: ignore[arg-type]

    # -- events ---------------------------------------------------------------------------
    def events(self, start: float, end: float) -> list[tuple[float, int]]:
        """Standard event log entries (time, code) in [start, end), oldest first."""
        s = self.traits.seed
        out: list[tuple[float, int]] = []
        for day in range(int(start // DAY_S) - 1, int(end // DAY_S) + 1):
            for a, b in self.outages(day):
                out += [(a, POWER_DOWN), (b, POWER_UP)]
            base = day * DAY_S
            for salt, p, codes in (
                (300, 0.01, (TERMINAL_COVER_OPENED, TERMINAL_COVER_CLOSED)),
                (310, 0.004, (METER_COVER_OPENED, METER_COVER_CLOSED)),
                (320, 0.004, (STRONG_MAGNETIC_FIELD,)),
            ):
                if _unit(s, day, salt) < p:
                    at = base + _unit(s, day, salt + 1) * (DAY_S - 1000)
                    out.append((at, codes[0]))
                    if len(codes) == 2:
                        out.append((at + 60 + 840 * _unit(s, day, salt + 2), codes[1]))
        lower = max(start, self.history_start)
        return sorted((t, c) for t, c in out if lower <= t < end)
