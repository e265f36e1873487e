"""Reading batches to JetStream: async publish, bounded in-flight acks, retry, back-pressure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nats.aio.client import Client as NatsClient
from nats.errors import OutboundBufferLimitError
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, NoStreamResponseError

from adapters.nats.subjects import reading_subject
from config.settings import NatsSettings
from domain.errors import BackPressure
from domain.readings import MeterBatch, encode_batch

log = logging.getLogger(__name__)

# nats-py leaks a slot of its own publish_async semaphore when the connection refuses a publish
# (the ack future is registered before the write fails), so its limit must never be the one that
# binds: the window of this module bounds in-flight acks instead.
_NATS_PY_PENDING_LIMIT = 1 << 30


class OutgoingMessage(NamedTuple):
    """One JetStream message: subject, body and the ``Nats-Msg-Id`` that deduplicates re-sends."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass
class PublishStats:
    """Counters of one publisher since it was created."""

    published: int = 0
    """Messages acknowledged by JetStream (duplicates included)."""
    retried: int = 0
    """Messages sent again because their ack did not come (or came as a transient error)."""
    duplicates: int = 0
    """Acks that said JetStream already had the message (``PubAck.duplicate``)."""
    back_pressure: int = 0
    """Calls that gave up and raised ``BackPressure``."""


class AckedPublisher:
    """Publishes messages and returns once JetStream acknowledged every one of them, or raises."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        max_in_flight: int,
        ack_timeout: float = 2.0,
        max_attempts: int = 4,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
    ) -> None:
        if max_in_flight < 1 or max_attempts < 1 or ack_timeout <= 0:
            raise ValueError("max_in_flight, max_attempts and ack_timeout must be positive")
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=_NATS_PY_PENDING_LIMIT)
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        # A full window reopens only when half of it is acknowledged: publishing then resumes in
        # a burst (large socket writes) instead of one message per ack.
        self._low_water = max_in_flight // 2
        self._space = asyncio.Event()
        self._space.set()
        self._ack_timeout = ack_timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.stats = PublishStats()

    async def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages``; return when all are acknowledged, raise ``BackPressure`` if not."""
        remaining = list(messages)
        delay = self._backoff
        for attempt in range(1, self._max_attempts + 1):
            remaining = await self._attempt(remaining)
            if not remaining:
                return
            if attempt == self._max_attempts:
                break
            self.stats.retried += len(remaining)
            log.warning(
                "JetStream did not acknowledge %d of %d messages (attempt %d of %d); retrying",
                len(remaining),
                len(messages),
                attempt,
                self._max_attempts,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
        self.stats.back_pressure += 1
        raise BackPressure(
            f"JetStream did not acknowledge {len(remaining)} of {len(messages)} messages "
            f"after {self._max_attempts} attempts; retry later"
        )

    async def _attempt(self, messages: list[OutgoingMessage]) -> list[OutgoingMessage]:
        """Send ``messages`` once and await their acks in bulk; return the unacknowledged ones."""
        sent: list[tuple[OutgoingMessage, asyncio.Future[PubAck]]] = []
        unsent: list[OutgoingMessage] = []
        try:
            for index, message in enumerate(messages):
                if not await self._take_slot():
                    unsent = messages[index:]
                    break
                try:
                    future = await self._js.publish_async(
                        message.subject, message.payload, headers={Header.MSG_ID: message.msg_id}
                    )
                except OutboundBufferLimitError:
                    self._free_slot(None)
                    unsent = messages[index:]
                    break
                except BaseException:
                    self._free_slot(None)
                    raise
                future.add_done_callback(self._free_slot)
                sent.append((message, future))
            if sent:
                await asyncio.wait([future for _, future in sent], timeout=self._ack_timeout)
            return unsent + self._collect(sent)
        finally:
            for _, future in sent:
                if not future.done():
                    future.cancel()  # frees its window slot through the done callback

    def _collect(
        self, sent: list[tuple[OutgoingMessage, asyncio.Future[PubAck]]]
    ) -> list[OutgoingMessage]:
        failed: list[OutgoingMessage] = []
        for message, future in sent:
            if not future.done() or future.cancelled():
                failed.append(message)
                continue
            error = future.exception()
            if error is None:
                self.stats.published += 1
                if future.result().duplicate:
                    self.stats.duplicates += 1
            elif _transient(error):
                failed.append(message)
            else:
                raise error
        return failed

    async def _take_slot(self) -> bool:
        """A window slot on a connected client within the ack timeout, or False."""
        if self._in_flight >= self._max_in_flight:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), self._ack_timeout)
            except TimeoutError:
                return False
            if self._in_flight >= self._max_in_flight:  # another caller took the space first
                return await self._take_slot()
        if not self._nc.is_connected and not await self._wait_connected():
            return False
        self._in_flight += 1
        return True

    async def _wait_connected(self) -> bool:
        """Wait up to the ack timeout for the client to reconnect; False if it did not."""
        # Publishing into a dead connection would only fill nats-py's pending buffer.
        deadline = time.monotonic() + self._ack_timeout
        while not self._nc.is_connected and not self._nc.is_closed:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return self._nc.is_connected

    def _free_slot(self, _future: asyncio.Future[PubAck] | None) -> None:
        self._in_flight -= 1
        if self._in_flight <= self._low_water:
            self._space.set()


def _transient(error: BaseException) -> bool:
    """True for ack errors that a re-send can cure (JetStream restarting, no leader yet)."""
    if isinstance(error, NoStreamResponseError):
        return True
    return isinstance(error, APIError) and error.code == 503


class ReadingPublisher:
    """Publishes meter batches to stream READINGS, one message each, deduplicated by message id."""

    def __init__(
        self,
        nc: NatsClient,
        nats: NatsSettings,
        *,
        ack_timeout: float = 2.0,
        max_attempts: int = 4,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
    ) -> None:
        self._prefix = nats.prefix
        self._publisher = AckedPublisher(
            nc,
            max_in_flight=nats.publish_max_in_flight,
            ack_timeout=ack_timeout,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
        )

    @property
    def stats(self) -> PublishStats:
        """Counters since this publisher was created."""
        return self._publisher.stats

    async def publish(self, batches: Sequence[MeterBatch], partitions: Sequence[int]) -> None:
        """Publish each batch to its partition; return when JetStream acknowledged them all."""
        if len(batches) != len(partitions):
            raise ValueError(f"{len(batches)} batches but {len(partitions)} partitions")
        messages = [
            OutgoingMessage(
                reading_subject(self._prefix, partition, batch.meter),
                encode_batch(batch),
                batch.message_id(),
            )
            for batch, partition in zip(batches, partitions, strict=True)
        ]
        await self._publisher.publish_all(messages)
