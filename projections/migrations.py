"""Read-model schema migrations, applied in order under an advisory lock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from projections import aggregate_levels, timescale
from projections.dlms_schema import DLMS_FIELD_TABLES, DLMS_TABLES

log = logging.getLogger(__name__)

Migration = Callable[[psycopg.Connection[Any], str], None]
"""A migration written in Python: ``(connection, schema) -> None``, run inside the transaction."""

# Retention the TimescaleDB community build's policies start with (the HES_RETENTION_*_DAYS
# defaults); the reading workers set them to the configured days on their first round.
TIMESCALE_RETENTION_DAYS = {
    "readings": 7,
    "readings_1m": 30,
    "readings_15m": 90,
    "readings_30m": 90,
}

_READINGS_COLUMNS = """
    meter_id uuid NOT NULL,
    quantity smallint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision NOT NULL,
    quality smallint NOT NULL,
    source smallint NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (meter_id, quantity, ts)
"""

_AGGREGATE_COLUMNS = """
    meter_id uuid NOT NULL,
    quantity smallint NOT NULL,
    bucket timestamptz NOT NULL,
    region text NOT NULL,
    count integer NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    first_ts timestamptz NOT NULL,
    first_value double precision NOT NULL,
    last_ts timestamptz NOT NULL,
    last_value double precision NOT NULL,
    PRIMARY KEY (meter_id, quantity, bucket)
"""

_TIME_SERIES: dict[str, tuple[str, LiteralString]] = {
    "readings": ("ts", _READINGS_COLUMNS),
    "readings_1m": ("bucket", _AGGREGATE_COLUMNS),
    "readings_15m": ("bucket", _AGGREGATE_COLUMNS),
    "readings_30m": ("bucket", _AGGREGATE_COLUMNS),
}

_READ_MODELS: LiteralString = """
CREATE INDEX readings_15m_region_idx ON {schema}.readings_15m (region, bucket);

CREATE TABLE {schema}.regional_load_15m (
    region text NOT NULL,
    bucket timestamptz NOT NULL,
    meters integer NOT NULL,
    power_w double precision NOT NULL,
    capacity_w double precision NOT NULL,
    load_pct double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (region, bucket)
) WITH (fillfactor = 80);
CREATE INDEX regional_load_15m_bucket_idx ON {schema}.regional_load_15m (bucket);

CREATE TABLE {schema}.region_capacity (
    region text PRIMARY KEY,
    capacity_w double precision NOT NULL CHECK (capacity_w > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.meter_status (
    meter_id uuid PRIMARY KEY,
    region text NOT NULL,
    last_seen timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    readings_total bigint NOT NULL,
    last_energy_wh double precision,
    last_energy_ts timestamptz
) WITH (fillfactor = 80);
CREATE INDEX meter_status_region_idx ON {schema}.meter_status (region);

CREATE TABLE {schema}.storage_info (
    key text PRIMARY KEY,
    value text NOT NULL
);
"""


def time_series_read_models(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create readings, aggregates, regional load and meter status on the best storage here."""
    edition = None
    if timescale.usable(conn):
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        row = conn.execute(timescale.EDITION_QUERY).fetchone()
        edition = timescale.edition_of(row[0] if row else None)
    log.info(
        "time-series storage: %s",
        f"TimescaleDB hypertables ({edition} build)" if edition else "native daily partitions",
    )
    create_time_series(conn, schema, edition)


def create_time_series(
    conn: psycopg.Connection[Any], schema: str, edition: timescale.Edition | None
) -> None:
    """The time-series read models: native daily partitions, or hypertables of ``edition``."""
    ident = sql.Identifier(schema)
    for table, (time_column, columns) in _TIME_SERIES.items():
        partitioning = (
            sql.SQL("")
            if edition
            else sql.SQL(" PARTITION BY RANGE ({})").format(sql.Identifier(time_column))
        )
        conn.execute(
            sql.SQL("CREATE TABLE {}.{} ({}){}").format(
                ident, sql.Identifier(table), sql.SQL(columns), partitioning
            )
        )
        if edition:
            days = TIMESCALE_RETENTION_DAYS[table]
            for statement in timescale.hypertable_statements(
                schema, table, time_column, edition, days
            ):
                conn.execute(statement)
    conn.execute(sql.SQL(_READ_MODELS).format(schema=ident))
    conn.execute(
        sql.SQL("INSERT INTO {}.storage_info (key, value) VALUES ('time_series', %s)").format(
            ident
        ),
        ("timescaledb" if edition else "native",),
    )


_THIN_AGGREGATES: LiteralString = """
CREATE TABLE {schema}.regional_readings_15m (
    region text NOT NULL,
    bucket timestamptz NOT NULL,
    readings bigint NOT NULL,
    PRIMARY KEY (region, bucket)
) WITH (fillfactor = 80);
INSERT INTO {schema}.regional_readings_15m (region, bucket, readings)
SELECT region, bucket, sum(count) FROM {schema}.readings_15m GROUP BY region, bucket;
-- Windows finer than their data are derived on read from now on (projections/aggregate_levels).
DELETE FROM {schema}.readings_1m c USING {schema}.readings_15m p
WHERE p.meter_id = c.meter_id AND p.quantity = c.quantity
    AND p.bucket = date_bin('15 minutes', c.bucket, timestamptz '2000-01-01 00:00:00+00')
    AND p.count < 16;
DELETE FROM {schema}.readings_1m c USING {schema}.readings_30m p
WHERE p.meter_id = c.meter_id AND p.quantity = c.quantity
    AND p.bucket = date_bin('30 minutes', c.bucket, timestamptz '2000-01-01 00:00:00+00')
    AND p.count <= 2;
DELETE FROM {schema}.readings_15m c USING {schema}.readings_30m p
WHERE p.meter_id = c.meter_id AND p.quantity = c.quantity
    AND p.bucket = date_bin('30 minutes', c.bucket, timestamptz '2000-01-01 00:00:00+00')
    AND p.count <= 2;
"""


def thin_aggregates(conn: psycopg.Connection[Any], schema: str) -> None:
    """Keep only the aggregate windows that compress; count readings per region and window."""
    conn.execute(sql.SQL(_THIN_AGGREGATES).format(schema=sql.Identifier(schema)))
    for statement in aggregate_levels.create_views(schema):
        conn.execute(statement)


# Each entry is applied once, in order, inside one transaction with its version record:
# a SQL string (``{schema}`` is the quoted schema) or a ``Migration``.
# Never edit a released entry: append a new one.
MIGRATIONS: list[tuple[int, str, str | Migration]] = [
    (
        1,
        "meter registry read model",
        """
        CREATE TABLE {schema}.meters (
            id uuid PRIMARY KEY,
            serial text NOT NULL,
            manufacturer text NOT NULL,
            model text NOT NULL,
            firmware text NOT NULL,
            meter_type text,
            phases smallint NOT NULL,
            region text NOT NULL,
            area text NOT NULL,
            status text NOT NULL,
            customer_account text,
            location jsonb,
            connection jsonb NOT NULL,
            concentrator_id text,
            sim_card text,
            registered_at timestamptz NOT NULL,
            commissioned_at timestamptz,
            decommissioned_at timestamptz,
            decommission_reason text,
            updated_at timestamptz NOT NULL,
            version integer NOT NULL,
            events_applied integer NOT NULL
        );
        CREATE UNIQUE INDEX meters_serial_key ON {schema}.meters (upper(serial));
        CREATE INDEX meters_order_idx ON {schema}.meters (serial);
        CREATE INDEX meters_region_idx ON {schema}.meters (region, serial);
        CREATE INDEX meters_area_idx ON {schema}.meters (area, serial);
        CREATE INDEX meters_status_idx ON {schema}.meters (status, serial);
        CREATE INDEX meters_customer_idx ON {schema}.meters (customer_account, serial)
            WHERE customer_account IS NOT NULL;
        """,
    ),
    (2, "time-series read models: readings, aggregates, regional load", time_series_read_models),
    (
        3,
        "interval export runs",
        """
        CREATE TABLE {schema}.export_runs (
            day date NOT NULL,
            interval text NOT NULL,
            meters integer NOT NULL,
            exported_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (day, interval)
        );
        """,
    ),
    (
        4,
        "tariffs read model: current tariff per region and its price history",
        """
        CREATE TABLE {schema}.tariffs (
            region text PRIMARY KEY,
            id uuid NOT NULL UNIQUE,
            currency text NOT NULL,
            base_price numeric NOT NULL,
            tiers jsonb NOT NULL,
            tou jsonb NOT NULL,
            timezone text NOT NULL,
            min_change_pct numeric NOT NULL,
            load_price numeric NOT NULL,
            load_pct double precision,
            load_bucket timestamptz,
            override jsonb,
            version integer NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE TABLE {schema}.tariff_prices (
            region text NOT NULL,
            at timestamptz NOT NULL,
            price numeric NOT NULL,
            kind text NOT NULL CHECK (kind IN ('load', 'override', 'base', 'tiers',
                'override-cleared', 'override-expired')),
            load_pct double precision,
            position bigint NOT NULL,
            PRIMARY KEY (region, at, position)
        );
        """,
    ),
    (
        5,
        "tariff engine checkpoint: newest regional load update already priced",
        """
        CREATE TABLE {schema}.tariff_engine_state (
            id smallint PRIMARY KEY,
            last_updated_at timestamptz NOT NULL
        );
        """,
    ),
    (
        6,
        "alerts read model and detector checkpoints",
        """
        CREATE TABLE {schema}.alerts (
            id uuid PRIMARY KEY,
            dedup_key text NOT NULL,
            generation integer NOT NULL,
            alert_type text NOT NULL,
            severity text NOT NULL,
            severity_weight double precision NOT NULL,
            region text NOT NULL,
            meter_id uuid,
            message text NOT NULL,
            evidence jsonb NOT NULL,
            status text NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
            raised_at timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            occurrences integer NOT NULL,
            customers_affected integer NOT NULL,
            acknowledged_by text,
            acknowledged_at timestamptz,
            resolved_by text,
            resolved_at timestamptz,
            resolution_note text,
            auto_resolved boolean NOT NULL DEFAULT false,
            version integer NOT NULL,
            position bigint NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE INDEX alerts_status_idx ON {schema}.alerts (status, region);
        CREATE INDEX alerts_meter_idx ON {schema}.alerts (meter_id) WHERE meter_id IS NOT NULL;
        CREATE UNIQUE INDEX alerts_open_cause_idx ON {schema}.alerts (dedup_key)
            WHERE status <> 'RESOLVED';
        CREATE TABLE {schema}.detector_state (
            detector text PRIMARY KEY,
            checkpoint timestamptz NOT NULL
        );
        CREATE TABLE {schema}.detector_positions (
            detector text PRIMARY KEY,
            position bigint NOT NULL
        );
        """,
    ),
    (
        7,
        "notification subscriptions, deliveries, attempts and the notifier's event index",
        """
        CREATE TABLE {schema}.notification_subscriptions (
            id uuid PRIMARY KEY,
            owner text NOT NULL,
            owner_roles text[] NOT NULL,
            owner_customer text,
            channel text NOT NULL CHECK (channel IN ('WEBHOOK', 'EMAIL')),
            target text NOT NULL,
            secret_sealed bytea,
            kinds text[] NOT NULL CHECK (cardinality(kinds) > 0),
            regions text[] NOT NULL,
            alert_types text[] NOT NULL,
            min_severity text NOT NULL,
            enabled boolean NOT NULL,
            idempotency_key text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            version integer NOT NULL,
            CHECK ((channel = 'WEBHOOK') = (secret_sealed IS NOT NULL))
        );
        CREATE INDEX notification_subscriptions_owner_idx
            ON {schema}.notification_subscriptions (owner, created_at);
        CREATE UNIQUE INDEX notification_subscriptions_idempotency_key
            ON {schema}.notification_subscriptions (owner, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE TABLE {schema}.notification_deliveries (
            id uuid PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            event_id uuid NOT NULL,
            subscription_id uuid NOT NULL
                REFERENCES {schema}.notification_subscriptions (id) ON DELETE CASCADE,
            kind text NOT NULL,
            event_type text NOT NULL,
            event_time timestamptz NOT NULL,
            body bytea NOT NULL,
            status text NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL,
            lease_until timestamptz,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            UNIQUE (event_id, subscription_id)
        );
        CREATE INDEX notification_deliveries_due_idx
            ON {schema}.notification_deliveries (next_attempt_at) WHERE status = 'PENDING';
        CREATE INDEX notification_deliveries_subscription_idx
            ON {schema}.notification_deliveries (subscription_id, seq);
        CREATE TABLE {schema}.notification_attempts (
            delivery_id uuid NOT NULL
                REFERENCES {schema}.notification_deliveries (id) ON DELETE CASCADE,
            attempt integer NOT NULL CHECK (attempt > 0),
            at timestamptz NOT NULL,
            duration_ms double precision NOT NULL,
            verdict text NOT NULL CHECK (verdict IN ('SUCCESS', 'RETRY', 'PERMANENT')),
            status_code integer,
            detail text,
            PRIMARY KEY (delivery_id, attempt)
        );
        CREATE TABLE {schema}.notification_alert_index (
            alert_id uuid PRIMARY KEY,
            alert_type text NOT NULL,
            severity text NOT NULL,
            region text NOT NULL,
            meter_id uuid,
            message text,
            version integer NOT NULL
        );
        CREATE TABLE {schema}.notification_tariff_index (
            tariff_id uuid PRIMARY KEY,
            region text NOT NULL,
            currency text NOT NULL,
            version integer NOT NULL
        );
        """,
    ),
    (
        8,
        "API key secret digests (the ApiKey events name the current secret_id)",
        """
        CREATE TABLE {schema}.api_key_secrets (
            secret_id uuid PRIMARY KEY,
            prefix text NOT NULL,
            digest bytea NOT NULL CHECK (length(digest) = 32),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX api_key_secrets_prefix_idx ON {schema}.api_key_secrets (prefix);
        """,
    ),
    (9, "DLMS: remote commands, meter state, keys, counters, collection", DLMS_TABLES),
    (
        10,
        "projection status: each projection's and relay's supervisor state, stalls",
        """
        CREATE TABLE {schema}.projection_status (
            name text PRIMARY KEY,
            state text NOT NULL CHECK (state IN ('running', 'stalled', 'stopped')),
            since timestamptz NOT NULL,
            failures integer NOT NULL DEFAULT 0,
            failed_position bigint,
            failed_event uuid,
            failed_topic text,
            error text
        );
        CREATE TABLE {schema}.notifier_skips (
            stream_seq bigint PRIMARY KEY,
            skipped_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        11,
        "DLMS: model profiles, association views, register units, task outcomes",
        DLMS_FIELD_TABLES,
    ),
    (
        12,
        "results of `hes audit verify`, newest shown to auditors",
        """
        CREATE TABLE {schema}.audit_verifications (
            id bigserial PRIMARY KEY,
            ran_at timestamptz NOT NULL DEFAULT now(),
            ran_by text NOT NULL,
            intact boolean NOT NULL,
            anchors integer NOT NULL,
            report jsonb NOT NULL
        );
        """,
    ),
    (
        13,
        "aggregates stored only where they compress (finer windows derived on read); "
        "reading counts per region and 15 minutes; windows_* views",
        thin_aggregates,
    ),
    (
        14,
        "reading partition leases and the reading workers holding them",
        """
        CREATE TABLE {schema}.reading_leases (
            partition integer PRIMARY KEY,
            owner text,
            epoch bigint NOT NULL DEFAULT 0,
            backend_pid integer,
            backend_start timestamptz,
            expires_at timestamptz NOT NULL DEFAULT '-infinity'
        );
        CREATE TABLE {schema}.reading_workers (
            worker text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            backend_pid integer NOT NULL,
            backend_start timestamptz NOT NULL,
            seen_at timestamptz NOT NULL
        );
        """,
    ),
    (
        15,
        "customers read model (personal data sealed only) and customers' data keys",
        """
        CREATE TABLE {schema}.customers (
            id uuid PRIMARY KEY,
            account text NOT NULL UNIQUE,
            sealed text,
            area text NOT NULL,
            customer_type text NOT NULL,
            tariff_plan text NOT NULL,
            connection_date date,
            status text NOT NULL,
            erased boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            version integer NOT NULL
        );
        CREATE INDEX customers_area_idx ON {schema}.customers (area, account);
        CREATE INDEX customers_status_idx ON {schema}.customers (status, account);
        CREATE TABLE {schema}.customer_keys (
            customer_id uuid PRIMARY KEY,
            sealed_key bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        16,
        "SIM card inventory read model",
        """
        CREATE TABLE {schema}.sim_cards (
            id uuid PRIMARY KEY,
            iccid text NOT NULL UNIQUE,
            sim_number text,
            imsi text,
            msisdn text,
            provider text NOT NULL,
            status text NOT NULL,
            ip_address text,
            apn text,
            data_limit_mb bigint,
            activation_date date,
            meter_serial text,
            added_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            version integer NOT NULL
        );
        CREATE INDEX sim_cards_provider_idx ON {schema}.sim_cards (provider, iccid);
        CREATE INDEX sim_cards_status_idx ON {schema}.sim_cards (status, iccid);
        CREATE INDEX sim_cards_meter_idx ON {schema}.sim_cards (upper(meter_serial))
            WHERE meter_serial IS NOT NULL;
        """,
    ),
    (
        17,
        "fleet operations: firmware image bytes and metadata, TOU plans, campaigns",
        """
        CREATE TABLE {schema}.firmware_image_bytes (
            image_id uuid PRIMARY KEY,
            sha256 text NOT NULL,
            image bytea NOT NULL,
            stored_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE {schema}.firmware_images (
            id uuid PRIMARY KEY,
            identifier text NOT NULL,
            manufacturer text NOT NULL,
            model text NOT NULL,
            sha256 text NOT NULL,
            size integer NOT NULL,
            uploaded_by text NOT NULL,
            uploaded_at timestamptz NOT NULL,
            deleted_at timestamptz,
            version integer NOT NULL
        );
        CREATE INDEX firmware_images_model_idx ON {schema}.firmware_images
            (manufacturer, model, identifier);
        CREATE TABLE {schema}.tou_plans (
            id uuid PRIMARY KEY,
            tariff_plan text NOT NULL UNIQUE,
            latest_version integer NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE TABLE {schema}.tou_plan_versions (
            plan_id uuid NOT NULL,
            version integer NOT NULL,
            calendar jsonb NOT NULL,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (plan_id, version)
        );
        CREATE TABLE {schema}.campaigns (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            kind text NOT NULL,
            status text NOT NULL,
            spec jsonb NOT NULL,
            started_by text NOT NULL,
            started_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            finished_at timestamptz,
            meters integer NOT NULL,
            pending integer NOT NULL,
            running integer NOT NULL DEFAULT 0,
            succeeded integer NOT NULL DEFAULT 0,
            failed integer NOT NULL DEFAULT 0,
            skipped integer NOT NULL DEFAULT 0,
            attempts integer NOT NULL DEFAULT 0,
            version integer NOT NULL
        );
        CREATE INDEX campaigns_status_idx ON {schema}.campaigns (status, started_at DESC);
        CREATE TABLE {schema}.campaign_meters (
            campaign_id uuid NOT NULL,
            serial text NOT NULL,
            meter_id uuid NOT NULL,
            cell text NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            command_id uuid,
            reason text,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (campaign_id, serial)
        );
        CREATE INDEX campaign_meters_state_idx ON {schema}.campaign_meters
            (campaign_id, state, serial);
        """,
    ),
    (
        18,
        "firmware updates awaiting a scheduled activation: the command's step, campaign count",
        """
        ALTER TABLE {schema}.remote_commands ADD COLUMN firmware_step text;
        ALTER TABLE {schema}.campaigns ADD COLUMN awaiting integer NOT NULL DEFAULT 0;
        """,
    ),
    (
        19,
        "consumption insights read models: patterns, forecasts, anomaly scores, insight feed",
        """
        CREATE TABLE {schema}.insight_runs (
            id bigserial PRIMARY KEY,
            trigger text NOT NULL,
            actor text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            meters integer NOT NULL,
            seconds double precision NOT NULL,
            finished_at timestamptz NOT NULL DEFAULT now(),
            summary jsonb NOT NULL
        );
        CREATE TABLE {schema}.meter_patterns (
            meter_id uuid PRIMARY KEY,
            region text NOT NULL,
            as_of timestamptz NOT NULL,
            days integer NOT NULL,
            mean_w double precision NOT NULL,
            base_w double precision NOT NULL,
            peak_w double precision NOT NULL,
            trend_pct_week double precision NOT NULL,
            daily_profile_w double precision[] NOT NULL,
            weekly_kwh double precision[] NOT NULL
        );
        CREATE TABLE {schema}.meter_forecasts (
            meter_id uuid PRIMARY KEY,
            region text NOT NULL,
            made_at timestamptz NOT NULL,
            start timestamptz NOT NULL,
            mean_w double precision[] NOT NULL,
            lower_w double precision[] NOT NULL,
            upper_w double precision[] NOT NULL
        );
        CREATE TABLE {schema}.region_forecasts (
            region text PRIMARY KEY,
            made_at timestamptz NOT NULL,
            start timestamptz NOT NULL,
            model text NOT NULL,
            mean_w double precision[] NOT NULL,
            lower_w double precision[] NOT NULL,
            upper_w double precision[] NOT NULL
        );
        CREATE TABLE {schema}.anomaly_scores (
            meter_id uuid NOT NULL,
            day date NOT NULL,
            region text NOT NULL,
            score real NOT NULL,
            reason text NOT NULL,
            PRIMARY KEY (meter_id, day)
        );
        CREATE INDEX anomaly_scores_day_idx ON {schema}.anomaly_scores (day, score DESC);
        CREATE TABLE {schema}.insights (
            id text PRIMARY KEY,
            category text NOT NULL,
            kind text NOT NULL,
            region text NOT NULL,
            meter_id uuid,
            title text NOT NULL,
            evidence text[] NOT NULL,
            confidence real NOT NULL,
            since timestamptz,
            first_seen timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            active boolean NOT NULL,
            run_id bigint NOT NULL
        );
        CREATE INDEX insights_feed_idx
            ON {schema}.insights (active, region, category, confidence DESC);
        CREATE INDEX insights_meter_idx ON {schema}.insights (meter_id) WHERE meter_id IS NOT NULL;
        """,
    ),
]

METERS_VIEW = 1
"""The migration creating the meters read model (rebuilt by ``hes projections rebuild``)."""
TIME_SERIES = (2, 13)
"""The migrations creating the time-series read models and their ``windows_*`` views."""
PARTITION_LEASES = 14
"""The migration creating the reading workers' partition leases."""
CUSTOMERS = 15
"""The migration creating the customers read model and the customers' data keys."""
INSIGHTS = 19
"""The migration creating the consumption-insights read models."""

_LOCK_KEY = 0x4E5_0001


def migrate(conn: psycopg.Connection[object], schema: str) -> list[int]:
    """Create ``schema`` if needed and apply pending migrations; return the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        ident = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                "version integer PRIMARY KEY, description text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        cur = conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))
        done = {row[0] for row in cur.fetchall()}  # type: ignore[index]
        for version, description, statement in MIGRATIONS:
            if version in done:
                continue
            if isinstance(statement, str):
                conn.execute(sql.SQL(statement).format(schema=ident))  # type: ignore[arg-type]
            else:
                statement(conn, schema)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_migrations (version, description) VALUES (%s, %s)"
                ).format(ident),
                (version, description),
            )
            log.info("applied migration %d: %s", version, description)
            applied.append(version)
    return applied
