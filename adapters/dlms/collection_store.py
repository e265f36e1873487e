"""PostgreSQL state of collection: meters to reach, due tasks, ledgers, log positions, stats."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.session import MeterTarget
from domain.collection import Task
from domain.profile_ledger import LedgerDay, mask_of
from domain.text import printable

MAX_ERROR_CHARS = 500
COLLECTED = "m.status = 'COMMISSIONED' AND m.connection->>'transport' IS DISTINCT FROM 'NONE'"
"""Meters the scheduler collects from (SQL over ``meters m``)."""


class ClaimedTask(msgspec.Struct, frozen=True):
    """A due task this process holds a lease on."""

    meter: UUID
    task: Task
    failures: int


class CollectionStore:
    """Tables of migration 9 that the DLMS adapter writes, plus the meters read model."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema_name = schema
        self.schema = sql.Identifier(schema)

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self.schema)

    # -- meters --------------------------------------------------------------------------

    async def targets(self, ids: Collection[UUID]) -> dict[UUID, MeterTarget]:
        """The meters among ``ids`` that are not decommissioned, with their key version."""
        query = self._sql(
            "SELECT m.id, m.serial, m.region, m.area, m.status, m.phases, m.connection, "
            "m.manufacturer, m.model, m.firmware, d.profile, "
            "COALESCE(d.key_version, 0) AS key_version FROM {s}.meters m "
            "LEFT JOIN {s}.dlms_meter_state d ON d.meter_id = m.id "
            "WHERE m.id = ANY(%s) AND m.status <> 'DECOMMISSIONED'"
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (list(ids),))
            rows = await cur.fetchall()
        return {r["id"]: msgspec.convert(r, MeterTarget, strict=False) for r in rows}

    async def target_by_serial(self, serial: str) -> MeterTarget | None:
        """The meter with this serial (case-insensitive), decommissioned or not."""
        query = self._sql("SELECT id FROM {s}.meters WHERE upper(serial) = upper(%s)")
        async with self.pool.connection() as conn:
            row = await (await conn.execute(query, (serial,))).fetchone()
        if row is None:
            return None
        return (await self.targets([row[0]])).get(row[0])

    # -- tasks ---------------------------------------------------------------------------

    async def sync_tasks(self) -> int:
        """Give every collected meter its tasks (due now); drop every other meter's tasks.

        Collected: commissioned, with a transport the head-end dials. A registered meter (not
        yet installed), a decommissioned one and one with transport NONE are never dialled.
        """
        tasks = [t.value for t in Task]
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                self._sql(
                    "INSERT INTO {s}.dlms_collection_tasks (meter_id, task, next_due) "
                    "SELECT m.id, t.task, now() FROM {s}.meters m CROSS JOIN unnest(%s::text[]) "
                    f"AS t(task) WHERE {COLLECTED} ON CONFLICT DO NOTHING"
                ),
                (tasks,),
            )
            added = int(cur.rowcount)
            await conn.execute(
                self._sql(
                    "DELETE FROM {s}.dlms_collection_tasks t USING {s}.meters m "
                    f"WHERE m.id = t.meter_id AND NOT ({COLLECTED})"
                )
            )
        return added

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedTask]:
        """Lease up to ``limit`` due tasks, oldest due first (others' leases are skipped)."""
        query = self._sql(
            "UPDATE {s}.dlms_collection_tasks t SET lease_until = now() + make_interval("
            "secs => %(lease)s), last_run_at = now() FROM (SELECT meter_id, task "
            "FROM {s}.dlms_collection_tasks WHERE next_due <= now() AND (lease_until IS NULL "
            "OR lease_until < now()) ORDER BY next_due LIMIT %(limit)s FOR UPDATE SKIP LOCKED) d "
            "WHERE t.meter_id = d.meter_id AND t.task = d.task "
            "RETURNING t.meter_id, t.task, t.failures"
        )
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(query, {"lease": lease_seconds, "limit": limit})
            ).fetchall()
        return [ClaimedTask(r[0], Task(r[1]), r[2]) for r in rows]

    async def finish(
        self,
        meter: UUID,
        task: Task,
        ok: bool,
        next_due: datetime,
        at: datetime,
        *,
        status: str | None = None,
        problems: Sequence[object] = (),
        error: str | None = None,
    ) -> None:
        """Release a task's lease, set when it runs next and keep how it went."""
        query = self._sql(
            "UPDATE {s}.dlms_collection_tasks SET lease_until = NULL, next_due = %(due)s, "
            "failures = CASE WHEN %(ok)s THEN 0 ELSE failures + 1 END, "
            "last_ok_at = CASE WHEN %(ok)s THEN %(at)s ELSE last_ok_at END, "
            "last_status = %(status)s, last_problems = %(problems)s::jsonb, "
            "last_error = %(error)s WHERE meter_id = %(m)s AND task = %(t)s"
        )
        params = {
            "due": next_due,
            "ok": ok,
            "at": at,
            "m": meter,
            "t": task.value,
            "status": status or ("OK" if ok else "FAILED"),
            "problems": _printable_json(problems) if problems else None,
            "error": None if error is None else printable(error)[:MAX_ERROR_CHARS],
        }
        async with self.pool.connection() as conn:
            await conn.execute(query, params)

    async def make_due(self, meter: UUID, tasks: Iterable[Task]) -> None:
        """Run these tasks of the meter at the next scheduler round."""
        query = self._sql(
            "INSERT INTO {s}.dlms_collection_tasks (meter_id, task, next_due) "
            "SELECT %s, t, now() FROM unnest(%s::text[]) AS t "
            "ON CONFLICT (meter_id, task) DO UPDATE SET next_due = now()"
        )
        async with self.pool.connection() as conn:
            await conn.execute(query, (meter, [t.value for t in tasks]))

    async def next_due_at(self) -> datetime | None:
        """When the earliest unleased task is due (None without tasks)."""
        query = self._sql(
            "SELECT min(next_due) FROM {s}.dlms_collection_tasks WHERE lease_until IS NULL "
            "OR lease_until < now()"
        )
        async with self.pool.connection() as conn:
            row = await (await conn.execute(query)).fetchone()
        return row[0] if row else None

    # -- profile ledger ------------------------------------------------------------------

    async def ledger(self, meter: UUID, profile: str, since: date) -> dict[date, LedgerDay]:
        """The meter's ledger days of ``profile`` from ``since`` on."""
        query = self._sql(
            "SELECT day, period_s, received::text, absent::text FROM {s}.dlms_profile_ledger "
            "WHERE meter_id = %s AND profile = %s AND day >= %s"
        )
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (meter, profile, since))).fetchall()
        return {
            r[0]: LedgerDay(day=r[0], period_s=r[1], received=mask_of(r[2]), absent=mask_of(r[3]))
            for r in rows
        }

    async def save_ledger(self, meter: UUID, profile: str, days: Iterable[LedgerDay]) -> None:
        """Write ledger days (bits only ever added: concurrent writers merge with OR)."""
        # Same period: OR the masks (a slot once received stays received, and is not absent).
        same = "l.period_s = EXCLUDED.period_s"
        query = self._sql(
            "INSERT INTO {s}.dlms_profile_ledger AS l (meter_id, profile, day, period_s, "
            "received, absent, updated_at) VALUES (%s, %s, %s, %s, %s::varbit, %s::varbit, now()) "
            "ON CONFLICT (meter_id, profile, day) DO UPDATE SET "
            f"received = CASE WHEN {same} THEN l.received | EXCLUDED.received "
            "ELSE EXCLUDED.received END, "
            f"absent = CASE WHEN {same} THEN (l.absent | EXCLUDED.absent) "
            "& ~(l.received | EXCLUDED.received) ELSE EXCLUDED.absent END, "
            "period_s = EXCLUDED.period_s, updated_at = now()"
        )
        params = [
            (meter, profile, d.day, d.period_s, d.bits(d.received), d.bits(d.absent)) for d in days
        ]
        if not params:
            return
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(query, params)

    # -- event-log positions -------------------------------------------------------------

    async def log_positions(self, meter: UUID) -> dict[str, datetime]:
        """Capture time of the newest entry recorded per event log of the meter."""
        query = self._sql("SELECT log, last_at FROM {s}.dlms_log_positions WHERE meter_id = %s")
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (meter,))).fetchall()
        return {r[0]: r[1] for r in rows}

    async def advance_log(self, meter: UUID, log: str, last_at: datetime) -> None:
        """Move a log's read position forward (never back)."""
        query = self._sql(
            "INSERT INTO {s}.dlms_log_positions (meter_id, log, last_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (meter_id, log) DO UPDATE SET last_at = "
            "GREATEST({s}.dlms_log_positions.last_at, EXCLUDED.last_at)"
        )
        async with self.pool.connection() as conn:
            await conn.execute(query, (meter, log, last_at))

    # -- register scalers and units ------------------------------------------------------

    async def save_register_units(
        self, meter: UUID, rows: Sequence[tuple[str, int | None, int | None, bool, str | None]]
    ) -> None:
        """Keep each register's scaler and raw unit code as the meter reported them."""
        if not rows:
            return
        query = self._sql(
            "INSERT INTO {s}.dlms_register_units AS u (meter_id, obis, scaler, unit_code, "
            "verified, note, seen_at) VALUES (%s, %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (meter_id, obis) DO UPDATE SET scaler = EXCLUDED.scaler, "
            "unit_code = EXCLUDED.unit_code, verified = EXCLUDED.verified, "
            "note = EXCLUDED.note, seen_at = EXCLUDED.seen_at"
        )
        safe = [(meter, *row[:4], None if row[4] is None else printable(row[4])) for row in rows]
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(query, safe)

    # -- communication statistics --------------------------------------------------------

    async def record_attempt(self, meter: UUID, at: datetime, error: str | None) -> None:
        """Count one session attempt, successful when ``error`` is None."""
        query = self._sql(
            "INSERT INTO {s}.dlms_comm_stats AS c (meter_id, attempts, successes, "
            "consecutive_failures, last_attempt_at, last_success_at, last_error, last_error_at) "
            "VALUES (%(m)s, 1, %(ok)s::int, 1 - %(ok)s::int, %(at)s, "
            "CASE WHEN %(ok)s THEN %(at)s END, %(err)s, "
            "CASE WHEN %(ok)s THEN NULL ELSE %(at)s END) "
            "ON CONFLICT (meter_id) DO UPDATE SET attempts = c.attempts + 1, "
            "successes = c.successes + %(ok)s::int, "
            "consecutive_failures = CASE WHEN %(ok)s THEN 0 ELSE c.consecutive_failures + 1 END, "
            "last_attempt_at = %(at)s, "
            "last_success_at = CASE WHEN %(ok)s THEN %(at)s ELSE c.last_success_at END, "
            "last_error = COALESCE(%(err)s, c.last_error), "
            "last_error_at = CASE WHEN %(ok)s THEN c.last_error_at ELSE %(at)s END"
        )
        ok = error is None
        # meters' errors quote what they sent: recorded printable (PostgreSQL refuses NUL)
        err = None if error is None else printable(error)[:MAX_ERROR_CHARS]
        async with self.pool.connection() as conn:
            await conn.execute(query, {"m": meter, "ok": ok, "at": at, "err": err})


def _printable_json(items: Sequence[object]) -> str:
    """JSON of ``items`` whose strings are printable: they quote what meters sent, and
    PostgreSQL's jsonb refuses NUL even escaped."""

    def clean(value: object) -> object:
        if isinstance(value, str):
            return printable(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return msgspec.json.encode(clean(msgspec.to_builtins(list(items)))).decode()
