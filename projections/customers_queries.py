"""Read-side queries over the customers read model; personal data opened with the data keys."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from domain.customer import CustomerStatus, CustomerType
from domain.personal_data import ERASED_DATA, open_sealed, unwrap_key
from projections.customers_projection import CustomersProjection
from projections.meters_queries import InvalidCursor
from projections.projection_position import ProjectionPosition

MAX_PAGE = 500


class CustomerRow(msgspec.Struct, frozen=True, kw_only=True):
    """One customer as the read model shows it, personal data opened (or shown erased)."""

    id: UUID
    account: str
    name: str
    address: str
    phone: str | None
    email: str | None
    area: str
    customer_type: CustomerType
    tariff_plan: str
    connection_date: date | None
    status: CustomerStatus
    erased: bool
    meters: list[str]
    """Serial numbers of the meters assigned to this account."""
    created_at: datetime
    updated_at: datetime


class CustomerFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which customers a list query returns (all given conditions must hold)."""

    area: str | None = None
    status: CustomerStatus | None = None
    customer_type: CustomerType | None = None
    account: str | None = None
    """Only this account (a customer caller is narrowed to their own)."""


class CustomerPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of customers ordered by account, with the cursor to continue from."""

    items: list[CustomerRow]
    has_next_page: bool
    end_cursor: str | None


class AreaCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many customers an area has, by status."""

    area: str
    customers: int
    active: int


def encode_cursor(account: str) -> str:
    """Opaque cursor for the position after ``account``."""
    return base64.urlsafe_b64encode(b"c:" + account.encode()).decode()


def decode_cursor(cursor: str) -> str:
    """Account behind an opaque cursor; ``InvalidCursor`` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (ValueError, UnicodeEncodeError):
        raise InvalidCursor("after: not a cursor returned by this API") from None
    if not raw.startswith(b"c:"):
        raise InvalidCursor("after: not a cursor returned by this API")
    return raw[2:].decode(errors="replace")


_SELECT = """
    SELECT c.*, k.sealed_key,
        COALESCE((SELECT array_agg(m.serial ORDER BY m.serial) FROM {schema}.meters m
                  WHERE m.customer_account = c.account AND m.status <> 'DECOMMISSIONED'),
                 '{{}}') AS meters
    FROM {schema}.customers c LEFT JOIN {schema}.customer_keys k ON k.customer_id = c.id
"""


class CustomerQueries(ProjectionPosition):
    """Queries the customers read model in ``schema`` through an async pool."""

    application_name = "customers"

    def __init__(self, pool: AsyncConnectionPool[Any], schema: str, master_key: bytes) -> None:
        self.pool = pool
        self.schema = sql.Identifier(schema)
        self.tracking = sql.Identifier(f"{CustomersProjection.name}_tracking")
        self._master = master_key

    async def by_account(self, account: str) -> CustomerRow | None:
        """The customer with this account number, or None."""
        rows = await self._select(sql.SQL("WHERE c.account = %s"), [account])
        return rows[0] if rows else None

    async def for_meter(self, serial: str) -> CustomerRow | None:
        """The customer the meter with this serial is assigned to, or None."""
        rows = await self._select(
            sql.SQL(
                "WHERE c.account = (SELECT customer_account FROM {schema}.meters "
                "WHERE upper(serial) = upper(%s))"
            ).format(schema=self.schema),
            [serial],
        )
        return rows[0] if rows else None

    async def page(self, filter_: CustomerFilter, first: int, after: str | None) -> CustomerPage:
        """Up to ``first`` customers matching ``filter_``, after the cursor, by account."""
        first = max(1, min(first, MAX_PAGE))
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        for column, value in (
            ("area", filter_.area),
            ("status", filter_.status),
            ("customer_type", filter_.customer_type),
            ("account", filter_.account),
        ):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier("c", column)))
                params.append(str(value))
        if after is not None:
            conditions.append(sql.SQL("c.account > %s"))
            params.append(decode_cursor(after))
        where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        rows = await self._select(
            where + sql.SQL(" ORDER BY c.account LIMIT %s"), [*params, first + 1]
        )
        items = rows[:first]
        return CustomerPage(
            items=items,
            has_next_page=len(rows) > first,
            end_cursor=encode_cursor(items[-1].account) if items else None,
        )

    async def counts_per_area(self) -> list[AreaCount]:
        """Customers per area (all, and active ones), by area name."""
        query = sql.SQL(
            "SELECT area, count(*) AS customers, count(*) FILTER (WHERE status = 'active') "
            "AS active FROM {}.customers GROUP BY area ORDER BY area"
        ).format(self.schema)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = await (await cur.execute(query)).fetchall()
        return [AreaCount(**row) for row in rows]

    async def _select(self, tail: sql.Composable, params: list[Any]) -> list[CustomerRow]:
        query = sql.SQL(_SELECT).format(schema=self.schema) + sql.SQL(" ") + tail
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = await (await cur.execute(query, params)).fetchall()
        return [self._row(row) for row in rows]

    def _row(self, row: dict[str, Any]) -> CustomerRow:
        personal = ERASED_DATA
        if row["sealed"] is not None and row["sealed_key"] is not None and not row["erased"]:
            # a key that does not open is a wrong master key or tampering: raised, not hidden
            key = unwrap_key(self._master, row["account"], bytes(row["sealed_key"]))
            personal = open_sealed(key, row["account"], row["sealed"])
        return CustomerRow(
            id=row["id"],
            account=row["account"],
            name=personal.name,
            address=personal.address,
            phone=personal.phone,
            email=personal.email,
            area=row["area"],
            customer_type=CustomerType(row["customer_type"]),
            tariff_plan=row["tariff_plan"],
            connection_date=row["connection_date"],
            status=CustomerStatus(row["status"]),
            erased=row["erased"],
            meters=list(row["meters"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
