"""Durable pull consumers of stream READINGS, one per partition; ack only after the handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.nats.dead_letters import DeadLetterPublisher, MalformedMessage
from adapters.nats.subjects import partition_filter
from domain.readings import MeterBatch, decode_batch
from hes.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[list[MeterBatch]], Awaitable[None]]


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
    """Fetched groups handed back because the handler or the dead-lettering failed."""


def consumer_name(partition: int) -> str:
    """Durable consumer name of a partition: ``readings-p<partition>``."""
    return f"readings-p{partition}"


class ReadingConsumer:
    """Fetches batches per partition, hands them to a handler, acks after it returns.

    Several processes may run the same partitions: they share each durable consumer's messages.
    The handler is called concurrently for different partitions, in stream order within one.
    """

    def __init__(
        self,
        nc: NatsClient,
        settings: Settings,
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
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._prefix = settings.nats_prefix
        self._stream = settings.stream("READINGS")
        self.partitions = (
            list(partitions) if partitions is not None else list(range(settings.reading_partitions))
        )
        self._fetch_batch = settings.reading_fetch_batch
        self._dead_letters = dead_letters or DeadLetterPublisher(nc, settings)
        self._ack_wait = ack_wait
        # Room for a few workers' fetches on one partition while bounding redelivery storms.
        self._max_ack_pending = max_ack_pending or 8 * settings.reading_fetch_batch
        self._fetch_timeout = fetch_timeout
        self._nak_delay = nak_delay
        self._max_nak_delay = max_nak_delay
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.stats = ConsumerStats()

    async def ensure_consumers(self) -> None:
        """Create the partitions' durable consumers, or update their limits."""
        for partition in self.partitions:
            await self._ensure_consumer(partition)

    async def run(self, handle: Handler, stop: asyncio.Event) -> None:
        """Consume every partition until ``stop`` is set (finishing the batches in hand)."""
        async with asyncio.TaskGroup() as group:
            for partition in self.partitions:
                group.create_task(
                    self._run_partition(partition, handle, stop), name=consumer_name(partition)
                )

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

    async def _run_partition(self, partition: int, handle: Handler, stop: asyncio.Event) -> None:
        name = consumer_name(partition)
        subscription: JetStreamContext.PullSubscription | None = None
        failures = 0
        while not stop.is_set():
            if failures:
                delay = min(self._backoff * 2 ** (failures - 1), self._max_backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            try:
                if subscription is None:
                    await self._ensure_consumer(partition)
                    subscription = await self._js.pull_subscribe_bind(
                        durable=name, stream=self._stream
                    )
                messages = await subscription.fetch(self._fetch_batch, timeout=self._fetch_timeout)
            except TimeoutError:
                continue  # nothing to fetch (or a reconnect swallowed the pull request)
            except Exception:
                failures += 1
                log.warning(
                    "reading consumer %s: fetch failed (%d in a row)", name, failures, exc_info=True
                )
                # Start over with the consumer re-created (it may have been deleted) and a
                # fresh inbox.
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                    subscription = None
                continue
            try:
                await self._process(messages, handle)
                failures = 0
            except Exception:
                failures += 1
                log.exception(
                    "reading consumer %s: %d messages handed back for redelivery (%d in a row)",
                    name,
                    len(messages),
                    failures,
                )
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _process(self, messages: list[Msg], handle: Handler) -> None:
        """Decode, dead-letter the malformed, handle the rest, then ack; nak all on failure."""
        batches: list[MeterBatch] = []
        good: list[Msg] = []
        malformed: list[tuple[Msg, MalformedMessage]] = []
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                self.stats.redelivered += 1
            try:
                batches.append(decode_batch(msg.data))
                good.append(msg)
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
                await self._handle(batches, good, handle)
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

    async def _handle(
        self, batches: list[MeterBatch], messages: list[Msg], handle: Handler
    ) -> None:
        keep_alive = asyncio.create_task(self._keep_alive(messages))
        try:
            await handle(batches)
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """Tell JetStream the batch is still being worked on, so a slow handler keeps it."""
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
