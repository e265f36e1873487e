"""Rebuild a read model from its source into a scratch schema and compare it with the live one.

``meters_view`` is replayed from the "meters" event store (position 0 up to the live view's
tracking position) through the very ``MetersProjection`` and ``MetersView`` the worker runs, only
bound to a scratch schema. ``readings`` is replayed from the ``READINGS`` stream (its first
retained message up to its last sequence at the start) through ``ReadingStore.write``.

What "equal" means: both sides hold the same set of primary keys and, for every key, the same
value in every column except those that record *when* something was processed
(``regional_load_15m.updated_at``). Text, integer, timestamp and JSON columns are compared
exactly, through an ``md5`` of the row's canonical text; ``double precision`` columns are equal
when they differ by at most a relative 1e-9, because sums accumulated over differently grouped
batches round differently in the last bits. Rows outside the live tables' retention, and —
when the stream no longer holds every message ever published (``partial``) — rows before the
stream's window (first retained message + the ingest future tolerance) are left out on both
sides; ``meter_status`` is cumulative and is then not compared at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, cast

import msgspec
import nats
import psycopg
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.utils import Environment
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from psycopg import sql
from rich.table import Table

from adapters.nats.reading_consumer import consumer_name
from adapters.nats.subjects import live_subject
from commands.meters import MeterRegistry
from config.settings import DatabaseSettings, NatsSettings, ReadingSettings
from domain.readings import MeterBatch, decode_batch
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView
from projections.migrations import METERS_VIEW, MIGRATIONS, TIME_SERIES
from projections.partitions import retention_days
from projections.reading_store import ReadingStore

NAMES = ("meters_view", "readings")
FLOAT_TOLERANCE = 1e-9
EXAMPLES = 5
PAGE = 500
"""Notifications read from the event store per page."""
READING_WRITE_MESSAGES = 256
"""Stream messages written per ``ReadingStore.write`` (a worker's default fetch)."""


class TableReport(msgspec.Struct, frozen=True, kw_only=True):
    """Comparison of one table, live against rebuilt."""

    table: str
    rows_live: int
    rows_rebuilt: int
    only_live: int
    only_rebuilt: int
    differing: int
    examples: list[str]
    """The first few keys (in key order) that are missing on one side or differ."""
    checksum_live: str
    """md5 over the exactly compared columns of every row, in key order."""
    checksum_rebuilt: str
    since: datetime | None = None
    """Only rows whose time column is at or after this instant were compared."""
    excluded: list[str] = []
    """Columns left out of the comparison."""
    skipped: str = ""
    """Why the table was not compared at all (then it counts as equal)."""

    @property
    def equal(self) -> bool:
        """True when no row is missing on either side and none differs."""
        return self.only_live == 0 and self.only_rebuilt == 0 and self.differing == 0


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of one rebuild."""

    name: str
    equal: bool
    scratch_schema: str
    kept: bool
    replayed: int
    """Events (meters_view) or stream messages (readings) replayed."""
    position: int | None
    """Event-store position (meters_view) or stream sequence (readings) both sides are at."""
    seconds: float
    partial: bool = False
    window_start: datetime | None = None
    live_pending: int = 0
    """READINGS messages the live workers had not yet acknowledged when the rebuild started."""
    tables: list[TableReport] = []


class _Spec(msgspec.Struct, frozen=True):
    table: str
    key: tuple[str, ...]
    time_column: str | None = None
    exclude: tuple[str, ...] = ()


_METERS = _Spec("meters", ("id",))
_READINGS_SPECS = (
    _Spec("readings", ("meter_id", "quantity", "ts"), "ts"),
    # Every window of each level as queries see it (stored or derived): which windows are
    # stored depends only on the readings, but the answer is what has to be equal.
    _Spec("windows_1m", ("meter_id", "quantity", "bucket"), "bucket"),
    _Spec("windows_15m", ("meter_id", "quantity", "bucket"), "bucket"),
    _Spec("windows_30m", ("meter_id", "quantity", "bucket"), "bucket"),
    _Spec("regional_load_15m", ("region", "bucket"), "bucket", ("updated_at",)),
    _Spec("regional_readings_15m", ("region", "bucket"), "bucket"),
    _Spec("meter_status", ("meter_id",)),
)


def scratch_schema_name(schema: str) -> str:
    """A fresh schema name next to ``schema``: ``<schema>_rebuild_<random hex>``."""
    return f"{schema}_rebuild_{secrets.token_hex(4)}"


Progress = Callable[[int, int], None]
"""Told ``(done, total)`` as a rebuild replays: events by position, or stream messages."""


def rebuild(
    database: DatabaseSettings,
    nats_settings: NatsSettings,
    readings: ReadingSettings,
    name: str,
    *,
    keep: bool = False,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild the read model ``name`` (one of ``NAMES``) and compare it with the live one."""
    if name == "meters_view":
        return rebuild_meters_view(database, keep=keep, progress=progress)
    if name == "readings":
        return asyncio.run(
            rebuild_readings(database, nats_settings, readings, keep=keep, progress=progress)
        )
    raise ValueError(f"unknown read model {name!r}: one of {', '.join(NAMES)}")


# -- meters_view ---------------------------------------------------------------------------


def rebuild_meters_view(
    database: DatabaseSettings, *, keep: bool = False, progress: Progress | None = None
) -> RebuildReport:
    """Replay the meters event store through ``MetersProjection`` into a scratch schema."""
    assert database.url is not None
    started = time.perf_counter()
    scratch = scratch_schema_name(database.schema)
    live_env = database.eventsourcing_env()
    scratch_env = live_env | {"POSTGRES_SCHEMA": scratch, "CREATE_TABLE": "y"}
    with psycopg.connect(database.url, autocommit=True) as conn:
        _create_schema(conn, scratch, versions=(METERS_VIEW,))
        app = MeterRegistry(env=live_env)
        factory = InfrastructureFactory.construct(Environment(MetersProjection.name, scratch_env))
        try:
            view = cast(MetersView, factory.tracking_recorder(MetersView))
            projection = MetersProjection(view=view)
            tracking = sql.Identifier(database.schema, view.tracking_table_name)
            position_query = sql.SQL(
                "SELECT max(notification_id) FROM {} WHERE application_name = %s"
            ).format(tracking)
            done, replayed = 0, 0
            target = _scalar(conn, position_query, (app.name,)) or 0
            for _ in range(10):
                replayed += _replay_events(
                    app, projection, after=done, upto=target, progress=progress
                )
                done = target
                report, live_position = _compare(
                    conn,
                    database.schema,
                    scratch,
                    _METERS,
                    position=(position_query, app.name),
                )
                if (live_position or 0) == target:
                    break
                target = live_position or 0  # the live view moved on meanwhile: catch up
        finally:
            factory.close()
            app.close()
            if not keep:
                _drop_schema(conn, scratch)
    return RebuildReport(
        name="meters_view",
        equal=report.equal,
        scratch_schema=scratch,
        kept=keep,
        replayed=replayed,
        position=target,
        seconds=round(time.perf_counter() - started, 3),
        tables=[report],
    )


def _replay_events(
    app: MeterRegistry,
    projection: MetersProjection,
    *,
    after: int,
    upto: int,
    progress: Progress | None = None,
) -> int:
    """Feed the projection every event of its topics with ``after < position <= upto``."""
    count = 0
    while after < upto:
        page = app.recorder.select_notifications(
            start=after,
            limit=PAGE,
            stop=upto,
            topics=MetersProjection.topics,
            inclusive_of_start=False,
        )
        if not page:
            break
        for notification in page:
            event = app.mapper.to_domain_event(notification)
            projection.process_event(event, Tracking(app.name, notification.id))
            count += 1
        after = page[-1].id
        if progress is not None:
            progress(after, upto)
    if progress is not None:
        progress(upto, upto)
    return count


# -- readings ------------------------------------------------------------------------------


async def rebuild_readings(
    database: DatabaseSettings,
    nats_settings: NatsSettings,
    readings: ReadingSettings,
    *,
    keep: bool = False,
    write_messages: int = READING_WRITE_MESSAGES,
    progress: Progress | None = None,
) -> RebuildReport:
    """Replay the READINGS stream through ``ReadingStore.write`` into a scratch schema."""
    assert database.url is not None and nats_settings.url is not None
    started = time.perf_counter()
    scratch = scratch_schema_name(database.schema)
    stream = nats_settings.stream("READINGS")
    nc = await nats.connect(nats_settings.servers, connect_timeout=5, max_reconnect_attempts=3)
    conn = await psycopg.AsyncConnection.connect(database.url, autocommit=True)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        first_seq, last_seq = info.state.first_seq, info.state.last_seq
        pending = await _live_pending(js, stream, readings.partitions)
        await asyncio.to_thread(_prepare_readings_schema, database, scratch)
        store = ReadingStore(scratch, readings.default_region_capacity_kw * 1000)
        replayed, first_time = await _replay_stream(
            js, nats_settings, conn, store, first_seq, last_seq, write_messages, progress
        )
        window_start: datetime | None = None
        if first_seq > 1:
            # A message received before the stream's first one holds no reading later than
            # that first message plus the future tolerance: every later reading is in the stream.
            oldest = first_time or datetime.now(UTC)
            window_start = oldest + timedelta(seconds=readings.future_tolerance_seconds)
        reports, partial = await asyncio.to_thread(
            _compare_readings, database, readings, scratch, window_start
        )
    finally:
        await conn.close()
        await nc.close()
        if not keep:
            await asyncio.to_thread(_drop_scratch, database, scratch)
    return RebuildReport(
        name="readings",
        equal=all(r.equal for r in reports),
        scratch_schema=scratch,
        kept=keep,
        replayed=replayed,
        position=last_seq,
        seconds=round(time.perf_counter() - started, 3),
        partial=partial,
        window_start=window_start,
        live_pending=pending,
        tables=reports,
    )


def _prepare_readings_schema(database: DatabaseSettings, scratch: str) -> None:
    assert database.url is not None
    with psycopg.connect(database.url, autocommit=True) as conn:
        _create_schema(conn, scratch, versions=TIME_SERIES)
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
                sql.Identifier(scratch, "region_capacity"),
                sql.Identifier(database.schema, "region_capacity"),
            )
        )


async def _live_pending(js: Any, stream: str, partitions: int) -> int:
    """Messages the live reading consumers have not yet acknowledged."""
    total = 0
    for partition in range(partitions):
        try:
            info = await js.consumer_info(stream, consumer_name(partition))
        except NotFoundError:
            continue
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total


async def _replay_stream(
    js: Any,
    nats_settings: NatsSettings,
    conn: psycopg.AsyncConnection[Any],
    store: ReadingStore,
    first_seq: int,
    last_seq: int,
    write_messages: int,
    progress: Progress | None = None,
) -> tuple[int, datetime | None]:
    """Write every message up to ``last_seq``; return the count and the first one's time."""
    if last_seq < first_seq:
        return 0, None
    stream = nats_settings.stream("READINGS")
    name = f"rebuild-{secrets.token_hex(6)}"
    config = ConsumerConfig(
        name=name,
        filter_subject=live_subject(nats_settings.prefix, None),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    await js.add_consumer(stream, config)
    subscription = await js.pull_subscribe_bind(consumer=name, stream=stream)
    replayed, first_time, seq = 0, None, 0
    try:
        while seq < last_seq:
            try:
                messages = await subscription.fetch(write_messages, timeout=2.0)
            except TimeoutError:
                break  # the rest aged out of the stream meanwhile
            batches: list[MeterBatch] = []
            for msg in messages:
                seq = msg.metadata.sequence.stream
                if seq > last_seq:
                    break
                if first_time is None:
                    first_time = msg.metadata.timestamp
                replayed += 1
                try:
                    batches.append(decode_batch(msg.data))
                except msgspec.DecodeError:
                    continue  # dead-lettered by the live workers: never stored
            await store.write(conn, batches)
            if progress is not None:
                progress(min(seq, last_seq) - first_seq + 1, last_seq - first_seq + 1)
    finally:
        await subscription.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, name)
    return replayed, first_time


def _compare_readings(
    database: DatabaseSettings,
    readings: ReadingSettings,
    scratch: str,
    window_start: datetime | None,
) -> tuple[list[TableReport], bool]:
    assert database.url is not None
    now = datetime.now(UTC)
    retention = retention_days(
        raw_days=readings.retention_raw_days,
        m1_days=readings.retention_1m_days,
        aggregate_days=readings.retention_aggregate_days,
    )
    reports: list[TableReport] = []
    with psycopg.connect(database.url, autocommit=True) as conn:
        partial = window_start is not None and _has_older(conn, database.schema, window_start)
        for spec in _READINGS_SPECS:
            if spec.table == "meter_status" and window_start is not None:
                reports.append(_skipped(spec, "cumulative: the stream no longer holds everything"))
                continue
            bounds = [b for b in (window_start,) if b is not None]
            table = spec.table.replace("windows_", "readings_")  # a level's view: its table's
            if table in retention:
                # Partitions of a day are dropped once the whole day is past the horizon.
                horizon = now - timedelta(days=retention[table])
                bounds.append(datetime(horizon.year, horizon.month, horizon.day, tzinfo=UTC))
            since = max(bounds) if bounds else None
            report, _ = _compare(conn, database.schema, scratch, spec, since=since)
            reports.append(report)
    return reports, partial


