"""Writes meter batches into the raw readings, their aggregates, regional load and meter status.

One transaction per call, set-based: the readings go into a staging table (inline for a small
group, by COPY for a large one) and into ``readings`` in one statement (a plain insert; only
when that meets a reading already stored does the call fall back to a deduplicating insert).
Then two statements fold the new readings into the aggregates that compress them
(``projections.aggregate_levels`` says which windows are stored), the regional load and reading
counts, and the meter status: every table gets one write per call, in key order.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import psycopg
from psycopg import pq, sql

from domain.obis import ENERGY_IMPORT, POWER_IMPORT
from domain.readings import MeterBatch
from projections.aggregate_levels import M1, M15, M30, ORIGIN, STORED_FROM, Level
from projections.partitions import ensure_partitions, forget_partitions

# The aggregation sorts and hashes of a few 10k readings fit in 64 MB instead of spilling to
# disk. The staging tables have no statistics, so the planner would guess one row and join 10k
# readings by nested loops: hash joins instead; the look-ups of stored readings are LATERAL
# (index) loops regardless (OFFSET 0 keeps the planner from turning them into joins). Disabled
# plans look costly enough to JIT.
_SETTINGS = """
SET LOCAL work_mem = '64MB';
SET LOCAL enable_nestloop = off;
SET LOCAL enable_mergejoin = off;
SET LOCAL jit = off;
SET LOCAL client_min_messages = warning
"""

# Created once per connection, emptied by every commit.
_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS _hes_stage (
    meter_id uuid NOT NULL,
    quantity smallint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision NOT NULL,
    quality smallint NOT NULL,
    source smallint NOT NULL,
    received_at timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _hes_new (LIKE _hes_stage) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _hes_meter (
    meter_id uuid NOT NULL,
    region text NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _hes_w30 (
    meter_id uuid NOT NULL,
    quantity smallint NOT NULL,
    bucket timestamptz NOT NULL,
    region text NOT NULL,
    count integer NOT NULL,
    first_ts timestamptz NOT NULL,
    first_value double precision NOT NULL,
    last_ts timestamptz NOT NULL,
    last_value double precision NOT NULL,
    n integer NOT NULL
) ON COMMIT DELETE ROWS
"""
_EMPTY = "TRUNCATE _hes_stage, _hes_new, _hes_meter, _hes_w30"

_STAGE_TYPES = ["uuid", "int2", "timestamptz", "float8", "int2", "int2", "timestamptz"]

# In key order, like every other write: concurrent writers of one key queue, never deadlock.
_INSERT_ALL = (
    "INSERT INTO {schema}.readings SELECT * FROM _hes_stage ORDER BY meter_id, quantity, ts"
)

# COPY appends rows in order, so ctid order is arrival order: the first of repeated keys wins.
_INSERT_NEW = """
WITH inserted AS (
    INSERT INTO {schema}.readings
    SELECT DISTINCT ON (meter_id, quantity, ts) * FROM _hes_stage
    ORDER BY meter_id, quantity, ts, ctid
    ON CONFLICT DO NOTHING
    RETURNING *
)
INSERT INTO _hes_new SELECT * FROM inserted
"""

# One window per (meter, quantity, bucket) of ``rows`` (meter_id, quantity, ts, value, region).
# first/last value: the value paired with the smallest/largest timestamp. Arrays compare element
# by element; epoch seconds as float8 keep microsecond order up to 2106.
_WINDOW = """
    SELECT meter_id, quantity, date_bin({step}, ts, {origin}) AS bucket, {region} AS region,
        count(*)::integer AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi,
        min(ts) AS first_ts, (min(ARRAY[date_part('epoch', ts), value]))[2] AS first_value,
        max(ts) AS last_ts, (max(ARRAY[date_part('epoch', ts), value]))[2] AS last_value
    FROM {rows} GROUP BY 1, 2, 3, 4
"""

_UPSERT = """
    INSERT INTO {schema}.{table} AS t (meter_id, quantity, bucket, region, count, sum, min, max,
        first_ts, first_value, last_ts, last_value)
    SELECT meter_id, quantity, bucket, region, n, total, lo, hi,
        first_ts, first_value, last_ts, last_value
    FROM {windows}
    ORDER BY meter_id, quantity, bucket
    ON CONFLICT (meter_id, quantity, bucket) DO UPDATE SET {merge}
    RETURNING t.meter_id, t.quantity, t.bucket, t.region, t.count, t.sum
"""

