"""The meters read model: rows and tracking record written in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

from domain.meta import EventMeta
from domain.values import ConnectionProfile, Location, MeterSpec

_json = msgspec.json.Encoder()


class MetersView(PostgresTrackingRecorder):
    """Materialised view of meters, exactly-once per event thanks to in-transaction tracking."""

    def _statement(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self.datastore.schema))

    def _apply(self, tracking: Tracking, statement: str, params: dict[str, Any]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._statement(statement), params, prepare=True)
            self._insert_tracking(curs, tracking)

    def registered(
        self, id_: Any, version: int, at: datetime, spec: MeterSpec, tracking: Tracking
    ) -> None:
        """Insert the row of a newly registered meter."""
        self._apply(
            tracking,
            """
            INSERT INTO {schema}.meters (
                id, serial, manufacturer, model, firmware, meter_type, phases, region, area,
                status, connection, concentrator_id, sim_card, registered_at, updated_at,
                version, events_applied)
            VALUES (%(id)s, %(serial)s, %(manufacturer)s, %(model)s, %(firmware)s,
                %(meter_type)s, %(phases)s, %(region)s, %(area)s, 'REGISTERED',
                %(connection)s::jsonb, %(concentrator_id)s, %(sim_card)s, %(at)s, %(at)s,
                %(version)s, 1)
            """,
            {
                "id": id_,
                "serial": spec.serial,
                "manufacturer": spec.manufacturer,
                "model": spec.model,
                "firmware": spec.firmware,
                "meter_type": spec.meter_type,
                "phases": spec.phases,
                "region": spec.region,
                "area": spec.area,
                "connection": _json.encode(spec.connection).decode(),
                "concentrator_id": spec.concentrator_id,
                "sim_card": spec.sim_card,
                "at": at,
                "version": version,
            },
        )

    def changed(
        self, id_: Any, version: int, at: datetime, tracking: Tracking, **columns: Any
    ) -> None:
        """Update some columns of a meter's row and count the applied event."""
        assignments = ", ".join(
            f"{name} = %({name})s" + ("::jsonb" if name in ("connection", "location") else "")
            for name in columns
        )
        params = {k: _encode(v) for k, v in columns.items()}
        params.update(id=id_, version=version, at=at)
        self._apply(
            tracking,
            "UPDATE {schema}.meters SET "
            + assignments
            + (", " if assignments else "")
            + "updated_at = %(at)s, version = %(version)s, "
            "events_applied = events_applied + 1 WHERE id = %(id)s",
            params,
        )


def _encode(value: Any) -> Any:
    if isinstance(value, (ConnectionProfile, Location, EventMeta)):
        return _json.encode(value).decode()
    return value
