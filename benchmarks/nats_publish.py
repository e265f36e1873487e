"""Publish throughput of ``ReadingPublisher`` against a same-run core-NATS baseline.

Run: ``python -m benchmarks.nats_publish [--nats-url URL] [--batches N] [--readings R]``;
prints one JSON line per batch size. The streams of a throw-away prefix are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import nats
from nats.js.api import Header

from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams, ensure_streams
from adapters.nats.subjects import subject_prefix
from config.settings import NatsSettings
from domain.readings import MeterBatch, Reading, Source, encode_batch, partition_of

_PARTITIONS = 8
_CALL_SIZE = 1000
"""Batches per ``publish()`` call, as one large ingest request would pass them."""
_CONCURRENT_CALLS = 4


def make_batches(count: int, readings_per_batch: int) -> list[MeterBatch]:
    """``count`` batches of distinct meters (distinct message ids), ``readings_per_batch`` each."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    batches = []
    for i in range(count):
        readings = [
            Reading(
                quantity=1 + r % 6,
                ts=start + timedelta(minutes=15 * (r // 6)),
                value=230.0 + (i + r) % 17,
            )
            for r in range(readings_per_batch)
        ]
        batches.append(
            MeterBatch(
                meter=uuid.uuid4(),
                region=f"region-{i % 16}",
                source=Source.SIMULATOR,
                readings=readings,
                received_at=now,
            )
        )
    return batches


async def bench_publish(
    nats_url: str, prefix: str, batches: int, readings_per_batch: int
) -> dict[str, float]:
    """Messages and readings per second: core NATS publish, then ReadingPublisher to JetStream."""
    nats_settings = NatsSettings(url=nats_url, prefix=prefix)
    data = make_batches(batches, readings_per_batch)
    partitions = [partition_of(b.region, _PARTITIONS) for b in data]
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1)
    try:
        await ensure_streams(nc.jetstream(), prefix)
        before = (await nc.jetstream().stream_info(nats_settings.stream("READINGS"))).state.messages

        # Baseline: the same encoding and subjects, but core NATS with no stream listening.
        core = subject_prefix(prefix) + "bench.core"
        started = time.perf_counter()
        for batch, partition in zip(data, partitions, strict=True):
            await nc.publish(
                f"{core}.{partition}.{batch.meter.hex}",
                encode_batch(batch),
                headers={Header.MSG_ID: batch.message_id()},
            )
        await nc.flush()
        core_seconds = time.perf_counter() - started

        publisher = ReadingPublisher(nc, nats_settings)
        calls = [
            (data[i : i + _CALL_SIZE], partitions[i : i + _CALL_SIZE])
            for i in range(0, len(data), _CALL_SIZE)
        ]
        queue: asyncio.Queue[tuple[list[MeterBatch], list[int]]] = asyncio.Queue()
        for call in calls:
            queue.put_nowait(call)

        async def caller() -> None:
            while not queue.empty():
                chunk, chunk_partitions = queue.get_nowait()
                await publisher.publish(chunk, chunk_partitions)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(_CONCURRENT_CALLS)))
        js_seconds = time.perf_counter() - started

        after = (await nc.jetstream().stream_info(nats_settings.stream("READINGS"))).state.messages
        if publisher.stats.published < batches:
            raise RuntimeError(f"only {publisher.stats.published} of {batches} acknowledged")
    finally:
        await nc.close()
    readings = batches * readings_per_batch
    return {
        "batches": float(batches),
        "readings_per_batch": float(readings_per_batch),
        "core_msgs_per_s": batches / core_seconds,
        "core_readings_per_s": readings / core_seconds,
        "js_msgs_per_s": batches / js_seconds,
        "js_readings_per_s": readings / js_seconds,
        "js_to_core_ratio": core_seconds / js_seconds,
        "retried": float(publisher.stats.retried),
        "stored": float(after - before),
    }


async def _main(nats_url: str, batches: int, sizes: list[int]) -> None:
    prefix = f"BENCH{uuid.uuid4().hex[:6]}_"
    try:
        for size in sizes:
            result = await bench_publish(nats_url, prefix, batches, size)
            print(json.dumps({k: round(v, 1) for k, v in result.items()}), flush=True)
    finally:
        nc = await nats.connect(nats_url)
        await delete_streams(nc.jetstream(), prefix)
        await nc.close()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--readings", type=int, nargs="+", default=[100, 6])
    args = parser.parse_args()
    asyncio.run(_main(args.nats_url, args.batches, args.readings))


if __name__ == "__main__":
    main()
