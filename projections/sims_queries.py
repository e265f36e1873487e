"""Read-side queries over the SIM cards read model (async, index-backed, cursor-paged)."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.sim_rules import SimStatus
from projections.projection_position import ProjectionPosition
from projections.sims_projection import SimsProjection

MAX_PAGE = 500


class SimRow(msgspec.Struct, frozen=True, kw_only=True):
    """One SIM card as the read model shows it."""

    iccid: str
    sim_number: str | None
    imsi: str | None
    msisdn: str | None
    provider: str
    status: SimStatus
    ip_address: str | None
    apn: str | None
    data_limit_mb: int | None
    activation_date: date | None
    meter_serial: str | None
    added_at: datetime
    updated_at: datetime
    version: int


class SimFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which cards a list query returns (all given conditions must hold)."""

    provider: str | None = None
    status: SimStatus | None = None
    installed: bool | None = None
    """True: only cards in a meter; False: only cards in no meter."""


class SimPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of cards ordered by ICCID, with the cursor to continue from."""

    items: list[SimRow]
    has_next_page: bool
    end_cursor: str | None


class SimCount(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """How many cards one provider has in one status."""

    provider: str
    status: SimStatus
    count: int


class InvalidSimCursor(ValueError):
    """The ``after`` cursor was not produced by this API."""


def encode_cursor(iccid: str) -> str:
    """Opaque cursor for the position after ``iccid``."""
    return base64.urlsafe_b64encode(b"s:" + iccid.encode()).decode()


def decode_cursor(cursor: str) -> str:
    """ICCID behind an opaque cursor; ``InvalidSimCursor`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (ValueError, UnicodeEncodeError):
        raise InvalidSimCursor("after: not a cursor returned by this API") from None
    if not raw.startswith(b"s:"):
        raise InvalidSimCursor("after: not a cursor returned by this API")
    return raw[2:].decode(errors="replace")


_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in SimRow.__struct_fields__)


class SimQueries(ProjectionPosition):
    """Queries the SIM cards read model in ``schema`` through an async pool."""

    application_name = "sims"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier(f"{SimsProjection.name}_tracking")

    async def by_iccid(self, iccid: str) -> SimRow | None:
        """The card with this ICCID, or None."""
        rows = await self._select(sql.SQL("iccid = %s"), [iccid], 1)
        return rows[0] if rows else None

    async def by_meter(self, serial: str) -> SimRow | None:
        """The card installed in the meter with this serial (case-insensitive), or None."""
        rows = await self._select(sql.SQL("upper(meter_serial) = upper(%s)"), [serial], 1)
        return rows[0] if rows else None

    async def page(self, filter_: SimFilter, first: int, after: str | None) -> SimPage:
        """Up to ``first`` cards matching ``filter_``, after the cursor, ordered by ICCID."""
        first = max(1, min(first, MAX_PAGE))
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if filter_.provider is not None:
            conditions.append(sql.SQL("provider = %s"))
            params.append(filter_.provider)
        if filter_.status is not None:
            conditions.append(sql.SQL("status = %s"))
            params.append(filter_.status.value)
        if filter_.installed is not None:
            null = "IS NOT NULL" if filter_.installed else "IS NULL"
            conditions.append(sql.SQL(f"meter_serial {null}"))
        if after is not None:
            conditions.append(sql.SQL("iccid > %s"))
            params.append(decode_cursor(after))
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        rows = await self._select(where, params, first + 1)
        items = rows[:first]
        return SimPage(
            items=items,
            has_next_page=len(rows) > first,
            end_cursor=encode_cursor(items[-1].iccid) if items else None,
        )

    async def counts(self) -> list[SimCount]:
        """How many cards each provider has in each status, by provider then status."""
        query = sql.SQL(
            "SELECT provider, status, count(*) AS count FROM {}.sim_cards "
            "GROUP BY provider, status ORDER BY provider, status"
        ).format(self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query)
            rows = await cur.fetchall()
        return [msgspec.convert(r, SimCount, strict=False, from_attributes=False) for r in rows]

    async def _select(self, where: sql.Composable, params: list[Any], limit: int) -> list[SimRow]:
        query = sql.SQL("SELECT {} FROM {}.sim_cards WHERE {} ORDER BY iccid LIMIT %s").format(
            _COLUMNS, self.schema, where
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, limit])
            rows = await cur.fetchall()
        return [msgspec.convert(r, SimRow, strict=False) for r in rows]
