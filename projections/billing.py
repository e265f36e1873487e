"""Billing determinants: a meter's energy per tariff price in force, with the price's provenance."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from projections.intervals import IntervalQueries, IntervalValue
from projections.reading_queries import Interval


class Determinant(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Energy consumed while one price was in force (``price`` None: no tariff price yet)."""

    start: datetime
    end: datetime
    energy_wh: float
    intervals: int
    price_per_kwh: str | None
    currency: str | None
    amount: str | None
    """energy (kWh) times price, rounded to 0.0001 of the currency."""
    price_kind: str | None
    price_since: datetime | None
    price_position: int | None
    """Event-store position of the tariff event that set this price (provenance)."""


class BillingDeterminants(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter's determinants for a period, from its 15-minute interval consumption."""

    meter_id: UUID
    serial: str
    region: str
    start: datetime
    end: datetime
    determinants: list[Determinant]
    missing_intervals: int
    """Windows without readings: their energy is in no determinant."""


class _Price(msgspec.Struct, frozen=True):
    at: datetime
    price: Decimal
    kind: str
    position: int


def price_at(prices: list[_Price], at: datetime) -> _Price | None:
    """The last price set at or before ``at`` (prices ordered by time, then position)."""
    found = None
    for p in prices:
        if p.at > at:
            break
        found = p
    return found


def determinants(
    windows: list[IntervalValue], prices: list[_Price], currency: str | None
) -> tuple[list[Determinant], int]:
    """Group consecutive priced windows by the price in force at each window's start."""
    out: list[Determinant] = []
    missing = 0
    current: tuple[_Price | None, list[IntervalValue]] | None = None

    def close() -> None:
        if current is None or not current[1]:
            return
        price, group = current
        energy = sum(w.consumption_wh or 0.0 for w in group)
        amount = (
            (Decimal(str(energy)) / 1000 * price.price).quantize(Decimal("0.0001"))
            if price is not None
            else None
        )
        out.append(
            Determinant(
                start=group[0].start,
                end=group[-1].end,
                energy_wh=round(energy, 3),
                intervals=len(group),
                price_per_kwh=str(price.price) if price else None,
                currency=currency if price else None,
                amount=str(amount) if amount is not None else None,
                price_kind=price.kind if price else None,
                price_since=price.at if price else None,
                price_position=price.position if price else None,
            )
        )

    for w in windows:
        if w.consumption_wh is None:
            missing += 1
            continue
        price = price_at(prices, w.start)
        if current is None or current[0] != price:
            close()
            current = (price, [])
        current[1].append(w)
    close()
    return out, missing


class BillingQueries:
    """Determinants from interval consumption and the tariffs read model's price history."""

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.intervals = IntervalQueries(pool, schema)

    async def for_meter(
        self, meter_id: UUID, serial: str, region: str, start: datetime, end: datetime
    ) -> BillingDeterminants:
        """The meter's energy per price in force in ``[start, end)``."""
        data = await self.intervals.for_meter(meter_id, serial, Interval.M15, start, end)
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL(
                    "SELECT at, price, kind, position FROM {}.tariff_prices "
                    "WHERE upper(region) = upper(%s) AND at < %s ORDER BY at, position"
                ).format(self.schema),
                (region, end),
            )
            prices = [msgspec.convert(r, _Price) for r in await cur.fetchall()]
            await cur.execute(
                sql.SQL("SELECT currency FROM {}.tariffs WHERE upper(region) = upper(%s)").format(
                    self.schema
                ),
                (region,),
            )
            row = await cur.fetchone()
        groups, missing = determinants(data.intervals, prices, row["currency"] if row else None)
        return BillingDeterminants(
            meter_id=meter_id,
            serial=serial,
            region=region,
            start=data.start,
            end=end,
            determinants=groups,
            missing_intervals=missing,
        )
