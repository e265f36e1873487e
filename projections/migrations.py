"""Read-model schema migrations, applied in order under an advisory lock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from projections.dlms_schema import DLMS_TABLES

log = logging.getLogger(__name__)

Migration = Callable[[psycopg.Connection[Any], str], None]
"""A migration written in Python: ``(connection, schema) -> None``, run inside the transaction."""

# Retention the TimescaleDB policies start with (the HES_RETENTION_*_DAYS defaults); the native
# path takes the configured values at each ``projections.partitions.drop_expired`` call instead.
TIMESCALE_RETENTION_DAYS = {
    "readings": 7,
    "readings_1m": 30,
    "readings_15m": 90,
    "readings_30m": 90,
}
TIMESCALE_COMPRESS_AFTER = "2 days"

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


def _timescale_usable(conn: psycopg.Connection[Any]) -> bool:
    # The extension must be installed on the server and preloaded, else CREATE EXTENSION fails.
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
        "current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
    ).fetchone()
    return row is not None and bool(row[0]) and bool(row[1])


def time_series_read_models(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create readings, aggregates, regional load and meter status on the best storage here."""
    ident = sql.Identifier(schema)
    timescale = _timescale_usable(conn)
    log.info(
        "time-series storage: %s",
        "TimescaleDB hypertables" if timescale else "native daily partitions",
    )
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table, (time_column, columns) in _TIME_SERIES.items():
        partitioning = (
            sql.SQL("")
            if timescale
            else sql.SQL(" PARTITION BY RANGE ({})").format(sql.Identifier(time_column))
        )
        conn.execute(
            sql.SQL("CREATE TABLE {}.{} ({}){}").format(
                ident, sql.Identifier(table), sql.SQL(columns), partitioning
            )
        )
        if timescale:
            _hypertable(conn, schema, table, time_column)
    conn.execute(sql.SQL(_READ_MODELS).format(schema=ident))
    conn.execute(
        sql.SQL("INSERT INTO {}.storage_info (key, value) VALUES ('time_series', %s)").format(
            ident
        ),
        ("timescaledb" if timescale else "native",),
    )


def _hypertable(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> None:
    qualified = f"{schema}.{table}"
    conn.execute(
        "SELECT create_hypertable(%s::regclass, %s, chunk_time_interval => interval '1 day')",
        (qualified, column),
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'meter_id, quantity', "
            "timescaledb.compress_orderby = {})"
        ).format(sql.Identifier(schema, table), sql.Literal(column))
    )
    conn.execute(
        "SELECT add_compression_policy(%s::regclass, %s::interval)",
        (qualified, TIMESCALE_COMPRESS_AFTER),
    )
    conn.execute(
        "SELECT add_retention_policy(%s::regclass, %s::interval)",
        (qualified, f"{TIMESCALE_RETENTION_DAYS[table]} days"),
    )


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
]

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
