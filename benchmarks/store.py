"""Throughput of ``ReadingStore.write`` against this machine's bare binary-COPY speed.

Writes synthetic readings into ``schema``: point it at a scratch schema, never a live one.
``python -m benchmarks.store postgresql://... bench_schema 500000 25600``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from domain.readings import MeterBatch, Reading, Source
from projections.migrations import migrate
from projections.reading_store import ReadingStore

READINGS_PER_BATCH = 100
QUANTITIES = (1, 2, 10, 20, 30, 40)
"""energy import/export, power import, voltage L1, current L1, power factor."""
CADENCE = timedelta(minutes=1)


def synthetic_writes(readings: int, batch_readings: int, start: datetime) -> list[list[MeterBatch]]:
    """``readings`` readings as writes of ``batch_readings``, 100 per meter batch.

    Each meter sends 1-minute profiles of 6 quantities; the fleet is sized so that every meter
    sends about four consecutive batches, mixing new and existing aggregate windows.
    """
    per_write = max(1, batch_readings // READINGS_PER_BATCH)
    total_batches = max(per_write, readings // READINGS_PER_BATCH)
    fleet = [uuid.uuid4() for _ in range(max(per_write, total_batches // 4))]
    steps = -(-READINGS_PER_BATCH // len(QUANTITIES))
    rng = random.Random(7)
    batches: list[MeterBatch] = []
    for n in range(total_batches):
        meter = fleet[n % len(fleet)]
        first = start + CADENCE * steps * (n // len(fleet))
        batches.append(
            MeterBatch(
                meter=meter,
                region=f"bench-{n % len(fleet) % 16}",
                source=Source.SIMULATOR,
                readings=[
                    Reading(
                        quantity=QUANTITIES[k % len(QUANTITIES)],
                        ts=first + CADENCE * (k // len(QUANTITIES)),
                        value=rng.uniform(0.0, 5000.0),
                    )
                    for k in range(READINGS_PER_BATCH)
                ],
                received_at=start,
            )
        )
    return [batches[i : i + per_write] for i in range(0, len(batches), per_write)]


async def _timed_writes(
    database_url: str, store: ReadingStore, writes: Sequence[Sequence[MeterBatch]]
) -> float:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        started = time.perf_counter()
        for batches in writes:
            await store.write(conn, batches)
        return time.perf_counter() - started


async def _timed_copy(
    database_url: str, schema: str, writes: Sequence[Sequence[MeterBatch]]
) -> float:
    table = sql.Identifier(schema, "bench_copy_baseline")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        await conn.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} (meter_id uuid, quantity smallint, ts timestamptz, "
                "value double precision, quality smallint, source smallint, "
                "received_at timestamptz)"
            ).format(table)
        )
        try:
            started = time.perf_counter()
            for batches in writes:
                async with (
                    conn.transaction(),
                    conn.cursor().copy(
                        sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)
                    ) as copy,
                ):
                    copy.set_types(
                        ["uuid", "int2", "timestamptz", "float8", "int2", "int2", "timestamptz"]
                    )
                    for b in batches:
                        for r in b.readings:
                            await copy.write_row(
                                (
                                    b.meter,
                                    r.quantity,
                                    r.ts,
                                    r.value,
                                    r.quality,
                                    b.source,
                                    b.received_at,
                                )
                            )
            return time.perf_counter() - started
        finally:
            await conn.execute(sql.SQL("DROP TABLE {}").format(table))


async def copy_baseline(
    database_url: str, schema: str, writes: Sequence[Sequence[MeterBatch]]
) -> float:
    """Rows/s of a bare binary COPY of these readings into an unlogged, index-free table."""
    rows = sum(len(b.readings) for batches in writes for b in batches)
    return rows / await _timed_copy(database_url, schema, writes)


async def bench_store(
    database_url: str, schema: str, readings: int, batch_readings: int, *, writers: int = 1
) -> dict[str, float]:
    """Sustained readings/s of ``ReadingStore.write`` and of a bare binary COPY, and their ratio."""
    await asyncio.to_thread(_migrate, database_url, schema)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=12)
    writes = synthetic_writes(readings, batch_readings, start)
    total = sum(len(b.readings) for batches in writes for b in batches)
    store = ReadingStore(schema, default_capacity_w=10_000_000.0)
    # Each writer takes every n-th write, on its own connection, as parallel workers would.
    seconds = max(
        await asyncio.gather(
            *(_timed_writes(database_url, store, writes[w::writers]) for w in range(writers))
        )
    )
    copy_seconds = await _timed_copy(database_url, schema, writes)
    write_rate = total / seconds
    copy_rate = total / copy_seconds
    return {
        "readings": float(total),
        "batch_readings": float(sum(len(b.readings) for b in writes[0])),
        "writers": float(writers),
        "write_seconds": seconds,
        "write_readings_per_s": write_rate,
        "copy_seconds": copy_seconds,
        "copy_rows_per_s": copy_rate,
        "write_to_copy_ratio": write_rate / copy_rate,
    }


def _migrate(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, schema)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark from the command line and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("database_url")
    parser.add_argument("schema")
    parser.add_argument("readings", type=int, nargs="?", default=500_000)
    parser.add_argument("batch_readings", type=int, nargs="?", default=25_600)
    parser.add_argument("--writers", type=int, default=1)
    args = parser.parse_args(argv)
    figures = asyncio.run(
        bench_store(
            args.database_url,
            args.schema,
            args.readings,
            args.batch_readings,
            writers=args.writers,
        )
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
