"""The alerts read model: one row per alert, written with its tracking record in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

from domain.alert import AlertSpec

_json = msgspec.json.Encoder()

_RAISED = """
INSERT INTO {schema}.alerts (
    id, dedup_key, generation, alert_type, severity, severity_weight, region, meter_id, message,
    evidence, status, raised_at, last_seen, occurrences, customers_affected, version, position,
    updated_at)
VALUES (
    %(id)s, %(dedup_key)s, %(generation)s, %(alert_type)s, %(severity)s, %(weight)s, %(region)s,
    %(meter)s, %(message)s, %(evidence)s::jsonb, 'OPEN', %(at)s, %(at)s, 1,
    CASE WHEN %(meter)s::uuid IS NULL THEN
        (SELECT count(*) FROM {schema}.meters
         WHERE upper(region) = upper(%(region)s) AND customer_account IS NOT NULL
           AND status <> 'DECOMMISSIONED')
    ELSE
        (SELECT count(*) FROM {schema}.meters
         WHERE id = %(meter)s AND customer_account IS NOT NULL)
    END,
    %(version)s, %(position)s, %(at)s)
"""


class AlertsView(PostgresTrackingRecorder):
    """Materialised alerts, exactly-once per event thanks to in-transaction tracking."""

    def _run(self, tracking: Tracking, text: str, params: dict[str, Any]) -> None:
        statement = sql.SQL(text).format(schema=sql.Identifier(self.datastore.schema))
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(statement, params, prepare=True)
            self._insert_tracking(curs, tracking)

    def raised(
        self,
        id_: UUID,
        spec: AlertSpec,
        generation: int,
        at: datetime,
        tracking: Tracking,
    ) -> None:
        """Insert a newly raised alert, counting the customers it affects."""
        self._run(
            tracking,
            _RAISED,
            {
                "id": id_,
                "dedup_key": spec.dedup_key,
                "generation": generation,
                "alert_type": spec.alert_type.value,
                "severity": spec.severity.value,
                "weight": spec.severity.weight,
                "region": spec.region,
                "meter": spec.meter,
                "message": spec.message,
                "evidence": _json.encode(spec.evidence).decode(),
                "at": at,
                "version": 1,
                "position": tracking.notification_id,
            },
        )

    def changed(
        self, id_: UUID, version: int, at: datetime, tracking: Tracking, **cols: Any
    ) -> None:
        """Update some columns of an alert's row."""
        sets = ", ".join(
            f"{name} = %({name})s" + ("::jsonb" if name == "evidence" else "") for name in cols
        )
        params = {k: _json.encode(v).decode() if k == "evidence" else v for k, v in cols.items()}
        params.update(id=id_, version=version, at=at, position=tracking.notification_id)
        self._run(
            tracking,
            "UPDATE {schema}.alerts SET "
            + sets
            + (", " if sets else "")
            + "version = %(version)s, position = %(position)s, updated_at = %(at)s "
            "WHERE id = %(id)s",
            params,
        )
