"""Tables of the DLMS side (migration 9): commands, meter state, keys, counters, collection."""

from __future__ import annotations

DLMS_TABLES = """
-- Read models projected from Meter events (remote_commands_view, exactly-once with tracking).
CREATE TABLE {schema}.remote_commands (
    command_id uuid PRIMARY KEY,
    meter_id uuid NOT NULL,
    kind text NOT NULL,
    args jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('REQUESTED', 'SENT', 'CONFIRMED', 'FAILED')),
    attempt integer NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    sent_at timestamptz,
    finished_at timestamptz,
    reason text,
    result jsonb,
    updated_at timestamptz NOT NULL,
    meter_version integer NOT NULL
);
CREATE INDEX remote_commands_meter_idx ON {schema}.remote_commands (meter_id, requested_at DESC);
CREATE INDEX remote_commands_pending_idx ON {schema}.remote_commands (status, updated_at)
    WHERE status IN ('REQUESTED', 'SENT');

CREATE TABLE {schema}.dlms_meter_state (
    meter_id uuid PRIMARY KEY,
    relay_connected boolean,
    relay_changed_at timestamptz,
    key_version integer NOT NULL DEFAULT 0,
    keys_changed_at timestamptz,
    events_logged bigint NOT NULL DEFAULT 0,
    last_event_at timestamptz
);

CREATE TABLE {schema}.meter_log_events (
    meter_id uuid NOT NULL,
    log text NOT NULL,
    at timestamptz NOT NULL,
    code integer NOT NULL,
    kind text NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (meter_id, at, log, code)
);

-- Written by the DLMS adapter itself.
CREATE TABLE {schema}.dlms_keys (
    meter_id uuid NOT NULL,
    key_version integer NOT NULL CHECK (key_version > 0),
    kind text NOT NULL CHECK (kind IN ('LLS', 'EK', 'AK')),
    nonce bytea NOT NULL,
    sealed bytea NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, key_version, kind)
);

CREATE TABLE {schema}.dlms_system_titles (
    system_title bytea PRIMARY KEY CHECK (octet_length(system_title) = 8),
    meter_id uuid NOT NULL UNIQUE,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.dlms_invocation_counters (
    meter_id uuid NOT NULL,
    key_version integer NOT NULL,
    client_next bigint NOT NULL,
    server_last bigint NOT NULL DEFAULT -1,
    meter_reported bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, key_version)
);

CREATE TABLE {schema}.dlms_comm_stats (
    meter_id uuid PRIMARY KEY,
    attempts bigint NOT NULL DEFAULT 0,
    successes bigint NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    last_error text,
    last_error_at timestamptz
) WITH (fillfactor = 80);

CREATE TABLE {schema}.dlms_collection_tasks (
    meter_id uuid NOT NULL,
    task text NOT NULL CHECK (task IN ('registers', 'profile', 'events')),
    next_due timestamptz NOT NULL,
    lease_until timestamptz,
    last_run_at timestamptz,
    last_ok_at timestamptz,
    failures integer NOT NULL DEFAULT 0,
    PRIMARY KEY (meter_id, task)
) WITH (fillfactor = 70);
CREATE INDEX dlms_collection_tasks_due_idx ON {schema}.dlms_collection_tasks (next_due);

CREATE TABLE {schema}.dlms_profile_ledger (
    meter_id uuid NOT NULL,
    profile text NOT NULL,
    day date NOT NULL,
    period_s integer NOT NULL CHECK (period_s > 0),
    received varbit NOT NULL,
    absent varbit NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (meter_id, profile, day)
);

CREATE TABLE {schema}.dlms_log_positions (
    meter_id uuid NOT NULL,
    log text NOT NULL,
    last_at timestamptz NOT NULL,
    PRIMARY KEY (meter_id, log)
);
"""

DLMS_FIELD_TABLES = """
-- Projected from Meter events: the meter's DLMS profile and counter resynchronisations.
ALTER TABLE {schema}.dlms_meter_state
    ADD COLUMN profile text,
    ADD COLUMN profile_set_at timestamptz,
    ADD COLUMN counter_resyncs integer NOT NULL DEFAULT 0,
    ADD COLUMN counter_resynced_at timestamptz,
    ADD COLUMN counter_resync_strategy text;

-- Written by the DLMS adapter: association views per meter model and client (discovery).
CREATE TABLE {schema}.dlms_model_views (
    manufacturer text NOT NULL,
    model text NOT NULL,
    firmware text NOT NULL,
    client_address integer NOT NULL,
    association_version integer,
    objects jsonb,
    error text,
    discovered_at timestamptz NOT NULL,
    meter_id uuid,
    serial text,
    PRIMARY KEY (manufacturer, model, firmware, client_address),
    CHECK ((objects IS NULL) = (error IS NOT NULL))
);

-- Each register's scaler and unit as the meter reports them (raw unit codes kept).
CREATE TABLE {schema}.dlms_register_units (
    meter_id uuid NOT NULL,
    obis text NOT NULL,
    scaler integer,
    unit_code integer,
    verified boolean NOT NULL,
    note text,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (meter_id, obis)
);

-- How each task's last run went: OK, PARTIAL (with what failed) or FAILED.
ALTER TABLE {schema}.dlms_collection_tasks
    ADD COLUMN last_status text CHECK (last_status IN ('OK', 'PARTIAL', 'FAILED')),
    ADD COLUMN last_problems jsonb,
    ADD COLUMN last_error text;
"""