# Adds the batch's share to a stored window.
_MERGE = """
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

# A window rebuilt from every stored reading replaces whatever was there.
_REPLACE = """
        count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
        first_ts = EXCLUDED.first_ts, first_value = EXCLUDED.first_value,
        last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value
"""

# Statement 1: the 30-minute windows, all of them stored. Their rows stay locked until the
# commit, so the next statement sees every reading of these windows that any writer committed.
_WRITE_30M = """
WITH a AS ({window_30m}),
u AS ({upsert_30m})
-- Only what the next statement reads: windows with finer levels, and power windows.
INSERT INTO _hes_w30
SELECT u.*, a.n FROM u JOIN a USING (meter_id, quantity, bucket)
WHERE u.count >= {keep_15m} OR u.quantity = {power}
"""

# The same, cheaper for readings that arrive in time order (backfills too): a window after the
# meter's newest stored reading cannot exist yet, so it is inserted without a conflict check.
# (Another writer inserting it meanwhile makes the insert fail: then _WRITE_30M runs instead.)
_WRITE_30M_FRESH = """
WITH a AS ({window_30m}),
seen AS (
    SELECT m.meter_id, m.region, date_bin({step_30m}, s.last_seen, {origin}) AS bucket
    FROM _hes_meter m LEFT JOIN LATERAL (
        SELECT last_seen FROM {schema}.meter_status s WHERE s.meter_id = m.meter_id OFFSET 0
    ) s ON true
),
fresh AS (
    INSERT INTO {schema}.readings_30m AS t (meter_id, quantity, bucket, region, count, sum, min,
        max, first_ts, first_value, last_ts, last_value)
    SELECT a.meter_id, a.quantity, a.bucket, m.region, a.n, a.total, a.lo, a.hi,
        a.first_ts, a.first_value, a.last_ts, a.last_value
    FROM a JOIN seen m USING (meter_id)
    WHERE m.bucket IS NULL OR a.bucket > m.bucket
    ORDER BY a.meter_id, a.quantity, a.bucket
    RETURNING t.meter_id, t.quantity, t.bucket, t.region, t.count,
        t.first_ts, t.first_value, t.last_ts, t.last_value
),
known AS ({upsert_known}),
u AS (SELECT * FROM fresh UNION ALL SELECT * FROM known)
INSERT INTO _hes_w30
SELECT u.*, a.n FROM u JOIN a USING (meter_id, quantity, bucket)
WHERE u.count >= {keep_15m} OR u.quantity = {power}
"""

_UPSERT_30M = """
    INSERT INTO {schema}.readings_30m AS t (meter_id, quantity, bucket, region, count, sum, min,
        max, first_ts, first_value, last_ts, last_value)
    SELECT a.meter_id, a.quantity, a.bucket, m.region, a.n, a.total, a.lo, a.hi,
        a.first_ts, a.first_value, a.last_ts, a.last_value
    FROM a JOIN {meters} m USING (meter_id)
    {where}
    ORDER BY a.meter_id, a.quantity, a.bucket
    ON CONFLICT (meter_id, quantity, bucket) DO UPDATE SET {merge}
    RETURNING t.meter_id, t.quantity, t.bucket, t.region, t.count,
        t.first_ts, t.first_value, t.last_ts, t.last_value
