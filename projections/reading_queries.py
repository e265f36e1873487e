"""Read-side queries over the time-series read models (each one an index range scan)."""

from __future__ import annotations

import base64
import enum
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from projections.aggregate_levels import M1, M15, M30, windows_sql

MAX_READINGS_PAGE = 5000
MAX_AGGREGATE_ROWS = 10_000
REPORTING_WINDOW = timedelta(minutes=15)


class Interval(enum.StrEnum):
    """Aggregation window of the per-meter aggregates."""

    M1 = "M1"
    M15 = "M15"
    M30 = "M30"


_LEVELS = {Interval.M1: M1, Interval.M15: M15, Interval.M30: M30}


class ReadingRow(msgspec.Struct, frozen=True, kw_only=True):
    """One stored reading."""

    meter_id: UUID
    quantity: int
    ts: datetime
    value: float
    quality: int
    source: int
    received_at: datetime


class ReadingPage(msgspec.Struct, frozen=True, kw_only=True):
    """Readings in time order and the cursor to continue after the last one."""

    items: list[ReadingRow]
    has_next_page: bool
    end_cursor: str | None


class AggregateRow(msgspec.Struct, frozen=True, kw_only=True):
    """One window of one quantity of one meter."""

    meter_id: UUID
    quantity: int
    bucket: datetime
    count: int
    sum: float
    min: float
    max: float
    first_ts: datetime
    first_value: float
    last_ts: datetime
    last_value: float

    @property
    def avg(self) -> float:
        """Mean value in the window."""
        return self.sum / self.count if self.count else 0.0

    @property
    def delta(self) -> float:
        """Change of a cumulative register across the window's readings."""
        return self.last_value - self.first_value


class RegionalLoadRow(msgspec.Struct, frozen=True, kw_only=True):
    """A region's load in one 15-minute window."""

    region: str
    bucket: datetime
    meters: int
    power_w: float
    capacity_w: float
    load_pct: float
    updated_at: datetime


class RegionFleet(msgspec.Struct, frozen=True, kw_only=True):
    """Fleet counters of one region."""

    region: str
    meters_registered: int
    meters_reporting: int
    """Meters with a reading in the last 15 minutes."""
    readings_per_minute: int
    """Average readings per minute over the last complete 15-minute window."""
    completeness_pct: float
    """Reporting meters as a share of the region's active meters."""


class InvalidReadingCursor(ValueError):
    """The ``after`` cursor was not produced by the readings query."""


def encode_ts_cursor(ts: datetime) -> str:
    """Opaque cursor for the position after ``ts``."""
    return base64.urlsafe_b64encode(b"r:" + ts.isoformat().encode()).decode()


