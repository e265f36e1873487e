"""Detectors: read the time-series read models, decide with the rules in ``domain.detection``,
and raise or auto-resolve alerts through the AlertDesk as the system actor.

Each command carries an idempotency key naming the evidence it acts on (the region's newest
window above the threshold, the meter's last reading, the slot judged), so a detector that runs
again — after a crash, in a second worker process, or before the alerts projection caught up —
replays the command instead of recording it twice. A new window above the threshold therefore
adds one occurrence to the open alert, not one per run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext
from commands.meters import MeterRegistry
from config.settings import DatabaseSettings, DetectorSettings
from domain.detection import (
    WINDOW,
    AlertDecision,
    AnomalyRule,
    CommFailureRule,
    OverloadRule,
    Verdict,
    anomaly_key,
    bucket_start,
    decide_meter_event,
    detect_anomaly,
    detect_comm_failure,
    detect_overload,
    meter_event_of_code,
    overload_key,
)
from domain.errors import DomainError
from domain.meter import Meter
from domain.obis import POWER_IMPORT
from projections.aggregate_levels import M15, windows_sql
from projections.alerts_queries import AlertQueries

log = logging.getLogger(__name__)

MAX_PER_RUN = 1000
"""Meters a detector handles per run; the rest wait for the next run (bounded work)."""
LATE = timedelta(minutes=5)
"""A slot is judged this long after it ends, so late readings are in."""
MAX_SLOTS_PER_RUN = 8

_OVERLOAD_ROWS = """
SELECT region, bucket, load_pct FROM {schema}.regional_load_15m
WHERE bucket >= %s AND bucket <= %s
"""

_SILENT = """
SELECT s.meter_id, s.region, s.last_received_at FROM {schema}.meter_status s
JOIN {schema}.meters m ON m.id = s.meter_id AND m.status <> 'DECOMMISSIONED'
WHERE s.last_received_at < %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM {schema}.alerts a
                  WHERE a.dedup_key = 'COMM_FAILURE:' || s.meter_id AND a.status <> 'RESOLVED')
ORDER BY s.last_received_at LIMIT %(limit)s
"""

_BACK = """
SELECT a.meter_id, a.region, s.last_received_at FROM {schema}.alerts a
JOIN {schema}.meter_status s ON s.meter_id = a.meter_id
WHERE a.alert_type = 'COMM_FAILURE' AND a.status <> 'RESOLVED'
  AND s.last_received_at >= %(cutoff)s
LIMIT %(limit)s
"""

# The slot's and the same slot's in past weeks 15-minute power windows (stored or derived).
_SLOT = """
WITH w AS ({windows})
SELECT c.meter_id, c.region, c.sum / c.count AS value,
       coalesce(array_agg(h.bucket) FILTER (WHERE h.bucket IS NOT NULL), '{{}}') AS buckets,
       coalesce(array_agg(h.sum / h.count) FILTER (WHERE h.bucket IS NOT NULL), '{{}}') AS values
FROM w c
LEFT JOIN w h
  ON h.meter_id = c.meter_id AND h.quantity = c.quantity AND h.bucket = ANY(%(past)s)
