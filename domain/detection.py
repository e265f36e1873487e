"""Detector rules over plain values: overload, consumption anomaly, comm loss, meter events.

Each rule is pure (no clock, no database): the caller passes ``now`` and the rows it read, and
gets an ``AlertDecision`` back — RAISE (open or recur the alert of ``dedup_key``), KEEP (say
nothing: the evidence is not enough either way) or CLEAR (auto-resolve the open alert, if any).
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

import msgspec

from domain.alert import AlertType, Evidence, Severity

WINDOW = timedelta(minutes=15)


class Verdict(enum.StrEnum):
    """What the alert desk should do with a rule's finding."""

    RAISE = "RAISE"
    KEEP = "KEEP"
    CLEAR = "CLEAR"


class AlertDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's finding: verdict, the alert it concerns (by dedup key) and the evidence."""

    verdict: Verdict
    alert_type: AlertType
    severity: Severity
    region: str
    dedup_key: str
    message: str
    observed_at: datetime
    meter: UUID | None = None
    evidence: Evidence = msgspec.field(default_factory=dict)
    confidence: float | None = None
    """0-100 for anomaly decisions; ``None`` for rules that are certain or undecided."""


def bucket_start(ts: datetime, window: timedelta = WINDOW) -> datetime:
    """Start of the ``window``-aligned bucket (from the Unix epoch) that holds ``ts``."""
    epoch = datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return ts - (ts - epoch) % window


# -- overload ----------------------------------------------------------------------------


class OverloadRule(msgspec.Struct, frozen=True, kw_only=True):
    """Regional load above ``threshold_pct`` in ``windows_required`` recent windows.

    "3 windows within 30 minutes" is read as: the windows *starting* within ``span`` before the
    start of the current (partial) window, plus the current one — with the defaults the current
    window and the two before it, i.e. buckets covering up to 45 minutes of time. (Two full
    15-minute windows fit in 30 minutes, so a literal reading could never count three.)
    A current window that holds no reading yet (it has just begun, or the meters send each
    window after it ends) is no evidence either way: the rule then judges the windows up to the
    one before it.
    The alert clears when every considered window is at or below ``clear_pct`` (hysteresis:
    default = threshold); in between the verdict is KEEP.
    """

    threshold_pct: float = 85.0
    windows_required: int = 3
    span: timedelta = timedelta(minutes=30)
    window: timedelta = WINDOW
    clear_pct: float | None = None
    critical_pct: float = 100.0
    """Severity is HIGH, CRITICAL when any considered window reaches this load."""

    def fetched(self, now: datetime) -> tuple[datetime, datetime]:
        """First and last bucket start to read for ``now`` (one window before the span too)."""
        current = bucket_start(now, self.window)
        return current - self.span - self.window, current

    def considered(self, now: datetime, current_has_data: bool = True) -> tuple[datetime, datetime]:
        """First and last bucket start the rule judges for ``now``."""
        last = bucket_start(now, self.window)
        if not current_has_data:
            last -= self.window
        return last - self.span, last


def overload_key(region: str) -> str:
    """Dedup key of a region's overload alert."""
    return f"OVERLOAD:{region}"


def detect_overload(
    region: str, rows: Iterable[tuple[datetime, float]], now: datetime, rule: OverloadRule
) -> AlertDecision:
    """Decide on a region's overload from its (bucket start, load %) rows."""
    earliest, current = rule.fetched(now)
    known: dict[datetime, float] = {}
    for bucket, load in rows:
        if earliest <= bucket <= current:
            known[bucket] = load  # a later row of the same bucket supersedes an earlier one
    first, last = rule.considered(now, current_has_data=current in known)
    loads = {bucket: load for bucket, load in known.items() if first <= bucket <= last}
    above = sorted(b for b, load in loads.items() if load > rule.threshold_pct)
    clear_pct = rule.threshold_pct if rule.clear_pct is None else rule.clear_pct
    peak = max(loads.values(), default=0.0)
    if len(above) >= rule.windows_required:
        verdict = Verdict.RAISE
    elif all(load <= clear_pct for load in loads.values()):
        verdict = Verdict.CLEAR
    else:
        verdict = Verdict.KEEP
    severity = Severity.CRITICAL if peak >= rule.critical_pct else Severity.HIGH
    return AlertDecision(
        verdict=verdict,
        alert_type=AlertType.OVERLOAD,
        severity=severity,
        region=region,
        dedup_key=overload_key(region),
        message=(
            f"region {region} load above {rule.threshold_pct:g} % in {len(above)} of "
            f"{len(loads)} recent 15-minute windows (peak {peak:.1f} %)"
        ),
        observed_at=now,
        evidence={
            "windowsAbove": len(above),
            "windowsConsidered": len(loads),
            "windowsRequired": rule.windows_required,
            "thresholdPct": rule.threshold_pct,
            "peakLoadPct": round(peak, 3),
            "from": first.isoformat(),
            "to": (last + rule.window).isoformat(),
        },
    )