def decode_ts_cursor(cursor: str) -> datetime:
    """Timestamp behind a readings cursor; raises ``InvalidReadingCursor`` if not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
        if not raw.startswith(b"r:"):
            raise ValueError(cursor)
        return datetime.fromisoformat(raw[2:].decode())
    except (ValueError, UnicodeError):
        raise InvalidReadingCursor("after: not a cursor returned by readings") from None


class ReadingQueries:
    """Queries the time-series read models in ``schema`` through an async pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema_name = schema
        self.schema = sql.Identifier(schema)

    async def readings(
        self,
        meter_id: UUID,
        quantity: int,
        start: datetime,
        end: datetime,
        first: int,
        after: str | None = None,
    ) -> ReadingPage:
        """Readings of one quantity of one meter in ``[start, end)``, oldest first."""
        first = max(1, min(first, MAX_READINGS_PAGE))
        if after is not None:
            start = max(start, decode_ts_cursor(after) + timedelta(microseconds=1))
        query = sql.SQL(
            "SELECT meter_id, quantity, ts, value, quality, source, received_at "
            "FROM {}.readings WHERE meter_id = %s AND quantity = %s AND ts >= %s AND ts < %s "
            "ORDER BY ts LIMIT %s"
        ).format(self.schema)
        rows = await self._rows(query, (meter_id, quantity, start, end, first + 1))
        items = [msgspec.convert(r, ReadingRow) for r in rows[:first]]
        return ReadingPage(
            items=items,
            has_next_page=len(rows) > first,
            end_cursor=encode_ts_cursor(items[-1].ts) if items else None,
        )

    async def latest(
        self, meter_id: UUID, quantities: list[int], start: datetime, end: datetime
    ) -> list[ReadingRow]:
        """The newest reading of each quantity of one meter with ``start <= ts <= end``."""
        query = sql.SQL(
            "SELECT r.meter_id, r.quantity, r.ts, r.value, r.quality, r.source, r.received_at "
            "FROM unnest(%s::smallint[]) AS q(id) CROSS JOIN LATERAL ("
            "SELECT * FROM {}.readings WHERE meter_id = %s AND quantity = q.id "
            "AND ts >= %s AND ts <= %s ORDER BY ts DESC LIMIT 1) r ORDER BY r.quantity"
        ).format(self.schema)
        rows = await self._rows(query, (quantities, meter_id, start, end))
        return [msgspec.convert(r, ReadingRow) for r in rows]

    async def aggregates(
        self,
        meter_id: UUID,
        interval: Interval,
        start: datetime,
        end: datetime,
        quantity: int | None = None,
    ) -> list[AggregateRow]:
        """Windows of one meter (one quantity or all) with buckets in ``[start, end)``."""
        windows = windows_sql(
            self.schema_name, _LEVELS[interval], meters="one", quantity=quantity is not None
        )
        query = sql.SQL(
            "SELECT meter_id, quantity, bucket, count, sum, min, max, first_ts, first_value, "
            "last_ts, last_value FROM ({}) w ORDER BY quantity, bucket LIMIT %(limit)s"
        ).format(windows)
        params = {
            "meter": meter_id,
            "quantity": quantity,
            "start": start,
            "end": end,
            "limit": MAX_AGGREGATE_ROWS,
        }
        return [msgspec.convert(r, AggregateRow) for r in await self._rows(query, params)]

    async def regional_load(
        self, region: str, start: datetime, end: datetime
    ) -> list[RegionalLoadRow]:
        """A region's 15-minute load windows in ``[start, end)``."""
        query = sql.SQL(
            "SELECT region, bucket, meters, power_w, capacity_w, load_pct, updated_at "
            "FROM {}.regional_load_15m WHERE region = %s AND bucket >= %s AND bucket < %s "
            "ORDER BY bucket LIMIT %s"
        ).format(self.schema)
        rows = await self._rows(query, (region, start, end, MAX_AGGREGATE_ROWS))
        return [msgspec.convert(r, RegionalLoadRow) for r in rows]

    async def fleet(self, now: datetime) -> list[RegionFleet]:
        """Per-region counters: registered, reporting, readings per minute, completeness."""
        quarter = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        window = quarter - timedelta(minutes=15)
        query = sql.SQL(
            """
            WITH registered AS (
                SELECT region, count(*) AS n FROM {s}.meters
                WHERE status <> 'DECOMMISSIONED' GROUP BY region),
            reporting AS (
                SELECT region, count(*) AS n FROM {s}.meter_status
                WHERE last_seen >= %(since)s GROUP BY region),
            last_window AS (
                SELECT region, readings / 15 AS n FROM {s}.regional_readings_15m
                WHERE bucket = %(window)s)
            SELECT r.region, r.n AS meters_registered,
                   coalesce(p.n, 0) AS meters_reporting,
                   coalesce(m.n, 0) AS readings_per_minute
            FROM registered r
            LEFT JOIN reporting p USING (region)
            LEFT JOIN last_window m USING (region)
            ORDER BY r.region
            """
        ).format(s=self.schema)
        rows = await self._rows(query, {"since": now - REPORTING_WINDOW, "window": window})
        return [
            RegionFleet(
                region=r["region"],
                meters_registered=int(r["meters_registered"]),
                meters_reporting=int(r["meters_reporting"]),
                readings_per_minute=int(r["readings_per_minute"]),
                completeness_pct=round(
                    100.0
                    * min(int(r["meters_reporting"]), int(r["meters_registered"]))
                    / int(r["meters_registered"]),
                    2,
                )
                if r["meters_registered"]
                else 0.0,
            )
            for r in rows
        ]

    async def _rows(self, query: sql.Composable, params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows
