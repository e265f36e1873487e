"""A labelled simulated fleet for the insights: 15-minute load curves with injected, known cases.

Cases (each meter at most one, drawn with the seed): energy theft from a given day (a share of
the load bypasses the meter; some thieves also trip a cover-open event), a stuck meter (the
reading freezes), a failing phase on a three-phase meter (a third of the load unmetered, the
phase currents far apart). Fleet-wide, with labels too: public holidays (every meter of the
region on its weekend shape) and a heat wave in one region (air conditioning raises the daytime
load for some days). The load shapes are the simulator's (``simulation.load_model``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from processes.insights.analysis import SLOTS_PER_DAY, MeterEvidence
from simulation.load_model import HOURLY_SHAPES, MEDIAN_W, Profile

START = datetime(2026, 11, 2, tzinfo=UTC)
"""A Monday: day 0 of every labelled fleet."""
BLOCK = 1000
"""Meters generated from one random stream (chunks are unions of blocks, so any chunking of
the same fleet gives the same curves)."""


class Case(enum.IntEnum):
    """The label of a meter."""

    NORMAL = 0
    THEFT = 1
    STUCK = 2
    FAILING_PHASE = 3


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Size and shares of a labelled fleet."""

    meters: int = 2000
    days: int = 28
    seed: int = 17
    regions: int = 4
    areas_per_region: int = 10
    theft_share: float = 0.01
    stuck_share: float = 0.003
    failing_phase_share: float = 0.004
    false_tamper_share: float = 0.002
    """Normal meters with a cover-open event (maintenance), to keep one piece of evidence honest."""
    holidays: tuple[int, ...] = (10, 24)
    heat_wave: tuple[int, int] = (18, 22)
    """Days (from, to exclusive) of the heat wave in region 0."""


def _slot_shapes() -> dict[Profile, npt.NDArray[np.float64]]:
    """Each profile's weekday and weekend shape at 15-minute resolution (2, 96)."""
    x = np.arange(SLOTS_PER_DAY) / 4
    out = {}
    for profile, (weekday, weekend) in HOURLY_SHAPES.items():
        rows = [np.interp(x, np.arange(25), [*day, day[0]]) for day in (weekday, weekend)]
        out[profile] = np.array(rows)
    return out


