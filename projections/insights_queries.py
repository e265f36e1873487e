"""Read-side queries over the consumption-insights read models (written by the insights process)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.alert_priority import PriorityFactors, alert_priority
from projections.alerts_queries import AlertQueries, AlertRow

MAX_ITEMS = 500


class PatternRow(msgspec.Struct, frozen=True, kw_only=True):
    """A meter's consumption pattern as of the last analysis."""

    meter_id: UUID
    region: str
    as_of: datetime
    days: int
    mean_w: float
    base_w: float
    peak_w: float
    trend_pct_week: float
    daily_profile_w: list[float]
    weekly_kwh: list[float]


class ForecastRow(msgspec.Struct, frozen=True, kw_only=True):
    """A forecast of 15-minute mean power from ``start`` on, with its interval."""

    key: str
    """Meter id or region."""
    made_at: datetime
    start: datetime
    model: str
    mean_w: list[float]
    lower_w: list[float]
    upper_w: list[float]
    capacity_w: float | None = None


class ScoreRow(msgspec.Struct, frozen=True, kw_only=True):
    """One meter-day's anomaly score and its reason."""

    meter_id: UUID
    day: date
    region: str
    score: float
    reason: str


class InsightRow(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the insight feed."""

    id: str
    category: str
    kind: str
    region: str
    meter_id: UUID | None
    title: str
    evidence: list[str]
    confidence: float
    since: datetime | None
    first_seen: datetime
    last_seen: datetime
    alert_ids: list[UUID]


class PrioritizedAlert(msgspec.Struct, frozen=True, kw_only=True):
    """An unresolved alert with its priority factors."""

    alert: AlertRow
    factors: PriorityFactors
    affected_kw: float


class RunRow(msgspec.Struct, frozen=True, kw_only=True):
    """One analysis run."""

    id: int
    trigger: str
    actor: str
    window_start: datetime
    window_end: datetime
    meters: int
    seconds: float
    finished_at: datetime
    summary: dict[str, Any]


class InsightQueries:
    """Patterns, forecasts, scores, the insight feed and prioritized alerts."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], schema: str, default_capacity_w: float
    ) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.default_capacity_w = default_capacity_w
        self.alerts = AlertQueries(pool, schema)

    async def _rows(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL(text).format(s=self.schema), params)
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

    async def pattern(self, meter: UUID) -> PatternRow | None:
        """The meter's pattern, or None before its first analysis."""
        rows = await self._rows(
            "SELECT * FROM {s}.meter_patterns WHERE meter_id = %(m)s", {"m": meter}
        )
        return msgspec.convert(rows[0], PatternRow) if rows else None

    async def meter_forecast(self, meter: UUID) -> ForecastRow | None:
        """The meter's latest forecast."""
        rows = await self._rows(
            "SELECT meter_id::text AS key, made_at, start, 'weekly-profile' AS model, mean_w,"
            " lower_w, upper_w FROM {s}.meter_forecasts WHERE meter_id = %(m)s",
            {"m": meter},
        )
        return msgspec.convert(rows[0], ForecastRow) if rows else None

    async def region_forecasts(self, region: str | None) -> list[ForecastRow]:
        """Each region's latest forecast with its capacity (forecast load against capacity)."""
        rows = await self._rows(
            "SELECT f.region AS key, f.made_at, f.start, f.model, f.mean_w, f.lower_w, f.upper_w,"
            " coalesce(c.capacity_w, %(default)s) AS capacity_w FROM {s}.region_forecasts f"
            " LEFT JOIN {s}.region_capacity c ON c.region = f.region"
            " WHERE %(r)s::text IS NULL OR upper(f.region) = upper(%(r)s) ORDER BY f.region",
            {"r": region, "default": self.default_capacity_w},
        )
        return [msgspec.convert(r, ForecastRow) for r in rows]

    async def scores(self, meter: UUID, days: int) -> list[ScoreRow]:
        """The meter's last ``days`` anomaly scores, newest first."""
        rows = await self._rows(
            "SELECT * FROM {s}.anomaly_scores WHERE meter_id = %(m)s ORDER BY day DESC LIMIT %(n)s",
            {"m": meter, "n": days},
        )
        return [msgspec.convert(r, ScoreRow) for r in rows]

    async def top_scores(self, region: str | None, first: int) -> list[ScoreRow]:
        """The highest scores of the latest scored day (of ``region`` if given)."""
        rows = await self._rows(
            "SELECT * FROM {s}.anomaly_scores WHERE day = (SELECT max(day) FROM {s}.anomaly_scores)"
            " AND (%(r)s::text IS NULL OR upper(region) = upper(%(r)s))"
            " ORDER BY score DESC, meter_id LIMIT %(n)s",
            {"r": region, "n": min(first, MAX_ITEMS)},
        )
        return [msgspec.convert(r, ScoreRow) for r in rows]

    async def insights(
        self, region: str | None, category: str | None, kind: str | None, first: int
    ) -> list[InsightRow]:
        """Active feed items, most confident first, each with its meter's unresolved alerts."""
        rows = await self._rows(
            "SELECT i.id, i.category, i.kind, i.region, i.meter_id, i.title, i.evidence,"
            " i.confidence, i.since, i.first_seen, i.last_seen,"
            " coalesce((SELECT array_agg(a.id ORDER BY a.raised_at) FROM {s}.alerts a"
            "   WHERE a.status <> 'RESOLVED'"
            "   AND ((i.meter_id IS NOT NULL AND a.meter_id = i.meter_id)"
            "   OR (i.meter_id IS NULL AND a.meter_id IS NULL AND a.region = i.region))),"
            "  '{{}}') AS alert_ids"
            " FROM {s}.insights i WHERE i.active"
            " AND (%(r)s::text IS NULL OR upper(i.region) = upper(%(r)s))"
            " AND (%(c)s::text IS NULL OR i.category = %(c)s)"
            " AND (%(k)s::text IS NULL OR i.kind = %(k)s)"
            " ORDER BY i.confidence DESC, i.id LIMIT %(n)s",
            {"r": region, "c": category, "k": kind, "n": min(first, MAX_ITEMS)},
        )
        return [msgspec.convert(r, InsightRow) for r in rows]

    async def last_run(self) -> RunRow | None:
        """The latest analysis run."""
        rows = await self._rows("SELECT * FROM {s}.insight_runs ORDER BY id DESC LIMIT 1", {})
        return msgspec.convert(rows[0], RunRow) if rows else None

    async def prioritized_alerts(
        self, region: str | None, now: datetime, first: int
    ) -> list[PrioritizedAlert]:
        """Unresolved alerts, highest priority first, from severity, age, affected load and
        customers, and recurrence (``domain.alert_priority``)."""
        alerts = await self.alerts.unresolved(region, now, 5000)
        meters = [a.meter_id for a in alerts if a.meter_id is not None]
        regions = sorted({a.region for a in alerts if a.meter_id is None})
        loads = await self._rows(
            "SELECT meter_id::text AS k, mean_w FROM {s}.meter_patterns WHERE meter_id = ANY(%(m)s)"
            " UNION ALL SELECT region, sum(mean_w) FROM {s}.meter_patterns"
            " WHERE region = ANY(%(r)s) GROUP BY region",
            {"m": meters, "r": regions},
        )
        load_w = {r["k"]: float(r["mean_w"]) for r in loads}
        ranked = []
        for a in alerts:
            key = str(a.meter_id) if a.meter_id is not None else a.region
            kw = load_w.get(key, 0.0) / 1000
            factors = alert_priority(
                a.severity,
                (now - a.raised_at).total_seconds(),
                kw,
                a.customers_affected,
                a.occurrences,
                a.generation,
            )
            ranked.append(PrioritizedAlert(alert=a, factors=factors, affected_kw=round(kw, 3)))
        ranked.sort(key=lambda p: (-p.factors.score, str(p.alert.id)))
        return ranked[: min(first, MAX_ITEMS)]
