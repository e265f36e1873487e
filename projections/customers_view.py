"""The customers read model: one row per customer (personal data sealed, null once erased)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

from domain.customer import CustomerProfile


class CustomersView(PostgresTrackingRecorder):
    """Materialised view of customers, exactly-once per event thanks to in-transaction tracking."""

    def _apply(self, tracking: Tracking, statement: str, params: dict[str, Any]) -> None:
        query = sql.SQL(statement).format(schema=sql.Identifier(self.datastore.schema))  # type: ignore[arg-type]
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(query, params, prepare=True)
            self._insert_tracking(curs, tracking)

    def created(
        self,
        id_: UUID,
        version: int,
        at: datetime,
        account: str,
        sealed: str,
        profile: CustomerProfile,
        tracking: Tracking,
    ) -> None:
        """Insert the row of a newly opened customer account."""
        self._apply(
            tracking,
            """
            INSERT INTO {schema}.customers (id, account, sealed, area, customer_type,
                tariff_plan, connection_date, status, created_at, updated_at, version)
            VALUES (%(id)s, %(account)s, %(sealed)s, %(area)s, %(customer_type)s,
                %(tariff_plan)s, %(connection_date)s, 'active', %(at)s, %(at)s, %(version)s)
            """,
            {
                "id": id_,
                "account": account,
                "sealed": sealed,
                "area": profile.area,
                "customer_type": str(profile.customer_type),
                "tariff_plan": profile.tariff_plan,
                "connection_date": profile.connection_date,
                "at": at,
                "version": version,
            },
        )

    def changed(
        self, id_: UUID, version: int, at: datetime, tracking: Tracking, **columns: Any
    ) -> None:
        """Update some columns of a customer's row."""
        assignments = "".join(f"{name} = %({name})s, " for name in columns)
        params = {
            k: (str(v) if k in ("status", "customer_type") else v) for k, v in columns.items()
        }
        params.update(id=id_, version=version, at=at)
        self._apply(
            tracking,
            "UPDATE {schema}.customers SET "
            + assignments
            + "updated_at = %(at)s, version = %(version)s WHERE id = %(id)s",
            params,
        )
