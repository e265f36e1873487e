"""DLMS read models of meters: remote commands, relay and key state, logged meter events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import sql

Statement = tuple[str, dict[str, Any]]
_json = msgspec.json.Encoder()


def as_json(value: object) -> str:
    """JSON text of a msgspec-encodable value, for a jsonb parameter."""
    return _json.encode(value).decode()


class DlmsView(PostgresTrackingRecorder):
    """Rows and tracking record of each event written in one transaction (exactly-once)."""

    def apply(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        """Run ``statements`` and record ``tracking`` atomically."""
        schema = sql.Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            for text, params in statements:
                curs.execute(sql.SQL(text).format(schema=schema), params, prepare=True)  # type: ignore[arg-type]
            self._insert_tracking(curs, tracking)


INSERT_COMMAND = """
    INSERT INTO {schema}.remote_commands (command_id, meter_id, kind, args, status, attempt,
        requested_by, requested_at, updated_at, meter_version)
    VALUES (%(command_id)s, %(meter_id)s, %(kind)s, %(args)s::jsonb, 'REQUESTED', 1,
        %(requested_by)s, %(at)s, %(at)s, %(version)s)
    ON CONFLICT (command_id) DO NOTHING
"""

COMMAND_SENT = """
    UPDATE {schema}.remote_commands SET status = 'SENT', attempt = %(attempt)s, sent_at = %(at)s,
        updated_at = %(at)s, meter_version = %(version)s
    WHERE command_id = %(command_id)s
"""

COMMAND_CONFIRMED = """
    UPDATE {schema}.remote_commands SET status = 'CONFIRMED', result = %(result)s::jsonb,
        reason = NULL, finished_at = %(at)s, updated_at = %(at)s, meter_version = %(version)s
    WHERE command_id = %(command_id)s
"""

COMMAND_FAILED = """
    UPDATE {schema}.remote_commands SET status = 'FAILED', reason = %(reason)s,
        attempt = %(attempt)s, finished_at = %(at)s, updated_at = %(at)s,
        meter_version = %(version)s
    WHERE command_id = %(command_id)s
"""

COMMAND_RETRIED = """
    UPDATE {schema}.remote_commands SET status = 'REQUESTED', attempt = %(attempt)s,
        reason = NULL, sent_at = NULL, finished_at = NULL, updated_at = %(at)s,
        meter_version = %(version)s
    WHERE command_id = %(command_id)s
"""

FIRMWARE_STEP = """
    UPDATE {schema}.remote_commands SET firmware_step = %(step)s, meter_version = %(version)s
    WHERE command_id = %(command_id)s
"""

RELAY_STATE = """
    INSERT INTO {schema}.dlms_meter_state (meter_id, relay_connected, relay_changed_at)
    SELECT %(meter_id)s, %(relay_connected)s, %(at)s
    WHERE EXISTS (SELECT 1 FROM {schema}.remote_commands
        WHERE command_id = %(command_id)s AND kind = ANY(%(kinds)s))
    ON CONFLICT (meter_id) DO UPDATE SET relay_connected = EXCLUDED.relay_connected,
        relay_changed_at = EXCLUDED.relay_changed_at
"""

KEYS_CHANGED = """
    INSERT INTO {schema}.dlms_meter_state (meter_id, key_version, keys_changed_at)
    VALUES (%(meter_id)s, %(key_version)s, %(at)s)
    ON CONFLICT (meter_id) DO UPDATE SET key_version = EXCLUDED.key_version,
        keys_changed_at = EXCLUDED.keys_changed_at
"""

EVENT_LOGGED = """
    WITH inserted AS (
        INSERT INTO {schema}.meter_log_events (meter_id, log, at, code, kind, recorded_at)
        VALUES (%(meter_id)s, %(log)s, %(event_at)s, %(code)s, %(kind)s, %(at)s)
        ON CONFLICT DO NOTHING
        RETURNING at
    )
    INSERT INTO {schema}.dlms_meter_state (meter_id, events_logged, last_event_at)
    SELECT %(meter_id)s, 1, at FROM inserted
    ON CONFLICT (meter_id) DO UPDATE SET
        events_logged = {schema}.dlms_meter_state.events_logged + 1,
        last_event_at = GREATEST({schema}.dlms_meter_state.last_event_at, EXCLUDED.last_event_at)
"""

PROFILE_ASSIGNED = """
    INSERT INTO {schema}.dlms_meter_state (meter_id, profile, profile_set_at)
    VALUES (%(meter_id)s, %(profile)s, %(at)s)
    ON CONFLICT (meter_id) DO UPDATE SET profile = EXCLUDED.profile,
        profile_set_at = EXCLUDED.profile_set_at
"""

COUNTER_RESYNCED = """
    INSERT INTO {schema}.dlms_meter_state (meter_id, counter_resyncs, counter_resynced_at,
        counter_resync_strategy)
    VALUES (%(meter_id)s, 1, %(at)s, %(strategy)s)
    ON CONFLICT (meter_id) DO UPDATE SET
        counter_resyncs = {schema}.dlms_meter_state.counter_resyncs + 1,
        counter_resynced_at = EXCLUDED.counter_resynced_at,
        counter_resync_strategy = EXCLUDED.counter_resync_strategy
"""
