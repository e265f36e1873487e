"""ReadingStore on real PostgreSQL: aggregates, exactly-once, late data, load, partitions."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from config.settings import Settings
from domain.obis import BY_ALIAS, ENERGY_IMPORT, POWER_IMPORT
from domain.readings import MeterBatch, Reading, Source
from projections import reading_store
from projections.aggregate_levels import LEVELS, Level, windows_sql
from projections.migrations import MIGRATIONS, migrate
from projections.partitions import TABLES, drop_expired, ensure_partitions, partition_name
from projections.reading_store import ReadingStore, WriteResult

pytestmark = pytest.mark.integration

ENERGY = ENERGY_IMPORT.id
POWER = POWER_IMPORT.id
VOLTAGE = BY_ALIAS["voltage_l1"].id
DEFAULT_CAPACITY_W = 50_000.0
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
READ_MODELS = (
    "readings",
    "readings_1m",
    "readings_15m",
    "readings_30m",
    "regional_load_15m",
    "meter_status",
)

Key = tuple[UUID, int, datetime]


@dataclass
class Window:
    """Expected aggregate of one (meter, quantity, bucket)."""

    count: int
    sum: float
    min: float
    max: float
    first_ts: datetime
    first_value: float
    last_ts: datetime
    last_value: float


# Fixed once, so that a run crossing midnight UTC still agrees with itself about "today".
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def at(day_offset: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A UTC instant ``day_offset`` days from today."""
    return TODAY + timedelta(days=day_offset, hours=hour, minutes=minute, seconds=second)


def batch(meter: UUID, region: str, readings: Iterable[tuple[int, datetime, float]]) -> MeterBatch:
    """A meter batch of (quantity, ts, value) readings."""
    return MeterBatch(
        meter=meter,
        region=region,
        source=Source.HTTP,
        readings=[Reading(quantity=q, ts=ts, value=v) for q, ts, v in readings],
        received_at=datetime.now(UTC),
    )


