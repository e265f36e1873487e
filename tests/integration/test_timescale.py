"""The TimescaleDB path (projections/timescale.py) against PostgreSQL without the extension.

TimescaleDB cannot be installed here. Its functions are replaced, inside a transaction that is
rolled back, by stand-ins with the same names, parameter names and types (from the
extension's SQL API) that record their calls; then the migration and the retention of both
builds run for real. What only the extension can run (``ALTER TABLE … SET (timescaledb.…)``)
is checked as text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from projections import timescale
from projections.migrations import TIMESCALE_RETENTION_DAYS, create_time_series
from projections.partitions import retention_days
from projections.timescale import Edition
from tests.services import Services

pytestmark = pytest.mark.integration

# Signatures as in TimescaleDB 2.x's sql/ddl_api.sql and sql/policy_api.sql ("any" is a C-only
# pseudo-type: anyelement takes the same arguments here).
STAND_INS = """
CREATE SCHEMA {stub};
CREATE TABLE {stub}.calls (n serial, fn text, relation text, args text);
CREATE SCHEMA timescaledb_information;
CREATE TABLE timescaledb_information.jobs (
    job_id serial, proc_name text, hypertable_schema name, hypertable_name name, config jsonb);
CREATE FUNCTION {stub}.create_hypertable(
    relation regclass, time_column_name name, partitioning_column name DEFAULT NULL,
    number_partitions integer DEFAULT NULL, associated_schema_name name DEFAULT NULL,
    associated_table_prefix name DEFAULT NULL, chunk_time_interval anyelement DEFAULT NULL::bigint,
    create_default_indexes boolean DEFAULT true, if_not_exists boolean DEFAULT false)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO {stub}.calls (fn, relation, args) VALUES ('create_hypertable', relation::text,
        time_column_name || ' ' || chunk_time_interval::text || ' ' || if_not_exists::text) $$;
CREATE FUNCTION {stub}.add_compression_policy(
    hypertable regclass, compress_after anyelement, if_not_exists boolean DEFAULT false)
RETURNS integer LANGUAGE sql AS $$
    INSERT INTO {stub}.calls (fn, relation, args) VALUES ('add_compression_policy',
        hypertable::text, compress_after::text) RETURNING n $$;
CREATE FUNCTION {stub}.add_retention_policy(
    relation regclass, drop_after anyelement, if_not_exists boolean DEFAULT false)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE found integer;
BEGIN
    INSERT INTO {stub}.calls (fn, relation, args)
        VALUES ('add_retention_policy', relation::text, drop_after::text);
    SELECT j.job_id INTO found FROM timescaledb_information.jobs j
        JOIN pg_class c ON c.relname = j.hypertable_name
        JOIN pg_namespace s ON s.oid = c.relnamespace AND s.nspname = j.hypertable_schema
        WHERE c.oid = relation AND j.proc_name = 'policy_retention';
    IF found IS NOT NULL THEN
        IF if_not_exists THEN RETURN found; END IF;
        RAISE EXCEPTION 'retention policy already exists';
    END IF;
    INSERT INTO timescaledb_information.jobs (proc_name, hypertable_schema, hypertable_name, config)
        SELECT 'policy_retention', s.nspname, c.relname,
               jsonb_build_object('drop_after', drop_after::text)
        FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE c.oid = relation
        RETURNING job_id INTO found;
    RETURN found;
END $$;
CREATE FUNCTION {stub}.remove_retention_policy(relation regclass, if_exists boolean DEFAULT false)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO {stub}.calls (fn, relation, args)
        VALUES ('remove_retention_policy', relation::text, if_exists::text);
    DELETE FROM timescaledb_information.jobs j USING pg_class c, pg_namespace s
        WHERE c.oid = relation AND s.oid = c.relnamespace AND j.hypertable_name = c.relname
          AND j.hypertable_schema = s.nspname AND j.proc_name = 'policy_retention' $$;
CREATE FUNCTION {stub}.drop_chunks(
    relation regclass, older_than anyelement DEFAULT NULL::timestamptz,
    newer_than anyelement DEFAULT NULL::timestamptz, verbose boolean DEFAULT false)
