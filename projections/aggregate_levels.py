"""The per-meter aggregate levels (1, 15 and 30 minutes): which windows are stored, and how every
window is read back.

A finer level is stored only where the data is denser than it, so that it compresses:

- every 30-minute window (the coarsest level) is stored;
- a 15-minute window is stored when its 30-minute window holds three readings or more;
- a 1-minute window is stored when its 15-minute window holds sixteen readings or more
  (more readings than it has minutes).

A window that is not stored is derived on read: a 15- or 30-minute window of two readings or
fewer keeps them exactly (they are its first and last values), so its finer windows come from
it; the 1-minute windows of a 15-minute window of 3 to 15 readings (data every 1 to 5 minutes)
come from the raw readings, as far back as those are kept. Quarter-hour data thus costs one
30-minute row per two readings and nothing at 1 and 15 minutes, 5-minute data one 15-minute row
per three readings and no 1-minute rows, while 10-second data keeps all three levels (6, 90 and
180 readings per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

ORIGIN = sql.SQL("timestamptz '2000-01-01 00:00:00+00'")
"""Windows start at whole minutes, quarters and halves of an hour in UTC."""

COLUMNS = (
    "meter_id",
    "quantity",
    "bucket",
    "region",
    "count",
    "sum",
    "min",
    "max",
    "first_ts",
    "first_value",
    "last_ts",
    "last_value",
)


@dataclass(frozen=True)
class Level:
    """One aggregate level: its window length and the table holding its stored windows."""

    name: str
    minutes: int

    @property
    def table(self) -> str:
        """Table of the stored windows, e.g. ``readings_15m``."""
        return f"readings_{self.name}"

    @property
    def view(self) -> str:
        """View of every window, stored or derived, e.g. ``windows_15m``."""
        return f"windows_{self.name}"

    @property
    def step(self) -> sql.Composable:
        """The window length as an SQL interval literal."""
        return sql.SQL("interval {}").format(sql.Literal(f"{self.minutes} minutes"))


M1 = Level("1m", 1)
M15 = Level("15m", 15)
M30 = Level("30m", 30)
LEVELS = (M1, M15, M30)
PARENTS: dict[Level, tuple[Level, ...]] = {M1: (M15, M30), M15: (M30,), M30: ()}
"""Coarser levels a window can be derived from (a stored parent of at most two readings)."""
STORED_FROM: dict[Level, int] = {M15: 3, M1: 16}
"""A window of the level is stored when its parent one level up holds at least this many
readings: more than the parent has windows of the level."""

MeterFilter = Literal["one", "many", "all"]
BucketFilter = Literal["range", "list", "all"]


def windows_sql(
    schema: str,
    level: Level,
    *,
    meters: MeterFilter = "one",
    quantity: bool = False,
    buckets: BucketFilter = "range",
) -> sql.Composed:
    """Every window of ``level`` (stored or derived), with ``COLUMNS``, filtered by parameters.

    Named parameters: ``meter`` (``meters="one"``) or ``meters`` (a uuid list); ``quantity``;
    ``start`` and ``end`` (``buckets="range"``: windows starting in ``[start, end)``) or
    ``buckets`` (a timestamptz list). Each branch is a range scan of a primary key.
    """
    parts = [_stored(schema, level, meters, quantity, buckets)]
    parts += [_derived(schema, level, p, meters, quantity, buckets) for p in PARENTS[level]]
    if level is M1:
        parts.append(_from_readings(schema, meters, quantity, buckets))
    return sql.SQL(" UNION ALL ").join(parts)


def _meter_quantity(alias: str, meters: MeterFilter, quantity: bool) -> list[sql.Composable]:
    conditions: list[sql.Composable] = []
    column = sql.Identifier(alias, "meter_id")
    if meters == "one":
        conditions.append(sql.SQL("{} = %(meter)s").format(column))
    elif meters == "many":
        conditions.append(sql.SQL("{} = ANY(%(meters)s::uuid[])").format(column))
    if quantity:
        conditions.append(sql.SQL("{} = %(quantity)s").format(sql.Identifier(alias, "quantity")))
    return conditions


def _bucket(column: sql.Composable, buckets: BucketFilter) -> list[sql.Composable]:
    if buckets == "range":
        return [sql.SQL("{c} >= %(start)s AND {c} < %(end)s").format(c=column)]
    if buckets == "list":
        return [sql.SQL("{} = ANY(%(buckets)s::timestamptz[])").format(column)]
    return []


def _where(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


def _stored(
    schema: str, level: Level, meters: MeterFilter, quantity: bool, buckets: BucketFilter
) -> sql.Composed:
    conditions = _meter_quantity("s", meters, quantity) + _bucket(
        sql.Identifier("s", "bucket"), buckets
    )
    return sql.SQL("SELECT {columns} FROM {table} s{where}").format(
        columns=sql.SQL(", ").join(sql.Identifier("s", c) for c in COLUMNS),
        table=sql.Identifier(schema, level.table),
        where=_where(conditions),
    )


def _derived(
    schema: str,
    level: Level,
    parent: Level,
    meters: MeterFilter,
    quantity: bool,
    buckets: BucketFilter,
) -> sql.Composed:
    """Windows of ``level`` recovered from ``parent`` windows of one or two readings."""
    readings = sql.SQL(
        "SELECT v.ts, v.value FROM (VALUES (1, p.first_ts, p.first_value), "
        "(2, p.last_ts, p.last_value)) AS v(k, ts, value) WHERE v.k <= p.count"
    )
    return _regrouped(
        schema, level, parent, sql.SQL("p.count <= 2"), readings, meters, quantity, buckets
    )


def _from_readings(
    schema: str, meters: MeterFilter, quantity: bool, buckets: BucketFilter
) -> sql.Composed:
    """1-minute windows of 15-minute windows too sparse to keep them: from the raw readings."""
    readings = sql.SQL(
        "SELECT r.ts, r.value FROM {readings} r "
        "WHERE r.meter_id = p.meter_id AND r.quantity = p.quantity "
        "AND r.ts >= p.bucket AND r.ts < p.bucket + {step}"
    ).format(readings=sql.Identifier(schema, "readings"), step=M15.step)
    sparse = sql.SQL("p.count >= 3 AND p.count < {}").format(sql.Literal(STORED_FROM[M1]))
    return _regrouped(schema, M1, M15, sparse, readings, meters, quantity, buckets)


def _regrouped(
    schema: str,
    level: Level,
    parent: Level,
    which: sql.Composable,
    readings: sql.Composable,
    meters: MeterFilter,
    quantity: bool,
    buckets: BucketFilter,
) -> sql.Composed:
    """Windows of ``level`` made from ``readings`` (ts, value) of the ``which`` parent windows."""
    conditions = [which, *_meter_quantity("p", meters, quantity)]
    if buckets == "range":
        # Parent windows overlapping [start, end).
        conditions.append(
            sql.SQL("p.bucket > %(start)s - {step} AND p.bucket < %(end)s").format(step=parent.step)
        )
    elif buckets == "list":
        conditions.append(
            sql.SQL(
                "p.bucket = ANY(ARRAY(SELECT date_bin({step}, b, {origin}) "
                "FROM unnest(%(buckets)s::timestamptz[]) b))"
            ).format(step=parent.step, origin=ORIGIN)
        )
    conditions += _bucket(sql.Identifier("x", "bucket"), buckets)
    return sql.SQL(
        "SELECT p.meter_id, p.quantity, x.bucket, p.region, count(*)::integer, sum(x.value), "
        "min(x.value), max(x.value), min(x.ts), (array_agg(x.value ORDER BY x.ts))[1], "
        "max(x.ts), (array_agg(x.value ORDER BY x.ts DESC))[1] "
        "FROM {parent} p CROSS JOIN LATERAL ("
        "SELECT y.ts, y.value, date_bin({step}, y.ts, {origin}) AS bucket FROM ({readings}) y"
        ") x{where} "
        "GROUP BY p.meter_id, p.quantity, x.bucket, p.region"
    ).format(
        parent=sql.Identifier(schema, parent.table),
        readings=readings,
        step=level.step,
        origin=ORIGIN,
        where=_where(conditions),
    )


def create_views(schema: str) -> list[sql.Composed]:
    """``windows_1m``/``_15m``/``_30m``: every window of each level, for SQL users and reports."""
    return [
        sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(
            sql.Identifier(schema, level.view),
            windows_sql(schema, level, meters="all", buckets="all"),
        )
        for level in LEVELS
    ]
