"""NATS frozen, then restarted, while publishing: nothing acknowledged is lost or stored twice.

The freeze (SIGSTOP) makes acks time out for messages the server stores once it resumes, so the
publisher's re-sends must be dropped by the duplicate window; the restart (SIGTERM, 2.5 s down)
makes whole calls fail with ``BackPressure``, which the caller retries with the same batches.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.nats.reading_consumer import ReadingConsumer
from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import ensure_streams
from bootstrap.embedded import start_nats
from config.settings import Settings
from domain.errors import BackPressure
from domain.readings import MeterBatch, Reading, Source, decode_batch

pytestmark = pytest.mark.integration

PARTITIONS = 4
CALLS = 120
PER_CALL = 40


def batch(meter: uuid.UUID, index: int) -> MeterBatch:
    """The ``index``-th quarter-hour batch of a meter: 6 quantities."""
    ts = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(minutes=15 * index)
    readings = [Reading(quantity=q, ts=ts, value=index + q / 10) for q in range(1, 7)]
    return MeterBatch(meter, "north", Source.SIMULATOR, readings, received_at=ts)


async def _quiet(*_args: object) -> None:
    return None


async def _connect(url: str) -> NatsClient:
    return await nats.connect(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
        error_cb=_quiet,
        disconnected_cb=_quiet,
        reconnected_cb=_quiet,
    )


async def _stored_batches(nc: NatsClient, stream: str, count: int) -> list[MeterBatch]:
    """Every message of ``stream`` in order, read by an ephemeral pull consumer."""
    sub = await nc.jetstream().pull_subscribe(
        "",
        stream=stream,
        config=ConsumerConfig(
            filter_subject=">", deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE
        ),
    )
    found: list[MeterBatch] = []
    while len(found) < count:
        found += [decode_batch(m.data) for m in await sub.fetch(500, timeout=5)]
    await sub.unsubscribe()
    return found


async def test_nats_restart_while_publishing_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = await asyncio.to_thread(start_nats, tmp_path)
    settings = Settings.of(
        nats_url=server.url, reading_partitions=PARTITIONS, reading_fetch_batch=100
    )
    nc = await _connect(server.url)
    try:
        await ensure_streams(nc.jetstream())
        publisher = ReadingPublisher(
            nc, settings.nats, ack_timeout=0.5, max_attempts=3, backoff=0.1
        )
        meters = [uuid.uuid4() for _ in range(PER_CALL)]
        calls = [
            ([batch(m, i) for m in meters], [n % PARTITIONS for n in range(PER_CALL)])
            for i in range(CALLS)
        ]
        expected = {b.message_id() for batches, _ in calls for b in batches}
        assert len(expected) == CALLS * PER_CALL
        acknowledged: list[str] = []
        refused = 0
        quarter, half = asyncio.Event(), asyncio.Event()

        async def produce() -> None:
            nonlocal refused
            for batches, partitions in calls:
                while True:  # as an HTTP client would: same batches again after a 503
                    try:
                        await publisher.publish(batches, partitions)
                        break
                    except BackPressure:
                        refused += 1
                        await asyncio.sleep(0.1)
                acknowledged.extend(b.message_id() for b in batches)
                if len(acknowledged) >= len(expected) // 4:
                    quarter.set()
                if len(acknowledged) >= len(expected) // 2:
                    half.set()
                await asyncio.sleep(0.02)

        handled: Counter[str] = Counter()
        all_handled = asyncio.Event()

        async def handle(group: list[MeterBatch]) -> None:
            handled.update(b.message_id() for b in group)
            if set(handled) == expected:
                all_handled.set()

        consumer = ReadingConsumer(
            nc, settings.nats, settings.readings, ack_wait=2.0, fetch_timeout=0.5, backoff=0.1
        )
        stop = asyncio.Event()
        consuming = asyncio.create_task(consumer.run(handle, stop))
        producing = asyncio.create_task(produce())

        await asyncio.wait_for(quarter.wait(), 20)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(1.2)
        finally:
            os.kill(server.pid, signal.SIGCONT)

        await asyncio.wait_for(half.wait(), 20)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(2.5)
        restarted = await asyncio.to_thread(start_nats, tmp_path)
        assert restarted.url == server.url, "restart must reuse the port the clients know"
        server = restarted

        await asyncio.wait_for(producing, 30)
        assert set(acknowledged) == expected
        assert publisher.stats.duplicates > 0, "re-sends after the freeze are acked as duplicates"
        assert refused > 0, "calls during the outage should have been refused with BackPressure"

        info = await nc.jetstream().stream_info(settings.nats.stream("READINGS"))
        assert info.state.messages == len(expected)
        stored = await _stored_batches(nc, settings.nats.stream("READINGS"), len(expected))
        ids = Counter(b.message_id() for b in stored)
        assert set(ids) == expected
        assert set(ids.values()) == {1}, "a batch is stored once however often it was sent"

        await asyncio.wait_for(all_handled.wait(), 20)
        stop.set()
        await asyncio.wait_for(consuming, 10)
        assert await consumer.lag() == 0
    finally:
        await nc.close()
        server.stop()
