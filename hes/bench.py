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
import nats
import psycopg
from psycopg import sql
from rich.console import Console

from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams
from domain.readings import MeterBatch, Reading, Source, partition_of
from hes.migrate import migrate
from hes.settings import Settings
from projections.reading_store import WriteResult
from projections.reading_worker import ReadingWorker
from projections.store_bench import copy_baseline

QUANTITIES = (1, 2, 10, 20, 30, 40)
"""energy import/export, power import, voltage L1, current L1, power factor: six per meter."""


class IngestFigures(msgspec.Struct, kw_only=True):
    """What `hes bench ingest` measured (the JSON line it prints last)."""

    bench: str = "ingest"
    sustained_readings: int
    sustained_seconds: float
    sustained_readings_per_s: float
    publish_readings_per_s: float
    worker_processes: int
    latency_rate_target: float
    latency_rate_achieved: float
    latency_readings: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    copy_baseline_rows_per_s: float
    sustained_to_copy_ratio: float
    cpu_count: int
    started_at: str


def _batches(meters: int, intervals: int, start: datetime, region_of: int = 8) -> list[MeterBatch]:
    """One message per meter per interval with its six quantities (as meters report them)."""
    now = datetime.now(UTC)
    ids = [uuid.uuid5(uuid.NAMESPACE_OID, f"bench-meter-{m}") for m in range(meters)]
    out = []
    for i in range(intervals):
        ts = start + timedelta(minutes=15 * i)
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


async def _stored(settings: Settings) -> int:
    assert settings.database_url
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        row = await (
            await conn.execute(
                sql.SQL("SELECT coalesce(sum(readings_total), 0) FROM {}.meter_status").format(
                    sql.Identifier(settings.db_schema)
                )
            )
        ).fetchone()
    return int(row[0]) if row else 0


async def _registered(settings: Settings) -> int:
    assert settings.database_url
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        row = await (
            await conn.execute(
                sql.SQL("SELECT count(*) FROM {}.meters").format(sql.Identifier(settings.db_schema))
            )
        ).fetchone()
    return int(row[0]) if row else 0


def _spawn_workers(settings: Settings, count: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "HES_DATABASE_URL": settings.database_url or "",
        "HES_NATS_URL": settings.nats_url or "",
        "HES_DB_SCHEMA": settings.db_schema,
        "HES_NATS_PREFIX": settings.nats_prefix,
        "HES_READING_PARTITIONS": str(settings.reading_partitions),
        "HES_READING_FETCH_BATCH": str(settings.reading_fetch_batch),
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
) -> tuple[int, float, float]:
    """Publish everything as fast as JetStream acks while worker processes drain it."""
    total = sum(len(b.readings) for b in batches)
    workers = _spawn_workers(settings, processes)
    try:
        await asyncio.sleep(2.0)  # let the workers connect and bind their consumers
        base = await _stored(settings)
        started = time.perf_counter()
        chunk = 2000
        for i in range(0, len(batches), chunk):
            part = batches[i : i + chunk]
            await publisher.publish(
                part, [partition_of(b.region, settings.reading_partitions) for b in part]
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
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    return total, elapsed, total / published


async def latency(
    settings: Settings,
    publisher: ReadingPublisher,
    rate: float,
    seconds: float,
    meters: int,
) -> tuple[list[float], float]:
    """Publish at a fixed rate (six readings per meter message); ingest-to-commit latencies."""
    assert settings.nats_url
    latencies: list[float] = []
    expected = [0]
    all_committed = asyncio.Event()

    def on_commit(batches: Sequence[MeterBatch], _: WriteResult, committed: datetime) -> None:
        for b in batches:
            ms = (committed - b.received_at).total_seconds() * 1000
            latencies.extend([ms] * len(b.readings))
        if expected[0] and len(latencies) >= expected[0]:
            all_committed.set()

    nc = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    worker = ReadingWorker(settings, nc, on_commit=on_commit)
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.0)
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
                out, [partition_of(b.region, settings.reading_partitions) for b in out]
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
    s = msgspec.structs.replace(settings, db_schema=f"bench_{run}", nats_prefix=f"BENCH{run}_")
    assert s.database_url and s.nats_url
    started_at = datetime.now(UTC).isoformat()
    await migrate(s)
    nc = await nats.connect(s.nats_url, max_reconnect_attempts=-1, flush_timeout=10)
    try:
        publisher = ReadingPublisher(nc, s)
        meters = max(1, readings // (len(QUANTITIES) * 96))
        intervals = max(1, readings // (len(QUANTITIES) * meters))
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
        batches = _group(_batches(meters, intervals, start), per_message)
        console.print(
            f"sustained: {sum(len(b.readings) for b in batches):,} readings in "
            f"{len(batches):,} messages, {processes} worker process(es)"
        )
        total, elapsed, publish_rate = await sustained(s, publisher, batches, processes, console)
        console.print(
            f"  {total / elapsed:,.0f} readings/s sustained (publish {publish_rate:,.0f}/s)"
        )
        console.print(f"latency: {rate:,.0f} readings/s for {latency_seconds:.0f} s")
        lat, achieved = await latency(s, publisher, rate, latency_seconds, meters=50_000)
        lat.sort()
        console.print("baseline: bare binary COPY of the same rows")
        copy_rate = await copy_baseline(s.database_url, s.db_schema, [batches[:20_000]])
    finally:
        await delete_streams(nc.jetstream(), s.nats_prefix)
        await nc.close()
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.db_schema)))
    return IngestFigures(
        sustained_readings=total,
        sustained_seconds=round(elapsed, 3),
        sustained_readings_per_s=round(total / elapsed),
        publish_readings_per_s=round(publish_rate),
        worker_processes=processes,
        latency_rate_target=rate,
        latency_rate_achieved=round(achieved),
        latency_readings=len(lat),
        latency_p50_ms=round(statistics.median(lat), 2) if lat else -1,
        latency_p99_ms=round(lat[int(len(lat) * 0.99) - 1], 2) if lat else -1,
        latency_max_ms=round(lat[-1], 2) if lat else -1,
        copy_baseline_rows_per_s=round(copy_rate),
        sustained_to_copy_ratio=round(total / elapsed / copy_rate, 3),
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )


class HttpFigures(msgspec.Struct, kw_only=True):
    """What `hes bench http` measured."""

    bench: str = "http"
    requests: int
    readings_per_request: int
    concurrency: int
    accepted_readings: int
    http_seconds: float
    http_readings_per_s: float
    end_to_end_seconds: float
    end_to_end_readings_per_s: float
    cpu_count: int
    started_at: str


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bench_http(
    settings: Settings,
    console: Console,
    *,
    meters: int,
    seconds: float,
    concurrency: int,
    items_per_request: int,
) -> HttpFigures:
    """POST /telemetry/batch against a `hes up` child for a while; HTTP and end-to-end rates."""
    import httpx

    from api.auth import TokenService
    from commands.context import SYSTEM, CommandContext, Scope
    from commands.meters import MeterRegistry
    from domain.values import ConnectionProfile, MeterSpec

    run = uuid.uuid4().hex[:8]
    secret = uuid.uuid4().hex * 2
    s = msgspec.structs.replace(
        settings,
        db_schema=f"bench_{run}",
        nats_prefix=f"BENCH{run}_",
        jwt_secret=secret,
        port=_free_port(),
        rate_limit_per_minute=10_000_000,
    )
    assert s.database_url and s.nats_url
    started_at = datetime.now(UTC).isoformat()
    await migrate(s)
    registry = MeterRegistry(env=s.eventsourcing_env())
    serials = [f"BENCH-{m:07d}" for m in range(meters)]
    specs: list[tuple[MeterSpec, str | None]] = [
        (
            MeterSpec(
                serial=x,
                manufacturer="Bench",
                model="B1",
                firmware="1",
                phases=1,
                region=f"R{i % 8}",
                area=f"A{i % 64}",
                connection=ConnectionProfile(host="10.0.0.1"),
            ),
            None,
        )
        for i, x in enumerate(serials)
    ]
    for i in range(0, len(specs), 1000):
        await asyncio.to_thread(
            registry.import_meters, specs[i : i + 1000], CommandContext(actor=SYSTEM)
        )
    registry.close()
    env = {
        **os.environ,
        "HES_DATABASE_URL": s.database_url,
        "HES_NATS_URL": s.nats_url,
        "HES_DB_SCHEMA": s.db_schema,
        "HES_NATS_PREFIX": s.nats_prefix,
        "HES_JWT_SECRET": secret,
        "HES_PORT": str(s.port),
        "HES_RATE_LIMIT_PER_MINUTE": "10000000",
        "HES_LOG_LEVEL": "WARNING",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hes.cli",
        "up",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{s.port}"
    token = TokenService(secret, s.jwt_issuer, s.jwt_audience).issue(
        "bench-gateway", [], scopes=[Scope.INGEST]
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            with console.status("waiting for `hes up` and its meters read model…"):
                for _ in range(1200):
                    try:
                        if (await client.get("/health/ready")).status_code == 200 and (
                            await _registered(s) >= meters
                        ):
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            start_ts = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
            counter = [0, 0]  # requests, accepted readings
            outcomes: dict[str, int] = {}

            def body(n: int) -> bytes:
                ts = (start_ts + timedelta(seconds=n)).isoformat()
                items = [
                    {
                        "meter_id": serials[(n * items_per_request + k) % meters],
                        "timestamp": ts,
                        "voltage": 230.5,
                        "current": 5.1,
                        "power_kw": 1.2,
                        "energy_kwh": 100.0 + n,
                        "power_factor": 0.95,
                        "frequency": 50.0,
                    }
                    for k in range(items_per_request)
                ]
                return msgspec.json.encode(items)

            began = time.perf_counter()

            async def poster() -> None:
                while time.perf_counter() - began < seconds:
                    n = counter[0]
                    counter[0] += 1
                    reply = await client.post(
                        "/api/v1/telemetry/batch", content=body(n), headers=headers
                    )
                    if reply.status_code == 200:
                        answer = reply.json()
                        counter[1] += int(answer["accepted"])
                        for e in answer["errors"][:3]:
                            outcomes[e["rule"]] = outcomes.get(e["rule"], 0) + 1
                    else:
                        outcomes[str(reply.status_code)] = (
                            outcomes.get(str(reply.status_code), 0) + 1
                        )

            await asyncio.gather(*(poster() for _ in range(concurrency)))
            http_seconds = time.perf_counter() - began
            if outcomes:
                console.print(f"refusals: {outcomes}")
            with console.status("waiting for the workers to store everything…"):
                # Polling the database is the point: the workers run in another process.
                while await _stored(s) < counter[1] and time.perf_counter() - began < 600:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            end_to_end = time.perf_counter() - began
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
        nc = await nats.connect(s.nats_url)
        await delete_streams(nc.jetstream(), s.nats_prefix)
        await nc.close()
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.db_schema)))
    return HttpFigures(
        requests=counter[0],
        readings_per_request=items_per_request * 6,
        concurrency=concurrency,
        accepted_readings=counter[1],
        http_seconds=round(http_seconds, 3),
        http_readings_per_s=round(counter[1] / http_seconds),
        end_to_end_seconds=round(end_to_end, 3),
        end_to_end_readings_per_s=round(counter[1] / end_to_end),
        cpu_count=os.cpu_count() or 0,
        started_at=started_at,
    )
