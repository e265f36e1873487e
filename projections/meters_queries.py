"""Read-side queries over the meters read model (async, index-backed, cursor-paged)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.meter_view import STATE_FIELDS, MeterState
from domain.values import MeterStatus
from projections.meters_projection import MetersProjection
from projections.projection_position import ProjectionPosition

MAX_PAGE = 500
ONLINE_WINDOW = timedelta(minutes=15)


class MeterRow(MeterState, frozen=True, kw_only=True):
    """One meter as the read model shows it: its state (``domain.meter_view``) and last reading."""

    last_seen: datetime | None = None
    """Newest reading's timestamp (None until the meter reports)."""

    def online(self, now: datetime) -> bool:
        """True when the meter reported within the reporting window."""
        return self.last_seen is not None and now - self.last_seen <= ONLINE_WINDOW


class MeterFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which meters a list query returns (all given conditions must hold)."""

    region: str | None = None
    area: str | None = None
    status: MeterStatus | None = None
    customer_account: str | None = None
    serial_prefix: str | None = None
    """Serials starting with this text, regardless of case."""


class MeterPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of meters ordered by serial, with the cursor to continue from."""

    items: list[MeterRow]
    has_next_page: bool
    end_cursor: str | None


class InvalidCursor(ValueError):
    """The ``after`` cursor was not produced by this API."""


def encode_cursor(serial: str) -> str:
    """Opaque cursor for the position after ``serial``."""
    return base64.urlsafe_b64encode(b"m:" + serial.encode()).decode()


def decode_cursor(cursor: str) -> str:
    """Serial behind an opaque cursor; raises ``InvalidCursor`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (ValueError, UnicodeEncodeError):
        raise InvalidCursor("after: not a cursor returned by this API") from None
    if not raw.startswith(b"m:"):
        raise InvalidCursor("after: not a cursor returned by this API")
    return raw[2:].decode(errors="replace")


_COLUMNS = sql.SQL(", ").join(
    [*(sql.Identifier("m", name) for name in STATE_FIELDS), sql.Identifier("s", "last_seen")]
)
"""A meter's state (the read model's columns are named as its fields) and its last reading."""
# meter_status is written by the reading workers; a meter that never reported has no row.
_FROM = "{schema}.meters m LEFT JOIN {schema}.meter_status s ON s.meter_id = m.id"


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with ``text`` (wildcards taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class MeterQueries(ProjectionPosition):
    """Queries the meters read model in ``schema`` through an async pool."""

    application_name = "meters"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier(f"{MetersProjection.name}_tracking")

    async def by_id(self, id_: UUID) -> MeterRow | None:
        """The meter with this id, or None."""
        return await self._one(sql.SQL("m.id = %s"), id_)

    async def by_serial(self, serial: str) -> MeterRow | None:
        """The meter with this serial number (case-insensitive), or None."""
        return await self._one(sql.SQL("upper(m.serial) = upper(%s)"), serial)

    async def page(self, filter_: MeterFilter, first: int, after: str | None) -> MeterPage:
        """Up to ``first`` meters matching ``filter_``, after the cursor, ordered by serial."""
        first = max(1, min(first, MAX_PAGE))
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        for column in ("region", "area", "status", "customer_account"):
            value = getattr(filter_, column)
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier("m", column)))
                params.append(str(value))
        if filter_.serial_prefix:
            conditions.append(sql.SQL("upper(m.serial) LIKE %s ESCAPE '\\'"))
            params.append(_like_prefix(filter_.serial_prefix.upper()))
        if after is not None:
            conditions.append(sql.SQL("m.serial > %s"))
            params.append(decode_cursor(after))
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY m.serial LIMIT %s").format(
            _COLUMNS, sql.SQL(_FROM).format(schema=self.schema), where
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, first + 1])
            rows = await cur.fetchall()
        items = [_row(r) for r in rows[:first]]
        return MeterPage(
            items=items,
            has_next_page=len(rows) > first,
            end_cursor=encode_cursor(items[-1].serial) if items else None,
        )

    async def recorded_position(self) -> int:
        """Notification id of the last event recorded in the meters event store (0 if none)."""
        query = sql.SQL("SELECT max(notification_id) FROM {}.meters_events").format(self.schema)
        async with self.pool.connection() as conn:
            row = await (await conn.execute(query)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def _one(self, condition: sql.Composable, value: Any) -> MeterRow | None:
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            _COLUMNS, sql.SQL(_FROM).format(schema=self.schema), condition
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (value,))
            row = await cur.fetchone()
        return _row(row) if row else None


def _row(record: dict[str, Any]) -> MeterRow:
    return msgspec.convert(record, MeterRow, strict=False)
