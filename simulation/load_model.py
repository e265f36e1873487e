"""A simulated meter fleet: regional daily load shapes, phases, noise, spikes, drops and outages.

Pure and deterministic: every random draw comes from one ``random.Random(seed)`` in a fixed
order, so the same seed and the same sequence of tick times give the same readings.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from commands.meter_csv import TEMPLATE_COLUMNS
from domain.obis import BY_ALIAS

EPOCH = datetime(2020, 1, 6, tzinfo=UTC)
"""A Monday: the week of the load shapes, and the zero of every energy register's curve."""

NOMINAL_V = 230.0
V_MIN, V_MAX = 0.9 * NOMINAL_V, 1.1 * NOMINAL_V
"""EN 50160 supply voltage band; a powered meter never reports outside it."""
PF_MIN, PF_MAX = 0.85, 0.99
F_NOMINAL, F_BAND = 50.0, 0.05

ENERGY = BY_ALIAS["energy_import"].obis
POWER = BY_ALIAS["power_import"].obis
VOLTAGE = tuple(BY_ALIAS[f"voltage_l{n}"].obis for n in (1, 2, 3))
CURRENT = tuple(BY_ALIAS[f"current_l{n}"].obis for n in (1, 2, 3))
POWER_FACTOR = BY_ALIAS["power_factor"].obis
FREQUENCY = BY_ALIAS["frequency"].obis


class Profile(enum.StrEnum):
    """The kind of customer behind a meter, which fixes its daily load shape."""

    RESIDENTIAL = "RESIDENTIAL"
    COMMERCIAL = "COMMERCIAL"
    INDUSTRIAL = "INDUSTRIAL"


class Reading(NamedTuple):
    """One value of one quantity at one instant."""

    obis: str
    ts: datetime
    value: float


class MeterInfo(NamedTuple):
    """A simulated meter as the head-end registers it."""

    serial: str
    region: str
    profile: Profile
    phases: int


class MeterReadings(NamedTuple):
    """What one meter reports in one tick."""

    serial: str
    readings: list[Reading]


@dataclass(frozen=True)
class Disturbances:
    """How often things go wrong; probabilities per meter and tick unless said otherwise."""

    spike: float = 0.001
    """A transient: power (and current) times 2 to 4 for one tick."""
    drop: float = 0.0005
    """Per reading: one reading of the tick is missing."""
    outage: float = 0.00005
    outage_ticks: tuple[int, int] = (3, 30)
    """Length of an outage, in ticks (inclusive range)."""
    power_outage_share: float = 0.6
    """Share of outages that are supply losses (last gasp with 0 V, register frozen); the
    others are communication losses (silent, consumption goes on)."""


class Injected(enum.StrEnum):
    """A labelled case injected into a simulated meter (for the consumption insights)."""

    THEFT = "THEFT"
    """From ``since`` a share of the load bypasses the meter (register and power fall)."""
    STUCK = "STUCK"
    """From ``since`` the register and the power reading freeze."""
    FAILING_PHASE = "FAILING_PHASE"
    """From ``since`` the first phase of a three-phase meter measures nothing (a third lost)."""


@dataclass(frozen=True)
class Injection:
    """Which shares of the fleet carry an injected case, starting between ``first`` and
    ``last`` (drawn with their own seed: the rest of the fleet is the same with or without)."""

    first: datetime
    last: datetime
    theft: float = 0.0
    stuck: float = 0.0
    failing_phase: float = 0.0
    """Share of the three-phase meters."""


class Label(NamedTuple):
    """The truth about one meter with an injected case."""

    serial: str
    case: Injected
    since: datetime
    metered: float
    """Share of the consumption the register still counts (1.0 for a stuck meter)."""


@dataclass(frozen=True)
class Region:
    """A region of the fleet: its name, customer mix and supply voltage behaviour."""

    name: str
    mix: tuple[float, float, float]
    """Shares of residential, commercial and industrial meters."""
    voltage_offset: float
    sag_v: float
    """Voltage drop at a regional load of 1.0 (weaker, longer feeders sag more)."""


