"""Consumption analysis over a meters x 15-minute-slots matrix: patterns, day features, anomaly
scores with reasons, and revenue-protection suspicions from combined evidence.

Pure numpy, no I/O: the insights process reads the matrix from the aggregates and stores what
this returns; the benchmark feeds it a labelled simulated fleet. Work that needs one meter's
slots runs chunk by chunk (``patterns``, ``day_features``); work that compares a meter with its
peers runs once over the small per-day arrays of every meter (``assess``). docs/insights.md
explains each rule and its thresholds.
"""

from __future__ import annotations

import enum
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

SLOTS_PER_DAY = 96
SLOT = timedelta(minutes=15)
NIGHT_SLOTS = slice(0, 20)
"""00:00-05:00 UTC, the hours when a household's consumption is its base load."""

P = ParamSpec("P")
R = TypeVar("R")

# numpy's dtype-level typing does not survive arithmetic; the names say what a matrix holds.
MIN_PEERS = 8
"""Smallest peer group a meter is compared with; smaller habit groups use the whole area."""

Floats = npt.NDArray[Any]
Ints = npt.NDArray[Any]
Bools = npt.NDArray[Any]


class SuspicionKind(enum.StrEnum):
    """What a revenue-protection suspicion says is going on at a meter."""

    THEFT = "THEFT"
    STUCK_METER = "STUCK_METER"
    FAILING_PHASE = "FAILING_PHASE"


class Feature(enum.IntEnum):
    """The day feature an anomaly score came from (its reason)."""

    NONE = 0
    TOTAL = 1
    NIGHT = 2
    PEAK = 3
    CONSTANT = 4
    ZERO = 5


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """Thresholds of the rules (defaults tuned on the labelled benchmark fleet)."""

    anomaly_scale: float = 0.5
    """|ln ratio| at which a day's score reaches 1 - 1/e (63); 2x or ½ scores 75."""
    min_drop: float = 0.3
    """Smallest sustained fall of consumption (against own history and peers) that is evidence."""
    min_days_after: int = 3
    """A sustained drop lasts at least this many days up to the end of the window."""
    drop_z: float = 4.0
    """The drop's size in units of the meter's own day-to-day spread, at least."""
    steady_area: float = 0.15
    """The area's load is steady when its level after the change is within this share of before."""
    phase_imbalance: float = 0.5
    """Share by which the weakest phase falls short of the strongest: a failing phase."""
    power_failures: int = 3
    """Power failures in the window that count as evidence."""
    suspicion_confidence: float = 0.6
    """Suspicions below this confidence are not reported."""


@dataclass(frozen=True, slots=True)
class Patterns:
    """Each meter's consumption pattern over the window (W, kWh)."""

    daily_profile: Floats
    """(m, 96) mean power per slot of the day."""
    weekly_kwh: Floats
    """(m, 7) mean energy per weekday, Monday first."""
    base_w: Floats
    """(m,) base load: the lowest slot of the mean daily profile."""
    peak_w: Floats
    """(m,) highest 15-minute mean power in the window."""
    mean_w: Floats
    """(m,) mean power over the window."""
    trend_pct_week: Floats
    """(m,) least-squares slope of daily energy, % of the mean per week."""


@dataclass(frozen=True, slots=True)
class DayFeatures:
    """Per meter and day: what a day looked like (m, days)."""

    total_kwh: Floats
    night_kwh: Floats
    peak_w: Floats
    constant: Bools
    """Every slot of the day has the same non-zero value (a stuck register or a frozen reading)."""
    zero: Bools
    """No consumption at all in the day."""

    @staticmethod
    def concat(parts: list[DayFeatures]) -> DayFeatures:
        """Join the features of consecutive chunks of meters."""
        return DayFeatures(
            total_kwh=np.concatenate([p.total_kwh for p in parts]),
            night_kwh=np.concatenate([p.night_kwh for p in parts]),
            peak_w=np.concatenate([p.peak_w for p in parts]),
            constant=np.concatenate([p.constant for p in parts]),
            zero=np.concatenate([p.zero for p in parts]),
        )


