"""Read-side queries over the tariffs read model and its price history."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.pricing import LoadTier, Override, TimeOfUsePeriod, effective_price
from projections.projection_position import ProjectionPosition, poll_until
from projections.tariffs_projection import TariffsProjection

MAX_HISTORY = 10_000
"""Prices one history query returns at most (a price per 15-minute window is ~35k a year)."""

PriceKind = Literal["load", "override", "base", "tiers", "override-cleared", "override-expired"]


class TariffRow(msgspec.Struct, frozen=True, kw_only=True):
    """One region's tariff as the read model shows it."""

    region: str
    currency: str
    base_price: Decimal
    tiers: tuple[LoadTier, ...]
    tou: tuple[TimeOfUsePeriod, ...]
    timezone: str
    min_change_pct: Decimal
    load_price: Decimal
    load_pct: float | None
    load_bucket: datetime | None
    override: Override | None
    version: int
    updated_at: datetime

    def effective_price(self, now: datetime) -> Decimal:
        """The price in force at ``now``: an active override, else the load-based price."""
        return effective_price(self.load_price, self.override, now)


class TariffPriceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded price of a region, with the event-store position it came from."""

    region: str
    at: datetime
    price: Decimal
    kind: PriceKind
    load_pct: float | None
    position: int


_COLUMNS = sql.SQL(
    "region, currency, base_price, tiers, tou, timezone, min_change_pct, load_price, load_pct, "
    "load_bucket, override, version, updated_at"
)


class TariffQueries(ProjectionPosition):
    """Queries the tariffs read model in ``schema`` through an async pool."""

    application_name = "tariffs"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier(f"{TariffsProjection.name}_tracking")

    async def all(self) -> list[TariffRow]:
        """Every region's tariff, ordered by region."""
        query = sql.SQL("SELECT {} FROM {}.tariffs ORDER BY region").format(_COLUMNS, self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query)
            rows = await cur.fetchall()
        return [_row(r) for r in rows]

    async def by_region(self, region: str) -> TariffRow | None:
        """The tariff of this region (case-insensitive), or None."""
        query = sql.SQL("SELECT {} FROM {}.tariffs WHERE upper(region) = upper(%s)").format(
            _COLUMNS, self.schema
        )
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (region.strip(),))
            row = await cur.fetchone()
        return _row(row) if row else None

    async def by_id(self, id_: UUID) -> TariffRow | None:
        """The tariff with this aggregate id, or None."""
        query = sql.SQL("SELECT {} FROM {}.tariffs WHERE id = %s").format(_COLUMNS, self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (id_,))
            row = await cur.fetchone()
        return _row(row) if row else None

    async def wait_for_version(self, id_: UUID, version: int, seconds: float) -> TariffRow | None:
        """The tariff's row once the projection applied ``version``; None after ``seconds``."""
        row = await poll_until(
            lambda: self.by_id(id_), lambda r: r is not None and r.version >= version, seconds
        )
        return row if row is not None and row.version >= version else None

    async def history(self, region: str, start: datetime, end: datetime) -> list[TariffPriceRow]:
        """Prices the region recorded in ``[start, end)``, oldest first (at most MAX_HISTORY)."""
        query = sql.SQL(
            "SELECT region, at, price, kind, load_pct, position FROM {}.tariff_prices "
            "WHERE upper(region) = upper(%s) AND at >= %s AND at < %s ORDER BY at, position"
            " LIMIT %s"
        ).format(self.schema)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (region.strip(), start, end, MAX_HISTORY))
            rows = await cur.fetchall()
        return [msgspec.convert(r, TariffPriceRow, strict=False) for r in rows]


def _row(record: dict[str, Any]) -> TariffRow:
    return msgspec.convert(record, TariffRow, strict=False)
