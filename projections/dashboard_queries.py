"""The operations dashboard in one snapshot: meter reachability, reading counts, open alerts and
each region's load against its capacity (every part an index-backed query on the read models).

Snapshots are shared: every caller within ``max_age`` seconds gets the same one, so many open
dashboards cost the database one snapshot per interval, not one each.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import msgspec
from psycopg import AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.alert import Severity
from projections.meters_queries import ONLINE_WINDOW

WINDOW = timedelta(minutes=15)
SNAPSHOT_MAX_AGE_S = 2.0


class MeterCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Meters in service by reachability (online: a reading in the last 15 minutes)."""

    active: int = 0
    online: int = 0
    offline: int = 0
    """Reported once, but not in the last 15 minutes."""
    never_seen: int = 0
    decommissioned: int = 0

    def __add__(self, other: MeterCounts) -> MeterCounts:
        return MeterCounts(
            active=self.active + other.active,
            online=self.online + other.online,
            offline=self.offline + other.offline,
            never_seen=self.never_seen + other.never_seen,
            decommissioned=self.decommissioned + other.decommissioned,
        )


class SeverityCount(msgspec.Struct, frozen=True, kw_only=True):
    """Unresolved alerts of one severity."""

    severity: Severity
    open: int
    acknowledged: int


class RegionLoad(msgspec.Struct, frozen=True, kw_only=True):
    """A region's meters and its newest 15-minute load (none in the last 30 minutes: None)."""

    region: str
    meters: MeterCounts
    capacity_w: float
    bucket: datetime | None = None
    power_w: float | None = None
    load_pct: float | None = None


class DashboardSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the dashboard shows, as of ``at``."""

    at: datetime
    meters: MeterCounts
    window_start: datetime
    """Start of the current 15-minute window."""
    readings_this_window: int
    readings_last_window: int
    """Readings stored with timestamps in the previous (complete) 15-minute window."""
    alerts: list[SeverityCount]
    regions: list[RegionLoad]


def window_start(at: datetime) -> datetime:
    """Start of the 15-minute window holding ``at``."""
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


_METERS = """
SELECT m.region,
       count(*) FILTER (WHERE m.status <> 'DECOMMISSIONED') AS active,
       count(*) FILTER (WHERE m.status <> 'DECOMMISSIONED' AND s.last_seen >= %(since)s)
           AS online,
       count(*) FILTER (WHERE m.status <> 'DECOMMISSIONED' AND s.last_seen < %(since)s)
           AS offline,
       count(*) FILTER (WHERE m.status <> 'DECOMMISSIONED' AND s.meter_id IS NULL)
           AS never_seen,
       count(*) FILTER (WHERE m.status = 'DECOMMISSIONED') AS decommissioned
FROM {s}.meters m LEFT JOIN {s}.meter_status s ON s.meter_id = m.id
GROUP BY m.region ORDER BY m.region
"""
_READINGS = """
SELECT bucket, sum(readings)::bigint AS n FROM {s}.regional_readings_15m
WHERE region = ANY(%(regions)s) AND bucket >= %(previous)s AND bucket <= %(current)s
GROUP BY bucket
"""
_ALERTS = """
SELECT severity, count(*) FILTER (WHERE status = 'OPEN') AS open,
       count(*) FILTER (WHERE status = 'ACKNOWLEDGED') AS acknowledged
FROM {s}.alerts WHERE status <> 'RESOLVED' GROUP BY severity
"""
_LOAD = """
SELECT DISTINCT ON (region) region, bucket, power_w, capacity_w, load_pct
FROM {s}.regional_load_15m WHERE bucket >= %(previous)s AND bucket <= %(current)s
ORDER BY region, bucket DESC
"""
_CAPACITY = "SELECT region, capacity_w FROM {s}.region_capacity"


class DashboardQueries:
    """Builds (and shares for ``max_age`` seconds) dashboard snapshots from ``schema``."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        schema: str,
        default_capacity_w: float,
        max_age: float = SNAPSHOT_MAX_AGE_S,
    ) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.default_capacity_w = default_capacity_w
        self.max_age = max_age
        self._lock = asyncio.Lock()
        self._cached: tuple[float, DashboardSnapshot] | None = None

    async def snapshot(
        self, now: datetime, *, built_after: float | None = None
    ) -> DashboardSnapshot:
        """The shared snapshot if younger than ``max_age`` (and, given ``built_after``, begun
        after that ``time.monotonic()`` instant), else a new one."""
        async with self._lock:
            cached = self._cached
            if (
                cached is not None
                and time.monotonic() - cached[0] < self.max_age
                and (built_after is None or cached[0] >= built_after)
            ):
                return cached[1]
            started = time.monotonic()
            made = await self._build(now)
            self._cached = (started, made)
            return made

    async def _rows(
        self, cur: AsyncCursor[dict[str, Any]], text: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        await cur.execute(sql.SQL(text).format(s=self.schema), params)  # type: ignore[arg-type]
        return await cur.fetchall()

    async def _build(self, now: datetime) -> DashboardSnapshot:
        current = window_start(now)
        params = {"since": now - ONLINE_WINDOW, "current": current, "previous": current - WINDOW}
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            counted = await self._rows(cur, _METERS, params)
            by_region = {r.pop("region"): MeterCounts(**r) for r in counted}
            windows = await self._rows(cur, _READINGS, {**params, "regions": list(by_region)})
            alerts = await self._rows(cur, _ALERTS, params)
            loads = {r["region"]: r for r in await self._rows(cur, _LOAD, params)}
            capacity = {r["region"]: r["capacity_w"] for r in await self._rows(cur, _CAPACITY, {})}
        per_window = {r["bucket"]: int(r["n"]) for r in windows}
        per_severity = {r["severity"]: r for r in alerts}
        return DashboardSnapshot(
            at=now,
            meters=sum(by_region.values(), MeterCounts()),
            window_start=current,
            readings_this_window=per_window.get(current, 0),
            readings_last_window=per_window.get(current - WINDOW, 0),
            alerts=[
                SeverityCount(
                    severity=severity,
                    open=int(per_severity.get(severity.value, {}).get("open", 0)),
                    acknowledged=int(per_severity.get(severity.value, {}).get("acknowledged", 0)),
                )
                for severity in reversed(Severity)
            ],
            regions=[
                _region(name, counts, loads.get(name), capacity, self.default_capacity_w)
                for name, counts in by_region.items()
            ],
        )


def _region(
    name: str,
    counts: MeterCounts,
    load: dict[str, Any] | None,
    capacity: dict[str, float],
    default_capacity_w: float,
) -> RegionLoad:
    if load is None:
        return RegionLoad(
            region=name, meters=counts, capacity_w=capacity.get(name, default_capacity_w)
        )
    return RegionLoad(
        region=name,
        meters=counts,
        capacity_w=float(load["capacity_w"]),
        bucket=load["bucket"],
        power_w=float(load["power_w"]),
        load_pct=float(load["load_pct"]),
    )
