"""Durable pull consumers of stream READINGS, one per partition; ack only after the handler.

Each partition's consumer is read by a ``PullFeed`` that hands messages over as they arrive.
Writers (``HES_READING_WRITERS`` per process, each serving the partitions ``p % writers``) take
whatever their partitions delivered — up to ``HES_READING_FETCH_BATCH`` messages — as one group,
hand it to the handler (one transaction), and acknowledge it after the handler returns. Under
load the groups grow by themselves while the previous one is written; at a low rate a reading
waits for nothing but the write in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.nats.dead_letters import DeadLetterPublisher, MalformedMessage
from adapters.nats.pull_feed import PullFeed
from adapters.nats.subjects import partition_filter
from config.settings import NatsSettings, ReadingSettings
from domain.readings import MeterBatch, decode_batch

log = logging.getLogger(__name__)

Handler = Callable[[list[MeterBatch]], Awaitable[None]]
GroupHandler = Callable[[list[MeterBatch], list[int]], Awaitable[None]]
"""A handler told, besides the batches, the partitions they came from."""

_MAINTENANCE = 0.05
"""Seconds between looks at the pull requests (the next one goes out before one expires)."""


@dataclass
class ConsumerStats:
    """Counters of one consumer set since it was created."""

    handled: int = 0
    """Batches the handler accepted (and that were then acknowledged)."""
    redelivered: int = 0
    """Fetched messages JetStream had delivered before (a handler failed or a worker died)."""
    naked: int = 0
    """Messages handed back for redelivery because the handler failed."""
    dead_lettered: int = 0
    """Malformed messages sent to HES_DEADLETTER and terminated."""
    failures: int = 0
    """Groups handed back because the handler or the dead-lettering failed."""


def consumer_name(partition: int) -> str:
    """Durable consumer name of a partition: ``readings-p<partition>``."""
    return f"readings-p{partition}"


class ReadingConsumer:
    """Pulls batches per partition, hands them to a handler in groups, acks after it returns.

    The partitions consumed can change while running (``add``/``remove``: a worker taking over
    or handing back a partition lease). Within a partition the handler sees stream order.
    """

    def __init__(
        self,
        nc: NatsClient,
        nats: NatsSettings,
        readings: ReadingSettings,
        partitions: Sequence[int] | None = None,
        *,
        dead_letters: DeadLetterPublisher | None = None,
        ack_wait: float = 30.0,
        max_ack_pending: int | None = None,
        fetch_timeout: float = 1.0,
        nak_delay: float = 1.0,
        max_nak_delay: float = 30.0,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        writers: int | None = None,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._prefix = nats.prefix
        self._stream = nats.stream("READINGS")
        self.partitions = (
            list(partitions) if partitions is not None else list(range(readings.partitions))
        )
        self._group = readings.fetch_batch
        self._writers = max(1, writers or readings.writers)
        self._dead_letters = dead_letters or DeadLetterPublisher(nc, nats)
        self._ack_wait = ack_wait
        # Room for a few groups in flight on one partition while bounding redelivery storms.
        self._max_ack_pending = max_ack_pending or 8 * readings.fetch_batch
        self._fetch_timeout = fetch_timeout
        self._nak_delay = nak_delay
        self._max_nak_delay = max_nak_delay
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._feeds: dict[int, PullFeed] = {}
        self._wake = [asyncio.Event() for _ in range(self._writers)]
        self._busy: dict[int, int] = {}
        """Partition -> messages of it inside a handler right now."""
        self._idle = asyncio.Condition()
        self._turn = 0
        self.stats = ConsumerStats()

    async def ensure_consumers(self, partitions: Iterable[int] | None = None) -> None:
        """Create the partitions' durable consumers, or update their limits."""
        for partition in self.partitions if partitions is None else partitions:
            await self._ensure_consumer(partition)

    async def run(self, handle: Handler, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (finishing the groups in hand), then close the feeds."""

        async def grouped(batches: list[MeterBatch], _partitions: list[int]) -> None:
            await handle(batches)

        await self.run_groups(grouped, stop)

    async def run_groups(self, handle: GroupHandler, stop: asyncio.Event) -> None:
        """Like ``run``, telling the handler each batch's partition too."""
        try:
            for partition in list(self.partitions):
                await self._open(partition)
            async with asyncio.TaskGroup() as group:
                maintenance = group.create_task(self._maintain(stop))
                for writer in range(self._writers):
                    group.create_task(self._write_loop(writer, handle, stop))
                await stop.wait()
                for event in self._wake:
                    event.set()
                maintenance.cancel()
        finally:
            for partition in list(self._feeds):
                await self._close(partition)

    async def add(self, partition: int) -> None:
        """Start consuming ``partition`` (its durable consumer is created if missing)."""
        if partition not in self.partitions:
            self.partitions.append(partition)
        await self._open(partition)

    async def remove(self, partition: int) -> None:
        """Stop consuming ``partition``: wait for its group in hand, hand back what is buffered."""
        if partition in self.partitions:
            self.partitions.remove(partition)
        await self._close(partition)
        async with self._idle:
            await self._idle.wait_for(lambda: self._busy.get(partition, 0) == 0)

    @property
    def consuming(self) -> list[int]:
        """Partitions whose pull feed is running."""
        return sorted(p for p, feed in self._feeds.items() if feed.started)

    async def lag(self) -> int:
        """Messages not yet delivered to any worker, summed over the partitions."""
        total = 0
        for partition in self.partitions:
            info = await self._js.consumer_info(self._stream, consumer_name(partition))
            total += info.num_pending or 0
        return total

    async def _ensure_consumer(self, partition: int) -> None:
        name = consumer_name(partition)
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=partition_filter(self._prefix, partition),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=self._max_ack_pending,
            max_deliver=-1,
        )
        # Creating an existing consumer with the same config is a no-op on the server, so every
        # worker may call this; a changed ack_wait or max_ack_pending updates the consumer.
        await self._js.add_consumer(self._stream, config)

    async def _open(self, partition: int) -> None:
        if partition in self._feeds:
            return
        wake = self._wake[partition % self._writers]
        feed = PullFeed(
            self._nc,
            self._stream,
            consumer_name(partition),
            batch=self._group,
            expires=self._fetch_timeout,
            buffer=2 * self._group,
            on_message=wake.set,
        )
        self._feeds[partition] = feed
        failures = 0
        while not feed.closed:
            try:
                await self._ensure_consumer(partition)
                await feed.start()
                return
            except Exception:
                failures += 1
                log.warning(
                    "reading consumer %s: cannot start (%d in a row)",
                    consumer_name(partition),
                    failures,
                    exc_info=True,
                )
                await asyncio.sleep(min(self._backoff * 2 ** (failures - 1), self._max_backoff))

    async def _close(self, partition: int) -> None:
        feed = self._feeds.pop(partition, None)
        if feed is None:
            return
        left = await feed.close()
        if left:
            # Delivered but never handled: back to JetStream at once, for the next owner.
            with contextlib.suppress(Exception):
                for msg in left:
                    await msg.nak()
                await self._nc.flush()

    async def _maintain(self, stop: asyncio.Event) -> None:
        """Keep pull requests open: renew those about to expire, replace lost ones."""
        while not stop.is_set():
            await asyncio.sleep(_MAINTENANCE)
            for feed in list(self._feeds.values()):
                await feed.top_up()

    def _take(self, writer: int) -> tuple[list[Msg], list[int]]:
        """The writer's next group: what its partitions delivered, partition by partition."""
        messages: list[Msg] = []
        partitions: list[int] = []
        mine = [p for p in self._feeds if p % self._writers == writer]
        # Start with another partition each time, so that a busy one cannot starve the rest.
        self._turn += 1
        start = self._turn % len(mine) if mine else 0
        for partition in mine[start:] + mine[:start]:
            feed = self._feeds[partition]
            if not feed.ready:
                continue
            taken = feed.take(self._group - len(messages))
            messages += taken
            partitions += [partition] * len(taken)
            if len(messages) >= self._group:
                break
        return messages, partitions

    async def _write_loop(self, writer: int, handle: GroupHandler, stop: asyncio.Event) -> None:
        wake = self._wake[writer]
        failures = 0
        while not stop.is_set():
            if failures:
                delay = min(self._backoff * 2 ** (failures - 1), self._max_backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            wake.clear()
            messages, partitions = self._take(writer)
            if not messages:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                continue
            wake.set()  # more may be buffered beyond this group
            for partition in partitions:
                self._busy[partition] = self._busy.get(partition, 0) + 1
            try:
                await self._process(messages, partitions, handle)
                failures = 0
            except Exception:
                failures += 1
                log.exception(
                    "reading consumer: %d messages handed back for redelivery (%d in a row)",
                    len(messages),
                    failures,
                )
            finally:
                await self._settled(partitions)

    async def _settled(self, partitions: list[int]) -> None:
        counts: dict[int, int] = {}
        for partition in partitions:
            counts[partition] = counts.get(partition, 0) + 1
        for partition, count in counts.items():
            self._busy[partition] -= count
            feed = self._feeds.get(partition)
            if feed is not None:
                feed.settled(count)
                await feed.top_up()
        async with self._idle:
            self._idle.notify_all()

    async def _process(
        self, messages: list[Msg], partitions: list[int], handle: GroupHandler
    ) -> None:
        """Decode, dead-letter the malformed, handle the rest, then ack; nak all on failure."""
        batches: list[MeterBatch] = []
        good: list[Msg] = []
        origin: list[int] = []
        malformed: list[tuple[Msg, MalformedMessage]] = []
        for msg, partition in zip(messages, partitions, strict=True):
            if msg.metadata.num_delivered > 1:
                self.stats.redelivered += 1
            try:
                batches.append(decode_batch(msg.data))
                good.append(msg)
                origin.append(partition)
            except msgspec.DecodeError as exc:
                malformed.append((msg, _malformed(msg, exc)))
        try:
            if malformed:
                await self._dead_letters.reject([rejection for _, rejection in malformed])
                for msg, _ in malformed:
                    await msg.term()
                self.stats.dead_lettered += len(malformed)
                log.warning("dead-lettered %d malformed READINGS messages", len(malformed))
            if batches:
                await self._keeping_alive(good, handle(batches, origin))
        except Exception:
            self.stats.failures += 1
            await self._nak([msg for msg in messages if not msg.is_acked])
            raise
        for msg in good:
            # ack() is a fire-and-forget publish; one flush below confirms the whole group
            # reached the server instead of one ack_sync() round trip per message.
            await msg.ack()
        await self._nc.flush()
        self.stats.handled += len(batches)

    async def _keeping_alive(self, messages: list[Msg], call: Awaitable[None]) -> None:
        keep_alive = asyncio.create_task(self._keep_alive(messages))
        try:
            await call
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """Tell JetStream the group is still being worked on, so a slow handler keeps it."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            try:
                for msg in messages:
                    await msg.in_progress()
            except Exception:
                log.debug("in-progress ack failed; JetStream may redeliver", exc_info=True)

    async def _nak(self, messages: list[Msg]) -> None:
        """Hand messages back for redelivery after a delay growing with their delivery count."""
        try:
            for msg in messages:
                attempts = msg.metadata.num_delivered
                await msg.nak(delay=min(self._nak_delay * 2 ** (attempts - 1), self._max_nak_delay))
                self.stats.naked += 1
            await self._nc.flush()
        except Exception:
            log.warning("nak failed; JetStream redelivers after ack_wait", exc_info=True)


def _malformed(msg: Msg, error: Exception) -> MalformedMessage:
    return MalformedMessage(
        reason=f"not a MeterBatch: {error}",
        subject=msg.subject,
        stream_sequence=msg.metadata.sequence.stream,
        data=msg.data,
    )