# -- consumption anomaly -----------------------------------------------------------------


class AnomalyRule(msgspec.Struct, frozen=True, kw_only=True):
    """A window's consumption against the meter's own baseline for that weekday and slot."""

    weeks: int = 4
    """How many past weeks of the same slot form the baseline."""
    min_samples: int = 3
    """No judgment (and no confidence) with fewer baseline samples than this."""
    spike: float = 1.0
    """Relative rise that counts as a spike: +100 %."""
    drop: float = 0.5
    """Relative fall that counts as a drop: -50 %."""
    slot: timedelta = WINDOW
    half_confidence_samples: float = 2.0
    """History at which the history factor of the confidence reaches one half."""


class Baseline(msgspec.Struct, frozen=True, kw_only=True):
    """Mean and spread of one meter's consumption in one weekday/time-of-day slot."""

    mean: float
    stdev: float
    samples: int


def baseline(
    history: Iterable[tuple[datetime, float]], at: datetime, rule: AnomalyRule
) -> Baseline | None:
    """Baseline of ``at``'s slot from the same weekday and slot of the last ``rule.weeks`` weeks."""
    slot = bucket_start(at, rule.slot)
    wanted = {slot - timedelta(weeks=k) for k in range(1, rule.weeks + 1)}
    values = [v for ts, v in history if bucket_start(ts, rule.slot) in wanted]
    if not values:
        return None
    stdev = statistics.pstdev(values) if len(values) > 1 else 0.0
    return Baseline(mean=statistics.fmean(values), stdev=stdev, samples=len(values))


def anomaly_confidence(samples: int, deviation: float, rule: AnomalyRule) -> float | None:
    """Confidence 0-100 that a deviation is a real anomaly; ``None`` below the minimum history.

    confidence = 100 · h · d, with the history factor h = n / (n + k) (n baseline samples,
    k = ``half_confidence_samples``) and the size factor d = 1 - exp(-|deviation| / t), t being
    the spike threshold for rises and the drop threshold for falls. Both factors lie in [0, 1)
    and are non-decreasing in n and |deviation|, so the score is too.
    """
    if samples < rule.min_samples:
        return None
    history = samples / (samples + rule.half_confidence_samples)
    threshold = rule.spike if deviation >= 0 else rule.drop
    size = 1.0 - math.exp(-abs(deviation) / threshold)
    return round(min(100.0, max(0.0, 100.0 * history * size)), 2)


def anomaly_key(meter: UUID) -> str:
    """Dedup key of a meter's consumption anomaly alert."""
    return f"ANOMALY:{meter}"


def detect_anomaly(
    meter: UUID,
    region: str,
    at: datetime,
    value: float,
    history: Iterable[tuple[datetime, float]],
    rule: AnomalyRule,
) -> AlertDecision:
    """Decide whether ``value`` (the meter's consumption in ``at``'s slot) is a spike or a drop."""
    base = baseline(history, at, rule)
    evidence: Evidence = {"value": value, "slot": bucket_start(at, rule.slot).isoformat()}
    verdict, severity, message, confidence = Verdict.KEEP, Severity.LOW, "", None
    if base is None or base.samples < rule.min_samples or base.mean <= 0:
        message = f"meter {meter}: not enough history for a baseline"
    else:
        deviation = (value - base.mean) / base.mean
        confidence = anomaly_confidence(base.samples, deviation, rule)
        evidence |= {
            "baselineMean": base.mean,
            "baselineStdev": base.stdev,
            "baselineSamples": base.samples,
            "deviationPct": round(100 * deviation, 2),
        }
        if deviation > rule.spike or deviation < -rule.drop:
            kind = "spike" if deviation > 0 else "drop"
            verdict = Verdict.RAISE
            severity = Severity.MEDIUM if (confidence or 0) >= 50 else Severity.LOW
            message = f"meter {meter}: consumption {kind} of {100 * deviation:+.0f} % vs baseline"
            evidence["kind"] = kind
        else:
            verdict = Verdict.CLEAR
            message = f"meter {meter}: consumption within its baseline"
    return AlertDecision(
        verdict=verdict,
        alert_type=AlertType.ANOMALY,
        severity=severity,
        region=region,
        dedup_key=anomaly_key(meter),
        message=message,
        observed_at=at,
        meter=meter,
        evidence=evidence,
        confidence=confidence,
    )


# -- communication failure ---------------------------------------------------------------


class CommFailureRule(msgspec.Struct, frozen=True, kw_only=True):
    """A meter silent for ``missed_intervals`` expected intervals is offline."""

    interval: timedelta = WINDOW
    missed_intervals: int = 3