"""

# Statement 2: 15- and 1-minute windows where their parent holds three readings or more,
# regional load and reading counts, meter status.
_WRITE_REST = """
WITH w AS (SELECT * FROM _hes_w30),
-- One pass over the batch: per meter and quarter hour, what regional load, reading counts and
-- meter status need.
quarter AS (
    SELECT meter_id, date_bin({step_15m}, ts, {origin}) AS bucket, count(*) AS n,
        count(*) FILTER (WHERE quantity = {power}) AS power_n,
        sum(value) FILTER (WHERE quantity = {power}) AS power_total,
        max(ts) AS last_seen, max(received_at) AS last_received_at,
        max(ts) FILTER (WHERE quantity = {energy}) AS energy_ts,
        max(ARRAY[date_part('epoch', ts), value]) FILTER (WHERE quantity = {energy}) AS energy
    FROM {source} GROUP BY 1, 2
),
-- New readings in 30-minute windows that keep their 15-minute windows and kept them before
-- (or did not exist): those windows are added to.
fine AS (
    SELECT s.meter_id, s.quantity, s.ts, s.value, w.region
    FROM {source} s JOIN w ON w.meter_id = s.meter_id AND w.quantity = s.quantity
        AND w.bucket = date_bin({step_30m}, s.ts, {origin})
    WHERE w.count >= {keep_15m} AND (w.count = w.n OR w.count - w.n >= {keep_15m})
),
-- 30-minute windows that held too few readings to keep their 15-minute windows and now hold
-- enough: those are built from every stored reading.
rebuilt AS (
    SELECT w.meter_id, w.quantity, r.ts, r.value, w.region
    FROM w CROSS JOIN LATERAL (
        SELECT r.ts, r.value FROM {schema}.readings r
        WHERE r.meter_id = w.meter_id AND r.quantity = w.quantity
            AND r.ts >= w.bucket AND r.ts < w.bucket + {step_30m} OFFSET 0) r
    WHERE w.count >= {keep_15m} AND w.count > w.n AND w.count - w.n < {keep_15m}
),
i15 AS ({window_15m_fine}),
r15 AS ({window_15m_rebuilt}),
u15 AS ({upsert_15m_fine}),
v15 AS ({upsert_15m_rebuilt}),
-- Every 15-minute window written now, with its readings before this batch (-1: rebuilt).
s15 AS (
    SELECT u.*, u.count - i.n AS before FROM u15 u JOIN i15 i USING (meter_id, quantity, bucket)
    UNION ALL
    SELECT v.*, -1 FROM v15 v
),
fine1 AS (
    SELECT f.* FROM fine f JOIN s15 w ON w.meter_id = f.meter_id AND w.quantity = f.quantity
        AND w.bucket = date_bin({step_15m}, f.ts, {origin})
    WHERE w.count >= {keep_1m} AND (w.before = 0 OR w.before >= {keep_1m})
),
rebuilt1 AS (
    SELECT w.meter_id, w.quantity, r.ts, r.value, w.region
    FROM s15 w CROSS JOIN LATERAL (
        SELECT r.ts, r.value FROM {schema}.readings r
        WHERE r.meter_id = w.meter_id AND r.quantity = w.quantity
            AND r.ts >= w.bucket AND r.ts < w.bucket + {step_15m} OFFSET 0) r
    WHERE w.count >= {keep_1m} AND (w.before < 0 OR w.before BETWEEN 1 AND {keep_1m} - 1)
),
i1 AS ({window_1m_fine}),
r1 AS ({window_1m_rebuilt}),
u1 AS ({upsert_1m_fine}),
v1 AS ({upsert_1m_rebuilt}),
-- Regional load: the batch's share of each power window it touched ...
power AS (
    SELECT meter_id, bucket, power_n AS n, power_total AS total FROM quarter WHERE power_n > 0
),
-- ... and the window after this batch: stored, or the one or two readings of its 30-minute
-- window. The window's state before is (after - batch): the meter's average moved by
-- avg(after) - avg(before).
after AS (
    SELECT meter_id, bucket, region, count, sum FROM s15 WHERE quantity = {power}
    UNION ALL
    SELECT w.meter_id, date_bin({step_15m}, x.ts, {origin}), w.region, count(*), sum(x.value)
    FROM w CROSS JOIN LATERAL (
        SELECT v.ts, v.value
        FROM (VALUES (1, w.first_ts, w.first_value), (2, w.last_ts, w.last_value))
            AS v(k, ts, value)
        WHERE v.k <= w.count) x
    WHERE w.quantity = {power} AND w.count <= 2
    GROUP BY 1, 2, 3
),
load AS (
    SELECT a.region, p.bucket,
        count(*) FILTER (WHERE a.count = p.n)::integer AS meters,
        sum(a.sum / a.count - CASE WHEN a.count > p.n
            THEN (a.sum - p.total) / (a.count - p.n) ELSE 0 END) AS power_w
    FROM power p JOIN after a USING (meter_id, bucket)
    GROUP BY a.region, p.bucket
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
counted AS (
    SELECT m.region, q.bucket, sum(q.n) AS n
    FROM quarter q JOIN _hes_meter m USING (meter_id)
    GROUP BY 1, 2
),
uc AS (
    INSERT INTO {schema}.regional_readings_15m AS t (region, bucket, readings)
    SELECT region, bucket, n FROM counted ORDER BY region, bucket
    ON CONFLICT (region, bucket) DO UPDATE SET readings = t.readings + EXCLUDED.readings
),
status AS (
    SELECT meter_id, max(last_seen) AS last_seen, max(last_received_at) AS last_received_at,
        sum(n) AS n, max(energy_ts) AS energy_ts, (max(energy))[2] AS energy_wh
    FROM quarter GROUP BY meter_id
),
us AS (
    INSERT INTO {schema}.meter_status AS t (meter_id, region, last_seen, last_received_at,
        readings_total, last_energy_wh, last_energy_ts)
    SELECT s.meter_id, m.region, s.last_seen, s.last_received_at, s.n, s.energy_wh, s.energy_ts
    FROM status s JOIN _hes_meter m USING (meter_id)
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
SELECT 1
"""


Fence = Callable[[], sql.Composable]
"""SQL run first in each write transaction; an error there rolls the write back (a lost lease)."""


class WriteResult(msgspec.Struct, frozen=True):
    """Outcome of one ``ReadingStore.write``."""

    received: int
    inserted: int
    duplicates: int
    """Readings already stored (re-deliveries) or repeated within the call."""


def _window(level: Level, rows: str, region: str) -> sql.Composed:
    return sql.SQL(_WINDOW).format(
        step=level.step, origin=ORIGIN, rows=sql.SQL(rows), region=sql.SQL(region)
    )


def _upsert(schema: sql.Identifier, level: Level, windows: str, merge: str) -> sql.Composed:
    return sql.SQL(_UPSERT).format(
        schema=schema,
        table=sql.Identifier(level.table),
        windows=sql.Identifier(windows),
        merge=sql.SQL(merge),
    )


class ReadingStore:
    """Writes meter batches into the time-series read models of ``schema``, exactly once each."""

    def __init__(self, schema: str, default_capacity_w: float) -> None:
        if not default_capacity_w > 0:
            raise ValueError("default_capacity_w must be positive")
        self.schema = schema
        self.default_capacity_w = default_capacity_w
        ident = sql.Identifier(schema)
        self._insert_all = sql.SQL(_INSERT_ALL).format(schema=ident)
        self._insert_new = sql.SQL(_INSERT_NEW).format(schema=ident)
        self._prepared: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        """Connections (with their backend pid) holding this store's prepared statements."""
        # The batch's new readings: all of them (fast path) or those the dedup let through.
        self._write_30m: dict[str, sql.Composed] = {}
        self._write_rest: dict[str, sql.Composed] = {}
        common = {
            "schema": ident,
            "power": sql.Literal(POWER_IMPORT.id),
            "keep_15m": sql.Literal(STORED_FROM[M15]),
        }
        upsert_all = sql.SQL(_UPSERT_30M).format(
            schema=ident, meters=sql.SQL("_hes_meter"), where=sql.SQL(""), merge=sql.SQL(_MERGE)
        )
        for source in ("_hes_stage", "_hes_new"):
            # The region is joined after grouping (one look-up per window, not per reading).
            self._write_30m[source] = sql.SQL(_WRITE_30M).format(
                window_30m=_window(M30, source, "''"), upsert_30m=upsert_all, **common
            )
            self._write_rest[source] = sql.SQL(_WRITE_REST).format(
                schema=ident,
                source=sql.Identifier(source),
                origin=ORIGIN,
                step_30m=M30.step,
                step_15m=M15.step,
                window_15m_fine=_window(M15, "fine", "region"),
                window_15m_rebuilt=_window(M15, "rebuilt", "region"),
                upsert_15m_fine=_upsert(ident, M15, "i15", _MERGE),
                upsert_15m_rebuilt=_upsert(ident, M15, "r15", _REPLACE),
                window_1m_fine=_window(M1, "fine1", "region"),
                window_1m_rebuilt=_window(M1, "rebuilt1", "region"),
                upsert_1m_fine=_upsert(ident, M1, "i1", _MERGE),
                upsert_1m_rebuilt=_upsert(ident, M1, "r1", _REPLACE),
                power=sql.Literal(POWER_IMPORT.id),
                energy=sql.Literal(ENERGY_IMPORT.id),
                keep_15m=sql.Literal(STORED_FROM[M15]),
                keep_1m=sql.Literal(STORED_FROM[M1]),
                default_capacity=sql.Literal(float(default_capacity_w)),
            )
        self._write_30m_fresh = sql.SQL(_WRITE_30M_FRESH).format(
            window_30m=_window(M30, "_hes_stage", "''"),
            step_30m=M30.step,
            origin=ORIGIN,
            upsert_known=sql.SQL(_UPSERT_30M).format(
                schema=ident,
                meters=sql.SQL("seen"),
                where=sql.SQL("WHERE a.bucket <= m.bucket"),
                merge=sql.SQL(_MERGE),
            ),
            **common,
        )
        self._plain: dict[str, sql.Composed] = {
            "insert_all": self._insert_all,
            "insert_new": self._insert_new,
            "w30_fresh": self._write_30m_fresh,
            "w30_stage": self._write_30m["_hes_stage"],
            "rest_stage": self._write_rest["_hes_stage"],
            "w30_new": self._write_30m["_hes_new"],
            "rest_new": self._write_rest["_hes_new"],
        }
        tag = hashlib.blake2b(schema.encode(), digest_size=4).hexdigest()
        self._names = {kind: f"hes_{kind}_{tag}" for kind in self._plain}

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        batches: Sequence[MeterBatch],
        fence: Fence | None = None,
    ) -> WriteResult:
        """Store ``batches`` in one transaction; re-delivered readings change nothing."""
        received = sum(len(b.readings) for b in batches)
        if received == 0:
            return WriteResult(received=0, inserted=0, duplicates=0)
        try:
            inserted = await self._write_once(conn, batches, received, fence)
        except psycopg.errors.CheckViolation:
            # "no partition of relation ... found for row": this process believed in a partition
            # that a rollback or another process's drop_expired removed. Look again, once.
            forget_partitions(conn, self.schema)
            inserted = await self._write_once(conn, batches, received, fence)
        except (psycopg.errors.InvalidSqlStatementName, psycopg.errors.UndefinedTable):
            # Someone discarded this session's prepared statements or temp tables: again, once.
            self._prepared.pop(conn, None)
            inserted = await self._write_once(conn, batches, received, fence)
        return WriteResult(received=received, inserted=inserted, duplicates=received - inserted)

    async def _statements(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, sql.Composed]:
        """The write statements: EXECUTEs of prepared ones on a connection of our own (its plans
        are made once per session), the plain text inside a caller's transaction."""
        plain = self._plain
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await conn.execute(_TEMP_TABLES)
            return plain
        if self._prepared.get(conn) != conn.info.backend_pid:
            # psycopg's own statement cache answers a ROLLBACK (also of a savepoint) with
            # DEALLOCATE ALL, which would take ours along: it stays off on this connection.
            conn.prepare_threshold = None
            setup: list[sql.Composable] = [
                sql.SQL("BEGIN"),
                sql.SQL("SET LOCAL client_min_messages = warning"),
                sql.SQL(_TEMP_TABLES),
            ]
            setup += [
                sql.SQL("DEALLOCATE {}").format(sql.Identifier(name))
                for name in self._names.values()
                if name in await self._existing(conn)
            ]
            setup += [
                sql.SQL("PREPARE {} AS {}").format(sql.Identifier(self._names[kind]), statement)
                for kind, statement in plain.items()
            ]
            await conn.execute(sql.SQL(";").join([*setup, sql.SQL("COMMIT")]))
            self._prepared[conn] = conn.info.backend_pid
        return {
            kind: sql.SQL("EXECUTE {}").format(sql.Identifier(name))
            for kind, name in self._names.items()
        }

    @staticmethod
    async def _existing(conn: psycopg.AsyncConnection[Any]) -> set[str]:
        cur = await conn.execute("SELECT name FROM pg_prepared_statements")
        return {str(row[0]) for row in await cur.fetchall()}

    async def _write_once(
        self,
        conn: psycopg.AsyncConnection[Any],
        batches: Sequence[MeterBatch],
        received: int,
        fence: Fence | None,
    ) -> int:
        # Few round trips per call, whatever its size (a small group: one). On a busy machine
        # each can wait for a CPU, and that is what a reading's latency is made of.
        statements = await self._statements(conn)
        days: set[date] = set()
        regions: dict[Any, str] = {}
        for batch in batches:
            days |= _days(batch)
            regions[batch.meter] = batch.region
        await ensure_partitions(conn, self.schema, days)
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            begin, end, undo = "BEGIN", "COMMIT", "ROLLBACK"
            empty = ""
        else:
            begin, end = "SAVEPOINT hes_write", "RELEASE SAVEPOINT hes_write"
            undo = "ROLLBACK TO SAVEPOINT hes_write"
            # ON COMMIT DELETE ROWS empties the staging tables only at the outer commit.
            empty = ";" + _EMPTY
        head: list[sql.Composable] = [sql.SQL(begin), sql.SQL(_SETTINGS + empty)]
        if fence is not None:
            head.append(fence())
        small = received <= _INLINE_READINGS
        if small:
            head.append(sql.SQL(_inline_rows(batches)))
        body: list[sql.Composable] = [
            sql.SQL("INSERT INTO _hes_meter VALUES {}").format(
                sql.SQL(", ").join(
                    sql.SQL("({}, {})").format(sql.Literal(m), sql.Literal(r))
                    for m, r in regions.items()
                )
            ),
            sql.SQL("SAVEPOINT hes_fast"),
            statements["insert_all"],
            sql.SQL("RELEASE SAVEPOINT hes_fast"),
            sql.SQL("SAVEPOINT hes_fresh"),
            statements["w30_fresh"],
            sql.SQL("RELEASE SAVEPOINT hes_fresh"),
            statements["rest_stage"],
            sql.SQL(end),
        ]
        try:
            try:
                if small:
                    await conn.execute(sql.SQL(";").join(head + body))
                else:
                    await conn.execute(sql.SQL(";").join(head))
                    await self._copy(conn, batches)
                    await conn.execute(sql.SQL(";").join(body))
                return received
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.table_name and exc.diag.table_name.startswith("readings_30m"):
                    # A window another writer inserted meanwhile: upsert them all after all.
                    await conn.execute(
                        sql.SQL(";").join(
                            [
                                sql.SQL("ROLLBACK TO SAVEPOINT hes_fresh"),
                                statements["w30_stage"],
                                statements["rest_stage"],
                                sql.SQL(end),
                            ]
                        )
                    )
                    return received
                # Some are stored already (a redelivery) or repeated within the call.
                await conn.execute("ROLLBACK TO SAVEPOINT hes_fast")
                cur = await conn.execute(statements["insert_new"])
                inserted = int(cur.rowcount)
                tail: list[sql.Composable] = [sql.SQL(end)]
                if inserted:
                    tail[:0] = [statements["w30_new"], statements["rest_new"]]
                await conn.execute(sql.SQL(";").join(tail))
                return inserted
        except BaseException:
            if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(undo)
            raise

    @staticmethod
    async def _copy(conn: psycopg.AsyncConnection[Any], batches: Sequence[MeterBatch]) -> None:
        """Binary COPY of the readings into the staging table."""
        async with conn.cursor().copy("COPY _hes_stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for batch in batches:
                meter, source, received_at = batch.meter, batch.source, batch.received_at
                for r in batch.readings:
                    await copy.write_row(
                        (meter, r.quantity, r.ts, r.value, r.quality, source, received_at)
                    )


_INLINE_READINGS = 1000
"""Groups up to this size go into the staging table in the statement itself (one round trip);
larger ones by binary COPY."""


def _inline_rows(batches: Sequence[MeterBatch]) -> str:
    """``INSERT INTO _hes_stage VALUES ...`` for a small group.

    Every value is typed (UUID, int, float, datetime: msgspec checked them when decoding), so
    the text is built directly; a non-finite float becomes PostgreSQL's spelling of it.
    """
    rows = []
    for batch in batches:
        head = f"('{batch.meter}'"
        tail = f",{int(batch.source)},'{_instant(batch.received_at)}')"
        for r in batch.readings:
            rows.append(
                f"{head},{int(r.quantity)},'{_instant(r.ts)}',{_number(r.value)},"
                f"{int(r.quality)}{tail}"
            )
    return "INSERT INTO _hes_stage VALUES " + ",".join(rows)


def _instant(ts: datetime) -> str:
    return ts.isoformat() if ts.tzinfo is not None else ts.isoformat() + "+00:00"


def _number(value: float) -> str:
    if math.isfinite(value):
        return repr(float(value))
    return "'NaN'::float8" if math.isnan(value) else f"'{'-' if value < 0 else ''}Infinity'::float8"


def _days(batch: MeterBatch) -> set[date]:
    """UTC days of a batch's readings."""
    if not batch.readings:
        return set()
    first = min(r.ts for r in batch.readings).astimezone(UTC).date()
    last = max(r.ts for r in batch.readings).astimezone(UTC).date()
    if first == last:
        return {first}
    return {r.ts.astimezone(UTC).date() for r in batch.readings}
