"""Read models of fleet operations: firmware images, TOU plans, campaigns and their meters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

Statement = tuple[str, dict[str, Any]]


class FleetView(PostgresTrackingRecorder):
    """Rows and tracking record of each event written in one transaction (exactly-once)."""

    def apply(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        """Run ``statements`` and record ``tracking`` atomically."""
        schema = sql.Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            for text, params in statements:
                curs.execute(sql.SQL(text).format(schema=schema), params)  # type: ignore[arg-type]
            self._insert_tracking(curs, tracking)


IMAGE_UPLOADED = """
    INSERT INTO {schema}.firmware_images (id, identifier, manufacturer, model, sha256, size,
        uploaded_by, uploaded_at, version)
    VALUES (%(id)s, %(identifier)s, %(manufacturer)s, %(model)s, %(sha256)s, %(size)s,
        %(actor)s, %(at)s, %(version)s)
    ON CONFLICT (id) DO NOTHING
"""

IMAGE_DELETED = """
    UPDATE {schema}.firmware_images SET deleted_at = %(at)s, version = %(version)s
    WHERE id = %(id)s
"""

PLAN_VERSION = """
    WITH plan AS (
        INSERT INTO {schema}.tou_plans (id, tariff_plan, latest_version, created_at, updated_at)
        VALUES (%(id)s, COALESCE(%(tariff_plan)s::text,
            (SELECT tariff_plan FROM {schema}.tou_plans WHERE id = %(id)s)),
            %(number)s, %(at)s, %(at)s)
        ON CONFLICT (id) DO UPDATE SET latest_version = EXCLUDED.latest_version,
            updated_at = EXCLUDED.updated_at
        RETURNING id
    )
    INSERT INTO {schema}.tou_plan_versions (plan_id, version, calendar, created_by, created_at)
    SELECT id, %(number)s, %(calendar)s::jsonb, %(actor)s, %(at)s FROM plan
    ON CONFLICT DO NOTHING
"""

CAMPAIGN_STARTED = """
    INSERT INTO {schema}.campaigns (id, name, kind, status, spec, started_by, started_at,
        updated_at, meters, pending, version)
    VALUES (%(id)s, %(name)s, %(kind)s, 'RUNNING', %(spec)s::jsonb, %(actor)s, %(at)s, %(at)s,
        %(meters)s, %(meters)s, %(version)s)
    ON CONFLICT (id) DO NOTHING
"""

COHORT = """
    INSERT INTO {schema}.campaign_meters (campaign_id, serial, meter_id, cell, state, reason,
        updated_at)
    SELECT %(id)s, m.serial, m.meter_id, m.cell, m.state, m.reason, %(at)s
    FROM jsonb_to_recordset(%(members)s::jsonb)
        AS m(serial text, meter_id uuid, cell text, state text, reason text)
    ON CONFLICT DO NOTHING
"""

CAMPAIGN_STATUS = """
    UPDATE {schema}.campaigns SET status = %(status)s, updated_at = %(at)s,
        finished_at = CASE WHEN %(status)s IN ('COMPLETED', 'CANCELLED') THEN %(at)s
            ELSE finished_at END,
        version = %(version)s
    WHERE id = %(id)s
"""

CANCEL_PENDING = """
    UPDATE {schema}.campaign_meters SET state = 'SKIPPED', reason = %(reason)s, updated_at = %(at)s
    WHERE campaign_id = %(id)s AND state = 'PENDING'
"""

METER_STATE = """
    UPDATE {schema}.campaign_meters SET state = %(state)s, reason = %(reason)s,
        attempts = COALESCE(%(attempt)s, attempts),
        command_id = COALESCE(%(command_id)s, command_id), updated_at = %(at)s
    WHERE campaign_id = %(id)s AND serial = %(serial)s
"""

COUNTS = """
    UPDATE {schema}.campaigns c SET
        pending = s.pending, running = s.running, awaiting = s.awaiting,
        succeeded = s.succeeded, failed = s.failed,
        skipped = s.skipped, attempts = s.attempts, updated_at = %(at)s, version = %(version)s
    FROM (
        SELECT count(*) FILTER (WHERE state = 'PENDING') AS pending,
            count(*) FILTER (WHERE state = 'RUNNING') AS running,
            count(*) FILTER (WHERE state = 'AWAITING_ACTIVATION') AS awaiting,
            count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
            count(*) FILTER (WHERE state = 'FAILED') AS failed,
            count(*) FILTER (WHERE state = 'SKIPPED') AS skipped,
            coalesce(sum(attempts), 0) AS attempts
        FROM {schema}.campaign_meters WHERE campaign_id = %(id)s
    ) s
    WHERE c.id = %(id)s
"""
