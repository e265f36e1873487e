"""The tariffs read model: rows, price history and tracking record written in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

_json = msgspec.json.Encoder()

Statement = tuple[str, dict[str, Any]]

_HISTORY = """
    INSERT INTO {schema}.tariff_prices (region, at, price, kind, load_pct, position)
    SELECT region, %(at)s, {price}, %(kind)s, %(load_pct)s, %(position)s
    FROM {schema}.tariffs WHERE id = %(id)s
"""


class TariffsView(PostgresTrackingRecorder):
    """Materialised view of tariffs, exactly-once per event thanks to in-transaction tracking."""

    def _statement(self, text: str, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self.datastore.schema), **parts)

    def _apply(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for text, params in statements:
                price = sql.SQL("%(price)s" if "price" in params else "load_price")
                curs.execute(self._statement(text, price=price), params, prepare=True)
            self._insert_tracking(curs, tracking)

    def created(
        self,
        id_: UUID,
        version: int,
        at: datetime,
        columns: dict[str, Any],
        tracking: Tracking,
    ) -> None:
        """Insert the row of a region's new tariff and its first price."""
        params = {k: _encode(v) for k, v in columns.items()}
        params.update(id=id_, version=version, at=at)
        self._apply(
            tracking,
            [
                (
                    """
                    INSERT INTO {schema}.tariffs (
                        id, region, currency, base_price, tiers, tou, timezone, min_change_pct,
                        load_price, override, version, updated_at)
                    VALUES (%(id)s, %(region)s, %(currency)s, %(base_price)s, %(tiers)s::jsonb,
                        %(tou)s::jsonb, %(timezone)s, %(min_change_pct)s, %(load_price)s, NULL,
                        %(version)s, %(at)s)
                    """,
                    params,
                ),
                history(id_, at, "base", tracking, None),
            ],
        )

    def changed(
        self,
        id_: UUID,
        version: int,
        at: datetime,
        tracking: Tracking,
        history: Statement | None,
        **columns: Any,
    ) -> None:
        """Update some columns of a tariff's row and, when given, add a price to its history."""
        assignments = ", ".join(
            f"{name} = %({name})s" + ("::jsonb" if name in _JSONB else "") for name in columns
        )
        params = {k: _encode(v) for k, v in columns.items()}
        params.update(id=id_, version=version, at=at)
        statements: list[Statement] = [
            (
                "UPDATE {schema}.tariffs SET "
                + assignments
                + (", " if assignments else "")
                + "updated_at = %(at)s, version = %(version)s WHERE id = %(id)s",
                params,
            )
        ]
        if history is not None:
            statements.append(history)
        self._apply(tracking, statements)

    def capacity_set(
        self, region: str, capacity_w: float, at: datetime, tracking: Tracking
    ) -> None:
        """Upsert a region's capacity (W) in ``region_capacity``."""
        params = {"region": region, "capacity_w": capacity_w, "at": at}
        self._apply(tracking, [(_CAPACITY, params)])


# A row set before capacities were events (raw SQL) is superseded by the region's first event.
_CAPACITY = """
    INSERT INTO {schema}.region_capacity (region, capacity_w, updated_at)
    VALUES (%(region)s, %(capacity_w)s, %(at)s)
    ON CONFLICT (region) DO UPDATE
    SET capacity_w = EXCLUDED.capacity_w, updated_at = EXCLUDED.updated_at
"""

_JSONB = frozenset({"tiers", "tou", "override"})


def history(
    id_: UUID,
    at: datetime,
    kind: str,
    tracking: Tracking,
    price: Decimal | None,
    load_pct: float | None = None,
) -> Statement:
    """A price-history row for the tariff ``id_``; ``price`` None means its current load price."""
    params: dict[str, Any] = {
        "id": id_,
        "at": at,
        "kind": kind,
        "load_pct": load_pct,
        "position": tracking.notification_id,
    }
    if price is not None:
        params["price"] = price
    return _HISTORY, params


def _encode(value: Any) -> Any:
    if isinstance(value, (tuple, dict)):
        return _json.encode(value).decode()
    return value