def bucket_of(ts: datetime, minutes: int) -> datetime:
    """Start of the UTC window of ``minutes`` holding ``ts``."""
    step = timedelta(minutes=minutes)
    return EPOCH + ((ts - EPOCH) // step) * step


def reference(batches: Sequence[MeterBatch], minutes: int) -> dict[Key, Window]:
    """Aggregates computed in Python from the distinct readings of ``batches``."""
    seen: dict[Key, float] = {}
    for b in batches:
        for r in b.readings:
            seen.setdefault((b.meter, r.quantity, r.ts), r.value)
    windows: dict[Key, Window] = {}
    for (meter, quantity, ts), value in sorted(seen.items()):
        key = (meter, quantity, bucket_of(ts, minutes))
        w = windows.get(key)
        if w is None:
            windows[key] = Window(1, value, value, value, ts, value, ts, value)
            continue
        w.count += 1
        w.sum += value
        w.min, w.max = min(w.min, value), max(w.max, value)
        if ts < w.first_ts:
            w.first_ts, w.first_value = ts, value
        if ts > w.last_ts:
            w.last_ts, w.last_value = ts, value
    return windows


async def stored(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    table: str,
    meters: Iterable[UUID],
    physically: bool = False,
) -> dict[Key, Window]:
    """Windows of ``meters`` at ``table``'s level as queries see them (stored or derived), or
    only those the table stores (``physically``)."""
    source = table if physically else table.replace("readings_", "windows_")
    cur = await conn.execute(
        sql.SQL(
            "SELECT meter_id, quantity, bucket, count, sum, min, max, first_ts, first_value, "
            "last_ts, last_value FROM {}.{} WHERE meter_id = ANY(%s)"
        ).format(sql.Identifier(schema), sql.Identifier(source)),
        (list(meters),),
    )
    return {(r[0], r[1], r[2]): Window(*r[3:]) for r in await cur.fetchall()}


def assert_windows(actual: dict[Key, Window], expected: dict[Key, Window]) -> None:
    """Same windows, same counts and instants, values equal up to float rounding."""
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        got = actual[key]
        assert (got.count, got.first_ts, got.last_ts) == (want.count, want.first_ts, want.last_ts)
        assert (got.sum, got.min, got.max, got.first_value, got.last_value) == pytest.approx(
            (want.sum, want.min, want.max, want.first_value, want.last_value)
        ), key


async def dump(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, list[str]]:
    """Every row of every time-series read model, as text, in a stable order."""
    tables: dict[str, list[str]] = {}
    for table in READ_MODELS:
        cur = await conn.execute(
            sql.SQL("SELECT t::text FROM {}.{} t ORDER BY 1").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
        tables[table] = [r[0] for r in await cur.fetchall()]
    return tables


async def regional(
    conn: psycopg.AsyncConnection[Any], schema: str, region: str
) -> dict[datetime, tuple[int, float, float, float]]:
    """``bucket -> (meters, power_w, capacity_w, load_pct)`` of a region."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT bucket, meters, power_w, capacity_w, load_pct "
            "FROM {}.regional_load_15m WHERE region = %s"
        ).format(sql.Identifier(schema)),
        (region,),
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in await cur.fetchall()}


def region_name(label: str) -> str:
    """A region name no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection to the test database."""
    assert settings.database.url is not None
    async with await psycopg.AsyncConnection.connect(
        settings.database.url, autocommit=True
    ) as connection:
        yield connection


@pytest.fixture(params=["inline", "copy"])
def store(
    settings: Settings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> ReadingStore:
    """A store writing into the test schema: small groups inline, or every group by COPY."""
    if request.param == "copy":
        monkeypatch.setattr(reading_store, "_INLINE_READINGS", 0)
    return ReadingStore(settings.database.schema, default_capacity_w=DEFAULT_CAPACITY_W)


async def test_aggregates_windows_first_last_and_register_delta(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meter, region = uuid.uuid4(), region_name("agg")
    energy = [
        (at(-1, 10, 0, 0), 1000.0),
        (at(-1, 10, 0, 40), 1004.0),
        (at(-1, 10, 1, 10), 1010.0),
        (at(-1, 10, 14, 59), 1100.0),
        (at(-1, 10, 15, 0), 1101.0),
        (at(-1, 10, 29, 30), 1150.0),
        (at(-1, 10, 31, 0), 1160.0),
    ]
    power = [(at(-1, 10, m), float(100 * m + 50)) for m in (0, 7, 16, 44)]
    b = batch(
        meter,
        region,
        [(ENERGY, ts, v) for ts, v in energy] + [(POWER, ts, v) for ts, v in power],
    )

    result = await store.write(conn, [b])

    assert result == WriteResult(received=11, inserted=11, duplicates=0)
    for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
        actual = await stored(conn, settings.database.schema, table, [meter])
        assert_windows(actual, reference([b], minutes))
    m15 = await stored(conn, settings.database.schema, "readings_15m", [meter])
    first_quarter = m15[(meter, ENERGY, at(-1, 10))]
    assert first_quarter.count == 4
    assert first_quarter.sum / first_quarter.count == pytest.approx(4114.0 / 4)
    assert first_quarter.last_value - first_quarter.first_value == pytest.approx(100.0)
    m30 = await stored(conn, settings.database.schema, "readings_30m", [meter])
    half_hour = m30[(meter, ENERGY, at(-1, 10))]
    assert half_hour.last_value - half_hour.first_value == pytest.approx(150.0)
    assert m30[(meter, ENERGY, at(-1, 10, 30))].count == 1

    cur = await conn.execute(
        sql.SQL(
            "SELECT region, last_seen, readings_total, last_energy_wh, last_energy_ts "
            "FROM {}.meter_status WHERE meter_id = %s"
        ).format(sql.Identifier(settings.database.schema)),
        (meter,),
    )
    assert await cur.fetchone() == (region, at(-1, 10, 44), 11, 1160.0, at(-1, 10, 31))
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM {}.readings WHERE meter_id = %s").format(
            sql.Identifier(settings.database.schema)
        ),
        (meter,),
    )
    assert await cur.fetchone() == (11,)


async def test_redelivered_and_repeated_readings_change_nothing(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meters, region = [uuid.uuid4(), uuid.uuid4()], region_name("dup")
    batches = [
        batch(
            m,
            region,
            [
                (q, at(-1, 11, minute), float(q * 1000 + minute))
                for minute in range(0, 40, 3)
                for q in (ENERGY, POWER, VOLTAGE)
            ],
        )
        for m in meters
    ]
    # The same key twice within one batch: the first one is kept.
    repeated = batch(
        meters[0], region, [(POWER, at(-1, 11, 50), 7.0), (POWER, at(-1, 11, 50), 9.0)]
    )

    first = await store.write(conn, [*batches, repeated])
    assert first == WriteResult(received=2 * 14 * 3 + 2, inserted=2 * 14 * 3 + 1, duplicates=1)
    before = await dump(conn, settings.database.schema)

    again = await store.write(conn, [*batches, repeated])
    partly = await store.write(conn, [batches[1], batches[0], repeated, repeated])

    assert again == WriteResult(received=first.received, inserted=0, duplicates=first.received)
    assert partly.inserted == 0
    assert await dump(conn, settings.database.schema) == before
    cur = await conn.execute(
        sql.SQL("SELECT value FROM {}.readings WHERE meter_id = %s AND ts = %s").format(
            sql.Identifier(settings.database.schema)
        ),
        (meters[0], at(-1, 11, 50)),
    )
    assert await cur.fetchall() == [(7.0,)]


async def test_late_and_out_of_order_readings_land_in_their_windows(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meter, region = uuid.uuid4(), region_name("late")
    on_time = batch(meter, region, [(ENERGY, at(-1, 12, m), 500.0 + m) for m in range(5, 11)])
    late_inside = batch(meter, region, [(ENERGY, at(-1, 12, 1), 490.0)])
    late_after = batch(meter, region, [(ENERGY, at(-1, 12, 12, 30), 520.0)])
    older_window = batch(meter, region, [(ENERGY, at(-1, 11, 40), 450.0)])
    shuffled = batch(
        meter, region, [(ENERGY, at(-1, 12, m, 30), 500.0 + m + 0.5) for m in (9, 2, 7, 3)]
    )

    for b in (on_time, late_after, late_inside, older_window, shuffled):
        await store.write(conn, [b])

    everything = [on_time, late_inside, late_after, older_window, shuffled]
    for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
        assert_windows(
            await stored(conn, settings.database.schema, table, [meter]),
            reference(everything, minutes),
        )
    m15 = await stored(conn, settings.database.schema, "readings_15m", [meter])
    window = m15[(meter, ENERGY, at(-1, 12))]
    assert (window.first_ts, window.first_value) == (at(-1, 12, 1), 490.0)
    assert (window.last_ts, window.last_value) == (at(-1, 12, 12, 30), 520.0)
    assert window.count == 12
    assert m15[(meter, ENERGY, at(-1, 11, 30))].count == 1
    m30 = await stored(conn, settings.database.schema, "readings_30m", [meter])
    assert m30[(meter, ENERGY, at(-1, 11, 30))].first_value == 450.0
    half_hour = m30[(meter, ENERGY, at(-1, 12))]
    assert half_hour.last_value - half_hour.first_value == pytest.approx(30.0)


async def test_regional_load_sums_meter_averages_against_capacity(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    schema = sql.Identifier(settings.database.schema)
    configured, unconfigured = region_name("load"), region_name("load-default")
    await conn.execute(
        sql.SQL("INSERT INTO {}.region_capacity (region, capacity_w) VALUES (%s, 10000)").format(
            schema
        ),
        (configured,),
    )
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    window, next_window = at(-1, 14), at(-1, 14, 15)

    await store.write(
        conn,
        [batch(a, configured, [(POWER, at(-1, 14, 1), 1000.0), (POWER, at(-1, 14, 5), 2000.0)])],
    )
    assert (await regional(conn, settings.database.schema, configured))[window] == pytest.approx(
        (1, 1500.0, 10000.0, 15.0)
    )
    await store.write(
        conn,
        [
            batch(a, configured, [(POWER, at(-1, 14, 10), 3000.0), (ENERGY, at(-1, 14, 10), 9e6)]),
            batch(b, configured, [(POWER, at(-1, 14, 2), 500.0), (POWER, at(-1, 14, 7), 1500.0)]),
            batch(
                c, unconfigured, [(POWER, at(-1, 14, 3), 2500.0), (VOLTAGE, at(-1, 14, 3), 230.0)]
            ),
        ],
    )
    assert (await regional(conn, settings.database.schema, configured))[window] == pytest.approx(
        (2, 3000.0, 10000.0, 30.0)
    )
    # A late reading moves meter a's average from 2000 W to 3000 W; another window is separate.
    await store.write(
        conn,
        [batch(a, configured, [(POWER, at(-1, 14, 14), 6000.0), (POWER, at(-1, 14, 16), 800.0)])],
    )

    assert await regional(conn, settings.database.schema, configured) == {
        window: pytest.approx((2, 4000.0, 10000.0, 40.0)),
        next_window: pytest.approx((1, 800.0, 10000.0, 8.0)),
    }
    assert await regional(conn, settings.database.schema, unconfigured) == {
        window: pytest.approx((1, 2500.0, DEFAULT_CAPACITY_W, 100 * 2500.0 / DEFAULT_CAPACITY_W))
    }


async def physical(
    conn: psycopg.AsyncConnection[Any], schema: str, table: str, meters: Iterable[UUID]
) -> dict[Key, int]:
    """``(meter, quantity, bucket) -> count`` of the windows ``table`` actually stores."""
    return {key: w.count for key, w in (await stored(conn, schema, table, meters, True)).items()}


async def test_quarter_hour_data_stores_only_the_half_hours_and_answers_every_level(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meter, region = uuid.uuid4(), region_name("qh")
    readings = [
        (q, at(-1, 0, 15 * i), float(1000 + i if q == ENERGY else 200 + i))
        for i in range(16)
        for q in (ENERGY, POWER, VOLTAGE)
    ]
    b = batch(meter, region, readings)

    assert (await store.write(conn, [b])).inserted == 48

    schema = settings.database.schema
    half_hours = await physical(conn, schema, "readings_30m", [meter])
    assert len(half_hours) == 24 and set(half_hours.values()) == {2}
    assert await physical(conn, schema, "readings_15m", [meter]) == {}
    assert await physical(conn, schema, "readings_1m", [meter]) == {}
    for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
        assert_windows(await stored(conn, schema, table, [meter]), reference([b], minutes))
    cur = await conn.execute(
        sql.SQL("SELECT bucket, readings FROM {}.regional_readings_15m WHERE region = %s").format(
            sql.Identifier(schema)
        ),
        (region,),
    )
    assert dict(await cur.fetchall()) == {at(-1, 0, 15 * i): 3 for i in range(16)}


async def test_ten_second_data_keeps_all_three_levels(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meter, region = uuid.uuid4(), region_name("10s")
    b = batch(meter, region, [(VOLTAGE, at(-1, 3, 0, 10 * i), 230.0 + i % 7) for i in range(360)])

    await store.write(conn, [b])

    schema = settings.database.schema
    counts = {
        table: sorted(set((await physical(conn, schema, table, [meter])).values()))
        for table in ("readings_1m", "readings_15m", "readings_30m")
    }
    assert counts == {"readings_1m": [6], "readings_15m": [90], "readings_30m": [180]}
    assert len(await physical(conn, schema, "readings_1m", [meter])) == 60


async def test_five_minute_data_keeps_no_minute_windows_and_derives_them(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    meter, region = uuid.uuid4(), region_name("5m")
    b = batch(meter, region, [(ENERGY, at(-1, 4, 5 * i), 100.0 + i) for i in range(12)])

    await store.write(conn, [b])

    schema = settings.database.schema
    assert await physical(conn, schema, "readings_1m", [meter]) == {}
    assert set((await physical(conn, schema, "readings_15m", [meter])).values()) == {3}
    for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
        assert_windows(await stored(conn, schema, table, [meter]), reference([b], minutes))


@pytest.mark.parametrize("seed", [18, 19, 20, 21])
async def test_windows_grow_from_derived_to_stored_in_any_order_and_batching(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore, seed: int
) -> None:
    rng = random.Random(seed)
    schema = settings.database.schema
    region = region_name("grow")
    meters = [uuid.uuid4() for _ in range(3)]
    # Sparse, dense and repeated readings around window edges, sent in random groups and
    # orders, some twice: each level must equal the reference and store only what compresses.
    offsets = [0, 1, 14, 15, 16, 29, 30, 31, 44, 59, 60, 75, 89]
    readings = [
        (m, q, at(-1, 6, minute, second), round(rng.uniform(0, 1000), 3))
        for m in meters
        for q in (ENERGY, POWER)
        for minute in rng.sample(offsets, rng.randint(1, len(offsets)))
        for second in rng.sample([0, 20, 40], rng.randint(1, 2))
    ]
    # And a dense stretch (a reading every 20 s): its 15-minute windows grow past 15 readings.
    readings += [
        (meters[0], VOLTAGE, at(-1, 6, 90 + n // 3, 20 * (n % 3)), 230.0 + n % 5)
        for n in rng.sample(range(60), rng.randint(20, 60))
    ]
    singles = [batch(m, region, [(q, ts, v)]) for m, q, ts, v in readings]
    rng.shuffle(singles)
    groups: list[list[MeterBatch]] = []
    i = 0
    while i < len(singles):
        n = rng.randint(1, 9)
        groups.append(singles[i : i + n])
        i += n
    groups += rng.sample(groups, 3)  # redeliveries

    for group in groups:
        await store.write(conn, group)

    for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
        assert_windows(await stored(conn, schema, table, meters), reference(singles, minutes))
    half = reference(singles, 30)
    quarter = reference(singles, 15)
    assert set(await physical(conn, schema, "readings_30m", meters)) == set(half)
    assert set(await physical(conn, schema, "readings_15m", meters)) == {
        key for key in quarter if half[(key[0], key[1], bucket_of(key[2], 30))].count >= 3
    }
    assert set(await physical(conn, schema, "readings_1m", meters)) == {
        key
        for key in reference(singles, 1)
        if quarter[(key[0], key[1], bucket_of(key[2], 15))].count >= 16
    }
    # The regional load saw every power window grow the way a single write would have.
    twin_region = region_name("grow-ref")
    twin = {m: uuid.uuid4() for m in meters}
    await store.write(
        conn,
        [
            MeterBatch(
                meter=twin[b.meter],
                region=twin_region,
                source=b.source,
                readings=b.readings,
                received_at=b.received_at,
            )
            for b in singles
        ],
    )
    mine, want = (
        await regional(conn, schema, region),
        await regional(conn, schema, twin_region),
    )
    assert mine.keys() == want.keys()
    for window, row in want.items():
        assert mine[window] == pytest.approx(row)


async def partitions_of(conn: psycopg.AsyncConnection[Any], schema: str) -> set[str]:
    """Names of the partitions of the time-series tables in ``schema``."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = ANY(%s)",
        (schema, list(TABLES)),
    )
    return {r[0] for r in await cur.fetchall()}


def names(days: Iterable[date], tables: Iterable[str] = TABLES) -> set[str]:
    """Partition names of ``tables`` for ``days``."""
    return {partition_name(t, d) for d in days for t in tables}


async def test_partitions_are_created_on_demand(
    settings: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    store = ReadingStore(settings.database.schema, default_capacity_w=DEFAULT_CAPACITY_W)
    meter, region = uuid.uuid4(), region_name("part")
    # Two days ahead: the session's reading workers pre-create tomorrow's partitions.
    days = [at(-3, 0).date(), at(2, 0).date()]
    assert not names(days) & await partitions_of(conn, settings.database.schema)

    result = await store.write(
        conn, [batch(meter, region, [(POWER, at(-3, 23, 59), 1.0), (POWER, at(2, 0, 1), 2.0)])]
    )

    assert result.inserted == 2
    assert names(days) <= await partitions_of(conn, settings.database.schema)
    assert await ensure_partitions(conn, settings.database.schema, days) == []
    cur = await conn.execute(
        sql.SQL(
            "SELECT tableoid::regclass::text FROM {}.readings WHERE meter_id = %s ORDER BY ts"
        ).format(sql.Identifier(settings.database.schema)),
        (meter,),
    )
    assert [r[0].split(".")[-1] for r in await cur.fetchall()] == [
        partition_name("readings", d) for d in days
    ]


async def test_write_recovers_when_a_known_partition_was_dropped_elsewhere(
    settings: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    store = ReadingStore(settings.database.schema, default_capacity_w=DEFAULT_CAPACITY_W)
    meter, region = uuid.uuid4(), region_name("stale")
    await store.write(conn, [batch(meter, region, [(POWER, at(-5, 9), 1.0)])])
    # Another process's retention drops the partition this process remembers.
    await conn.execute(
        sql.SQL("DROP TABLE {}.{}").format(
            sql.Identifier(settings.database.schema),
            sql.Identifier(partition_name("readings", at(-5, 0).date())),
        )
    )

    result = await store.write(conn, [batch(meter, region, [(POWER, at(-5, 9, 1), 2.0)])])

    assert result.inserted == 1
    assert partition_name("readings", at(-5, 0).date()) in await partitions_of(
        conn, settings.database.schema
    )


async def test_drop_expired_drops_exactly_the_partitions_past_retention(
    settings: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    schema = settings.database.schema
    now = at(0, 6)
    old = {n: at(-n, 0).date() for n in (8, 7, 31, 30, 91, 90)}
    await ensure_partitions(conn, schema, old.values())
    before = await partitions_of(conn, schema)

    dropped = await drop_expired(conn, schema, now=now, raw_days=7, m1_days=30, aggregate_days=90)

    expected = (
        names([old[n] for n in (8, 31, 30, 91, 90)], ["readings"])
        | names([old[n] for n in (31, 91, 90)], ["readings_1m"])
        | names([old[91]], ["readings_15m", "readings_30m"])
    )
    assert set(dropped) == expected
    after = await partitions_of(conn, schema)
    assert after == before - expected
    assert names([old[7]]) | names([old[30], old[8]], ["readings_1m"]) <= after
    assert names([old[90]], ["readings_15m", "readings_30m"]) <= after
    assert (
        await drop_expired(conn, schema, now=now, raw_days=7, m1_days=30, aggregate_days=90) == []
    )
    # The process forgot what it dropped: asking again recreates.
    assert set(await ensure_partitions(conn, schema, [old[8]])) == names([old[8]], ["readings"])


async def test_concurrent_writers_total_like_a_single_writer(
    settings: Settings, conn: psycopg.AsyncConnection[Any], store: ReadingStore
) -> None:
    assert settings.database.url is not None
    url = settings.database.url
    rng = random.Random(42)
    regions = [region_name("cc-a"), region_name("cc-b")]
    meters = [uuid.uuid4() for _ in range(6)]
    batches = [
        batch(
            meter,
            regions[i % 2],
            [
                (q, at(-1, 16, minute), rng.uniform(0, 5000) if q != ENERGY else 1e4 + minute)
                for minute in range(start, start + 10)
                for q in (ENERGY, POWER, VOLTAGE)
            ],
        )
        for i, meter in enumerate(meters)
        for start in range(0, 90, 10)
    ]
    # Every batch goes to two of the four writers, each in its own order and grouping.
    workloads: list[list[list[MeterBatch]]] = []
    for w in range(4):
        mine = [b for i, b in enumerate(batches) if i % 4 in (w, (w + 1) % 4)]
        rng.shuffle(mine)
        workloads.append([mine[i : i + 5] for i in range(0, len(mine), 5)])

    async def writer(writes: list[list[MeterBatch]]) -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as own:
            return sum([(await store.write(own, bs)).inserted for bs in writes])

    inserted = await asyncio.gather(*(writer(w) for w in workloads))

    assert sum(inserted) == sum(len(b.readings) for b in batches)
    # Reference: the same readings under other meter ids and regions, one writer, one pass.
    twin = {m: uuid.uuid4() for m in meters}
    twin_region = {r: region_name("cc-ref") for r in regions}
    reference_batches = [
        MeterBatch(
            meter=twin[b.meter],
            region=twin_region[b.region],
            source=b.source,
            readings=b.readings,
            received_at=b.received_at,
        )
        for b in batches
    ]
    for i in range(0, len(reference_batches), 9):
        await store.write(conn, reference_batches[i : i + 9])

    for table in ("readings_1m", "readings_15m", "readings_30m"):
        concurrent = await stored(conn, settings.database.schema, table, meters)
        single = await stored(conn, settings.database.schema, table, twin.values())
        assert_windows({(twin[m], q, t): w for (m, q, t), w in concurrent.items()}, single)
    for region in regions:
        got = await regional(conn, settings.database.schema, region)
        want = await regional(conn, settings.database.schema, twin_region[region])
        assert got.keys() == want.keys()
        for window, row in want.items():
            assert got[window] == pytest.approx(row)
    cur = await conn.execute(
        sql.SQL(
            "SELECT meter_id, last_seen, readings_total, last_energy_wh, last_energy_ts "
            "FROM {}.meter_status WHERE meter_id = ANY(%s)"
        ).format(sql.Identifier(settings.database.schema)),
        (meters + list(twin.values()),),
    )
    status = {r[0]: r[1:] for r in await cur.fetchall()}
    assert {twin[m]: status[m] for m in meters} == {t: status[t] for t in twin.values()}


async def test_writes_inside_an_open_transaction_keep_batches_apart(
    settings: Settings, store: ReadingStore
) -> None:
    assert settings.database.url is not None
    a, b, region = uuid.uuid4(), uuid.uuid4(), region_name("tx")
    async with await psycopg.AsyncConnection.connect(settings.database.url) as tx:
        await tx.execute("SELECT 1")  # an outer transaction is now open
        first = await store.write(tx, [batch(a, region, [(POWER, at(-1, 18, 1), 10.0)])])
        second = await store.write(tx, [batch(b, region, [(POWER, at(-1, 18, 2), 20.0)])])
        await tx.commit()
        cur = await tx.execute(
            sql.SQL(
                "SELECT meter_id, value FROM {}.readings WHERE meter_id = ANY(%s) ORDER BY ts"
            ).format(sql.Identifier(settings.database.schema)),
            ([a, b],),
        )
        rows = await cur.fetchall()

    assert (first.inserted, second.inserted) == (1, 1)
    assert rows == [(a, 10.0), (b, 20.0)]


def test_migration_uses_native_partitions_here_and_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.database.url is not None
    schema = f"{settings.database.schema}_m"
    with psycopg.connect(settings.database.url, autocommit=True) as c:
        try:
            with caplog.at_level(logging.INFO, logger="projections.migrations"):
                assert migrate(c, schema) == [m[0] for m in MIGRATIONS]
            kinds = c.execute(
                "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
                (schema, list(TABLES)),
            ).fetchall()
            info = c.execute(
                sql.SQL("SELECT key, value FROM {}.storage_info").format(sql.Identifier(schema))
            ).fetchall()
        finally:
            c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    assert "time-series storage: native daily partitions" in caplog.text
    assert dict(kinds) == dict.fromkeys(TABLES, "p")
    assert info == [("time_series", "native")]


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
async def test_a_meters_windows_are_read_by_index_range_scans(
    settings: Settings, conn: psycopg.AsyncConnection[Any], level: Level
) -> None:
    query = sql.SQL("EXPLAIN ") + windows_sql(
        settings.database.schema, level, meters="one", quantity=True
    )
    await conn.execute("SET enable_seqscan = off")
    try:
        cur = await conn.execute(
            query,
            {"meter": uuid.uuid4(), "quantity": ENERGY, "start": at(-2, 0), "end": at(0, 0)},
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    finally:
        await conn.execute("RESET enable_seqscan")
    assert "Index" in plan and "Seq Scan" not in plan, plan


async def test_a_window_another_writer_inserts_meanwhile_is_merged_not_lost(
    settings: Settings, store: ReadingStore
) -> None:
    assert settings.database.url is not None
    meter, region = uuid.uuid4(), region_name("race")
    first = batch(meter, region, [(POWER, at(-1, 20, 1), 100.0), (ENERGY, at(-1, 20, 1), 5.0)])
    second = batch(meter, region, [(POWER, at(-1, 20, 7), 300.0), (ENERGY, at(-1, 20, 7), 9.0)])
    url = settings.database.url
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as a,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as b,
    ):
        await a.execute("BEGIN")
        await store.write(a, [first])  # its new half hour is inserted, not yet committed
        racing = asyncio.create_task(store.write(b, [second]))  # the same new half hour
        await asyncio.sleep(0.5)
        assert not racing.done(), "b waits for a's uncommitted window"
        await a.execute("COMMIT")
        assert (await asyncio.wait_for(racing, 10)).inserted == 2
        for table, minutes in (("readings_1m", 1), ("readings_15m", 15), ("readings_30m", 30)):
            assert_windows(
                await stored(a, settings.database.schema, table, [meter]),
                reference([first, second], minutes),
            )
        assert (await regional(a, settings.database.schema, region))[at(-1, 20)] == pytest.approx(
            (1, 200.0, DEFAULT_CAPACITY_W, 100 * 200.0 / DEFAULT_CAPACITY_W)
        )
