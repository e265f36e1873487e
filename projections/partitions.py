"""Daily partitions of the time-series tables: created on demand, dropped past retention."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from projections import timescale

TABLES = ("readings", "readings_1m", "readings_15m", "readings_30m")
"""The tables partitioned by day (``<table>_pYYYYMMDD``)."""

_AGGREGATE_FILLFACTOR = 85
"""Leaves room on each page so that aggregate upserts can be HOT updates."""

_LOCK_CLASS = 0x4E5_0002
_SUFFIX = re.compile(r"_p(\d{8})\Z")

# (database identity, schema) -> days whose partitions exist in all TABLES; one process
# creates a day's partitions once, then writes cost no catalog look-up for it.
_known: dict[tuple[str, str], set[date]] = {}
_storage: dict[tuple[str, str], str] = {}


def partition_name(table: str, day: date) -> str:
    """Name of ``table``'s partition holding ``day`` (UTC)."""
    return f"{table}_p{day:%Y%m%d}"


def forget_partitions(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Drop this process's memory of ``schema``'s partitions (after a rollback or a drop)."""
    _known.pop(_key(conn, schema), None)


async def storage_kind(conn: psycopg.AsyncConnection[Any], schema: str) -> str:
    """``native`` or ``timescaledb``: the time-series storage migration 2 chose for ``schema``."""
    key = _key(conn, schema)
    kind = _storage.get(key)
    if kind is None:
        cur = await conn.execute(
            sql.SQL("SELECT value FROM {}.storage_info WHERE key = 'time_series'").format(
                sql.Identifier(schema)
            )
        )
        row = await cur.fetchone()
        kind = _storage[key] = str(row[0]) if row is not None else "native"
    return kind


async def ensure_partitions(
    conn: psycopg.AsyncConnection[Any], schema: str, days: Iterable[date]
) -> list[str]:
    """Create the missing daily partitions of all time-series tables; return their names."""
    key = _key(conn, schema)
    known = _known.setdefault(key, set())
    missing = sorted(set(days) - known)
    if not missing:
        return []
    if await storage_kind(conn, schema) != "native":
        known.update(missing)
        return []
    created: list[str] = []
    async with conn.transaction():
        # Serialises creators across processes so two workers never race on the same DDL.
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
        existing = await _partitions(conn, schema)
        for day in missing:
            for table in TABLES:
                name = partition_name(table, day)
                if name in existing.get(table, {}):
                    continue
                await conn.execute(_create_statement(schema, table, day))
                created.append(name)
    known.update(missing)
    return created


def retention_days(*, raw_days: int, m1_days: int, aggregate_days: int) -> dict[str, int]:
    """Days each time-series table keeps (HES_RETENTION_RAW/_1M/_AGGREGATE_DAYS)."""
    return {
        "readings": raw_days,
        "readings_1m": m1_days,
        "readings_15m": aggregate_days,
        "readings_30m": aggregate_days,
    }


async def drop_expired(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    *,
    now: datetime,
    raw_days: int,
    m1_days: int,
    aggregate_days: int,
) -> list[str]:
    """Apply each table's retention: drop whole expired partitions (or chunks); return names.

    On TimescaleDB storage, ``projections.timescale`` applies the same days.
    """
    keep = retention_days(raw_days=raw_days, m1_days=m1_days, aggregate_days=aggregate_days)
    if await storage_kind(conn, schema) != "native":
        return await timescale.enforce_retention(conn, schema, keep)
    dropped: list[str] = []
    async with conn.transaction():
        # DROP needs an exclusive lock on the parent: give up rather than stall every writer
        # queued behind it while a long query holds the table.
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
        existing = await _partitions(conn, schema)
        for table, days in keep.items():
            horizon = now - timedelta(days=days)
            for name, day in sorted(existing.get(table, {}).items()):
                if _day_end(day) <= horizon:
                    await conn.execute(
                        sql.SQL("DROP TABLE {}.{}").format(
                            sql.Identifier(schema), sql.Identifier(name)
                        )
                    )
                    dropped.append(name)
    if dropped:
        forget_partitions(conn, schema)
    return dropped


async def _partitions(
    conn: psycopg.AsyncConnection[Any], schema: str
) -> dict[str, dict[str, date]]:
    """Existing daily partitions of each table: ``{table: {partition name: day}}``."""
    cur = await conn.execute(
        "SELECT parent.relname, child.relname FROM pg_inherits i "
        "JOIN pg_class parent ON parent.oid = i.inhparent "
        "JOIN pg_class child ON child.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = parent.relnamespace "
        "WHERE n.nspname = %s AND parent.relname = ANY(%s)",
        (schema, list(TABLES)),
    )
    found: dict[str, dict[str, date]] = {}
    for parent, child in await cur.fetchall():
        match = _SUFFIX.search(child)
        if match is not None and child == f"{parent}{match.group(0)}":
            day = datetime.strptime(match.group(1), "%Y%m%d").date()
            found.setdefault(parent, {})[child] = day
    return found


def _create_statement(schema: str, table: str, day: date) -> sql.Composed:
    storage = (
        sql.SQL("")
        if table == "readings"
        else sql.SQL(" WITH (fillfactor = {})").format(sql.Literal(_AGGREGATE_FILLFACTOR))
    )
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.{table} "
        "FOR VALUES FROM ({start}) TO ({end}){storage}"
    ).format(
        schema=sql.Identifier(schema),
        name=sql.Identifier(partition_name(table, day)),
        table=sql.Identifier(table),
        start=sql.Literal(f"{day.isoformat()} 00:00:00+00"),
        end=sql.Literal(f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"),
        storage=storage,
    )


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _key(conn: psycopg.AsyncConnection[Any], schema: str) -> tuple[str, str]:
    info = conn.info
    return (f"{info.host}:{info.port}/{info.dbname}", schema)