_ARCHETYPES = (
    Region("North", (0.85, 0.12, 0.03), 2.0, 4.0),
    Region("Central", (0.45, 0.50, 0.05), 3.0, 3.0),
    Region("Harbour", (0.30, 0.20, 0.50), 1.0, 6.0),
    Region("Valley", (0.92, 0.06, 0.02), 0.0, 9.0),
)
_PROFILES = tuple(Profile)
_THREE_PHASE_SHARE = {Profile.RESIDENTIAL: 0.15, Profile.COMMERCIAL: 0.7, Profile.INDUSTRIAL: 1.0}
_MEDIAN_W = {Profile.RESIDENTIAL: 600.0, Profile.COMMERCIAL: 6_000.0, Profile.INDUSTRIAL: 30_000.0}
_PF_RANGE = {
    Profile.RESIDENTIAL: (0.92, 0.99),
    Profile.COMMERCIAL: (0.88, 0.97),
    Profile.INDUSTRIAL: (0.85, 0.95),
}
# Hourly load relative to a meter's scale, hours 0..23 (local time = UTC here): weekday, weekend.
_HOURLY_TEXT = {
    Profile.RESIDENTIAL: (
        # weekday: morning peak at 7, evening peak at 19
        "0.45 0.38 0.35 0.33 0.33 0.38 0.65 0.95 0.85 0.60 0.50 0.50"
        " 0.55 0.52 0.50 0.52 0.62 0.90 1.25 1.45 1.40 1.20 0.90 0.60",
        # weekend: later, flatter morning, same evening peak
        "0.50 0.42 0.37 0.35 0.34 0.35 0.42 0.60 0.85 0.95 0.95 0.92"
        " 0.95 0.90 0.82 0.80 0.85 1.00 1.25 1.40 1.35 1.20 0.95 0.70",
    ),
    Profile.COMMERCIAL: (
        "0.25 0.25 0.25 0.25 0.25 0.28 0.35 0.60 0.90 1.00 1.00 1.00"
        " 0.95 1.00 1.00 1.00 0.95 0.80 0.55 0.40 0.32 0.28 0.26 0.25",
        "0.22 0.22 0.22 0.22 0.22 0.22 0.24 0.28 0.35 0.40 0.42 0.42"
        " 0.42 0.42 0.40 0.38 0.35 0.32 0.28 0.25 0.24 0.23 0.22 0.22",
    ),
    Profile.INDUSTRIAL: (
        "0.75 0.72 0.70 0.70 0.72 0.80 0.95 1.00 1.02 1.03 1.03 1.02"
        " 1.00 1.02 1.03 1.03 1.02 1.00 0.98 0.95 0.92 0.90 0.85 0.80",
        "0.55 0.52 0.50 0.50 0.50 0.52 0.55 0.60 0.62 0.62 0.62 0.62"
        " 0.62 0.62 0.62 0.62 0.62 0.60 0.60 0.60 0.58 0.58 0.57 0.56",
    ),
}


_HOURLY = {
    profile: tuple(tuple(float(x) for x in day.split()) for day in days)
    for profile, days in _HOURLY_TEXT.items()
}


class _WeeklyShape:
    """A piecewise-linear weekly load curve: its value and its integral since ``EPOCH``."""

    def __init__(self, weekday: tuple[float, ...], weekend: tuple[float, ...]) -> None:
        self.points = weekday * 5 + weekend * 2
        n = len(self.points)
        self.cumulative = [0.0] * (n + 1)
        for h in range(n):
            step = (self.points[h] + self.points[(h + 1) % n]) / 2
            self.cumulative[h + 1] = self.cumulative[h] + step

    def at(self, hours: float) -> float:
        """The load factor ``hours`` after ``EPOCH``."""
        week = hours % len(self.points)
        h = int(week)
        a, b = self.points[h], self.points[(h + 1) % len(self.points)]
        return a + (b - a) * (week - h)

    def integral(self, hours: float) -> float:
        """Load factor times hours accumulated from ``EPOCH`` to ``hours`` after it."""
        n = len(self.points)
        weeks, week = divmod(hours, n)
        h = int(week)
        f = week - h
        a, b = self.points[h], self.points[(h + 1) % n]
        return weeks * self.cumulative[n] + self.cumulative[h] + a * f + (b - a) * f * f / 2