@dataclass(frozen=True, slots=True)
class MeterEvidence:
    """Facts from outside the consumption curve, one value per meter (m,)."""

    tamper_events: Ints
    reverse_energy: Bools
    power_failures: Ints
    relay_connected: Bools
    phase_imbalance: Floats
    """(max - min) / max of the mean phase currents; 0 for single-phase meters or unknown."""

    @staticmethod
    def none(meters: int) -> MeterEvidence:
        """No outside evidence for ``meters`` meters (relays connected)."""
        return MeterEvidence(
            tamper_events=np.zeros(meters, np.int64),
            reverse_energy=np.zeros(meters, np.bool_),
            power_failures=np.zeros(meters, np.int64),
            relay_connected=np.ones(meters, np.bool_),
            phase_imbalance=np.zeros(meters, np.float64),
        )


@dataclass(frozen=True, slots=True)
class Suspicion:
    """A revenue-protection finding at one meter: what, since when, why, how sure."""

    meter: int
    """Row of the meter in the analysed matrix."""
    kind: SuspicionKind
    since_day: int
    confidence: float
    """0..1."""
    evidence: list[str] = field(default_factory=list)
    """Each piece of evidence in words."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """Anomaly scores of every meter-day and the revenue-protection suspicions."""

    scores: Floats
    """(m, days) 0..100."""
    reasons: Ints
    """(m, days) the ``Feature`` behind each score."""
    ratios: Floats
    """(m, days) the feature's value against its 4-week median (1 = usual)."""
    area_factor: Floats
    """(m, days) the meter's area's level that day against the area's usual (holiday, weather)."""
    suspicions: list[Suspicion]


