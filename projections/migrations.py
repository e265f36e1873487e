"""Read-model schema migrations, applied in order under an advisory lock."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Each entry is applied once, in order, inside one transaction with its version record.
# Never edit a released entry: append a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
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
            conn.execute(sql.SQL(statement).format(schema=ident))  # type: ignore[arg-type]
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_migrations (version, description) VALUES (%s, %s)"
                ).format(ident),
                (version, description),
            )
            log.info("applied migration %d: %s", version, description)
            applied.append(version)
    return applied