_SHAPES = {profile: _WeeklyShape(*_HOURLY[profile]) for profile in _PROFILES}
HOURLY_SHAPES = _HOURLY
"""Hourly load factors of each profile: (weekday, weekend), 24 values each."""
MEDIAN_W = _MEDIAN_W
"""Median power (W) at a load factor of 1.0 of each profile."""


@dataclass(slots=True)
class _Meter:
    serial: str
    region: int
    profile: Profile
    phases: int
    scale: float
    """Power in W at a load factor of 1.0."""
    shares: tuple[float, ...]
    """Share of the power carried by each phase (imbalance); sums to 1."""
    phase_v: tuple[float, ...]
    """Steady voltage of each phase before regional sag and noise."""
    pf: float
    energy0: float
    """Register value (Wh) at ``EPOCH`` on the meter's curve."""
    lost: float = 0.0
    """Energy (Wh) the curve counts but supply outages prevented."""
    silent: int = 0
    """Ticks still to be skipped by the current outage."""
    outage_from: float | None = None
    """Shape integral at the start of a supply outage (``None``: no supply outage)."""
    case: Label | None = None
    """An injected case (``None``: a normal meter)."""
    since_integral: float = 0.0
    """Shape integral at the case's start."""
    frozen: tuple[float, float] | None = None
    """A stuck meter's register and power, from its first stuck tick on."""


