"""Writes meter batches into the raw readings, their aggregates, regional load and meter status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date
from typing import Any

import msgspec
import psycopg
from psycopg import pq, sql

from domain.obis import ENERGY_IMPORT, POWER_IMPORT
from domain.readings import MeterBatch
from projections.partitions import ensure_partitions, forget_partitions

# Created once per connection, emptied by every commit; the aggregation sorts and hashes of a
# few 10k readings fit in 64 MB instead of spilling to disk.
_STAGING = """
SET LOCAL work_mem = '64MB';
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS _hes_reading_stage (
    b integer NOT NULL,
    quantity smallint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision NOT NULL,
    quality smallint NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _hes_batch_stage (
    b integer NOT NULL,
    meter_id uuid NOT NULL,
    region text NOT NULL,
    source smallint NOT NULL,
    received_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
"""

_READING_TYPES = ["int4", "int2", "timestamptz", "float8", "int2"]
_BATCH_TYPES = ["int4", "uuid", "text", "int2", "timestamptz"]

# first/last value of a window: the value paired with the smallest/largest timestamp.
# Arrays compare element by element; epoch seconds as float8 keep microsecond order up to 2106.
_WINDOW = """
    SELECT meter_id, quantity, date_bin({stride}, ts, {origin}) AS bucket,
        count(*)::integer AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi,
        min(ts) AS first_ts, (min(ARRAY[date_part('epoch', ts), value]))[2] AS first_value,
        max(ts) AS last_ts, (max(ARRAY[date_part('epoch', ts), value]))[2] AS last_value
    FROM new GROUP BY 1, 2, 3
"""

_AGGREGATE_UPSERT = """
    INSERT INTO {schema}.{table} AS t (meter_id, quantity, bucket, region, count, sum, min, max,
        first_ts, first_value, last_ts, last_value)
    SELECT a.meter_id, a.quantity, a.bucket, m.region, a.n, a.total, a.lo, a.hi,
        a.first_ts, a.first_value, a.last_ts, a.last_value
    FROM {source} a JOIN meter m USING (meter_id)
    ORDER BY a.meter_id, a.quantity, a.bucket
    ON CONFLICT (meter_id, quantity, bucket) DO UPDATE SET
        count = t.count + EXCLUDED.count,
        sum = t.sum + EXCLUDED.sum,
        min = least(t.min, EXCLUDED.min),
        max = greatest(t.max, EXCLUDED.max),
        first_ts = least(t.first_ts, EXCLUDED.first_ts),
        first_value = CASE WHEN EXCLUDED.first_ts < t.first_ts
            THEN EXCLUDED.first_value ELSE t.first_value END,
        last_ts = greatest(t.last_ts, EXCLUDED.last_ts),
        last_value = CASE WHEN EXCLUDED.last_ts > t.last_ts
            THEN EXCLUDED.last_value ELSE t.last_value END
"""

_WRITE = """
-- A meter's region is the one of its last batch in this call.
WITH meter AS (
    SELECT DISTINCT ON (meter_id) meter_id, region
    FROM _hes_batch_stage ORDER BY meter_id, b DESC
),
-- COPY appends rows in order, so ctid order is arrival order: the first of repeated keys wins.
-- Each table below is written in key order, so concurrent writers queue instead of deadlocking.
staged AS (
    SELECT DISTINCT ON (m.meter_id, s.quantity, s.ts)
        m.meter_id, s.quantity, s.ts, s.value, s.quality, m.source, m.received_at
    FROM _hes_reading_stage s JOIN _hes_batch_stage m USING (b)
    ORDER BY m.meter_id, s.quantity, s.ts, s.ctid
),
new AS (
    INSERT INTO {schema}.readings (meter_id, quantity, ts, value, quality, source, received_at)
    SELECT * FROM staged
    ON CONFLICT DO NOTHING
    RETURNING meter_id, quantity, ts, value, received_at
),
a1 AS ({window_1m}),
a15 AS ({window_15m}),
-- 30-minute windows are pairs of 15-minute ones: roll those up instead of the readings again.
a30 AS (
    SELECT meter_id, quantity, date_bin('30 minutes', bucket, {origin}) AS bucket,
        sum(n)::integer AS n, sum(total) AS total, min(lo) AS lo, max(hi) AS hi,
        min(first_ts) AS first_ts,
        (min(ARRAY[date_part('epoch', first_ts), first_value]))[2] AS first_value,
        max(last_ts) AS last_ts,
        (max(ARRAY[date_part('epoch', last_ts), last_value]))[2] AS last_value
    FROM a15 GROUP BY 1, 2, 3
),
u1 AS ({upsert_1m}),
u15 AS ({upsert_15m} RETURNING t.meter_id, t.quantity, t.bucket, t.region, t.count, t.sum),
u30 AS ({upsert_30m}),
-- The batch's share of each upserted power window is known, so the window's state before
-- this statement is (new - batch): the meter's average moved by avg(new) - avg(old).
load AS (
    SELECT u.region, u.bucket,
        count(*) FILTER (WHERE u.count = a.n)::integer AS meters,
        sum(u.sum / u.count - CASE WHEN u.count > a.n
            THEN (u.sum - a.total) / (u.count - a.n) ELSE 0 END) AS power_w
    FROM u15 u JOIN a15 a USING (meter_id, quantity, bucket)
    WHERE u.quantity = {power}
    GROUP BY u.region, u.bucket
),
ul AS (
    INSERT INTO {schema}.regional_load_15m AS t
        (region, bucket, meters, power_w, capacity_w, load_pct, updated_at)
    SELECT l.region, l.bucket, l.meters, l.power_w, c.capacity_w,
        100 * l.power_w / c.capacity_w, now()
    FROM load l CROSS JOIN LATERAL (
        SELECT coalesce(
            (SELECT r.capacity_w FROM {schema}.region_capacity r WHERE r.region = l.region),
            {default_capacity}) AS capacity_w) c
    ORDER BY l.region, l.bucket
    ON CONFLICT (region, bucket) DO UPDATE SET
        meters = t.meters + EXCLUDED.meters,
        power_w = t.power_w + EXCLUDED.power_w,
        capacity_w = EXCLUDED.capacity_w,
        load_pct = 100 * (t.power_w + EXCLUDED.power_w) / EXCLUDED.capacity_w,
        updated_at = EXCLUDED.updated_at
),
status AS (
    SELECT meter_id, max(ts) AS last_seen, max(received_at) AS last_received_at,
        count(*) AS n, max(ts) FILTER (WHERE quantity = {energy}) AS energy_ts,
        (max(ARRAY[date_part('epoch', ts), value]) FILTER (WHERE quantity = {energy}))[2]
            AS energy_wh
    FROM new GROUP BY meter_id
),
us AS (
    INSERT INTO {schema}.meter_status AS t (meter_id, region, last_seen, last_received_at,
        readings_total, last_energy_wh, last_energy_ts)
    SELECT s.meter_id, m.region, s.last_seen, s.last_received_at, s.n, s.energy_wh, s.energy_ts
    FROM status s JOIN meter m USING (meter_id)
    ORDER BY s.meter_id
    ON CONFLICT (meter_id) DO UPDATE SET
        region = CASE WHEN EXCLUDED.last_received_at >= t.last_received_at
            THEN EXCLUDED.region ELSE t.region END,
        last_seen = greatest(t.last_seen, EXCLUDED.last_seen),
        last_received_at = greatest(t.last_received_at, EXCLUDED.last_received_at),
        readings_total = t.readings_total + EXCLUDED.readings_total,
        last_energy_wh = CASE WHEN t.last_energy_ts IS NULL
            OR EXCLUDED.last_energy_ts > t.last_energy_ts
            THEN coalesce(EXCLUDED.last_energy_wh, t.last_energy_wh)
            ELSE t.last_energy_wh END,
        last_energy_ts = greatest(t.last_energy_ts, EXCLUDED.last_energy_ts)
)
SELECT count(*) FROM new
"""


class WriteResult(msgspec.Struct, frozen=True):
    """Outcome of one ``ReadingStore.write``."""

    received: int
    inserted: int
    duplicates: int
    """Readings already stored (re-deliveries) or repeated within the call."""


class ReadingStore:
    """Writes meter batches into the time-series read models of ``schema``, exactly once each."""

    def __init__(self, schema: str, default_capacity_w: float) -> None:
        if not default_capacity_w > 0:
            raise ValueError("default_capacity_w must be positive")
        self.schema = schema
        self.default_capacity_w = default_capacity_w
        ident = sql.Identifier(schema)
        # Buckets start at whole minutes, quarters and halves of an hour in UTC.
        origin = sql.SQL("timestamptz '2000-01-01 00:00:00+00'")
        parts: dict[str, sql.Composable] = {}
        for name, minutes in (("1m", 1), ("15m", 15), ("30m", 30)):
            parts[f"window_{name}"] = sql.SQL(_WINDOW).format(
                stride=sql.Literal(f"{minutes} minutes"), origin=origin
            )
            parts[f"upsert_{name}"] = sql.SQL(_AGGREGATE_UPSERT).format(
                schema=ident,
                table=sql.Identifier(f"readings_{name}"),
                source=sql.Identifier(f"a{minutes}"),
            )
        self._write = sql.SQL(_WRITE).format(
            schema=ident,
            origin=origin,
            power=sql.Literal(POWER_IMPORT.id),
            energy=sql.Literal(ENERGY_IMPORT.id),
            default_capacity=sql.Literal(float(default_capacity_w)),
            **parts,
        )

    async def write(
        self, conn: psycopg.AsyncConnection[Any], batches: Sequence[MeterBatch]
    ) -> WriteResult:
        """Store ``batches`` in one transaction; re-delivered readings change nothing."""
        received = sum(len(b.readings) for b in batches)
        if received == 0:
            return WriteResult(received=0, inserted=0, duplicates=0)
        try:
            inserted = await self._write_once(conn, batches)
        except psycopg.errors.CheckViolation:
            # "no partition of relation ... found for row": this process believed in a partition
            # that a rollback or another process's drop_expired removed. Look again, once.
            forget_partitions(conn, self.schema)
            inserted = await self._write_once(conn, batches)
        return WriteResult(received=received, inserted=inserted, duplicates=received - inserted)

    async def _write_once(
        self, conn: psycopg.AsyncConnection[Any], batches: Sequence[MeterBatch]
    ) -> int:
        nested = conn.info.transaction_status != pq.TransactionStatus.IDLE
        async with conn.transaction():
            await conn.execute(_STAGING)
            if nested:
                # ON COMMIT DELETE ROWS empties the staging tables only at the outer commit.
                await conn.execute("TRUNCATE _hes_reading_stage, _hes_batch_stage")
            days: set[date] = set()
            cur = conn.cursor()
            async with cur.copy("COPY _hes_reading_stage FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_READING_TYPES)
                for i, batch in enumerate(batches):
                    for r in batch.readings:
                        await copy.write_row((i, r.quantity, r.ts, r.value, r.quality))
                    days |= _days(batch)
            async with cur.copy("COPY _hes_batch_stage FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_BATCH_TYPES)
                for i, batch in enumerate(batches):
                    await copy.write_row(
                        (i, batch.meter, batch.region, batch.source, batch.received_at)
                    )
            await ensure_partitions(conn, self.schema, days)
            # Planned afresh each time: a plan cached for small staging tables (they have no
            # statistics) would be wrong for large ones, and planning costs under a millisecond.
            await cur.execute(self._write, prepare=False)
            row = await cur.fetchone()
            return int(row[0]) if row is not None else 0


def _days(batch: MeterBatch) -> set[date]:
    """UTC days of a batch's readings."""
    if not batch.readings:
        return set()
    first = min(r.ts for r in batch.readings).astimezone(UTC).date()
    last = max(r.ts for r in batch.readings).astimezone(UTC).date()
    if first == last:
        return {first}
    return {r.ts.astimezone(UTC).date() for r in batch.readings}
