"""Alert decisions from the consumption insights: a meter-day's anomaly score and a region's
forecast load against its capacity. Pure: the insights process passes what it computed."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict, anomaly_key


class InsightCategory(enum.StrEnum):
    """What an insight is for."""

    REVENUE_PROTECTION = "REVENUE_PROTECTION"
    MAINTENANCE = "MAINTENANCE"
    EFFICIENCY = "EFFICIENCY"
    SECURITY = "SECURITY"
    CAPACITY = "CAPACITY"


class InsightKind(enum.StrEnum):
    """The finding behind an insight."""

    THEFT = "THEFT"
    STUCK_METER = "STUCK_METER"
    FAILING_PHASE = "FAILING_PHASE"
    HIGH_BASE_LOAD = "HIGH_BASE_LOAD"
    TAMPER_EVENTS = "TAMPER_EVENTS"
    FORECAST_OVERLOAD = "FORECAST_OVERLOAD"


CATEGORY_OF: dict[InsightKind, InsightCategory] = {
    InsightKind.THEFT: InsightCategory.REVENUE_PROTECTION,
    InsightKind.STUCK_METER: InsightCategory.MAINTENANCE,
    InsightKind.FAILING_PHASE: InsightCategory.MAINTENANCE,
    InsightKind.HIGH_BASE_LOAD: InsightCategory.EFFICIENCY,
    InsightKind.TAMPER_EVENTS: InsightCategory.SECURITY,
    InsightKind.FORECAST_OVERLOAD: InsightCategory.CAPACITY,
}


def decide_day_anomaly(
    meter: UUID, region: str, day: datetime, score: float, reason: str, threshold: float
) -> AlertDecision:
    """RAISE the meter's ANOMALY alert (the detectors' series) when ``score`` reaches
    ``threshold``; otherwise KEEP (a calm day does not clear what a 15-minute slot raised)."""
    raised = score >= threshold
    return AlertDecision(
        verdict=Verdict.RAISE if raised else Verdict.KEEP,
        alert_type=AlertType.ANOMALY,
        severity=Severity.MEDIUM if score >= 95 else Severity.LOW,
        region=region,
        dedup_key=anomaly_key(meter),
        message=f"meter {meter}: {reason} on {day.date().isoformat()} (score {score:.0f}/100)",
        observed_at=day,
        meter=meter,
        evidence={"day": day.date().isoformat(), "score": round(score, 1), "reason": reason},
        confidence=round(score, 2),
    )


def forecast_overload_key(region: str) -> str:
    """Dedup key of a region's forecast-overload early warning."""
    return f"FORECAST_OVERLOAD:{region}"


def decide_forecast_overload(
    region: str,
    peak_w: float,
    peak_at: datetime,
    capacity_w: float,
    threshold_pct: float,
    made_at: datetime,
) -> AlertDecision:
    """RAISE an early warning when the forecast peak exceeds ``threshold_pct`` of capacity,
    CLEAR it when the forecast no longer does."""
    load_pct = 100.0 * peak_w / capacity_w if capacity_w > 0 else 0.0
    raised = load_pct > threshold_pct
    return AlertDecision(
        verdict=Verdict.RAISE if raised else Verdict.CLEAR,
        alert_type=AlertType.OVERLOAD,
        severity=Severity.HIGH if load_pct >= 100 else Severity.MEDIUM,
        region=region,
        dedup_key=forecast_overload_key(region),
        message=(
            f"region {region}: forecast load {load_pct:.0f} % of capacity at "
            f"{peak_at.isoformat()} (warning above {threshold_pct:g} %)"
        ),
        observed_at=made_at,
        evidence={
            "forecastPeakW": round(peak_w, 1),
            "peakAt": peak_at.isoformat(),
            "capacityW": capacity_w,
            "loadPct": round(load_pct, 1),
            "thresholdPct": threshold_pct,
        },
    )
