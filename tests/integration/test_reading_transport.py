"""READINGS transport on a real NATS: publisher, pull consumers, dead letters, ingest listener."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from adapters.nats.dead_letters import DeadLetterPublisher
from adapters.nats.ingest_listener import IngestListener
from adapters.nats.reading_consumer import ReadingConsumer, consumer_name
from adapters.nats.reading_publisher import ReadingPublisher
from adapters.nats.streams import delete_streams, ensure_streams
from adapters.nats.subjects import deadletter_subject, reading_subject, subject_prefix
from config.settings import Settings
from domain.errors import BackPressure
from domain.readings import MeterBatch, Reading, Source

pytestmark = pytest.mark.integration

PARTITIONS = 4
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@dataclass
class Transport:
    """A NATS connection and settings whose prefix owns fresh streams (one test's namespace)."""

    nc: NatsClient
    settings: Settings

    @property
    def prefix(self) -> str:
        return self.settings.nats.prefix

    async def stored(self, stream: str = "READINGS") -> int:
        info = await self.nc.jetstream().stream_info(self.settings.nats.stream(stream))
        return info.state.messages


@pytest.fixture
async def transport(settings: Settings) -> AsyncIterator[Transport]:
    """Streams under a prefix of this run's prefix, deleted after the test."""
    own = settings.replace(
        nats_prefix=f"{settings.nats.prefix}{uuid.uuid4().hex[:6]}_",
        reading_partitions=PARTITIONS,
        reading_fetch_batch=64,
    )
    assert own.nats.url is not None
    nc = await nats.connect(own.nats.url)
    await ensure_streams(nc.jetstream(), own.nats.prefix)
    try:
        yield Transport(nc, own)
    finally:
        await delete_streams(nc.jetstream(), own.nats.prefix)
        await nc.close()


def batch(meter: uuid.UUID, index: int, readings: int = 6) -> MeterBatch:
    """The ``index``-th quarter-hour batch of a meter (distinct message ids per index)."""
    ts = T0 + timedelta(minutes=15 * index)
    return MeterBatch(
        meter=meter,
        region="north",
        source=Source.SIMULATOR,
        readings=[
            Reading(quantity=1 + q, ts=ts, value=float(index * 10 + q)) for q in range(readings)
        ],
        received_at=ts,
    )


def workload(meters: int, per_meter: int) -> tuple[list[MeterBatch], list[int]]:
    """Batches of several meters interleaved in time, with their partitions."""
    ids = [uuid.uuid4() for _ in range(meters)]
    batches = [batch(m, i) for i in range(per_meter) for m in ids]
    return batches, [ids.index(b.meter) % PARTITIONS for b in batches]


async def consume_until(
    consumer: ReadingConsumer,
    handle: Callable[[list[MeterBatch]], Awaitable[None]],
    done: Callable[[], bool],
    *,
    within: float = 10.0,
    linger: float = 0.0,
) -> None:
    """Run ``consumer`` until a handled group makes ``done()`` true (then ``linger`` seconds)."""
    finished = asyncio.Event()

    async def watched(group: list[MeterBatch]) -> None:
        await handle(group)
        if done():
            finished.set()

    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(watched, stop))
    try:
        async with asyncio.timeout(within):
            await finished.wait()
        await asyncio.sleep(linger)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_round_trip_keeps_partition_order_and_counts(transport: Transport) -> None:
    batches, partitions = workload(meters=12, per_meter=25)
    publisher = ReadingPublisher(transport.nc, transport.settings.nats)
    await publisher.publish(batches, partitions)
    assert publisher.stats.published == len(batches) == await transport.stored()
    assert publisher.stats.duplicates == publisher.stats.retried == 0

    consumer = ReadingConsumer(transport.nc, transport.settings.nats, transport.settings.readings)
    received: dict[int, list[MeterBatch]] = {p: [] for p in range(PARTITIONS)}
    by_meter = dict(zip((b.meter for b in batches), partitions, strict=False))

    async def handle(group: list[MeterBatch]) -> None:
        assert 0 < len(group) <= transport.settings.readings.fetch_batch
        for b in group:
            received[by_meter[b.meter]].append(b)

    await consume_until(consumer, handle, lambda: sum(map(len, received.values())) == len(batches))
    for p in range(PARTITIONS):
        assert received[p] == [b for b, q in zip(batches, partitions, strict=True) if q == p]
    assert await consumer.lag() == 0
    assert consumer.stats.redelivered == consumer.stats.naked == 0


