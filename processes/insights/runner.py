"""The insights process: read the last weeks of 15-minute load from the aggregates, run the
analysis, store its results in the insight read models, and raise alerts through the AlertDesk.

One run at a time across every process (a PostgreSQL advisory lock); a run that dies leaves the
previous run's results in place (everything is written in one transaction), and the alerts it
raises carry idempotency keys naming the evidence (meter and day, region and hour), so running
again replays them instead of adding occurrences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import numpy as np
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext
from config.settings import DatabaseSettings, InsightSettings
from domain.detection import AlertDecision, Verdict
from domain.errors import DomainError
from domain.insight_rules import (
    CATEGORY_OF,
    InsightKind,
    decide_day_anomaly,
    decide_forecast_overload,
)
from domain.obis import BY_ALIAS, POWER_IMPORT
from processes.detectors import idempotency_key
from processes.insights.analysis import (
    SLOT,
    SLOTS_PER_DAY,
    Assessment,
    MeterEvidence,
    Patterns,
    SuspicionKind,
    assess,
    day_features,
    patterns,
    reason_text,
)
from processes.insights.forecast import Forecast, forecast_meters, forecast_regions
from projections.aggregate_levels import M15, windows_sql

log = logging.getLogger(__name__)

LOCK_KEY = 0x4E5_0017
"""Advisory lock (with the schema's hash) held while a run analyses and writes: one run per
schema at a time across processes."""
LATE = timedelta(minutes=5)
"""A slot is used this long after it ends, so late readings are in."""
TAMPER_CODES = (40, 42, 44, 47)
POWER_DOWN_CODE = 1
BASE_LOAD_SHARE = 0.6
"""A base load above this share of the mean load is an efficiency insight."""

_METERS = """
SELECT id, region, area FROM {schema}.meters WHERE status <> 'DECOMMISSIONED' ORDER BY id
"""
# Row and column of each window in the matrix are computed by the server, so the client turns
# whole batches into arrays at once.
_WINDOWS = """
SELECT m.idx - 1, (extract(epoch FROM w.bucket - %(start)s) / 900)::integer, w.sum / w.count
FROM ({windows}) w
JOIN unnest(%(ids)s::uuid[]) WITH ORDINALITY AS m(id, idx) ON m.id = w.meter_id
WHERE w.count > 0
"""
_EVENTS = """
SELECT meter_id,
       count(*) FILTER (WHERE code = ANY(%(tamper)s)),
       count(*) FILTER (WHERE code = %(down)s)
FROM {schema}.meter_log_events WHERE at >= %(start)s GROUP BY meter_id
"""
_RELAY = "SELECT meter_id FROM {schema}.dlms_meter_state WHERE relay_connected IS FALSE"
_PHASES = """
SELECT meter_id, quantity, sum(sum) / sum(count) FROM {schema}.readings_30m
WHERE quantity = ANY(%(quantities)s) AND bucket >= %(since)s AND bucket < %(end)s
GROUP BY meter_id, quantity
"""
_EXPORT = """
SELECT meter_id, max(max) FILTER (WHERE bucket >= %(recent)s),
       coalesce(max(max) FILTER (WHERE bucket < %(early)s), 0)
FROM {schema}.readings_30m
WHERE quantity = %(quantity)s AND bucket >= %(start)s AND bucket < %(end)s GROUP BY meter_id
"""
_CAPACITY = "SELECT region, capacity_w FROM {schema}.region_capacity"


class RunReport(msgspec.Struct, kw_only=True):
    """What one analysis did."""

    run_id: int | None
    """``None``: another run held the lock, nothing was done."""
    meters: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    seconds: float = 0.0
    """Reading the window and analysing it (what ``insight_runs.seconds`` records)."""
    load_seconds: float = 0.0
    analysis_seconds: float = 0.0
    store_seconds: float = 0.0
    suspicions: int = 0
    insights: int = 0
    alerts_raised: list[str] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Window:
    """The fleet's load matrix and facts for one analysis."""

    meters: list[UUID]
    regions: list[str]
    areas: np.ndarray[Any, Any]
    region_codes: np.ndarray[Any, Any]
    power: np.ndarray[Any, Any]
    """(meters, days·96 + slots of today) mean power W, NaN where missing."""
    start: datetime
    days: int
    evidence: MeterEvidence


@dataclass(frozen=True, slots=True)
class Results:
    """The analysis' output for one window."""

    patterns: Patterns
    assessment: Assessment
    meter_forecast: Forecast
    region_names: list[str]
    region_forecast: Forecast
    region_models: list[str]
    forecast_start: datetime


def analyse(window: Window) -> Results:
    """Run every analysis on a window (CPU only: called in a thread)."""
    whole = window.power[:, : window.days * SLOTS_PER_DAY]
    pattern = patterns(whole, window.start)
    assessment = assess(
        day_features(whole),
        window.areas,
        window.evidence,
        window.start,
        regions=window.region_codes,
    )
    meter_forecast = forecast_meters(window.power)
    names = sorted(set(window.regions))
    index = {name: i for i, name in enumerate(names)}
    rows = np.array([index[r] for r in window.regions])
    totals = np.zeros((len(names), window.power.shape[1]))
    np.add.at(totals, rows, np.nan_to_num(window.power, nan=0.0))
    region_forecast, models = forecast_regions(totals)
    return Results(
        patterns=pattern,
        assessment=assessment,
        meter_forecast=meter_forecast,
        region_names=names,
        region_forecast=region_forecast,
        region_models=models,
        forecast_start=window.start + SLOT * window.power.shape[1],
    )


class InsightsProcess:
    """Runs the analysis on the read models and publishes its results and alerts."""

    def __init__(
        self,
        database: DatabaseSettings,
        settings: InsightSettings,
        pool: AsyncConnectionPool[Any],
        alerts: AlertDesk | Callable[[], AlertDesk],
    ) -> None:
        self.database = database
        self.settings = settings
        self.pool = pool
        self._alerts = alerts if isinstance(alerts, AlertDesk) else None
        self._build_alerts = None if isinstance(alerts, AlertDesk) else alerts
        self._schema = sql.Identifier(database.schema)

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=self._schema)

    async def desk(self) -> AlertDesk:
        """The alerts application (built on first use when a factory was given)."""
        if self._alerts is None:
            assert self._build_alerts is not None
            self._alerts = await asyncio.to_thread(self._build_alerts)
        return self._alerts

    async def close(self) -> None:
        """Close the alerts application if this process built it."""
        if self._build_alerts is not None and self._alerts is not None:
            desk, self._alerts = self._alerts, None
            await asyncio.to_thread(desk.close)

    async def run_forever(
        self, stop: asyncio.Event, on_run: Callable[[RunReport], None] | None = None
    ) -> None:
        """Run every ``interval_seconds`` until ``stop`` is set (a failed run raises)."""
        while not stop.is_set():
            report = await self.run_once(datetime.now(UTC))
            if on_run is not None:
                on_run(report)
            if report.run_id is not None:
                log.info(
                    "insights run %d: %d meters in %.1f s, %d suspicions, %d alerts",
                    report.run_id,
                    report.meters,
                    report.seconds,
                    report.suspicions,
                    len(report.alerts_raised),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_seconds)

    async def run_once(
        self, now: datetime, trigger: str = "schedule", actor: str = SYSTEM.subject
    ) -> RunReport:
        """Analyse the window ending at ``now`` and store the results (skipped if one runs).

        The pool's connections are in autocommit mode: the session-level advisory lock is held
        by ``lock_conn`` for the whole run, outside any transaction.
        """
        async with self.pool.connection() as lock_conn:
            key = (LOCK_KEY, self.database.schema)
            cur = await lock_conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key)
            row = await cur.fetchone()
            if not row or not row[0]:
                return RunReport(run_id=None)
            try:
                return await self._run(now, trigger, actor)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)

    async def _run(self, now: datetime, trigger: str, actor: str) -> RunReport:
        began = time.perf_counter()
        window = await self.load(now)
        if window is None:
            return RunReport(run_id=None)
        loaded = time.perf_counter()
        results = await asyncio.to_thread(analyse, window)
        capacity = await self._capacity()
        insights = build_insights(window, results, capacity, self.settings)
        analysed = time.perf_counter()
        report = RunReport(
            run_id=None,
            meters=len(window.meters),
            window_start=window.start,
            window_end=window.start + timedelta(days=window.days),
            seconds=round(analysed - began, 3),
            load_seconds=round(loaded - began, 3),
            analysis_seconds=round(analysed - loaded, 3),
            suspicions=len(results.assessment.suspicions),
            insights=len(insights),
        )
        report.run_id = await self.store(window, results, insights, report, trigger, actor, now)
        report.store_seconds = round(time.perf_counter() - analysed, 3)
        await self.alert(window, results, capacity, report, now)
        return report

    async def load(self, now: datetime) -> Window | None:
        """Read the window's load matrix and evidence (``None``: no meter has data)."""
        days = self.settings.window_days
        today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
        end = now - LATE
        end -= (end - today) % SLOT
        async with self.pool.connection() as conn:
            meters = await (await conn.execute(self._sql(_METERS))).fetchall()
            if not meters:
                return None
            index = {m[0]: i for i, m in enumerate(meters)}
            slots = days * SLOTS_PER_DAY + int((end - today) / SLOT)
            power = np.full((len(meters), slots), np.nan, np.float32)
            query = sql.SQL(_WINDOWS).format(
                windows=windows_sql(self.database.schema, M15, meters="all", quantity=True)
            )
            params = {
                "start": start,
                "end": end,
                "quantity": POWER_IMPORT.id,
                "ids": [m[0] for m in meters],
            }
            # Fresh partitions have no statistics yet: the planner then expects a few rows and
            # joins the ids by nested loop, a scan of every id per window (minutes, not seconds).
            # A server-side cursor streams the window instead of holding it all in the client.
            async with conn.transaction(), conn.cursor(name="insight_window") as cur:
                await conn.execute("SET LOCAL enable_nestloop = off")
                await cur.execute(query, params)
                while batch := await cur.fetchmany(100_000):
                    table = np.array(batch, np.float64)
                    rows, cols = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
                    keep = (cols >= 0) & (cols < slots)
                    power[rows[keep], cols[keep]] = table[keep, 2]
            evidence = await self._evidence(conn, index, start, today)
        has_data = ~np.all(np.isnan(power[:, : days * SLOTS_PER_DAY]), axis=1)
        if not has_data.any():
            return None
        keep_rows = np.flatnonzero(has_data)
        areas_by_name: dict[str, int] = {}
        areas = np.array(
            [areas_by_name.setdefault(f"{m[1]}/{m[2]}", len(areas_by_name)) for m in meters]
        )
        codes: dict[str, int] = {}
        region_codes = np.array([codes.setdefault(m[1], len(codes)) for m in meters])
        return Window(
            meters=[meters[i][0] for i in keep_rows],
            region_codes=region_codes[keep_rows],
            regions=[meters[i][1] for i in keep_rows],
            areas=areas[keep_rows],
            power=power[keep_rows],
            start=start,
            days=days,
            evidence=MeterEvidence(
                tamper_events=evidence.tamper_events[keep_rows],
                reverse_energy=evidence.reverse_energy[keep_rows],
                power_failures=evidence.power_failures[keep_rows],
                relay_connected=evidence.relay_connected[keep_rows],
                phase_imbalance=evidence.phase_imbalance[keep_rows],
            ),
        )

    async def _evidence(
        self, conn: AsyncConnection[Any], index: dict[UUID, int], start: datetime, end: datetime
    ) -> MeterEvidence:
        """Tamper and power-failure events, relay state, reverse flow and phase balance."""
        found = MeterEvidence.none(len(index))
        params = {"tamper": list(TAMPER_CODES), "down": POWER_DOWN_CODE, "start": start}
        for meter, tamper, down in await (
            await conn.execute(self._sql(_EVENTS), params)
        ).fetchall():
            if meter in index:
                found.tamper_events[index[meter]] = tamper
                found.power_failures[index[meter]] = down
        for (meter,) in await (await conn.execute(self._sql(_RELAY))).fetchall():
            if meter in index:
                found.relay_connected[index[meter]] = False
        phases = [BY_ALIAS[f"current_l{n}"].id for n in (1, 2, 3)]
        currents: dict[UUID, list[float]] = {}
        params_p = {"quantities": phases, "since": end - timedelta(days=7), "end": end}
        for meter, _, mean in await (await conn.execute(self._sql(_PHASES), params_p)).fetchall():
            currents.setdefault(meter, []).append(float(mean))
        for meter, values in currents.items():
            if meter in index and len(values) == 3 and max(values) > 0.5:
                found.phase_imbalance[index[meter]] = (max(values) - min(values)) / max(values)
        params_e = {
            "quantity": BY_ALIAS["power_export"].id,
            "start": start,
            "end": end,
            "recent": end - timedelta(days=7),
            "early": start + timedelta(days=7),
        }
        for meter, recent, early in await (
            await conn.execute(self._sql(_EXPORT), params_e)
        ).fetchall():
            if meter in index and recent is not None and recent > 10 and early <= 0:
                found.reverse_energy[index[meter]] = True
        return found

    async def _capacity(self) -> dict[str, float]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(self._sql(_CAPACITY))).fetchall()
        return {region: float(capacity) for region, capacity in rows}

    async def store(
        self,
        window: Window,
        results: Results,
        insights: list[InsightItem],
        report: RunReport,
        trigger: str,
        actor: str,
        now: datetime,
    ) -> int:
        """Write the run's results in one transaction; return the run's id."""
        p, a, f = results.patterns, results.assessment, results.meter_forecast
        as_of = window.start + timedelta(days=window.days)
        last_day = window.days - 1
        day = (window.start + timedelta(days=last_day)).date()
        summary = {
            "suspicions": report.suspicions,
            "insights": report.insights,
            "regionModels": dict(zip(results.region_names, results.region_models, strict=True)),
        }
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    "INSERT INTO {schema}.insight_runs (trigger, actor, window_start, window_end,"
                    " meters, seconds, summary) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
                ),
                (
                    trigger,
                    actor,
                    window.start,
                    as_of,
                    len(window.meters),
                    report.seconds,
                    Jsonb(summary),
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            run_id = int(row[0])

            def floats(values: Any) -> list[float]:
                return [round(float(v), 3) for v in np.nan_to_num(values, nan=0.0)]

            await _upsert(
                conn,
                self.database.schema,
                "meter_patterns",
                ("meter_id",),
                (
                    "meter_id",
                    "region",
                    "as_of",
                    "days",
                    "mean_w",
                    "base_w",
                    "peak_w",
                    "trend_pct_week",
                    "daily_profile_w",
                    "weekly_kwh",
                ),
                (
                    (
                        m,
                        window.regions[i],
                        as_of,
                        window.days,
                        *floats([p.mean_w[i], p.base_w[i], p.peak_w[i], p.trend_pct_week[i]]),
                        floats(p.daily_profile[i]),
                        floats(p.weekly_kwh[i]),
                    )
                    for i, m in enumerate(window.meters)
                ),
            )
            await _upsert(
                conn,
                self.database.schema,
                "meter_forecasts",
                ("meter_id",),
                ("meter_id", "region", "made_at", "start", "mean_w", "lower_w", "upper_w"),
                (
                    (
                        m,
                        window.regions[i],
                        now,
                        results.forecast_start,
                        floats(f.mean[i]),
                        floats(f.lower[i]),
                        floats(f.upper[i]),
                    )
                    for i, m in enumerate(window.meters)
                ),
            )
            rf = results.region_forecast
            await _upsert(
                conn,
                self.database.schema,
                "region_forecasts",
                ("region",),
                ("region", "made_at", "start", "model", "mean_w", "lower_w", "upper_w"),
                (
                    (
                        r,
                        now,
                        results.forecast_start,
                        results.region_models[i],
                        floats(rf.mean[i]),
                        floats(rf.lower[i]),
                        floats(rf.upper[i]),
                    )
                    for i, r in enumerate(results.region_names)
                ),
            )
            await _upsert(
                conn,
                self.database.schema,
                "anomaly_scores",
                ("meter_id", "day"),
                ("meter_id", "day", "region", "score", "reason"),
                (
                    (
                        m,
                        day,
                        window.regions[i],
                        float(a.scores[i, last_day]),
                        reason_text(
                            int(a.reasons[i, last_day]),
                            float(a.ratios[i, last_day]),
                            float(a.area_factor[i, last_day]),
                        ),
                    )
                    for i, m in enumerate(window.meters)
                ),
            )
            await _upsert(
                conn,
                self.database.schema,
                "insights",
                ("id",),
                (
                    "id",
                    "category",
                    "kind",
                    "region",
                    "meter_id",
                    "title",
                    "evidence",
                    "confidence",
                    "since",
                    "first_seen",
                    "last_seen",
                    "active",
                    "run_id",
                ),
                (
                    (
                        item.id,
                        CATEGORY_OF[item.kind].value,
                        item.kind.value,
                        item.region,
                        item.meter,
                        item.title,
                        item.evidence,
                        item.confidence,
                        item.since,
                        now,
                        now,
                        True,
                        run_id,
                    )
                    for item in insights
                ),
                keep=("first_seen",),
            )
            await conn.execute(
                self._sql(
                    "UPDATE {schema}.insights SET active = false WHERE active AND run_id <> %s"
                ),
                (run_id,),
            )
        return run_id

    async def alert(
        self,
        window: Window,
        results: Results,
        capacity: dict[str, float],
        report: RunReport,
        now: datetime,
    ) -> None:
        """Raise anomaly alerts for the last day and forecast-overload early warnings."""
        a = results.assessment
        last = window.days - 1
        day = window.start + timedelta(days=last)
        threshold = self.settings.anomaly_alert_score
        for i in np.flatnonzero(a.scores[:, last] >= threshold).tolist():
            reason = reason_text(
                int(a.reasons[i, last]), float(a.ratios[i, last]), float(a.area_factor[i, last])
            )
            decision = decide_day_anomaly(
                window.meters[i],
                window.regions[i],
                day,
                float(a.scores[i, last]),
                reason,
                threshold,
            )
            key = f"insight-anomaly:{window.meters[i]}:{day.date().isoformat()}"
            await self._command(decision, key, report)
        warn = self.settings.early_warning_pct
        if not warn:  # 0: no early warnings
            return
        rf = results.region_forecast
        for r, region in enumerate(results.region_names):
            if region not in capacity:
                continue
            peak = int(np.argmax(rf.mean[r]))
            peak_at = results.forecast_start + SLOT * peak
            decision = decide_forecast_overload(
                region, float(rf.mean[r, peak]), peak_at, capacity[region], warn, now
            )
            hour = peak_at.replace(minute=0).isoformat()
            verb = "raise" if decision.verdict is Verdict.RAISE else "clear"
            await self._command(decision, f"forecast-overload-{verb}:{region}:{hour}", report)

    async def _command(self, decision: AlertDecision, key: str, report: RunReport) -> None:
        desk = await self.desk()
        ctx = CommandContext(actor=SYSTEM, idempotency_key=idempotency_key(key))
        try:
            if decision.verdict is Verdict.RAISE:
                outcome = await asyncio.to_thread(desk.raise_or_recur, decision, ctx)
                if not outcome.replayed:
                    report.alerts_raised.append(decision.dedup_key)
            elif decision.verdict is Verdict.CLEAR:
                await asyncio.to_thread(
                    desk.auto_resolve,
                    decision.dedup_key,
                    decision.evidence,
                    ctx,
                    decision.observed_at,
                )
        except DomainError as exc:
            log.warning("insights could not act on %s: %s", decision.dedup_key, exc)


@dataclass(frozen=True, slots=True)
class InsightItem:
    """One explained, actionable finding of a run."""

    id: str
    kind: InsightKind
    region: str
    meter: UUID | None
    title: str
    evidence: list[str]
    confidence: float
    since: datetime | None


_KIND_OF = {
    SuspicionKind.THEFT: InsightKind.THEFT,
    SuspicionKind.STUCK_METER: InsightKind.STUCK_METER,
    SuspicionKind.FAILING_PHASE: InsightKind.FAILING_PHASE,
}
_TITLES = {
    InsightKind.THEFT: "suspected energy theft",
    InsightKind.STUCK_METER: "meter reading stuck",
    InsightKind.FAILING_PHASE: "failing phase",
}


def build_insights(
    window: Window,
    results: Results,
    capacity: dict[str, float],
    settings: InsightSettings,
) -> list[InsightItem]:
    """The feed items of a run: suspicions, efficiency, security and capacity findings."""
    items: list[InsightItem] = []
    suspected: set[int] = set()
    for s in results.assessment.suspicions:
        kind = _KIND_OF[s.kind]
        meter = window.meters[s.meter]
        suspected.add(s.meter)
        items.append(
            InsightItem(
                id=f"{kind.value}:{meter}",
                kind=kind,
                region=window.regions[s.meter],
                meter=meter,
                title=f"{_TITLES[kind]} at meter {meter}",
                evidence=s.evidence,
                confidence=round(100 * s.confidence, 1),
                since=window.start + timedelta(days=s.since_day),
            )
        )
    p = results.patterns
    # A factory's weekly habit (weekend energy 0.5-0.8 of a weekday's) runs round the clock by
    # design: its high base load is not news.
    weekday_kwh = np.nanmean(p.weekly_kwh[:, :5], axis=1)
    habit = np.nanmean(p.weekly_kwh[:, 5:], axis=1) / np.where(weekday_kwh > 0, weekday_kwh, np.nan)
    factory = (habit >= 0.5) & (habit < 0.8)
    high_base = (p.mean_w > 0) & (p.base_w >= BASE_LOAD_SHARE * p.mean_w) & ~factory
    for i in np.flatnonzero(high_base).tolist():
        share = float(p.base_w[i] / p.mean_w[i])
        items.append(
            InsightItem(
                id=f"{InsightKind.HIGH_BASE_LOAD.value}:{window.meters[i]}",
                kind=InsightKind.HIGH_BASE_LOAD,
                region=window.regions[i],
                meter=window.meters[i],
                title=f"high base load at meter {window.meters[i]}",
                evidence=[
                    f"base load {p.base_w[i] / 1000:.2f} kW is {100 * share:.0f} % of the mean "
                    f"load {p.mean_w[i] / 1000:.2f} kW: equipment that never switches off"
                ],
                confidence=round(100 * min(1.0, share), 1),
                since=None,
            )
        )
    tamper = window.evidence.tamper_events
    for i in np.flatnonzero(tamper > 0).tolist():
        if i in suspected:
            continue
        items.append(
            InsightItem(
                id=f"{InsightKind.TAMPER_EVENTS.value}:{window.meters[i]}",
                kind=InsightKind.TAMPER_EVENTS,
                region=window.regions[i],
                meter=window.meters[i],
                title=f"tamper events at meter {window.meters[i]}",
                evidence=[
                    f"{int(tamper[i])} tamper or cover-open event(s) in the last "
                    f"{window.days} days without a change in consumption: check the seal"
                ],
                confidence=50.0,
                since=None,
            )
        )
    rf = results.region_forecast
    warn = settings.early_warning_pct or 95.0
    for r, region in enumerate(results.region_names):
        cap = capacity.get(region)
        if not cap:
            continue
        peak = int(np.argmax(rf.mean[r]))
        pct = 100 * float(rf.mean[r, peak]) / cap
        upper_pct = 100 * float(rf.upper[r, peak]) / cap
        if upper_pct < warn:
            continue
        at = results.forecast_start + SLOT * peak
        items.append(
            InsightItem(
                id=f"{InsightKind.FORECAST_OVERLOAD.value}:{region}",
                kind=InsightKind.FORECAST_OVERLOAD,
                region=region,
                meter=None,
                title=f"region {region} may exceed {warn:g} % of capacity",
                evidence=[
                    f"forecast peak {pct:.0f} % of capacity at {at.isoformat()} "
                    f"(upper bound {upper_pct:.0f} %, model {results.region_models[r]})"
                ],
                confidence=round(min(100.0, max(0.0, 50 + (pct - warn) * 5)), 1),
                since=at,
            )
        )
    return items


async def _upsert(
    conn: AsyncConnection[Any],
    schema: str,
    table: str,
    key: Sequence[str],
    columns: Sequence[str],
    rows: Any,
    keep: Sequence[str] = (),
) -> None:
    """COPY ``rows`` into a temporary table and upsert them into ``table`` by ``key``."""
    target = sql.Identifier(schema, table)
    stage = sql.Identifier(f"stage_{table}")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    await conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target)
    )
    async with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as copy:
        for row in rows:
            await copy.write_row(row)
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in columns
        if c not in key and c not in keep
    )
    await conn.execute(
        sql.SQL(
            "INSERT INTO {t} ({n}) SELECT {n} FROM {s} ON CONFLICT ({k}) DO UPDATE SET {u}"
        ).format(
            t=target, n=names, s=stage, k=sql.SQL(", ").join(map(sql.Identifier, key)), u=updates
        )
    )
    await conn.execute(sql.SQL("DROP TABLE {}").format(stage))