def comm_key(meter: UUID) -> str:
    """Dedup key of a meter's communication failure alert."""
    return f"COMM_FAILURE:{meter}"


def missed_intervals(last_seen: datetime, now: datetime, interval: timedelta) -> int:
    """Whole expected intervals elapsed since the meter's last reading (0 if in the future)."""
    return max(0, (now - last_seen) // interval)


def detect_comm_failure(
    meter: UUID, region: str, last_seen: datetime | None, now: datetime, rule: CommFailureRule
) -> AlertDecision:
    """Offline (RAISE) once ``missed_intervals`` intervals passed silently; else online (CLEAR).

    A meter that never reported gives KEEP: it is not yet expected to talk.
    """
    if last_seen is None:
        verdict, missed, message = Verdict.KEEP, 0, f"meter {meter} has never reported"
        evidence: Evidence = {"lastSeen": None, "allowedMisses": rule.missed_intervals}
    else:
        missed = missed_intervals(last_seen, now, rule.interval)
        offline = missed >= rule.missed_intervals
        verdict = Verdict.RAISE if offline else Verdict.CLEAR
        message = (
            f"meter {meter} silent for {missed} expected intervals"
            if offline
            else f"meter {meter} is reporting"
        )
        evidence = {
            "lastSeen": last_seen.isoformat(),
            "missedIntervals": missed,
            "allowedMisses": rule.missed_intervals,
        }
    return AlertDecision(
        verdict=verdict,
        alert_type=AlertType.COMM_FAILURE,
        severity=Severity.MEDIUM,
        region=region,
        dedup_key=comm_key(meter),
        message=message,
        observed_at=now,
        meter=meter,
        evidence=evidence,
    )


# -- meter event log ---------------------------------------------------------------------


class MeterEvent(enum.StrEnum):
    """Meter event-log entries the head-end turns into alerts."""

    COVER_OPENED = "COVER_OPENED"
    TERMINAL_COVER_OPENED = "TERMINAL_COVER_OPENED"
    MAGNETIC_INTERFERENCE = "MAGNETIC_INTERFERENCE"
    CURRENT_REVERSAL = "CURRENT_REVERSAL"
    POWER_DOWN = "POWER_DOWN"
    POWER_UP = "POWER_UP"


_LOG_CODES: dict[int, MeterEvent] = {
    1: MeterEvent.POWER_DOWN,
    2: MeterEvent.POWER_UP,
    40: MeterEvent.TERMINAL_COVER_OPENED,
    42: MeterEvent.MAGNETIC_INTERFERENCE,  # strong DC field
    44: MeterEvent.COVER_OPENED,
    47: MeterEvent.MAGNETIC_INTERFERENCE,
}
"""IDIS standard / fraud-detection event-log codes that raise or clear an alert."""


def meter_event_of_code(code: int) -> MeterEvent | None:
    """The alerting meaning of a meter event-log code; ``None`` for codes that raise nothing."""
    return _LOG_CODES.get(code)


_TAMPER_SEVERITY: dict[MeterEvent, Severity] = {
    MeterEvent.COVER_OPENED: Severity.HIGH,
    MeterEvent.TERMINAL_COVER_OPENED: Severity.HIGH,
    MeterEvent.MAGNETIC_INTERFERENCE: Severity.CRITICAL,
    MeterEvent.CURRENT_REVERSAL: Severity.CRITICAL,
}


def tamper_key(meter: UUID) -> str:
    """Dedup key of a meter's tamper alert (every tamper kind recurs on one alert)."""
    return f"TAMPER:{meter}"


def outage_key(meter: UUID) -> str:
    """Dedup key of a meter's power-failure alert."""
    return f"OUTAGE:{meter}"


def decide_meter_event(
    meter: UUID, region: str, kind: MeterEvent, at: datetime, code: int | None = None
) -> AlertDecision:
    """Tamper entries raise TAMPER; power down raises OUTAGE, power up clears it."""
    evidence: Evidence = {"event": kind.value, "at": at.isoformat(), "code": code}
    if kind in _TAMPER_SEVERITY:
        return AlertDecision(
            verdict=Verdict.RAISE,
            alert_type=AlertType.TAMPER,
            severity=_TAMPER_SEVERITY[kind],
            region=region,
            dedup_key=tamper_key(meter),
            message=f"meter {meter} reported {kind.value.lower().replace('_', ' ')}",
            observed_at=at,
            meter=meter,
            evidence=evidence,
        )
    down = kind is MeterEvent.POWER_DOWN
    return AlertDecision(
        verdict=Verdict.RAISE if down else Verdict.CLEAR,
        alert_type=AlertType.OUTAGE,
        severity=Severity.HIGH,
        region=region,
        dedup_key=outage_key(meter),
        message=f"meter {meter} lost power" if down else f"meter {meter} power restored",
        observed_at=at,
        meter=meter,
        evidence=evidence,
    )
