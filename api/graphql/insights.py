"""GraphQL consumption insights: patterns, forecasts (and forecast load vs capacity), anomaly
scores, the insight feed, prioritized alerts, and the ``analyze`` mutation (admin)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import cast
from uuid import UUID

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from api.context import RequestContext
from api.graphql.alerts import Alert
from commands.policy import may_read_meter
from domain.insight_rules import InsightCategory, InsightKind
from projections.insights_queries import ForecastRow

ContextInfo = Info[RequestContext, None]
SLOT = timedelta(minutes=15)

strawberry.enum(InsightCategory, name="InsightCategory")
strawberry.enum(InsightKind, name="InsightKind")


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def _uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise _bad(f"{field}: {value!r} is not a meter id (UUID)") from None


async def _readable_meter(info: ContextInfo, meter: str) -> UUID | None:
    """The meter's id when it exists and the caller may read it (customers: their own)."""
    meter_id = _uuid(meter, "meter")
    row = await info.context.container.meters.by_id(meter_id)
    if row is None or not may_read_meter(info.context.actor(), row.customer_account):
        return None
    return meter_id


@strawberry.type(description="A meter's typical consumption over the last analysed weeks.")
class ConsumptionPattern:
    meter_id: strawberry.ID
    as_of: datetime = strawberry.field(description="End of the analysed window.")
    days: int
    mean_kw: float
    base_load_kw: float = strawberry.field(description="Lowest slot of the mean daily profile.")
    peak_kw: float = strawberry.field(description="Highest 15-minute mean power in the window.")
    trend_pct_per_week: float = strawberry.field(
        description="Least-squares slope of daily energy, % of the mean per week."
    )
    daily_profile_kw: list[float] = strawberry.field(
        description="Mean power of each 15-minute slot of the day (96 values, from 00:00 UTC)."
    )
    weekly_kwh: list[float] = strawberry.field(description="Mean energy per weekday, Monday first.")


@strawberry.type(description="One 15-minute step of a forecast with its prediction interval.")
class ForecastPoint:
    start: datetime
    kw: float
    lower_kw: float
    upper_kw: float
    load_pct: float | None = strawberry.field(
        description="Forecast against the region's capacity (regions only)."
    )


@strawberry.type(description="The next 24 hours at 15-minute resolution (90 % interval).")
class Forecast:
    key: str = strawberry.field(description="The meter id or the region.")
    made_at: datetime
    model: str
    capacity_kw: float | None
    peak_load_pct: float | None = strawberry.field(
        description="Highest forecast load against capacity (regions only)."
    )
    points: list[ForecastPoint]

    @classmethod
    def from_row(cls, row: ForecastRow) -> Forecast:
        """GraphQL view of a stored forecast."""
        cap = row.capacity_w
        points = [
            ForecastPoint(
                start=row.start + SLOT * i,
                kw=round(m / 1000, 4),
                lower_kw=round(lo / 1000, 4),
                upper_kw=round(hi / 1000, 4),
                load_pct=round(100 * m / cap, 2) if cap else None,
            )
            for i, (m, lo, hi) in enumerate(zip(row.mean_w, row.lower_w, row.upper_w, strict=True))
        ]
        return cls(
            key=row.key,
            made_at=row.made_at,
            model=row.model,
            capacity_kw=None if cap is None else cap / 1000,
            peak_load_pct=max((p.load_pct or 0.0 for p in points), default=None) if cap else None,
            points=points,
        )


@strawberry.type(description="A meter-day's anomaly score 0-100 with its reason in words.")
class AnomalyScore:
    meter_id: strawberry.ID
    day: date
    region: str
    score: float
    reason: str


@strawberry.type(description="An explained, actionable finding of the analysis.")
class Insight:
    id: strawberry.ID
    category: InsightCategory
    kind: InsightKind
    region: str
    meter_id: strawberry.ID | None
    title: str
    evidence: list[str] = strawberry.field(description="Each piece of evidence in words.")
    confidence: float = strawberry.field(description="0-100.")
    since: datetime | None
    first_seen: datetime
    last_seen: datetime
    alert_ids: list[strawberry.ID] = strawberry.field(
        description="Unresolved alerts of the same meter (or, for a region item, the region)."
    )


@strawberry.type(description="What an alert's priority is made of (points; they add up).")
class PriorityFactors:
    severity: float
    age: float
    affected_load: float
    customers: float
    recurrence: float


@strawberry.type(description="An unresolved alert with its priority score 0-100.")
class PrioritizedAlert:
    alert: Alert
    score: float
    affected_kw: float
    factors: PriorityFactors


@strawberry.type(description="One run of the consumption analysis.")
class AnalysisRun:
    id: int
    trigger: str
    actor: str
    window_start: datetime
    window_end: datetime
    meters: int
    seconds: float
    finished_at: datetime
    summary: JSON