def _has_older(conn: psycopg.Connection[Any], schema: str, instant: datetime) -> bool:
    """True when a live time-series table holds data from before ``instant``."""
    for table, column in (("readings", "ts"), ("readings_30m", "bucket")):
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} < %s)").format(
            sql.Identifier(schema, table), sql.Identifier(column)
        )
        if _scalar(conn, query, (instant,)):
            return True
    return False


def _skipped(spec: _Spec, reason: str) -> TableReport:
    return TableReport(
        table=spec.table,
        rows_live=0,
        rows_rebuilt=0,
        only_live=0,
        only_rebuilt=0,
        differing=0,
        examples=[],
        checksum_live="",
        checksum_rebuilt="",
        skipped=reason,
    )


# -- schema and comparison -----------------------------------------------------------------


def _create_schema(conn: psycopg.Connection[Any], schema: str, versions: Sequence[int]) -> None:
    """Create ``schema`` with the tables of the given read-model migrations (their own SQL)."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        for version, _, statement in MIGRATIONS:
            if version not in versions:
                continue
            if isinstance(statement, str):
                conn.execute(sql.SQL(statement).format(schema=ident))  # type: ignore[arg-type]
            else:
                statement(conn, schema)


def _drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _drop_scratch(database: DatabaseSettings, schema: str) -> None:
    assert database.url is not None
    with psycopg.connect(database.url, autocommit=True) as conn:
        _drop_schema(conn, schema)


def _scalar(conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any]) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[tuple[str, bool]]:
    """Columns of a table in order, each with whether it is a float."""
    rows = conn.execute(
        "SELECT column_name, data_type IN ('double precision', 'real') "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return [(str(name), bool(is_float)) for name, is_float in rows]


_COMPARE: LiteralString = """
WITH l AS ({live}), r AS ({rebuilt}),
j AS (
    SELECT {keys}, l.h AS lh, r.h AS rh,
        (l.h IS NOT NULL AND r.h IS NOT NULL AND (l.h <> r.h OR {float_differs})) AS differs
    FROM l FULL JOIN r USING ({keys})
)
SELECT count(lh), count(rh),
    count(*) FILTER (WHERE rh IS NULL), count(*) FILTER (WHERE lh IS NULL),
    count(*) FILTER (WHERE differs),
    (array_agg(concat_ws('/', {keys}) ORDER BY {keys})
        FILTER (WHERE lh IS NULL OR rh IS NULL OR differs))[1:{examples}],
    coalesce(md5(string_agg(lh, '' ORDER BY {keys})), ''),
    coalesce(md5(string_agg(rh, '' ORDER BY {keys})), ''),
    ({position})
