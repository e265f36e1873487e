"""Everything HES does only when the TimescaleDB extension is present, in one place.

Without the extension the time-series tables are native PostgreSQL tables with daily range
partitions (``projections/partitions.py``), and that is what the tests and most installations
run. With ``timescaledb`` installed and preloaded, migration 2 makes the same four tables
(``readings``, ``readings_1m``, ``readings_15m``, ``readings_30m``) hypertables instead, with
one-day chunks. What else happens depends on the build of the extension, which reports itself in
the ``timescaledb.license`` setting:

``apache`` (Apache-2.0 build, e.g. the ``-oss`` images and most distribution packages)
    Hypertables only. Compression, retention policies and the job scheduler are Timescale
    License features and are never asked for. Retention is ``drop_chunks(...)``, called by the
    reading workers every hour with ``HES_RETENTION_*_DAYS``, like the native partition drop.

``timescale`` (the Timescale License "community" build, e.g. ``timescale/timescaledb`` images)
    Hypertables, native compression of chunks older than two days (segmented by meter and
    quantity), and one retention policy per table (``add_retention_policy``), kept equal to
    ``HES_RETENTION_*_DAYS``: the reading workers compare each policy's ``drop_after`` with the
    settings every hour and replace a policy that differs.

The statements are built here as :class:`psycopg.sql.Composed` values, so the tests can check
them and run them against plain PostgreSQL with stand-ins for the extension's functions
(``tests/integration/test_timescale.py``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "2 days"
COMPRESS_SEGMENT_BY = "meter_id, quantity"


class Edition(enum.StrEnum):
    """The build of the TimescaleDB extension (``timescaledb.license``)."""

    APACHE = "apache"
    COMMUNITY = "timescale"
    """Timescale License build: compression and policies (background jobs) too."""


def usable(conn: psycopg.Connection[Any]) -> bool:
    """True when the server offers the extension and preloads it (CREATE EXTENSION will work)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
        "current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
    ).fetchone()
    return row is not None and bool(row[0]) and bool(row[1])


def edition_of(license_setting: str | None) -> Edition | None:
    """The edition a ``timescaledb.license`` value names; None without the extension."""
    if not license_setting:
        return None
    return Edition.APACHE if license_setting == "apache" else Edition.COMMUNITY


EDITION_QUERY = "SELECT current_setting('timescaledb.license', true)"


def hypertable_statements(
    schema: str, table: str, time_column: str, edition: Edition, retention_days: int
) -> list[sql.Composed]:
    """Make ``schema.table`` a hypertable; on the community build also compress and retain."""
    relation = _relation(schema, table)
    statements = [
        sql.SQL(
            "SELECT create_hypertable({relation}::regclass, {column}::name, "
            "chunk_time_interval => {chunk}::interval, if_not_exists => true)"
        ).format(
            relation=relation, column=sql.Literal(time_column), chunk=sql.Literal(CHUNK_INTERVAL)
        )
    ]
    if edition is Edition.COMMUNITY:
        statements += [
            sql.SQL(
                "ALTER TABLE {table} SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = {segment_by}, "
                "timescaledb.compress_orderby = {order_by})"
            ).format(
                table=sql.Identifier(schema, table),
                segment_by=sql.Literal(COMPRESS_SEGMENT_BY),
                order_by=sql.Literal(time_column),
            ),
            sql.SQL(
                "SELECT add_compression_policy({relation}::regclass, "
                "compress_after => {after}::interval, if_not_exists => true)"
            ).format(relation=relation, after=sql.Literal(COMPRESS_AFTER)),
            add_retention_policy(schema, table, retention_days),
        ]
    return statements


def add_retention_policy(schema: str, table: str, days: int) -> sql.Composed:
    """The community build's job that drops ``table``'s chunks older than ``days``."""
    return sql.SQL(
        "SELECT add_retention_policy({relation}::regclass, drop_after => {after}::interval, "
        "if_not_exists => true)"
    ).format(relation=_relation(schema, table), after=sql.Literal(f"{days} days"))


def remove_retention_policy(schema: str, table: str) -> sql.Composed:
    """Remove ``table``'s retention job, if it has one (before adding one with a new window)."""
    return sql.SQL(
        "SELECT remove_retention_policy({relation}::regclass, if_exists => true)"
    ).format(relation=_relation(schema, table))


def drop_chunks(schema: str, table: str, days: int) -> sql.Composed:
    """Drop ``table``'s chunks lying wholly before ``days`` ago (Apache build; returns names)."""
    return sql.SQL(
        "SELECT drop_chunks({relation}::regclass, older_than => now() - {days}::interval)"
    ).format(relation=_relation(schema, table), days=sql.Literal(f"{days} days"))


def policy_window(schema: str, table: str) -> sql.Composed:
    """The ``drop_after`` of ``table``'s retention job, as an interval (no row: no job)."""
    return sql.SQL(
        "SELECT (config ->> 'drop_after')::interval FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_retention' AND hypertable_schema = {schema} "
        "AND hypertable_name = {table}"
    ).format(schema=sql.Literal(schema), table=sql.Literal(table))


async def enforce_retention(
    conn: psycopg.AsyncConnection[Any], schema: str, days: Mapping[str, int]
) -> list[str]:
    """Apply ``days`` (table → retention) to the hypertables; return what was done, for the log.

    Apache build: drop the expired chunks now. Community build: make each table's retention
    policy drop after exactly its configured days (its job then drops the chunks).
    """
    cur = await conn.execute(EDITION_QUERY)
    row = await cur.fetchone()
    edition = edition_of(row[0] if row else None)
    if edition is None:
        log.warning("schema %s uses TimescaleDB storage but the extension is not loaded", schema)
        return []
    done: list[str] = []
    async with conn.transaction():
        for table, keep in days.items():
            if edition is Edition.APACHE:
                cur = await conn.execute(drop_chunks(schema, table, keep))
                done += [str(chunk) for (chunk,) in await cur.fetchall()]
                continue
            cur = await conn.execute(policy_window(schema, table))
            current = await cur.fetchone()
            if current is not None and current[0] == timedelta(days=keep):
                continue
            await conn.execute(remove_retention_policy(schema, table))
            await conn.execute(add_retention_policy(schema, table, keep))
            done.append(f"{table}: retention policy {keep} days")
    return done


def _relation(schema: str, table: str) -> sql.Literal:
    # The regclass text of a quoted, schema-qualified name ('"hes"."readings"').
    return sql.Literal(sql.Identifier(schema, table).as_string())
