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

MAX_READINGS_PAGE = 5000
MAX_AGGREGATE_ROWS = 10_000
REPORTING_WINDOW = timedelta(minutes=15)


class Interval(enum.StrEnum):
    """Aggregation window of the per-meter aggregates."""

    M1 = "M1"
    M15 = "M15"
    M30 = "M30"


_TABLES = {Interval.M1: "readings_1m", Interval.M15: "readings_15m", Interval.M30: "readings_30m"}


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
    readings_last_minute: int
    """Readings per minute over the last complete 15-minute window."""
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

    async def aggregates(
        self,
        meter_id: UUID,
        interval: Interval,
        start: datetime,
        end: datetime,
        quantity: int | None = None,
    ) -> list[AggregateRow]:
        """Windows of one meter (one quantity or all) with buckets in ``[start, end)``."""
        table = sql.Identifier(_TABLES[interval])
        condition = sql.SQL("AND quantity = %s") if quantity is not None else sql.SQL("")
        query = sql.SQL(
            "SELECT meter_id, quantity, bucket, count, sum, min, max, first_ts, first_value, "
            "last_ts, last_value FROM {}.{} WHERE meter_id = %s {} AND bucket >= %s "
            "AND bucket < %s ORDER BY quantity, bucket LIMIT %s"
        ).format(self.schema, table, condition)
        params: list[Any] = [meter_id]
        if quantity is not None:
            params.append(quantity)
        params += [start, end, MAX_AGGREGATE_ROWS]
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
                SELECT region, sum(count) / 15 AS n FROM {s}.readings_15m
                WHERE region IS NOT NULL AND bucket = %(window)s GROUP BY region)
            SELECT r.region, r.n AS meters_registered,
                   coalesce(p.n, 0) AS meters_reporting,
                   coalesce(m.n, 0) AS readings_last_minute
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
                readings_last_minute=int(r["readings_last_minute"]),
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