RETURNS SETOF text LANGUAGE sql AS $$
    INSERT INTO {stub}.calls (fn, relation, args)
        VALUES ('drop_chunks', relation::text, older_than::text)
        RETURNING '_timescaledb_internal._hyper_' || n || '_chunk' $$;
"""


def _install(conn: psycopg.Connection[Any], stub: str, license_: str) -> None:
    conn.execute(sql.SQL(STAND_INS.replace("{stub}", "{0}")).format(sql.Identifier(stub)))
    conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(stub)))
    conn.execute("SELECT set_config('timescaledb.license', %s, true)", (license_,))


def _calls(conn: psycopg.Connection[Any], stub: str) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        sql.SQL("SELECT fn, relation, args FROM {}.calls ORDER BY n").format(sql.Identifier(stub))
    ).fetchall()
    return [(str(fn), str(rel), str(args)) for fn, rel, args in rows]


@pytest.fixture
def rolled_back(services: Services) -> Iterator[tuple[psycopg.Connection[Any], str, str]]:
    """A transaction (rolled back at the end), a stand-in schema and an empty target schema."""
    suffix = uuid.uuid4().hex[:8]
    with psycopg.connect(services.database_url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"ts_{suffix}")))
        yield conn, f"tsstub_{suffix}", f"ts_{suffix}"
        conn.rollback()


def test_plain_postgresql_has_no_timescaledb_and_migrates_natively(services: Services) -> None:
    with psycopg.connect(services.database_url) as conn:
        assert timescale.usable(conn) is False
        row = conn.execute(timescale.EDITION_QUERY).fetchone()
        assert row is not None and timescale.edition_of(row[0]) is None


@pytest.mark.parametrize(
    ("setting", "edition"), [("apache", Edition.APACHE), ("timescale", Edition.COMMUNITY)]
)
def test_the_edition_is_read_from_timescaledb_license(
    rolled_back: tuple[psycopg.Connection[Any], str, str], setting: str, edition: Edition
) -> None:
    conn, _, _ = rolled_back
    conn.execute("SELECT set_config('timescaledb.license', %s, true)", (setting,))
    row = conn.execute(timescale.EDITION_QUERY).fetchone()
    assert row is not None and timescale.edition_of(row[0]) is edition


def test_apache_build_migration_makes_hypertables_and_nothing_licence_only(
    rolled_back: tuple[psycopg.Connection[Any], str, str],
) -> None:
    conn, stub, schema = rolled_back
    _install(conn, stub, "apache")
    create_time_series(conn, schema, Edition.APACHE)
    calls = _calls(conn, stub)
    assert {fn for fn, _, _ in calls} == {"create_hypertable"}
    assert sorted(rel for _, rel, _ in calls) == sorted(
        f"{schema}.{t}" for t in ("readings", "readings_1m", "readings_15m", "readings_30m")
    )
    assert (f"{schema}.readings", "ts 1 day true") in [(r, a) for _, r, a in calls]
    # Plain tables (no partitions), the read models and the storage record exist.
    kind = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'readings'",
        (schema,),
    ).fetchone()
    assert kind == ("r",)
    stored = conn.execute(
        sql.SQL("SELECT value FROM {}.storage_info").format(sql.Identifier(schema))
    ).fetchone()
    assert stored == ("timescaledb",)


def test_community_build_adds_compression_and_retention_with_the_default_days(
    rolled_back: tuple[psycopg.Connection[Any], str, str],
) -> None:
    conn, stub, schema = rolled_back
    _install(conn, stub, "timescale")
    conn.execute(
        sql.SQL("CREATE TABLE {}.readings (ts timestamptz)").format(sql.Identifier(schema))
    )
    statements = timescale.hypertable_statements(
        schema, "readings", "ts", Edition.COMMUNITY, TIMESCALE_RETENTION_DAYS["readings"]
    )
    texts = [s.as_string(conn) for s in statements]
    assert texts[1] == (
        f'ALTER TABLE "{schema}"."readings" SET (timescaledb.compress, '
        "timescaledb.compress_segmentby = 'meter_id, quantity', "
        "timescaledb.compress_orderby = 'ts')"
    )
    for statement, text in zip(statements, texts, strict=True):
        if not text.startswith("ALTER TABLE"):  # only the extension knows timescaledb.* options
            conn.execute(statement)
    assert [(fn, args) for fn, _, args in _calls(conn, stub)] == [
        ("create_hypertable", "ts 1 day true"),
        ("add_compression_policy", "2 days"),
        ("add_retention_policy", "7 days"),
    ]


@pytest.fixture
async def async_rolled_back(
    services: Services,
) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], str, str]]:
    """The same as ``rolled_back`` for the workers' (async) retention."""
    suffix = uuid.uuid4().hex[:8]
    schema, stub = f"ts_{suffix}", f"tsstub_{suffix}"
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        await conn.execute(sql.SQL(STAND_INS.replace("{stub}", "{0}")).format(sql.Identifier(stub)))
        await conn.execute(
            sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(stub))
        )
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in ("readings", "readings_1m", "readings_15m", "readings_30m"):
            await conn.execute(
                sql.SQL("CREATE TABLE {}.{} (ts timestamptz)").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
        yield conn, stub, schema
        await conn.rollback()


async def _async_calls(conn: psycopg.AsyncConnection[Any], stub: str) -> list[tuple[str, str, str]]:
    cur = await conn.execute(
        sql.SQL("SELECT fn, relation, args FROM {}.calls ORDER BY n").format(sql.Identifier(stub))
    )
    return [(str(fn), str(rel), str(args)) for fn, rel, args in await cur.fetchall()]


async def test_apache_build_retention_drops_chunks_past_the_configured_days(
    async_rolled_back: tuple[psycopg.AsyncConnection[Any], str, str],
) -> None:
    conn, stub, schema = async_rolled_back
    await conn.execute("SELECT set_config('timescaledb.license', 'apache', true)")
    days = retention_days(raw_days=3, m1_days=10, aggregate_days=40)
    before = datetime.now(UTC)
    dropped = await timescale.enforce_retention(conn, schema, days)
    calls = await _async_calls(conn, stub)
    assert [fn for fn, _, _ in calls] == ["drop_chunks"] * 4
    assert len(dropped) == 4 and all(d.startswith("_timescaledb_internal._hyper_") for d in dropped)
    for (_, relation, older_than), (table, keep) in zip(calls, days.items(), strict=True):
        assert relation == f"{schema}.{table}"
        horizon = datetime.fromisoformat(older_than)
        assert abs(horizon - (before - timedelta(days=keep))) < timedelta(minutes=1)


async def test_community_build_retention_policies_follow_the_settings(
    async_rolled_back: tuple[psycopg.AsyncConnection[Any], str, str],
) -> None:
    conn, stub, schema = async_rolled_back
    await conn.execute("SELECT set_config('timescaledb.license', 'timescale', true)")
    days = retention_days(raw_days=7, m1_days=30, aggregate_days=90)
    done = await timescale.enforce_retention(conn, schema, days)
    assert done == [f"{t}: retention policy {d} days" for t, d in days.items()]
    assert await timescale.enforce_retention(conn, schema, days) == []  # already in force
    shorter = retention_days(raw_days=2, m1_days=30, aggregate_days=90)
    assert await timescale.enforce_retention(conn, schema, shorter) == [
        "readings: retention policy 2 days"
    ]
    cur = await conn.execute(
        "SELECT hypertable_name, config ->> 'drop_after' FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = %s ORDER BY hypertable_name",
        (schema,),
    )
    assert await cur.fetchall() == [
        ("readings", "2 days"),
        ("readings_15m", "90 days"),
        ("readings_1m", "30 days"),
        ("readings_30m", "90 days"),
    ]
    calls = [fn for fn, _, _ in await _async_calls(conn, stub)]
    assert "drop_chunks" not in calls and calls.count("remove_retention_policy") == 5