def quiet(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` without numpy's warnings about empty or all-NaN slices: missing data
    (a meter silent for a day) is expected here, and NaN results are handled where used."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return function(*args, **kwargs)

    return wrapper


def days_of(power: Floats) -> int:
    """Whole days in a matrix of 15-minute slots."""
    if power.ndim != 2 or power.shape[1] % SLOTS_PER_DAY:
        raise ValueError("power must be meters x whole days of 96 slots")
    return int(power.shape[1]) // SLOTS_PER_DAY


@quiet
def patterns(power: Floats, start: datetime) -> Patterns:
    """Daily and weekly profile, base load, peak and trend of each meter (``power`` in W)."""
    days = days_of(power)
    by_day = power.reshape(power.shape[0], days, SLOTS_PER_DAY)
    daily_profile = np.nanmean(by_day, axis=1)
    total = np.nanmean(by_day, axis=2) * 24 / 1000  # kWh per day
    weekday = (start.weekday() + np.arange(days)) % 7
    weekly = np.stack(
        [
            np.nanmean(total[:, weekday == d], axis=1)
            if (weekday == d).any()
            else np.full(power.shape[0], np.nan)
            for d in range(7)
        ],
        axis=1,
    )
    mean_day = np.nanmean(total, axis=1)
    x = np.arange(days, dtype=np.float64) - (days - 1) / 2
    slope = (np.nan_to_num(total - mean_day[:, None]) @ x) / max(float(x @ x), 1.0)
    trend = np.where(mean_day > 0, 700.0 * slope / np.where(mean_day > 0, mean_day, 1), 0.0)
    return Patterns(
        daily_profile=daily_profile,
        weekly_kwh=weekly,
        base_w=np.nanmin(daily_profile, axis=1),
        peak_w=np.nanmax(power, axis=1),
        mean_w=np.nanmean(power, axis=1),
        trend_pct_week=trend,
    )


def day_features(power: Floats) -> DayFeatures:
    """Energy, night energy, peak and stuck/zero flags of every meter-day."""
    days = days_of(power)
    by_day = power.reshape(power.shape[0], days, SLOTS_PER_DAY)
    if not np.isnan(by_day).any():
        low, high = by_day.min(axis=2), by_day.max(axis=2)
        total = by_day.sum(axis=2) / 4000
        night = by_day[:, :, NIGHT_SLOTS].sum(axis=2) / 4000
    else:  # missing slots: a day's energy from its mean power; a day without data stays NaN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(by_day, axis=2), np.nanmax(by_day, axis=2)
            total = np.nanmean(by_day, axis=2) * 24 / 1000
            night = np.nanmean(by_day[:, :, NIGHT_SLOTS], axis=2) * 5 / 1000
    return DayFeatures(
        total_kwh=total,
        night_kwh=night,
        peak_w=high,
        constant=(high == low) & (high > 0),
        zero=high <= 0,
    )


def _group_median(values: Floats, groups: Ints) -> Floats:
    """Median of ``values`` (m, days) over the rows of each group, per day, broadcast to rows."""
    out = np.empty_like(values)
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
    for rows in np.split(order, bounds):
        out[rows] = np.nanmedian(values[rows], axis=0)
    return out


@dataclass(frozen=True, slots=True)
class Peers:
    """Whom each meter is compared with: the same weekly habit in its area, else in its
    region, else its whole area."""

    in_area: Ints
    in_region: Ints | None
    areas: Ints
    level: Ints
    """Per meter: 0 habit in area, 1 habit in region, 2 whole area."""

    def median(self, values: Floats) -> Floats:
        """Each meter's peers' median of ``values`` (m, days), per day."""
        out = _group_median(values, self.areas)
        if self.in_region is not None and (self.level == 1).any():
            out = np.where((self.level == 1)[:, None], _group_median(values, self.in_region), out)
        if (self.level == 0).any():
            out = np.where((self.level == 0)[:, None], _group_median(values, self.in_area), out)
        return out


def peer_groups(
    total_kwh: Floats, areas: Ints, start: datetime, regions: Ints | None = None
) -> Peers:
    """Peers by weekly habit (weekend over weekday energy: offices near 0.4, factories near 0.6,
    homes near 1), so a holiday that closes the offices is compared among offices. A group of
    fewer than ``MIN_PEERS`` meters is not used: in a group of two, a meter's own change would
    be half of the group's median."""
    areas = np.asarray(areas, np.int64)
    days = total_kwh.shape[1]
    weekend = ((start.weekday() + np.arange(days)) % 7) >= 5
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        habit = np.nanmedian(total_kwh[:, weekend], axis=1) / np.nanmedian(
            total_kwh[:, ~weekend], axis=1
        )
    bucket = np.digitize(np.nan_to_num(habit, nan=1.0), [0.5, 0.8])
    if not weekend.any() or weekend.all():
        bucket = np.zeros_like(bucket)

    def big(groups: Ints) -> Bools:
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        enough: Bools = counts[inverse] >= MIN_PEERS
        return enough

    in_area = areas * 3 + bucket
    level = np.where(big(in_area), 0, 2)
    in_region = None
    if regions is not None:
        in_region = np.asarray(regions, np.int64) * 3 + bucket
        level = np.where((level == 2) & big(in_region), 1, level)
    return Peers(in_area=in_area, in_region=in_region, areas=areas, level=level)


def _type_normalised(values: Floats, start: datetime) -> Floats:
    """Each day against the meter's median of the same day type (weekday or weekend)."""
    days = values.shape[1]
    weekend = ((start.weekday() + np.arange(days)) % 7) >= 5
    out = np.empty(values.shape, np.float64)
    for mask in (weekend, ~weekend):
        if mask.any():
            median = np.nanmedian(values[:, mask], axis=1, keepdims=True)
            out[:, mask] = values[:, mask] / np.where(median > 0, median, np.nan)
    return out


@quiet
def assess(
    features: DayFeatures,
    areas: Ints,
    evidence: MeterEvidence,
    start: datetime,
    config: AnalysisConfig = AnalysisConfig(),
    regions: Ints | None = None,
) -> Assessment:
    """Score every meter-day 0-100 and derive suspicions, each meter against its own history and
    the other meters of its area that day (a holiday or a heat wave moves the whole area)."""
    ratios = {
        Feature.TOTAL: _type_normalised(features.total_kwh, start),
        Feature.NIGHT: _type_normalised(features.night_kwh, start),
        Feature.PEAK: _type_normalised(features.peak_w, start),
    }
    peers = peer_groups(features.total_kwh, areas, start, regions)
    area_factor = peers.median(ratios[Feature.TOTAL])
    logs = []
    for feature, ratio in ratios.items():
        level = area_factor if feature is Feature.TOTAL else peers.median(ratio)
        adjusted = ratio / np.where(level > 0, level, np.nan)
        logs.append(np.abs(np.log(np.where(adjusted > 0, adjusted, np.nan))))
        ratios[feature] = adjusted
    stacked = np.nan_to_num(np.stack(logs), nan=0.0)
    best = np.argmax(stacked, axis=0)
    size = np.take_along_axis(stacked, best[None], axis=0)[0]
    scores = 100.0 * (1.0 - np.exp(-size / config.anomaly_scale))
    reasons = (best + 1).astype(np.int64)
    chosen = np.stack([ratios[Feature.TOTAL], ratios[Feature.NIGHT], ratios[Feature.PEAK]])
    shown = np.take_along_axis(chosen, best[None], axis=0)[0]
    usual = np.nanmedian(features.total_kwh, axis=1, keepdims=True) > 0
    constant = features.constant & usual
    zero = features.zero & usual
    scores = np.where(constant, 95.0, np.where(zero, np.maximum(scores, 90.0), scores))
    reasons = np.where(constant, Feature.CONSTANT, np.where(zero, Feature.ZERO, reasons))
    reasons = np.where(scores < 1.0, Feature.NONE, reasons)
    shown = np.where(constant | zero, features.peak_w, shown)
    suspicions = _suspicions(ratios[Feature.TOTAL], area_factor, features, evidence, config)
    return Assessment(
        scores=np.round(scores, 1),
        reasons=reasons,
        ratios=np.nan_to_num(shown, nan=1.0),
        area_factor=np.nan_to_num(area_factor, nan=1.0),
        suspicions=suspicions,
    )


def _change_points(level: Floats, min_after: int) -> tuple[Ints, Floats, Floats, Floats]:
    """Per meter, the day after which the level fell most (a sustained step down).

    Returns the change day, the mean level before and after it, and the step's size in units of
    the meter's within-segment spread (a two-sample t statistic).
    """
    meters, days = level.shape
    x = np.nan_to_num(level, nan=1.0)
    cs = np.concatenate([np.zeros((meters, 1)), np.cumsum(x, axis=1)], axis=1)
    cs2 = np.concatenate([np.zeros((meters, 1)), np.cumsum(x * x, axis=1)], axis=1)
    cuts = np.arange(min_after, days - min_after + 1)
    n1 = cuts.astype(np.float64)
    n2 = days - n1
    before = cs[:, cuts] / n1
    after = (cs[:, -1:] - cs[:, cuts]) / n2
    ss = (cs2[:, cuts] - n1 * before**2) + (cs2[:, -1:] - cs2[:, cuts] - n2 * after**2)
    spread = np.sqrt(np.maximum(ss, 0) / np.maximum(days - 2, 1)) + 0.02
    t = (before - after) / (spread * np.sqrt(1 / n1 + 1 / n2))
    best = np.argmax(t, axis=1)
    pick = np.arange(meters)
    return cuts[best], before[pick, best], after[pick, best], t[pick, best]


def _refine(level: Floats, cut: Ints, middle: Floats) -> Ints:
    """Move each change day to the first day, from three days before it, that starts two days
    below the middle of the levels before and after (the split maximising the t statistic
    leans towards the window's centre when the noise is uneven)."""
    days = level.shape[1]
    below = np.nan_to_num(level, nan=np.inf) < middle[:, None]
    starts = below[:, :-1] & below[:, 1:]
    starts = np.concatenate([starts, below[:, -1:]], axis=1)
    allowed = np.arange(days)[None, :] >= (cut - 3)[:, None]
    candidates = starts & allowed
    first = np.argmax(candidates, axis=1)
    refined: Ints = np.where(candidates.any(axis=1), first, cut)
    return refined


def _suspicions(
    level: Floats,
    area_factor: Floats,
    features: DayFeatures,
    evidence: MeterEvidence,
    config: AnalysisConfig,
) -> list[Suspicion]:
    """Combine the drop rule with events, relay and phase facts into scored suspicions."""
    days = level.shape[1]
    if days < 2 * config.min_days_after:
        return []
    cut, before, after, t = _change_points(level, config.min_days_after)
    cut = _refine(level, cut, (before + after) / 2)
    drop = 1.0 - after / np.where(before > 0, before, np.nan)
    drop = np.nan_to_num(drop, nan=0.0)
    days_idx = np.arange(days)[None, :]
    after_mask = days_idx >= cut[:, None]
    n_after = after_mask.sum(axis=1)
    area_after = np.where(after_mask, area_factor, np.nan)
    area_before = np.where(~after_mask, area_factor, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        area_change = np.nanmedian(area_after, axis=1) / np.nanmedian(area_before, axis=1) - 1
    area_change = np.nan_to_num(area_change, nan=0.0)
    below = np.where(after_mask, level < (1 - config.min_drop / 2) * before[:, None], False)
    sustained = below.sum(axis=1) >= np.ceil(0.8 * n_after)
    dropped = (drop >= config.min_drop) & (t >= config.drop_z) & sustained
    steady = np.abs(area_change) <= config.steady_area
    stuck_days = features.constant.sum(axis=1)
    zero_days = (features.zero & evidence.relay_connected[:, None]).sum(axis=1)
    # Evidence strengths (0..1), combined as independent signals: 1 - Π(1 - p).
    p_drop = np.where(dropped, np.clip(0.35 + drop * 0.5 + (t - config.drop_z) * 0.02, 0, 0.8), 0)
    p_drop = np.where(dropped & ~steady, p_drop * 0.5, p_drop)
    p_tamper = np.where(evidence.tamper_events > 0, 0.5, 0.0)
    p_reverse = np.where(evidence.reverse_energy, 0.6, 0.0)
    p_zero = np.where(zero_days >= 2, 0.5, 0.0)
    p_fail = np.where(evidence.power_failures >= config.power_failures, 0.2, 0.0)
    p_phase = np.where(evidence.phase_imbalance >= config.phase_imbalance, 0.7, 0.0)
    found: list[Suspicion] = []
    candidates = np.flatnonzero(
        (p_drop > 0)
        | (p_tamper > 0)
        | (p_reverse > 0)
        | (p_zero > 0)
        | (p_phase > 0)
        | (stuck_days > 0)
    )
    for m in candidates.tolist():
        words: list[str] = []
        if stuck_days[m] > 0:
            first = int(np.argmax(features.constant[m]))
            words.append(
                f"reading constant at {features.peak_w[m, first] / 1000:.2f} kW all day "
                f"on {int(stuck_days[m])} day(s)"
            )
            found.append(Suspicion(m, SuspicionKind.STUCK_METER, first, 0.95, words))
            continue
        if p_drop[m] > 0:
            words.append(
                f"consumption fell {100 * drop[m]:.0f} % from day {int(cut[m])} and stayed down "
                f"({t[m]:.1f}x its day-to-day spread), against its own history and its area"
            )
            words.append(
                f"area load {'steady' if steady[m] else 'changed'} "
                f"({100 * area_change[m]:+.0f} % over the same days)"
            )
        if p_tamper[m]:
            words.append(f"{int(evidence.tamper_events[m])} tamper or cover-open event(s)")
        if p_reverse[m]:
            words.append("reverse energy flow recorded")
        if p_zero[m]:
            words.append(f"zero consumption on {int(zero_days[m])} day(s) with the relay connected")
        if p_fail[m]:
            words.append(f"{int(evidence.power_failures[m])} power failures")
        if p_phase[m]:
            words.append(
                f"phase imbalance {100 * evidence.phase_imbalance[m]:.0f} % "
                "(one phase carries far less than the others)"
            )
        kind = SuspicionKind.FAILING_PHASE if p_phase[m] else SuspicionKind.THEFT
        strengths = [p_drop[m], p_tamper[m], p_reverse[m], p_zero[m], p_fail[m], p_phase[m]]
        confidence = 1.0 - float(np.prod([1.0 - p for p in strengths]))
        if confidence < config.suspicion_confidence:
            continue
        since = int(cut[m]) if p_drop[m] > 0 else 0
        found.append(Suspicion(m, kind, since, round(confidence, 3), words))
    return found


def reason_text(reason: int, ratio: float, area_factor: float) -> str:
    """A meter-day's anomaly reason in words."""
    feature = Feature(reason)
    if feature is Feature.NONE:
        return "consumption as usual"
    if feature is Feature.CONSTANT:
        return f"reading constant at {ratio / 1000:.2f} kW for the whole day (stuck meter?)"
    if feature is Feature.ZERO:
        return "no consumption all day although the meter usually consumes"
    what = {Feature.TOTAL: "daily consumption", Feature.NIGHT: "night consumption"}.get(
        feature, "peak demand"
    )
    text = f"{what} {ratio:.1f}x its 4-week median"
    if abs(area_factor - 1) >= 0.1:
        text += f" (after allowing for its area at {area_factor:.2f}x usual that day)"
    return text