class Fleet:
    """``meters`` simulated meters spread over ``regions`` regions, reporting from ``start`` on.

    Each tick reports energy import, power, per-phase voltage and current, power factor and
    frequency. The energy register follows the meter's expected load curve (its scale times
    the integral of its daily shape since ``EPOCH``), so it never decreases, also across
    runs: a later run starts above anything an earlier run with the same seed sent.
    """

    def __init__(
        self,
        meters: int,
        seed: int,
        regions: int = 4,
        start: datetime = EPOCH,
        *,
        disturbances: Disturbances | None = None,
        injection: Injection | None = None,
    ) -> None:
        if meters < 1:
            raise ValueError(f"meters must be at least 1, got {meters}")
        if regions < 1:
            raise ValueError(f"regions must be at least 1, got {regions}")
        if seed < 0:
            raise ValueError(f"seed must not be negative, got {seed}")
        self.seed = seed
        self.disturbances = disturbances or Disturbances()
        self._last = _utc(start)
        if self._last < EPOCH:
            raise ValueError(f"start must not be before {EPOCH.isoformat()}")
        self._rng = random.Random(seed)
        self.regions = [_region(i) for i in range(regions)]
        self._meters = [self._new_meter(i) for i in range(meters)]
        if injection is not None:
            self._inject(injection)
        hours = _hours(self._last)
        self._previous = {p: _SHAPES[p].integral(hours) for p in _PROFILES}
        self._frequency = 0.0

    def __len__(self) -> int:
        return len(self._meters)

    def _new_meter(self, index: int) -> _Meter:
        rng = self._rng
        region = rng.randrange(len(self.regions))
        profile = rng.choices(_PROFILES, weights=self.regions[region].mix)[0]
        phases = 3 if rng.random() < _THREE_PHASE_SHARE[profile] else 1
        scale = _MEDIAN_W[profile] * min(3.0, max(0.3, rng.lognormvariate(0.0, 0.5)))
        raw = [1.0 + rng.uniform(-0.2, 0.2) for _ in range(phases)]
        shares = tuple(r / sum(raw) for r in raw)
        feeder = self.regions[region].voltage_offset + rng.uniform(-3.0, 3.0)
        phase_v = tuple(NOMINAL_V + feeder + rng.uniform(-1.5, 1.5) for _ in range(phases))
        return _Meter(
            serial=f"SIM-{self.seed}-{index + 1:06d}",
            region=region,
            profile=profile,
            phases=phases,
            scale=scale,
            shares=shares,
            phase_v=phase_v,
            pf=rng.uniform(*_PF_RANGE[profile]),
            energy0=scale * rng.uniform(500.0, 20_000.0),
        )

    def _inject(self, injection: Injection) -> None:
        first, last = _utc(injection.first), _utc(injection.last)
        if last < first:
            raise ValueError("injection: last must not be before first")
        rng = random.Random(f"{self.seed}:injected")
        span_hours = int((last - first).total_seconds() // 3600)
        for m in self._meters:
            draw = rng.random()
            since = first + _HOUR * rng.randint(0, span_hours)
            metered = rng.uniform(0.35, 0.65)
            if draw < injection.theft:
                kind, share = Injected.THEFT, metered
            elif draw < injection.theft + injection.stuck:
                kind, share = Injected.STUCK, 1.0
            elif (
                m.phases == 3 and draw < injection.theft + injection.stuck + injection.failing_phase
            ):
                kind, share = Injected.FAILING_PHASE, 2 / 3
            else:
                continue
            m.case = Label(m.serial, kind, since, round(share, 3))
            m.since_integral = _SHAPES[m.profile].integral(_hours(since))

    def labels(self) -> list[Label]:
        """The meters with an injected case, in fleet order."""
        return [m.case for m in self._meters if m.case is not None]

    def serials(self) -> list[str]:
        """The meters' serial numbers, in fleet order."""
        return [m.serial for m in self._meters]

    def describe(self) -> list[MeterInfo]:
        """Serial, region, profile and phases of every meter, in fleet order."""
        return [
            MeterInfo(m.serial, self.regions[m.region].name, m.profile, m.phases)
            for m in self._meters
        ]

    def csv(self, first: int = 0, count: int | None = None) -> str:
        """Meter import CSV (template columns, ``region``, ``phases``, ``transport``) for a slice.

        Simulated meters send their readings over HTTP or NATS and are never dialled: transport
        NONE, at loopback addresses (127.x.y.z has room for 16 million of them).
        """
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow((*TEMPLATE_COLUMNS, "region", "phases", "transport"))
        stop = len(self._meters) if count is None else min(len(self._meters), first + count)
        for index in range(first, stop):
            m = self._meters[index]
            region = self.regions[m.region].name
            n = index + 1
            writer.writerow(
                (
                    m.serial,
                    f"DC-{m.region + 1:02d}-{index // 1000:04d}",
                    "Three-phase smart meter" if m.phases == 3 else "Single-phase smart meter",
                    "HES Simulator",
                    f"SIM-{m.profile.value[:3]}-{m.phases}P",
                    "1.0.0",
                    f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
                    "4059",
                    f"{region} Zone {n % 8 + 1}",
                    "",
                    "",
                    region,
                    str(m.phases),
                    "NONE",
                )
            )
        return out.getvalue()

    def tick(self, now: datetime) -> list[MeterReadings]:
        """What every reporting meter sends at ``now`` (silent meters are absent)."""
        return list(self.iter_tick(now))

    def iter_tick(self, now: datetime) -> Iterator[MeterReadings]:
        """Like ``tick``, meter by meter; consume it fully before the next tick."""
        ts = _utc(now)
        if ts < self._last:
            raise ValueError(f"tick at {ts.isoformat()} is before the last one, {self._last}")
        self._last = ts
        hours = _hours(ts)
        load = {p: _SHAPES[p].at(hours) for p in _PROFILES}
        integral = {p: _SHAPES[p].integral(hours) for p in _PROFILES}
        sag = [
            r.sag_v * sum(share * load[p] for share, p in zip(r.mix, _PROFILES, strict=True))
            for r in self.regions
        ]
        rng = self._rng
        # The grid's frequency is common to every meter: a mean-reverting walk.
        walk = self._frequency * 0.9 + rng.gauss(0.0, 0.006)
        self._frequency = max(-0.04, min(0.04, walk))
        frequency = F_NOMINAL + self._frequency
        previous, self._previous = self._previous, integral
        return self._readings(ts, load, integral, previous, sag, frequency)

    def _readings(
        self,
        ts: datetime,
        load: dict[Profile, float],
        integral: dict[Profile, float],
        previous: dict[Profile, float],
        sag: list[float],
        frequency: float,
    ) -> Iterator[MeterReadings]:
        rng = self._rng
        d = self.disturbances
        for m in self._meters:
            if m.silent:
                m.silent -= 1
                continue
            if m.outage_from is not None:
                # Supply came back after the last silent tick: the curve's energy since the
                # outage began was never consumed.
                m.lost += m.scale * (previous[m.profile] - m.outage_from)
                m.outage_from = None
            energy = float(round(m.energy0 + m.scale * integral[m.profile] - m.lost))
            case = m.case if m.case is not None and ts >= m.case.since else None
            if case is not None and case.case is not Injected.STUCK:
                unmetered = (1 - case.metered) * m.scale * (integral[m.profile] - m.since_integral)
                energy = float(round(energy - unmetered))
            if rng.random() < d.outage:
                m.silent = rng.randint(*d.outage_ticks)
                if rng.random() < d.power_outage_share:
                    m.outage_from = integral[m.profile]
                    yield MeterReadings(m.serial, _last_gasp(m, ts, energy))
                else:
                    m.silent -= 1
                continue
            readings = self._measure(m, ts, energy, load, sag, frequency)
            if case is not None:
                readings = _injected(m, case, readings)
            yield MeterReadings(m.serial, readings)

    def _measure(
        self,
        m: _Meter,
        ts: datetime,
        energy: float,
        load: dict[Profile, float],
        sag: list[float],
        frequency: float,
    ) -> list[Reading]:
        rng = self._rng
        d = self.disturbances
        power = m.scale * load[m.profile] * min(1.4, max(0.6, rng.gauss(1.0, 0.08)))
        dip = 0.0
        if rng.random() < d.spike:
            power *= rng.uniform(2.0, 4.0)
            dip = rng.uniform(1.0, 3.0)
        pf = min(PF_MAX, max(PF_MIN, m.pf + rng.gauss(0.0, 0.01)))
        volts = [
            min(V_MAX, max(V_MIN, v - sag[m.region] - dip + rng.gauss(0.0, 0.6))) for v in m.phase_v
        ]
        readings = [Reading(ENERGY, ts, energy), Reading(POWER, ts, round(power, 1))]
        readings += [Reading(VOLTAGE[k], ts, round(v, 1)) for k, v in enumerate(volts)]
        readings += [
            Reading(CURRENT[k], ts, round(power * share / (v * pf), 3))
            for k, (share, v) in enumerate(zip(m.shares, volts, strict=True))
        ]
        hz = min(F_NOMINAL + F_BAND, max(F_NOMINAL - F_BAND, frequency + rng.gauss(0.0, 0.002)))
        readings += [Reading(POWER_FACTOR, ts, round(pf, 3)), Reading(FREQUENCY, ts, round(hz, 3))]
        if rng.random() < d.drop * len(readings):
            del readings[rng.randrange(len(readings))]
        return readings


def _injected(m: _Meter, case: Label, readings: list[Reading]) -> list[Reading]:
    """A tick's readings as the injected case changes them (after every random draw, so the
    rest of the fleet stays as it would be without the case)."""
    if case.case is Injected.STUCK:
        values = {r.obis: r.value for r in readings}
        if m.frozen is None:
            m.frozen = (values.get(ENERGY, 0.0), values.get(POWER, 0.0))
        energy, power = m.frozen
        return [
            r._replace(value=energy)
            if r.obis == ENERGY
            else r._replace(value=power)
            if r.obis == POWER
            else r
            for r in readings
        ]
    out = []
    for r in readings:
        if r.obis == POWER:
            r = r._replace(value=round(r.value * case.metered, 1))
        elif case.case is Injected.THEFT and r.obis in CURRENT:
            r = r._replace(value=round(r.value * case.metered, 3))
        elif case.case is Injected.FAILING_PHASE and r.obis == CURRENT[0]:
            r = r._replace(value=0.0)
        out.append(r)
    return out


def _last_gasp(m: _Meter, ts: datetime, energy: float) -> list[Reading]:
    """A meter's report as its supply fails: register, no power, 0 V, 0 A."""
    readings = [Reading(ENERGY, ts, energy), Reading(POWER, ts, 0.0)]
    readings += [Reading(VOLTAGE[k], ts, 0.0) for k in range(m.phases)]
    readings += [Reading(CURRENT[k], ts, 0.0) for k in range(m.phases)]
    return readings


def _region(index: int) -> Region:
    archetype = _ARCHETYPES[index % len(_ARCHETYPES)]
    round_ = index // len(_ARCHETYPES)
    if round_ == 0:
        return archetype
    return dataclasses.replace(archetype, name=f"{archetype.name} {round_ + 1}")


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone")
    return ts.astimezone(UTC)


_HOUR = timedelta(hours=1)


def _hours(ts: datetime) -> float:
    return (ts - EPOCH).total_seconds() / 3600.0