async def test_duplicate_publish_is_stored_and_delivered_once(transport: Transport) -> None:
    one = batch(uuid.uuid4(), 0)
    same_again = msgspec.structs.replace(one, received_at=one.received_at + timedelta(seconds=9))
    publisher = ReadingPublisher(transport.nc, transport.settings.nats)
    await publisher.publish([one], [1])
    await publisher.publish([same_again], [1])  # a gateway re-sending the same readings
    assert await transport.stored() == 1
    assert publisher.stats.duplicates == 1

    handled: list[MeterBatch] = []

    async def handle(group: list[MeterBatch]) -> None:
        handled.extend(group)

    consumer = ReadingConsumer(
        transport.nc, transport.settings.nats, transport.settings.readings, [1]
    )
    await consume_until(consumer, handle, lambda: len(handled) >= 1, linger=0.5)
    assert handled == [one]


async def test_malformed_message_is_dead_lettered_and_terminated(transport: Transport) -> None:
    js = transport.nc.jetstream()
    garbage = b"\xc1 not msgpack"
    await js.publish(reading_subject(transport.prefix, 2, uuid.uuid4()), garbage)
    good = batch(uuid.uuid4(), 0)
    await ReadingPublisher(transport.nc, transport.settings.nats).publish([good], [2])

    handled: list[MeterBatch] = []

    async def handle(group: list[MeterBatch]) -> None:
        handled.extend(group)

    consumer = ReadingConsumer(
        transport.nc, transport.settings.nats, transport.settings.readings, [2]
    )
    await consume_until(consumer, handle, lambda: len(handled) >= 1)
    assert handled == [good]
    assert consumer.stats.dead_lettered == 1

    dead = await js.get_last_msg(
        transport.settings.nats.stream("HES_DEADLETTER"),
        deadletter_subject(transport.prefix, "decode"),
    )
    letter = msgspec.json.decode(dead.data or b"")
    assert letter["source"] == "decode"
    assert letter["reason"].startswith("not a MeterBatch")
    assert letter["stream_sequence"] == 1
    assert msgspec.json.decode(msgspec.json.encode(letter["data"]), type=bytes) == garbage
    info = await js.consumer_info(transport.settings.nats.stream("READINGS"), consumer_name(2))
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)


async def test_handler_failure_redelivers_until_success(transport: Transport) -> None:
    batches, partitions = workload(meters=4, per_meter=10)
    await ReadingPublisher(transport.nc, transport.settings.nats).publish(batches, partitions)
    succeeded: Counter[str] = Counter()
    calls = 0

    async def flaky(group: list[MeterBatch]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("database unreachable")
        succeeded.update(b.message_id() for b in group)

    consumer = ReadingConsumer(
        transport.nc,
        transport.settings.nats,
        transport.settings.readings,
        nak_delay=0.1,
        backoff=0.05,
    )
    await consume_until(consumer, flaky, lambda: len(succeeded) == len(batches), linger=0.5)
    assert set(succeeded) == {b.message_id() for b in batches}
    assert set(succeeded.values()) == {1}, "nothing handled twice after success"
    assert consumer.stats.failures == 3
    assert consumer.stats.naked > 0
    assert consumer.stats.redelivered == consumer.stats.naked
    assert await consumer.lag() == 0


async def test_batch_of_a_killed_consumer_is_redelivered(transport: Transport) -> None:
    batches, partitions = workload(meters=1, per_meter=20)
    await ReadingPublisher(transport.nc, transport.settings.nats).publish(batches, partitions)
    assert set(partitions) == {0}

    in_handler = asyncio.Event()

    async def hang(_group: list[MeterBatch]) -> None:
        in_handler.set()
        await asyncio.Event().wait()

    assert transport.settings.nats.url is not None
    doomed_nc = await nats.connect(transport.settings.nats.url)
    doomed = ReadingConsumer(
        doomed_nc, transport.settings.nats, transport.settings.readings, [0], ack_wait=2.0
    )
    task = asyncio.create_task(doomed.run(hang, asyncio.Event()))
    await asyncio.wait_for(in_handler.wait(), 10)
    task.cancel()  # the worker dies mid-batch: no ack, no nak
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await doomed_nc.close()

    handled: Counter[str] = Counter()

    async def handle(group: list[MeterBatch]) -> None:
        handled.update(b.message_id() for b in group)

    survivor = ReadingConsumer(
        transport.nc, transport.settings.nats, transport.settings.readings, [0], ack_wait=2.0
    )
    await consume_until(survivor, handle, lambda: len(handled) == len(batches), linger=0.3)
    assert set(handled) == {b.message_id() for b in batches}
    assert set(handled.values()) == {1}
    assert survivor.stats.redelivered > 0


async def test_unacknowledged_publish_raises_back_pressure(transport: Transport) -> None:
    # A prefix without streams: JetStream never acknowledges (no responders).
    orphan = transport.settings.replace(nats_prefix="NOSTREAM_")
    publisher = ReadingPublisher(transport.nc, orphan.nats, ack_timeout=0.3, max_attempts=2)
    with pytest.raises(BackPressure):
        await publisher.publish([batch(uuid.uuid4(), 0)], [0])
    assert publisher.stats.back_pressure == 1
    assert publisher.stats.retried == 1


class _Rejected(msgspec.Struct, frozen=True):
    source: Source
    field: str


async def test_dead_letters_are_acknowledged_under_their_source(transport: Transport) -> None:
    letters = DeadLetterPublisher(transport.nc, transport.settings.nats)
    await letters.reject([_Rejected(Source.HTTP, "voltage"), _Rejected(Source.NATS, "ts")])
    assert letters.stats.published == 2
    js = transport.nc.jetstream()
    stream = transport.settings.nats.stream("HES_DEADLETTER")
    http = await js.get_last_msg(stream, deadletter_subject(transport.prefix, "http"))
    assert msgspec.json.decode(http.data or b"") == {"source": Source.HTTP, "field": "voltage"}
    assert await transport.stored("HES_DEADLETTER") == 2


async def test_ingest_listener_replies_and_survives_garbage(transport: Transport) -> None:
    async def ingest(body: bytes) -> bytes:
        request = msgspec.json.decode(body)
        if request == "overload":
            raise BackPressure("READINGS is full")
        if request == "crash":
            raise RuntimeError("secret internals")
        return msgspec.json.encode({"accepted": len(request["readings"])})

    first = IngestListener(transport.nc, transport.settings.nats, ingest)
    second = IngestListener(transport.nc, transport.settings.nats, ingest)
    await first.start()
    await second.start()
    subject = subject_prefix(transport.prefix) + "hes.ingest.gw-7"
    assert first.subject == subject_prefix(transport.prefix) + "hes.ingest.>"

    async def ask(body: bytes) -> object:
        reply = await transport.nc.request(subject, body, timeout=5)
        return msgspec.json.decode(reply.data)

    try:
        assert await ask(b'{"readings": [1, 2, 3]}') == {"accepted": 3}
        bad = await ask(b"{not json")
        assert isinstance(bad, dict)
        assert (bad["status"], bad["code"]) == (400, "BAD_REQUEST")
        crash = await ask(b'"crash"')
        assert isinstance(crash, dict)
        assert (crash["status"], crash["code"]) == (500, "INTERNAL")
        assert "secret" not in crash["detail"]
        overload = await ask(b'"overload"')
        assert isinstance(overload, dict)
        assert (overload["status"], overload["code"]) == (503, "BACK_PRESSURE")
        await transport.nc.publish(subject, b"\x00garbage without reply subject")
        answers = await asyncio.gather(*(ask(b'{"readings": [0]}') for _ in range(20)))
        assert answers == [{"accepted": 1}] * 20
        # The queue group hands each message to one listener only.
        assert first.stats.received + second.stats.received == 25
        assert first.stats.failed + second.stats.failed == 4
    finally:
        await first.stop()
        await second.stop()