@dataclass
class LabelledFleet:
    """Curves, labels and evidence of a labelled fleet (the curves made chunk by chunk)."""

    spec: FleetSpec
    start: datetime = START
    cases: npt.NDArray[np.int64] = field(init=False)
    since: npt.NDArray[np.int64] = field(init=False)
    regions: npt.NDArray[np.int64] = field(init=False)
    areas: npt.NDArray[np.int64] = field(init=False)
    profiles: npt.NDArray[np.int64] = field(init=False)
    scales: npt.NDArray[np.float64] = field(init=False)
    factor: npt.NDArray[np.float64] = field(init=False)
    evidence: MeterEvidence = field(init=False)

    def __post_init__(self) -> None:
        s = self.spec
        rng = np.random.default_rng([s.seed, 0])
        n = s.meters
        self.regions = rng.integers(0, s.regions, n)
        self.areas = self.regions * s.areas_per_region + rng.integers(0, s.areas_per_region, n)
        self.profiles = rng.choice(3, n, p=[0.8, 0.15, 0.05])
        median = np.array([MEDIAN_W[p] for p in Profile])[self.profiles]
        self.scales = median * rng.lognormal(0.0, 0.4, n)
        three_phase = (self.profiles > 0) | (rng.random(n) < 0.15)
        draw = rng.random(n)
        cases = np.zeros(n, np.int64)
        cases[draw < s.theft_share] = Case.THEFT
        stuck = (draw >= s.theft_share) & (draw < s.theft_share + s.stuck_share)
        cases[stuck] = Case.STUCK
        low = s.theft_share + s.stuck_share
        failing = (draw >= low) & (draw < low + s.failing_phase_share) & three_phase
        cases[failing] = Case.FAILING_PHASE
        self.cases = cases
        self.since = np.where(cases > 0, rng.integers(s.days // 2 - 2, s.days - 4, n), s.days)
        self.factor = rng.uniform(0.35, 0.65, n)
        thief = cases == Case.THEFT
        tamper = (thief & (rng.random(n) < 0.4)) | (
            (cases == Case.NORMAL) & (rng.random(n) < s.false_tamper_share)
        )
        imbalance = np.where(three_phase, rng.uniform(0.0, 0.25, n), 0.0)
        imbalance = np.where(cases == Case.FAILING_PHASE, rng.uniform(0.8, 1.0, n), imbalance)
        self.evidence = MeterEvidence(
            tamper_events=tamper.astype(np.int64),
            reverse_energy=np.zeros(n, np.bool_),
            power_failures=rng.poisson(0.3, n),
            relay_connected=np.ones(n, np.bool_),
            phase_imbalance=imbalance,
        )

    @property
    def meters(self) -> int:
        """How many meters."""
        return self.spec.meters

    def day_shapes(self) -> npt.NDArray[np.int64]:
        """Per region and day: 0 weekday shape, 1 weekend shape (holidays use the weekend's)."""
        s = self.spec
        weekend = ((self.start.weekday() + np.arange(s.days)) % 7 >= 5).astype(np.int64)
        kinds = np.tile(weekend, (s.regions, 1))
        for day in s.holidays:
            if day < s.days:
                kinds[:, day] = 1
        return kinds

    def curves(self, first: int, count: int) -> npt.NDArray[np.float32]:
        """Mean power (W) per 15-minute slot of meters ``first``..``first + count`` (count, T)."""
        if first % BLOCK:
            raise ValueError(f"chunks start at multiples of {BLOCK}")
        blocks = [
            self._block(b, min(b + BLOCK, first + count))
            for b in range(first, first + count, BLOCK)
        ]
        return np.concatenate(blocks)

    def _block(self, first: int, stop: int) -> npt.NDArray[np.float32]:
        s = self.spec
        n, days, slots = stop - first, s.days, SLOTS_PER_DAY
        rng = np.random.default_rng([s.seed, 1, first])
        shapes = _slot_shapes()
        kinds = self.day_shapes()
        rows = slice(first, stop)
        curve = np.empty((n, days, slots), np.float32)
        for p, profile in enumerate(Profile):
            mask = self.profiles[rows] == p
            if mask.any():
                per_day = shapes[profile][kinds[self.regions[rows][mask]]]  # (k, days, 96)
                curve[mask] = per_day
        # Heat wave: air conditioning in region 0 raises the afternoon load.
        hot_from, hot_to = s.heat_wave
        if hot_from < days:
            boost = 1 + 0.5 * np.exp(-(((np.arange(slots) / 4) - 15) ** 2) / 18)
            hot = self.regions[rows] == 0
            curve[hot, hot_from:hot_to] *= boost.astype(np.float32)
        day_level = rng.lognormal(0.0, 0.08, (n, days, 1)).astype(np.float32)
        noise = np.exp(rng.standard_normal((n, days, slots), np.float32) * np.float32(0.2))
        curve *= day_level * noise
        curve *= self.scales[rows, None, None].astype(np.float32)
        cases, since = self.cases[rows], self.since[rows]
        day = np.arange(days)[None, :]
        after = day >= since[:, None]
        stolen = (cases == Case.THEFT)[:, None] & after
        curve[stolen] *= self.factor[rows].repeat(days).reshape(n, days)[stolen][:, None]
        failing = (cases == Case.FAILING_PHASE)[:, None] & after
        curve[failing] *= np.float32(2 / 3)
        flat = curve.reshape(n, days * slots)
        for m in np.flatnonzero(cases == Case.STUCK).tolist():
            at = int(since[m]) * slots
            flat[m, at:] = flat[m, at - 1]
        return flat

    def truth(self, case: Case) -> npt.NDArray[np.bool_]:
        """Which meters carry ``case``."""
        found: npt.NDArray[np.bool_] = self.cases == case
        return found

    def holiday_dates(self) -> list[datetime]:
        """The holidays as dates."""
        return [self.start + timedelta(days=d) for d in self.spec.holidays]
