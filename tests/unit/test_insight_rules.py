"""Alert decisions of the consumption insights and the anomaly reasons in words."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from domain.alert import AlertType, Severity
from domain.detection import Verdict, anomaly_key
from domain.insight_rules import decide_day_anomaly, decide_forecast_overload
from processes.insights.analysis import Feature, reason_text

DAY = datetime(2026, 11, 29, tzinfo=UTC)


def test_a_day_at_the_threshold_raises_the_meters_anomaly_series() -> None:
    meter = uuid.uuid4()
    raised = decide_day_anomaly(meter, "North", DAY, 92.0, "night consumption 4.2x", 90.0)
    assert raised.verdict is Verdict.RAISE and raised.dedup_key == anomaly_key(meter)
    assert raised.alert_type is AlertType.ANOMALY and raised.severity is Severity.LOW
    assert raised.evidence == {
        "day": "2026-11-29",
        "score": 92.0,
        "reason": "night consumption 4.2x",
    }
    assert "2026-11-29" in raised.message and "92/100" in raised.message
    assert decide_day_anomaly(meter, "North", DAY, 96.0, "r", 90.0).severity is Severity.MEDIUM
    assert decide_day_anomaly(meter, "North", DAY, 89.9, "r", 90.0).verdict is Verdict.KEEP


def test_forecast_overload_warns_above_the_threshold_and_clears_below() -> None:
    warn = decide_forecast_overload("North", 9_700.0, DAY, 10_000.0, 95.0, DAY)
    assert warn.verdict is Verdict.RAISE and warn.severity is Severity.MEDIUM
    assert warn.dedup_key == "FORECAST_OVERLOAD:North" and warn.evidence["loadPct"] == 97.0
    over = decide_forecast_overload("North", 10_500.0, DAY, 10_000.0, 95.0, DAY)
    assert over.severity is Severity.HIGH
    calm = decide_forecast_overload("North", 9_000.0, DAY, 10_000.0, 95.0, DAY)
    assert calm.verdict is Verdict.CLEAR


def test_reasons_in_words() -> None:
    assert reason_text(Feature.NIGHT, 4.2, 1.0) == "night consumption 4.2x its 4-week median"
    assert reason_text(Feature.TOTAL, 0.4, 0.7).endswith(
        "(after allowing for its area at 0.70x usual that day)"
    )
    assert "peak demand" in reason_text(Feature.PEAK, 2.0, 1.0)
    assert "stuck" in reason_text(Feature.CONSTANT, 430.0, 1.0)
    assert "0.43 kW" in reason_text(Feature.CONSTANT, 430.0, 1.0)
    assert "no consumption" in reason_text(Feature.ZERO, 0.0, 1.0)
    assert reason_text(Feature.NONE, 1.0, 1.0) == "consumption as usual"
