"""Interval consumption for MDM/billing: energy per 15/30-minute window, with quality flags."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.obis import ENERGY_IMPORT
from projections.aggregate_levels import M15, M30, windows_sql
from projections.reading_queries import Interval

STEP = {Interval.M15: timedelta(minutes=15), Interval.M30: timedelta(minutes=30)}
_LEVEL = {Interval.M15: M15, Interval.M30: M30}
MAX_WINDOWS = 3000
"""About a month of quarter-hours per request."""


class IntervalValue(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Energy imported in one window.

    ``consumption_wh`` is the register at the window's last reading minus the register at the
    previous window's last reading (``valid``). When the previous window has no reading, the
    window's own first reading is the baseline (``partial``: energy before it is missing). A
    window without readings has no value (``missing``).
    """

    start: datetime
    end: datetime
    consumption_wh: float | None
    quality: str
    readings: int


class MeterIntervals(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter's intervals for a period."""

    meter_id: UUID
    serial: str
    interval: str
    start: datetime
    end: datetime
    intervals: list[IntervalValue]


def window_start(ts: datetime, step: timedelta) -> datetime:
    """Start of the UTC-aligned window holding ``ts``."""
    epoch = datetime(2000, 1, 1, tzinfo=ts.tzinfo)
    return epoch + ((ts - epoch) // step) * step


def consumption(
    rows: dict[datetime, tuple[float, float, int]],
    start: datetime,
    end: datetime,
    step: timedelta,
) -> list[IntervalValue]:
    """Intervals in ``[start, end)`` from (first, last, count) of the energy register per window."""
    out = []
    at = window_start(start, step)
    while at < end:
        here = rows.get(at)
        before = rows.get(at - step)
        if here is None:
            out.append(
                IntervalValue(
                    start=at, end=at + step, consumption_wh=None, quality="missing", readings=0
                )
            )
        elif before is not None:
            out.append(
                IntervalValue(
                    start=at,
                    end=at + step,
                    consumption_wh=here[1] - before[1],
                    quality="valid",
                    readings=here[2],
                )
            )
        else:
            out.append(
                IntervalValue(
                    start=at,
                    end=at + step,
                    consumption_wh=here[1] - here[0],
                    quality="partial",
                    readings=here[2],
                )
            )
        at += step
    return out


class IntervalQueries:
    """Interval consumption from the 15/30-minute aggregates of the energy-import register."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema_name = schema
        self.schema = sql.Identifier(schema)

    async def for_meter(
        self, meter_id: UUID, serial: str, interval: Interval, start: datetime, end: datetime
    ) -> MeterIntervals:
        """The meter's windows in ``[start, end)`` (one window before, for the baseline)."""
        step = STEP[interval]
        first = window_start(start, step)
        if (end - first) / step > MAX_WINDOWS:
            raise ValueError(f"to: at most {MAX_WINDOWS} windows per request")
        query = sql.SQL("SELECT bucket, first_value, last_value, count FROM ({}) w").format(
            windows_sql(self.schema_name, _LEVEL[interval], meters="one", quantity=True)
        )
        params = {
            "meter": meter_id,
            "quantity": ENERGY_IMPORT.id,
            "start": first - step,
            "end": end,
        }
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = {
                r["bucket"]: (float(r["first_value"]), float(r["last_value"]), int(r["count"]))
                for r in await cur.fetchall()
            }
        return MeterIntervals(
            meter_id=meter_id,
            serial=serial,
            interval=interval.value,
            start=first,
            end=end,
            intervals=consumption(rows, first, end, step),
        )

    async def meters_with_data(
        self, interval: Interval, start: datetime, end: datetime
    ) -> list[tuple[UUID, str]]:
        """Meters (id, serial) with energy readings in ``[start, end)``."""
        query = sql.SQL(
            "SELECT DISTINCT a.meter_id, m.serial FROM ({w}) a JOIN {s}.meters m "
            "ON m.id = a.meter_id ORDER BY m.serial"
        ).format(
            s=self.schema,
            w=windows_sql(self.schema_name, _LEVEL[interval], meters="all", quantity=True),
        )
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query, {"quantity": ENERGY_IMPORT.id, "start": start, "end": end}
            )
            return [(row[0], row[1]) for row in await cur.fetchall()]


def to_csv(data: MeterIntervals) -> str:
    """CSV with one line per window: serial, start, end, consumption (Wh), quality, readings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["serial", "start", "end", "consumption_wh", "quality", "readings"])
    for v in data.intervals:
        writer.writerow(
            [
                data.serial,
                v.start.isoformat(),
                v.end.isoformat(),
                "" if v.consumption_wh is None else f"{v.consumption_wh:.3f}",
                v.quality,
                v.readings,
            ]
        )
    return buffer.getvalue()