@strawberry.type
class InsightQuery:
    @strawberry.field(description="A meter's consumption pattern (customers: their own meters).")
    async def consumption_pattern(
        self, info: ContextInfo, meter: strawberry.ID
    ) -> ConsumptionPattern | None:
        meter_id = await _readable_meter(info, meter)
        if meter_id is None:
            return None
        row = await info.context.container.insight_queries.pattern(meter_id)
        if row is None:
            return None
        return ConsumptionPattern(
            meter_id=strawberry.ID(str(row.meter_id)),
            as_of=row.as_of,
            days=row.days,
            mean_kw=round(row.mean_w / 1000, 4),
            base_load_kw=round(row.base_w / 1000, 4),
            peak_kw=round(row.peak_w / 1000, 4),
            trend_pct_per_week=round(row.trend_pct_week, 2),
            daily_profile_kw=[round(v / 1000, 4) for v in row.daily_profile_w],
            weekly_kwh=[round(v, 3) for v in row.weekly_kwh],
        )

    @strawberry.field(description="A meter's next-24-hour forecast (customers: their own meters).")
    async def meter_forecast(self, info: ContextInfo, meter: strawberry.ID) -> Forecast | None:
        meter_id = await _readable_meter(info, meter)
        if meter_id is None:
            return None
        row = await info.context.container.insight_queries.meter_forecast(meter_id)
        return None if row is None else Forecast.from_row(row)

    @strawberry.field(
        description="Each region's next-24-hour load forecast against its capacity (staff)."
    )
    async def region_forecasts(
        self, info: ContextInfo, region: str | None = None
    ) -> list[Forecast]:
        rows = await info.context.container.insight_queries.region_forecasts(region)
        return [Forecast.from_row(r) for r in rows]

    @strawberry.field(
        description="A meter's daily anomaly scores, newest first (customers: their own meters)."
    )
    async def anomaly_scores(
        self, info: ContextInfo, meter: strawberry.ID, days: int = 7
    ) -> list[AnomalyScore]:
        if not 1 <= days <= 366:
            raise _bad(f"days: must be between 1 and 366, got {days}")
        meter_id = await _readable_meter(info, meter)
        if meter_id is None:
            return []
        rows = await info.context.container.insight_queries.scores(meter_id, days)
        return [
            AnomalyScore(
                meter_id=strawberry.ID(str(r.meter_id)),
                day=r.day,
                region=r.region,
                score=r.score,
                reason=r.reason,
            )
            for r in rows
        ]

    @strawberry.field(description="The insight feed: active findings, most confident first.")
    async def insights(
        self,
        info: ContextInfo,
        region: str | None = None,
        category: InsightCategory | None = None,
        kind: InsightKind | None = None,
        first: int = 50,
    ) -> list[Insight]:
        if not 1 <= first <= 500:
            raise _bad(f"first: must be between 1 and 500, got {first}")
        rows = await info.context.container.insight_queries.insights(
            region,
            None if category is None else category.value,
            None if kind is None else kind.value,
            first,
        )
        return [
            Insight(
                id=strawberry.ID(r.id),
                category=InsightCategory(r.category),
                kind=InsightKind(r.kind),
                region=r.region,
                meter_id=None if r.meter_id is None else strawberry.ID(str(r.meter_id)),
                title=r.title,
                evidence=r.evidence,
                confidence=r.confidence,
                since=r.since,
                first_seen=r.first_seen,
                last_seen=r.last_seen,
                alert_ids=[strawberry.ID(str(a)) for a in r.alert_ids],
            )
            for r in rows
        ]

    @strawberry.field(
        description="Unresolved alerts by priority 0-100 from severity, age, affected load and "
        "customers, and recurrence (staff)."
    )
    async def prioritized_alerts(
        self, info: ContextInfo, region: str | None = None, first: int = 50
    ) -> list[PrioritizedAlert]:
        if not 1 <= first <= 500:
            raise _bad(f"first: must be between 1 and 500, got {first}")
        now = datetime.now(UTC)
        ranked = await info.context.container.insight_queries.prioritized_alerts(region, now, first)
        return [
            PrioritizedAlert(
                alert=Alert.from_row(p.alert),
                score=p.factors.score,
                affected_kw=p.affected_kw,
                factors=PriorityFactors(
                    severity=round(p.factors.severity, 2),
                    age=round(p.factors.age, 2),
                    affected_load=round(p.factors.load, 2),
                    customers=round(p.factors.customers, 2),
                    recurrence=round(p.factors.recurrence, 2),
                ),
            )
            for p in ranked
        ]

    @strawberry.field(description="The latest analysis run (staff).")
    async def last_analysis(self, info: ContextInfo) -> AnalysisRun | None:
        row = await info.context.container.insight_queries.last_run()
        if row is None:
            return None
        return AnalysisRun(
            id=row.id,
            trigger=row.trigger,
            actor=row.actor,
            window_start=row.window_start,
            window_end=row.window_end,
            meters=row.meters,
            seconds=row.seconds,
            finished_at=row.finished_at,
            summary=cast(JSON, row.summary),
        )


@strawberry.type
class InsightMutation:
    @strawberry.mutation(
        description="Run the consumption analysis now (admin); null when another run is in "
        "progress or no meter has readings yet."
    )
    async def analyze(self, info: ContextInfo) -> AnalysisRun | None:
        actor = info.context.actor()
        container = info.context.container
        report = await container.insights.run_once(
            datetime.now(UTC), trigger="analyze", actor=actor.subject
        )
        if report.run_id is None:
            return None
        row = await container.insight_queries.last_run()
        if row is None:
            return None
        return AnalysisRun(
            id=row.id,
            trigger=row.trigger,
            actor=row.actor,
            window_start=row.window_start,
            window_end=row.window_end,
            meters=row.meters,
            seconds=row.seconds,
            finished_at=row.finished_at,
            summary=cast(JSON, row.summary),
        )