FROM j
"""


def _compare(
    conn: psycopg.Connection[Any],
    live: str,
    scratch: str,
    spec: _Spec,
    *,
    since: datetime | None = None,
    position: tuple[sql.Composed, Any] | None = None,
) -> tuple[TableReport, Any]:
    """Compare a table of ``live`` and ``scratch`` in one statement (one snapshot of each).

    ``position`` is a query (one parameter) read in the same statement, so the caller knows
    which live position the compared rows belong to.
    """
    columns = [
        (name, is_float)
        for name, is_float in _columns(conn, live, spec.table)
        if name not in spec.key and name not in spec.exclude
    ]
    exact = [sql.Identifier(name) for name, is_float in columns if not is_float]
    floats = [sql.Identifier(name) for name, is_float in columns if is_float]
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
    where: sql.Composable = sql.SQL("")
    params: list[Any] = []
    if since is not None and spec.time_column is not None:
        where = sql.SQL(" WHERE {} >= %s").format(sql.Identifier(spec.time_column))

    digest: sql.Composable = sql.SQL("''")
    if exact:
        digest = sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(exact))

    def side(schema: str) -> sql.Composable:
        return sql.SQL("SELECT {} FROM {}{}").format(
            sql.SQL(", ").join([keys, sql.SQL("{} AS h").format(digest), *floats]),
            sql.Identifier(schema, spec.table),
            where,
        )

    float_differs: sql.Composable = sql.SQL("false")
    if floats:
        float_differs = sql.SQL(" OR ").join(
            sql.SQL(
                "(l.{f} IS NULL) <> (r.{f} IS NULL) OR coalesce(abs(l.{f} - r.{f}) > "
                "{tol} * greatest(abs(l.{f}), abs(r.{f})), false)"
            ).format(f=f, tol=sql.Literal(FLOAT_TOLERANCE))
            for f in floats
        )
    if since is not None and spec.time_column is not None:
        params = [since, since]
    position_sql: sql.Composable = sql.SQL("NULL")
    if position is not None:
        position_sql = position[0]
        params.append(position[1])
    query = sql.SQL(_COMPARE).format(
        live=side(live),
        rebuilt=side(scratch),
        keys=keys,
        float_differs=float_differs,
        examples=sql.Literal(EXAMPLES),
        position=position_sql,
    )
    row = conn.execute(query, params).fetchone()
    assert row is not None
    report = TableReport(
        table=spec.table,
        rows_live=row[0],
        rows_rebuilt=row[1],
        only_live=row[2],
        only_rebuilt=row[3],
        differing=row[4],
        examples=list(row[5] or []),
        checksum_live=row[6],
        checksum_rebuilt=row[7],
        since=since if spec.time_column is not None else None,
        excluded=list(spec.exclude),
    )
    return report, row[8]


# -- output --------------------------------------------------------------------------------


def summary_table(report: RebuildReport) -> Table:
    """A rich table of a rebuild report, one line per compared table."""
    title = (
        f"rebuild {report.name}: {'EQUAL' if report.equal else 'NOT EQUAL'} "
        f"({report.replayed} replayed up to {report.position}, {report.seconds:.2f}s"
        + (f", partial since {report.window_start:%Y-%m-%d %H:%M:%S}" if report.partial else "")
        + (f", scratch {report.scratch_schema} kept" if report.kept else "")
        + ")"
    )
    table = Table(title=title)
    table.add_column("table", no_wrap=True)
    for header in ("live", "rebuilt", "only live", "only rebuilt", "differing"):
        table.add_column(header, justify="right")
    table.add_column("examples")
    for t in report.tables:
        if t.skipped:
            table.add_row(t.table, "-", "-", "-", "-", "-", f"skipped: {t.skipped}")
            continue
        style = "" if t.equal else "red"
        table.add_row(
            t.table,
            str(t.rows_live),
            str(t.rows_rebuilt),
            str(t.only_live),
            str(t.only_rebuilt),
            str(t.differing),
            ", ".join(t.examples),
            style=style,
        )
    return table


def report_json(report: RebuildReport) -> bytes:
    """The report as JSON, each table with its ``equal`` verdict."""
    data = msgspec.to_builtins(report)
    for table, entry in zip(report.tables, data["tables"], strict=True):
        entry["equal"] = table.equal
    return msgspec.json.encode(data)
