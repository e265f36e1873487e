"""Read-side queries over the alerts read model: filtered, ordered by priority, cursor-paged."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.alert import AlertStatus, AlertType, Evidence, Severity
from projections.alerts_projection import AlertsProjection
from projections.projection_position import ProjectionPosition, poll_until

MAX_PAGE = 200

# domain.alert.priority_score in SQL: 10 · weight · (1 + ln(1 + age_h)) · (1 + log10(1 + n)).
_PRIORITY = """
    10.0 * severity_weight
    * (1.0 + ln(1.0 + greatest(0.0, extract(epoch FROM (%(now)s - raised_at)) / 3600.0)))
    * (1.0 + log(1.0 + customers_affected))
"""

_COLUMNS = """
    id, dedup_key, generation, alert_type, severity, region, meter_id, message, evidence, status,
    raised_at, last_seen, occurrences, customers_affected, acknowledged_by, acknowledged_at,
    resolved_by, resolved_at, resolution_note, auto_resolved, version, position, updated_at
"""


class AlertRow(msgspec.Struct, frozen=True, kw_only=True):
    """One alert as the read model shows it, with its priority at query time."""

    id: UUID
    dedup_key: str
    generation: int
    alert_type: AlertType
    severity: Severity
    region: str
    meter_id: UUID | None
    message: str
    evidence: Evidence
    status: AlertStatus
    raised_at: datetime
    last_seen: datetime
    occurrences: int
    customers_affected: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    auto_resolved: bool
    version: int
    position: int
    updated_at: datetime
    priority: float = 0.0


class AlertFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which alerts a list query returns (all given conditions must hold)."""

    statuses: tuple[AlertStatus, ...] = ()
    region: str | None = None
    severity: Severity | None = None
    """Minimum severity."""
    alert_type: AlertType | None = None
    customer_account: str | None = None
    """Only alerts of meters of this customer account."""


class AlertPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of alerts, highest priority first, with the cursor to continue from."""

    items: list[AlertRow]
    has_next_page: bool
    end_cursor: str | None
    ranked_at: datetime
    """The clock the priorities were computed at (kept by the cursors)."""


class InvalidAlertCursor(ValueError):
    """The ``after`` cursor was not produced by this API."""


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    now: datetime
    priority: float
    id: UUID


_cursor_encoder = msgspec.msgpack.Encoder()
_cursor_decoder = msgspec.msgpack.Decoder(_Cursor)


def encode_cursor(now: datetime, priority: float, id_: UUID) -> str:
    """Opaque cursor: the ranking's clock plus the last row's (priority, id)."""
    return base64.urlsafe_b64encode(_cursor_encoder.encode(_Cursor(now, priority, id_))).decode()


def decode_cursor(cursor: str) -> tuple[datetime, float, UUID]:
    """The parts of a cursor; ``InvalidAlertCursor`` when it is not one of ours."""
    try:
        c = _cursor_decoder.decode(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, msgspec.DecodeError):
        raise InvalidAlertCursor(f"after: {cursor!r} is not an alerts cursor") from None
    return c.now, c.priority, c.id


_SEVERITIES = list(Severity)


class AlertQueries(ProjectionPosition):
    """Queries the alerts read model in ``schema`` through an async pool."""

    application_name = "alerts"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier(f"{AlertsProjection.name}_tracking")

    async def page(self, f: AlertFilter, first: int, after: str | None, now: datetime) -> AlertPage:
        """Alerts matching ``f``, highest priority first (ties: newest id first)."""
        if after is not None:
            # Continue the ranking as it was: priorities grow with age, so a fixed clock keeps
            # the pages consistent with each other.
            now, last_priority, last_id = decode_cursor(after)
        conditions: list[sql.Composable] = []
        params: dict[str, Any] = {"now": now, "limit": min(first, MAX_PAGE) + 1}
        if f.statuses:
            conditions.append(sql.SQL("a.status = ANY(%(statuses)s)"))
            params["statuses"] = [s.value for s in f.statuses]
        if f.region is not None:
            conditions.append(sql.SQL("upper(a.region) = upper(%(region)s)"))
            params["region"] = f.region.strip()
        if f.severity is not None:
            conditions.append(sql.SQL("a.severity = ANY(%(severities)s)"))
            params["severities"] = [s.value for s in _SEVERITIES[f.severity.rank :]]
        if f.alert_type is not None:
            conditions.append(sql.SQL("a.alert_type = %(alert_type)s"))
            params["alert_type"] = f.alert_type.value
        if f.customer_account is not None:
            conditions.append(
                sql.SQL(
                    "a.meter_id IN (SELECT id FROM {}.meters WHERE customer_account = %(customer)s)"
                ).format(self.schema)
            )
            params["customer"] = f.customer_account
        outer = sql.SQL("")
        if after is not None:
            outer = sql.SQL("WHERE (priority, id) < (%(last_priority)s, %(last_id)s)")
            params.update(last_priority=last_priority, last_id=last_id)
        where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        query = sql.SQL(
            "SELECT * FROM (SELECT {columns}, {priority} AS priority"
            " FROM {schema}.alerts a {where}) ranked {outer}"
            " ORDER BY priority DESC, id DESC LIMIT %(limit)s"
        ).format(
            columns=sql.SQL(_COLUMNS),
            priority=sql.SQL(_PRIORITY),
            schema=self.schema,
            where=where,
            outer=outer,
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        items = [_row(r) for r in rows[: params["limit"] - 1]]
        has_next = len(rows) >= params["limit"]
        end = encode_cursor(now, items[-1].priority, items[-1].id) if items else None
        return AlertPage(items=items, has_next_page=has_next, end_cursor=end, ranked_at=now)

    async def by_id(self, id_: UUID, now: datetime) -> AlertRow | None:
        """One alert with its priority at ``now``, or None."""
        query = sql.SQL(
            "SELECT {columns}, {priority} AS priority FROM {schema}.alerts a WHERE id = %(id)s"
        ).format(columns=sql.SQL(_COLUMNS), priority=sql.SQL(_PRIORITY), schema=self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, {"id": id_, "now": now})
            row = await cur.fetchone()
        return _row(row) if row else None

    async def wait_for_alert(self, id_: UUID, seconds: float) -> AlertRow | None:
        """The alert once the projection wrote it; None after ``seconds``."""
        return await poll_until(
            lambda: self.by_id(id_, datetime.now(UTC)), lambda r: r is not None, seconds
        )

    async def wait_for_version(self, id_: UUID, version: int, seconds: float) -> AlertRow | None:
        """The alert once the projection applied ``version``; None after ``seconds``."""
        row = await poll_until(
            lambda: self.by_id(id_, datetime.now(UTC)),
            lambda r: r is not None and r.version >= version,
            seconds,
        )
        return row if row is not None and row.version >= version else None

    async def open_causes(self, prefix: str) -> dict[str, UUID | None]:
        """Dedup keys starting with ``prefix`` that have an unresolved alert, with its meter."""
        query = sql.SQL(
            "SELECT dedup_key, meter_id FROM {}.alerts WHERE status <> 'RESOLVED'"
            " AND dedup_key LIKE %s"
        ).format(self.schema)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (prefix.replace("%", r"\%") + "%",))).fetchall()
        return {key: meter for key, meter in rows}

    async def unresolved(self, region: str | None, now: datetime, limit: int) -> list[AlertRow]:
        """Open and acknowledged alerts (of ``region`` if given), at most ``limit``, by the
        legacy priority (the insights re-rank them with more factors)."""
        query = sql.SQL(
            "SELECT {columns}, {priority} AS priority FROM {schema}.alerts a"
            " WHERE status <> 'RESOLVED'"
            " AND (%(region)s::text IS NULL OR upper(region) = upper(%(region)s))"
            " ORDER BY priority DESC, id DESC LIMIT %(limit)s"
        ).format(columns=sql.SQL(_COLUMNS), priority=sql.SQL(_PRIORITY), schema=self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, {"region": region, "now": now, "limit": limit})
            return [_row(r) for r in await cur.fetchall()]


def _row(record: dict[str, Any]) -> AlertRow:
    return msgspec.convert(record, AlertRow, strict=False)
