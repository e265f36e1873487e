"""`hes bench ingest`: the full reading path, with a bare-COPY baseline measured in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from psycopg import sql
from rich.console import Console

from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams
from benchmarks.cluster import cpu_seconds
from benchmarks.store import copy_baseline
from bootstrap.connections import connect_nats
from bootstrap.migrate import migrate
from bootstrap.reading_worker import reading_worker
from config.settings import Settings
from domain.readings import MeterBatch, Reading, Source, partition_of
from projections.reading_store import WriteResult

QUANTITIES = (1, 2, 10, 20, 30, 40)
"""energy import/export, power import, voltage L1, current L1, power factor: six per meter."""


class Workload(msgspec.Struct, kw_only=True):
    """One sustained workload of `hes bench ingest`."""

    name: str
    interval_seconds: float
    readings: int
    messages: int
    seconds: float
    readings_per_s: float
    publish_readings_per_s: float
    to_copy_ratio: float
    worker_cpu_us_per_reading: float
    """CPU time the worker processes spent per reading (PostgreSQL's own time not included)."""


class IngestFigures(msgspec.Struct, kw_only=True):
    """What `hes bench ingest` measured (the JSON line it prints last)."""

    bench: str = "ingest"
    quarter_hour: Workload
    ten_second: Workload
    worker_processes: int
    latency_rate_target: float
    latency_rate_achieved: float
    latency_readings: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    copy_baseline_rows_per_s: float
    """Mean of the two baselines below: bare binary COPY of the same rows."""
    copy_baseline_before_rows_per_s: float
    copy_baseline_after_rows_per_s: float
    load_average_start: list[float]
    load_average_end: list[float]
    cpu_count: int
    started_at: str


def _batches(
    meters: int,
    intervals: int,
    start: datetime,
    region_of: int = 8,
    step: timedelta = timedelta(minutes=15),
    prefix: str = "bench-meter",
) -> list[MeterBatch]:
    """One message per meter per interval with its six quantities (as meters report them)."""
    now = datetime.now(UTC)
    ids = [uuid.uuid5(uuid.NAMESPACE_OID, f"{prefix}-{m}") for m in range(meters)]
    out = []
    for i in range(intervals):
        ts = start + step * i
        for m, id_ in enumerate(ids):
            readings = [
                Reading(quantity=q, ts=ts, value=float(1_000_000 + 250 * i) if q <= 2 else 230.0)
                for q in QUANTITIES
            ]
            out.append(
                MeterBatch(
                    meter=id_,
                    region=f"R{m % region_of}",
                    source=Source.SIMULATOR,
                    readings=readings,
                    received_at=now,
                )
            )
    return out


def _group(batches: Sequence[MeterBatch], per_message: int) -> list[MeterBatch]:
    """Merge consecutive intervals of one meter into messages of about ``per_message`` readings."""
    if per_message <= len(QUANTITIES):
        return list(batches)
    by_meter: dict[uuid.UUID, list[MeterBatch]] = {}
    for b in batches:
        by_meter.setdefault(b.meter, []).append(b)
    out: list[MeterBatch] = []
    step = max(1, per_message // len(QUANTITIES))
    for group in by_meter.values():
        for i in range(0, len(group), step):
            chunk = group[i : i + step]
            out.append(
                msgspec.structs.replace(chunk[0], readings=[r for b in chunk for r in b.readings])
            )
    return out


def workload_batches(readings: int, step: timedelta, per_message: int) -> list[MeterBatch]:
    """About ``readings`` readings of meters reporting every ``step``, a day back at most.

    Quarter-hour data: each meter reports a whole day (96 intervals). 10-second data: each
    meter reports half an hour (180 intervals), so that every 1-, 15- and 30-minute window fills.
    """
    per_meter = 96 if step >= timedelta(minutes=15) else 180
    meters = max(1, readings // (len(QUANTITIES) * per_meter))
    intervals = max(1, readings // (len(QUANTITIES) * meters))
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    prefix = f"bench-{int(step.total_seconds())}s"
    return _group(_batches(meters, intervals, start, step=step, prefix=prefix), per_message)


async def _stored(settings: Settings) -> int:
    assert settings.database.url
    async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
        row = await (
            await conn.execute(
                sql.SQL("SELECT coalesce(sum(readings_total), 0) FROM {}.meter_status").format(
                    sql.Identifier(settings.database.schema)
                )
            )
        ).fetchone()
    return int(row[0]) if row else 0


async def _registered(settings: Settings) -> int:
    assert settings.database.url
    async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
        row = await (
            await conn.execute(
                sql.SQL("SELECT count(*) FROM {}.meters").format(
                    sql.Identifier(settings.database.schema)
                )
            )
        ).fetchone()
    return int(row[0]) if row else 0


async def _leases_settled(settings: Settings, processes: int, within: float = 120.0) -> None:
    """Wait until ``processes`` workers hold every partition between them, evenly."""
    assert settings.database.url
    query = sql.SQL(
        "SELECT count(DISTINCT owner), count(owner), "
        "coalesce(max(n) - min(n), 0) FROM {s}.reading_leases l "
        "LEFT JOIN (SELECT owner AS o, count(*) AS n FROM {s}.reading_leases "
        "WHERE owner IS NOT NULL GROUP BY owner) c ON c.o = l.owner"
    ).format(s=sql.Identifier(settings.database.schema))
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(settings.database.url) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute(query)).fetchone()
            await conn.rollback()
            # Every partition held, by exactly these workers, shares differing by one at most.
            settled = row is not None and row[2] <= 1
            if settled and row is not None and row[:2] == (processes, settings.readings.partitions):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{processes} reading workers did not share the partitions in {within} s")


def _spawn_workers(settings: Settings, count: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "HES_DATABASE_URL": settings.database.url or "",
        "HES_NATS_URL": settings.nats.url or "",
        "HES_DB_SCHEMA": settings.database.schema,
        "HES_NATS_PREFIX": settings.nats.prefix,
        "HES_READING_PARTITIONS": str(settings.readings.partitions),
        "HES_READING_FETCH_BATCH": str(settings.readings.fetch_batch),
        "HES_LOG_LEVEL": "WARNING",
    }
    return [
        subprocess.Popen([sys.executable, "-m", "hes.cli", "workers", "run"], env=env)
        for _ in range(count)
    ]


async def sustained(
    settings: Settings,
    publisher: ReadingPublisher,
    batches: list[MeterBatch],
    processes: int,
    console: Console,
) -> tuple[int, float, float, float]:
    """Publish everything as fast as JetStream acks while worker processes drain it.

    Returns readings, seconds, the publish rate and the workers' CPU seconds meanwhile.
    """
    total = sum(len(b.readings) for b in batches)
    workers = _spawn_workers(settings, processes)
    try:
        await _leases_settled(settings, processes)
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        base = await _stored(settings)
        started = time.perf_counter()
        chunk = 2000
        for i in range(0, len(batches), chunk):
            part = batches[i : i + chunk]
            await publisher.publish(
                part, [partition_of(b.region, settings.readings.partitions) for b in part]
            )
        published = time.perf_counter() - started
        with console.status("workers draining…") as status:
            while True:
                done = await _stored(settings) - base
                status.update(f"workers draining… {done:,}/{total:,}")
                if done >= total:
                    break
                if time.perf_counter() - started > 600:
                    raise RuntimeError(f"workers stored only {done} of {total} in 10 minutes")
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    return total, elapsed, total / published, cpu


async def latency(
    settings: Settings,
    publisher: ReadingPublisher,
    rate: float,
    seconds: float,
    meters: int,
) -> tuple[list[float], float]:
    """Publish at a fixed rate (six readings per meter message); ingest-to-commit latencies."""
    assert settings.nats.url
    latencies: list[float] = []
    expected = [0]
    all_committed = asyncio.Event()

    def on_commit(batches: Sequence[MeterBatch], _: WriteResult, committed: datetime) -> None:
        for b in batches:
            ms = (committed - b.received_at).total_seconds() * 1000
            latencies.extend([ms] * len(b.readings))
        if expected[0] and len(latencies) >= expected[0]:
            all_committed.set()

    nc = await connect_nats(settings.nats)
    stop = asyncio.Event()
    worker = reading_worker(settings, nc, on_commit=on_commit)
    task = asyncio.create_task(worker.run(stop))
    # Publish only once the worker consumes every partition (its leases are taken).
    for _ in range(600):
        if len(worker.consumer.consuming) == settings.readings.partitions:
            break
        await asyncio.sleep(0.05)
    tick = 0.01
    per_tick = rate * tick / len(QUANTITIES)
    start_ts = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    sent = 0.0
    count = 0
    began = time.perf_counter()
    next_at = began
    while time.perf_counter() - began < seconds:
        sent += per_tick
        now = datetime.now(UTC)
        out = []
        while count < int(sent):
            m = count % meters
            ts = start_ts + timedelta(seconds=count // meters)
            out.append(
                MeterBatch(
                    meter=uuid.uuid5(uuid.NAMESPACE_OID, f"lat-meter-{m}"),
                    region=f"L{m % 8}",
                    source=Source.SIMULATOR,
                    readings=[Reading(quantity=q, ts=ts, value=230.0) for q in QUANTITIES],
                    received_at=now,
                )
            )
            count += 1
        if out:
            await publisher.publish(
                out, [partition_of(b.region, settings.readings.partitions) for b in out]
            )
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    achieved = count * len(QUANTITIES) / (time.perf_counter() - began)
    expected[0] = count * len(QUANTITIES)
    if len(latencies) >= expected[0]:
        all_committed.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_committed.wait(), 30)
    stop.set()
    await task
    await nc.drain()
    return latencies, achieved


async def bench_ingest(
    settings: Settings,
    console: Console,
    *,
    readings: int,
    per_message: int,
    processes: int,
    rate: float,
    latency_seconds: float,
) -> IngestFigures:
    """Run the whole measurement in a scratch schema and stream prefix, then clean up."""
    run = uuid.uuid4().hex[:8]
    s = settings.replace(db_schema=f"bench_{run}", nats_prefix=f"BENCH{run}_")
    assert s.database.url and s.nats.url
    started_at = datetime.now(UTC).isoformat()
    load_start = [round(x, 2) for x in os.getloadavg()]
    await migrate(s)
    nc = await connect_nats(s.nats, max_reconnect_attempts=-1, flush_timeout=10)
    workloads: list[tuple[str, timedelta, list[MeterBatch]]] = [
        (name, step, workload_batches(readings, step, per_message))
        for name, step in (
            ("quarter_hour", timedelta(minutes=15)),
            ("ten_second", timedelta(seconds=10)),
        )
    ]
    baseline_rows = [workloads[0][2][:20_000]]
    measured: list[tuple[str, timedelta, int, int, float, float, float]] = []
    try:
        publisher = ReadingPublisher(nc, s.nats)
        console.print("baseline: bare binary COPY of the same rows")
        copy_before = await copy_baseline(s.database.url, s.database.schema, baseline_rows)
        console.print(f"  {copy_before:,.0f} rows/s")
        for name, step, batches in workloads:
            console.print(
                f"sustained, {name} ({step.total_seconds():g} s data): "
                f"{sum(len(b.readings) for b in batches):,} readings in {len(batches):,} "
                f"messages, {processes} worker process(es)"
            )
            total, elapsed, publish_rate, cpu = await sustained(
                s, publisher, batches, processes, console
            )
            console.print(
                f"  {total / elapsed:,.0f} readings/s sustained (publish {publish_rate:,.0f}/s; "
                f"workers {1e6 * cpu / total:.2f} µs CPU per reading)"
            )
            measured.append((name, step, total, len(batches), elapsed, publish_rate, cpu))
        console.print(f"latency: {rate:,.0f} readings/s for {latency_seconds:.0f} s")
        lat, achieved = await latency(s, publisher, rate, latency_seconds, meters=50_000)
        lat.sort()
        console.print("baseline again")
        copy_after = await copy_baseline(s.database.url, s.database.schema, baseline_rows)
        console.print(f"  {copy_after:,.0f} rows/s")
    finally:
        await delete_streams(nc.jetstream(), s.nats.prefix)
        await nc.close()
        with psycopg.connect(s.database.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.database.schema))
            )
    copy_rate = (copy_before + copy_after) / 2
    figures = {
        name: Workload(
            name=name,
            interval_seconds=step.total_seconds(),
            readings=total,
            messages=messages,
            seconds=round(elapsed, 3),
            readings_per_s=round(total / elapsed),
            publish_readings_per_s=round(publish_rate),
            to_copy_ratio=round(total / elapsed / copy_rate, 3),
            worker_cpu_us_per_reading=round(1e6 * cpu / total, 2),
        )
        for name, step, total, messages, elapsed, publish_rate, cpu in measured
    }
    return IngestFigures(
        quarter_hour=figures["quarter_hour"],
        ten_second=figures["ten_second"],
        worker_processes=processes,
        latency_rate_target=rate,
        latency_rate_achieved=round(achieved),
        latency_readings=len(lat),
        latency_p50_ms=round(statistics.median(lat), 2) if lat else -1,
        latency_p99_ms=round(lat[int(len(lat) * 0.99) - 1], 2) if lat else -1,
        latency_max_ms=round(lat[-1], 2) if lat else -1,
        copy_baseline_rows_per_s=round(copy_rate),
        copy_baseline_before_rows_per_s=round(copy_before),
        copy_baseline_after_rows_per_s=round(copy_after),
        load_average_start=load_start,
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )


class HttpPhase(msgspec.Struct, kw_only=True):
    """Posting against some API replicas sharing one port."""

    replicas: int
    requests: int
    accepted_readings: int
    seconds: float
    http_readings_per_s: float
    resent_requests: int
    api_cpu_seconds: list[float]


class HttpFigures(msgspec.Struct, kw_only=True):
    """What `hes bench http` measured."""

    bench: str = "http"
    readings_per_request: int
    concurrency: int
    worker_processes: int
    phases: list[HttpPhase]
    scale_out_ratio: float
    """HTTP readings/s of the last phase over the first (replicas over one)."""
    end_to_end_seconds: float
    """Posting time of all phases plus the wait until the workers stored everything."""
    end_to_end_readings_per_s: float
    load_average_start: list[float]
    load_average_end: list[float]
    cpu_count: int
    started_at: str


async def bench_http(
    settings: Settings,
    console: Console,
    *,
    meters: int,
    seconds: float,
    concurrency: int,
    items_per_request: int,
    replicas: Sequence[int] = (1, 2),
    processes: int = 1,
) -> HttpFigures:
    """POST /telemetry/batch against 1, then N API replicas on one port; stored end to end."""
    from benchmarks.cluster import ClusterRig

    started_at = datetime.now(UTC).isoformat()
    load_start = [round(x, 2) for x in os.getloadavg()]
    rig = ClusterRig(settings, workers=processes, apis=0, meters=meters, nats_servers=0)
    phases: list[HttpPhase] = []
    failed = True
    try:
        await rig.prepare(console)
        total = 0
        for count in replicas:
            await rig.start_apis(count, console)
            cpu_before = rig.api_cpu_seconds()
            console.print(f"{count} API replica(s) on one port: posting for {seconds:.0f} s")
            started = time.perf_counter()
            accepted, resent, acks = await rig.post(seconds, concurrency, items_per_request)
            elapsed = time.perf_counter() - started
            cpu = [round(a - b, 2) for a, b in zip(rig.api_cpu_seconds(), cpu_before, strict=True)]
            rig.stop_apis()
            total += accepted
            phases.append(
                HttpPhase(
                    replicas=count,
                    requests=len(acks),
                    accepted_readings=accepted,
                    seconds=round(elapsed, 3),
                    http_readings_per_s=round(accepted / elapsed),
                    resent_requests=resent,
                    api_cpu_seconds=cpu,
                )
            )
            console.print(f"  {accepted / elapsed:,.0f} readings/s accepted (API CPU s: {cpu})")
        posted = time.perf_counter()
        with console.status("waiting for the workers to store everything…"):
            # Polling the database is the point: the workers run in other processes.
            while await rig.stored() < total and time.perf_counter() - posted < 600:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # Posting time of every phase plus the catch-up after the last one.
        end_to_end = sum(p.seconds for p in phases) + time.perf_counter() - posted
        failed = False
    finally:
        await rig.stop(keep_logs=failed)
    return HttpFigures(
        readings_per_request=items_per_request * 6,
        concurrency=concurrency,
        worker_processes=processes,
        phases=phases,
        scale_out_ratio=round(phases[-1].http_readings_per_s / phases[0].http_readings_per_s, 2),
        end_to_end_seconds=round(end_to_end, 3),
        end_to_end_readings_per_s=round(total / end_to_end),
        load_average_start=load_start,
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )
