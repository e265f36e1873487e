"""The SIM cards read model: rows and tracking record written in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

from domain.sim_rules import SimSpec

SIM_COLUMNS = frozenset(
    {"provider", "status", "ip_address", "apn", "data_limit_mb", "activation_date", "meter_serial"}
)
"""The columns an event after the first may change."""


class SimsView(PostgresTrackingRecorder):
    """Materialised view of SIM cards, exactly-once per event thanks to in-transaction tracking."""

    def _apply(self, tracking: Tracking, statement: str, params: dict[str, Any]) -> None:
        text = sql.SQL(statement).format(schema=sql.Identifier(self.datastore.schema))  # type: ignore[arg-type]
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(text, params, prepare=True)
            self._insert_tracking(curs, tracking)

    def added(
        self, id_: UUID, version: int, at: datetime, spec: SimSpec, tracking: Tracking
    ) -> None:
        """Insert the row of a card entering the stock."""
        self._apply(
            tracking,
            """
            INSERT INTO {schema}.sim_cards (
                id, iccid, sim_number, imsi, msisdn, provider, status, ip_address, apn,
                data_limit_mb, activation_date, added_at, updated_at, version)
            VALUES (%(id)s, %(iccid)s, %(sim_number)s, %(imsi)s, %(msisdn)s, %(provider)s,
                'IN_STOCK', %(ip_address)s, %(apn)s, %(data_limit_mb)s, %(activation_date)s,
                %(at)s, %(at)s, %(version)s)
            """,
            {
                "id": id_,
                "iccid": spec.iccid,
                "sim_number": spec.sim_number,
                "imsi": spec.imsi,
                "msisdn": spec.msisdn,
                "provider": spec.provider,
                "ip_address": spec.ip_address,
                "apn": spec.apn,
                "data_limit_mb": spec.data_limit_mb,
                "activation_date": spec.activation_date,
                "at": at,
                "version": version,
            },
        )

    def changed(
        self, id_: UUID, version: int, at: datetime, tracking: Tracking, **columns: Any
    ) -> None:
        """Update some columns of a card's row."""
        unknown = set(columns) - SIM_COLUMNS
        if unknown:
            raise ValueError(f"not columns of sim_cards: {sorted(unknown)}")
        assignments = "".join(f"{name} = %({name})s, " for name in columns)
        self._apply(
            tracking,
            "UPDATE {schema}.sim_cards SET "
            + assignments
            + "updated_at = %(at)s, version = %(version)s WHERE id = %(id)s",
            {**columns, "id": id_, "version": version, "at": at},
        )