WHERE c.bucket = %(slot)s AND c.count > 0
GROUP BY c.meter_id, c.region, c.sum, c.count
"""

_POSITION = "SELECT position FROM {schema}.detector_positions WHERE detector = %s"
_MOVE = """
INSERT INTO {schema}.detector_positions AS d (detector, position) VALUES (%s, %s)
ON CONFLICT (detector) DO UPDATE SET position = greatest(d.position, EXCLUDED.position)
"""
_LOGGED = get_topic(Meter.MeterEventLogged)

_CHECKPOINT = "SELECT checkpoint FROM {schema}.detector_state WHERE detector = %s"
_ADVANCE = """
INSERT INTO {schema}.detector_state AS d (detector, checkpoint) VALUES (%s, %s)
ON CONFLICT (detector) DO UPDATE SET checkpoint = greatest(d.checkpoint, EXCLUDED.checkpoint)
"""


class DetectorReport(msgspec.Struct, kw_only=True):
    """What one run of the detectors did."""

    raised: list[str] = msgspec.field(default_factory=list)
    """Dedup keys of alerts opened or given a new occurrence."""
    cleared: list[str] = msgspec.field(default_factory=list)
    """Dedup keys of alerts auto-resolved because their cause went away."""


class Detectors:
    """Overload, communication failure, anomaly and meter-event detectors."""

    def __init__(
        self,
        database: DatabaseSettings,
        detectors: DetectorSettings,
        pool: AsyncConnectionPool[Any],
        alerts: AlertDesk | Callable[[], AlertDesk],
        registry: Callable[[], MeterRegistry],
    ) -> None:
        self.database = database
        self.pool = pool
        # Factories are called on first use (in a thread); the detectors close what they built.
        self._alerts = alerts if isinstance(alerts, AlertDesk) else None
        self._build_alerts = None if isinstance(alerts, AlertDesk) else alerts
        self._owns_alerts = self._alerts is None
        self._registry: MeterRegistry | None = None
        self._build_registry = registry
        self.queries = AlertQueries(pool, database.schema)
        self.overload_rule = OverloadRule(
            threshold_pct=detectors.overload_threshold_pct,
            windows_required=detectors.overload_windows,
        )
        interval = timedelta(seconds=detectors.comm_interval_seconds)
        self.comm_rule = CommFailureRule(
            interval=interval, missed_intervals=detectors.comm_missed_intervals
        )
        self.anomaly_rule = AnomalyRule(
            spike=detectors.anomaly_spike_pct / 100,
            drop=detectors.anomaly_drop_pct / 100,
        )
        self._schema = sql.Identifier(database.schema)

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=self._schema)

    async def desk(self) -> AlertDesk:
        """The alerts application: the one given, or built by the given factory on first use."""
        if self._alerts is None:
            assert self._build_alerts is not None
            self._alerts = await asyncio.to_thread(self._build_alerts)
        return self._alerts

    async def close(self) -> None:
        """Close the alerts application if this detector built it."""
        if self._owns_alerts and self._alerts is not None:
            desk, self._alerts = self._alerts, None
            await asyncio.to_thread(desk.close)
        if self._registry is not None:
            registry, self._registry = self._registry, None
            await asyncio.to_thread(registry.close)

    async def registry(self) -> MeterRegistry:
        """The meters application (its event log feeds the meter-event detector)."""
        if self._registry is None:
            self._registry = await asyncio.to_thread(self._build_registry)
        return self._registry

    async def run_once(self, now: datetime) -> DetectorReport:
        """Run every detector once at ``now``."""
        report = DetectorReport()
        for detector in (self.overload, self.comm_failure, self.anomaly, self.meter_events):
            try:
                await detector(now, report)
            except Exception:
                log.exception("detector %s failed; it runs again next time", detector.__name__)
        return report

    # -- overload ----------------------------------------------------------------------

    async def overload(self, now: datetime, report: DetectorReport) -> None:
        """Raise OVERLOAD for regions hot in enough recent windows; clear those cooled down."""
        first, last = self.overload_rule.fetched(now)
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._sql(_OVERLOAD_ROWS), (first, last))
            rows: list[tuple[str, datetime, float]] = await cur.fetchall()
        by_region: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
        for region, bucket, load in rows:
            by_region[region].append((bucket, load))
        open_causes = await self.queries.open_causes("OVERLOAD:")
        for region in sorted(set(by_region) | {k.split(":", 1)[1] for k in open_causes}):
            decision = detect_overload(region, by_region.get(region, []), now, self.overload_rule)
            if decision.verdict is Verdict.RAISE:
                hot = max(
                    b for b, load in by_region[region] if load > self.overload_rule.threshold_pct
                )
                await self._raise(decision, f"overload:{region}:{hot.isoformat()}", report)
            elif decision.verdict is Verdict.CLEAR and overload_key(region) in open_causes:
                await self._clear(decision, f"overload-clear:{region}:{last.isoformat()}", report)

    # -- communication failure -----------------------------------------------------------

    async def comm_failure(self, now: datetime, report: DetectorReport) -> None:
        """Raise COMM_FAILURE for meters silent too long; clear it when they report again.

        Silence is measured from when the head-end last received something from the meter, not
        from its newest reading's timestamp: a meter catching up on old readings (or readings
        arriving through a backlog) is talking, not silent.
        """
        rule = self.comm_rule
        cutoff = now - rule.interval * rule.missed_intervals
        params = {"cutoff": cutoff, "limit": MAX_PER_RUN}
        async with self.pool.connection() as conn:
            silent = await (await conn.execute(self._sql(_SILENT), params)).fetchall()
            back = await (await conn.execute(self._sql(_BACK), params)).fetchall()
        for meter, region, last_seen in silent:
            decision = detect_comm_failure(meter, region, last_seen, now, rule)
            if decision.verdict is Verdict.RAISE:
                await self._raise(decision, f"comm:{meter}:{last_seen.isoformat()}", report)
        for meter, region, last_seen in back:
            decision = detect_comm_failure(meter, region, last_seen, now, rule)
            if decision.verdict is Verdict.CLEAR:
                await self._clear(decision, f"comm-clear:{meter}:{last_seen.isoformat()}", report)

    # -- consumption anomaly -------------------------------------------------------------

    async def anomaly(self, now: datetime, report: DetectorReport) -> None:
        """Judge each finished 15-minute slot's consumption against each meter's baseline."""
        newest = bucket_start(now - LATE, WINDOW) - WINDOW  # the last slot that is complete
        async with self.pool.connection() as conn:
            row = await (await conn.execute(self._sql(_CHECKPOINT), ("anomaly",))).fetchone()
        slot = newest if row is None else row[0] + WINDOW
        slot = max(slot, newest - WINDOW * (MAX_SLOTS_PER_RUN - 1))
        while slot <= newest:
            await self.judge_slot(slot, report)
            async with self.pool.connection() as conn:
                await conn.execute(self._sql(_ADVANCE), ("anomaly", slot))
            slot += WINDOW

    async def judge_slot(self, slot: datetime, report: DetectorReport) -> None:
        """Judge one slot's consumption of every meter that reported in it."""
        rule = self.anomaly_rule
        past = [slot - timedelta(weeks=k) for k in range(1, rule.weeks + 1)]
        params = {
            "slot": slot,
            "past": past,
            "buckets": [slot, *past],
            "quantity": POWER_IMPORT.id,
        }
        query = sql.SQL(_SLOT).format(
            windows=windows_sql(
                self.database.schema, M15, meters="all", quantity=True, buckets="list"
            )
        )
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        open_causes = await self.queries.open_causes("ANOMALY:")
        for meter, region, value, buckets, values in rows:
            history = list(zip(buckets, values, strict=True))
            decision = detect_anomaly(meter, region, slot, value, history, rule)
            if decision.verdict is Verdict.RAISE:
                await self._raise(decision, f"anomaly:{meter}:{slot.isoformat()}", report)
            elif decision.verdict is Verdict.CLEAR and anomaly_key(meter) in open_causes:
                await self._clear(decision, f"anomaly-clear:{meter}:{slot.isoformat()}", report)

    # -- meter event logs ----------------------------------------------------------------

    async def meter_events(self, now: datetime, report: DetectorReport) -> None:
        """Tamper entries raise TAMPER; power down raises OUTAGE and power up clears it."""
        registry = await self.registry()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(self._sql(_POSITION), ("meter_events",))).fetchone()
        position = 0 if row is None else int(row[0])
        notifications = await asyncio.to_thread(
            registry.recorder.select_notifications,
            position,
            MAX_PER_RUN,
            None,
            (_LOGGED,),
            inclusive_of_start=False,
        )
        if not notifications:
            return
        events = [
            cast(Meter.MeterEventLogged, registry.mapper.to_domain_event(n)) for n in notifications
        ]
        regions = await self._regions({e.originator_id for e in events})
        for event in events:
            kind = meter_event_of_code(event.code)
            region = regions.get(event.originator_id)
            if kind is None or region is None:
                continue
            decision = decide_meter_event(event.originator_id, region, kind, event.at, event.code)
            key = f"meter-event:{event.originator_id}:{event.originator_version}"
            if decision.verdict is Verdict.RAISE:
                await self._raise(decision, key, report)
            else:
                await self._clear(decision, key, report)
        async with self.pool.connection() as conn:
            await conn.execute(self._sql(_MOVE), ("meter_events", notifications[-1].id))

    async def _regions(self, meters: set[UUID]) -> dict[UUID, str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self._sql("SELECT id, region FROM {schema}.meters WHERE id = ANY(%s)"),
                (list(meters),),
            )
            return {meter: region for meter, region in await cur.fetchall()}

    # -- commands ------------------------------------------------------------------------

    async def _raise(self, decision: AlertDecision, key: str, report: DetectorReport) -> None:
        desk = await self.desk()
        ctx = CommandContext(actor=SYSTEM, idempotency_key=_key(key))
        try:
            outcome = await asyncio.to_thread(desk.raise_or_recur, decision, ctx)
        except DomainError as exc:
            log.warning("detector could not raise %s: %s", decision.dedup_key, exc)
            return
        if not outcome.replayed:
            report.raised.append(decision.dedup_key)

    async def _clear(self, decision: AlertDecision, key: str, report: DetectorReport) -> None:
        desk = await self.desk()
        ctx = CommandContext(actor=SYSTEM, idempotency_key=_key(key))
        try:
            outcome = await asyncio.to_thread(
                desk.auto_resolve, decision.dedup_key, decision.evidence, ctx, decision.observed_at
            )
        except DomainError as exc:
            log.warning("detector could not clear %s: %s", decision.dedup_key, exc)
            return
        if outcome is not None and not outcome.replayed:
            report.cleared.append(decision.dedup_key)


def _key(text: str) -> str:
    """An idempotency key within the API's alphabet (1..128 of letters, digits, ``._:-``)."""
    cleaned = "".join(c if c.isalnum() or c in "._:-" else "-" for c in text)
    if len(cleaned) <= 128:
        return cleaned
    return cleaned[:80] + ":" + hashlib.sha256(cleaned.encode()).hexdigest()[:40]


idempotency_key = _key
"""An idempotency key naming a detector's (or the insights') evidence, within the API's alphabet."""
