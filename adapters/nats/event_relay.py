"""Relays an application's domain events, in event-store order, to stream HES_EVENTS.

Exactly once per position across crashes:

1. read the notifications after the last relayed position (a page, in notification-id order);
2. publish them on one connection with a bounded window of unacknowledged messages — JetStream
   stores the messages of one connection in the order they arrive, so the stream order is the
   position order;
3. only when JetStream acknowledged the whole page, record the page's last position in the
   tracking table ``event_relay_tracking`` (eventsourcing ``Tracking``, application name = the
   relayed application).

A crash between 2 and 3 re-publishes the same messages with the same ``Nats-Msg-Id`` (the
deterministic CloudEvents id); JetStream's duplicate window (120 s on HES_EVENTS) drops them,
provided the relay restarts within the window.

Lives in ``adapters/nats`` (DESIGN §2: "event relay to HES_EVENTS"): it reads the event store
through the ``eventsourcing`` persistence API and the domain event classes only, never through
``commands/``; the composition root (``bootstrap.relay``) passes the application's name and
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    Notification,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.utils import Environment
from nats.aio.client import Client as NatsClient
from nats.js.api import Header, PubAck
from psycopg import sql

from adapters.metrics import EVENT_RELAY_LAG, EVENT_RELAY_OUT_OF_ORDER, EVENT_RELAY_PUBLISHED
from adapters.nats.cloudevents import OutgoingEvent, outgoing_event

log = logging.getLogger(__name__)

RELAY_NAME = "event_relay"
"""Name of the relay's tracking recorder: its table is ``<schema>.event_relay_tracking``."""

# nats-py's own publish_async limit leaks a slot when a publish is refused; the relay's window
# is the one that binds (see adapters.nats.reading_publisher).
_NATS_PY_PENDING_LIMIT = 1 << 30


class RelayError(RuntimeError):
    """JetStream did not acknowledge a page after every attempt; the supervisor restarts."""


class UnrelayableEvent(Exception):
    """A stored event could not be turned into a CloudEvent; the events before it are relayed."""

    def __init__(self, notification: Notification, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.position = notification.id
        self.originator_id = notification.originator_id
        self.originator_version = notification.originator_version
        self.topic = notification.topic
        self.__cause__ = cause


@dataclass
class RelayStats:
    """Counters of one relay since it started."""

    relayed: int = 0
    """Events acknowledged by JetStream (re-sends after a restart included)."""
    duplicates: int = 0
    """Acks saying JetStream already had the message (a re-send after a crash)."""
    retried: int = 0
    pages: int = 0
    out_of_order: int = 0


def create_tracking_table(env: Mapping[str, str]) -> None:
    """Create the relay's tracking table (``event_relay_tracking``) if it does not exist."""
    factory = InfrastructureFactory.construct(Environment(RELAY_NAME, {**env, "CREATE_TABLE": "y"}))
    try:
        factory.tracking_recorder(PostgresTrackingRecorder)
    finally:
        factory.close()


class EventRelay:
    """Relays one application's notification log to HES_EVENTS, tracking progress in PostgreSQL."""

    def __init__(
        self,
        nc: NatsClient,
        env: Mapping[str, str],
        *,
        application_name: str,
        source: str,
        prefix: str,
        page_size: int = 500,
        max_in_flight: int = 1024,
        ack_timeout: float = 5.0,
        max_attempts: int = 5,
        poll_interval: float = 1.0,
        on_position: Callable[[int], None] | None = None,
    ) -> None:
        if page_size < 1 or max_in_flight < 1 or max_attempts < 1:
            raise ValueError("page_size, max_in_flight and max_attempts must be positive")
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=_NATS_PY_PENDING_LIMIT)
        # A relay reads a page, publishes it and records its position one after the other:
        # one connection per recorder is all it uses. Six relays in a process must not each
        # keep room for five (PostgreSQL's default allows 100 connections in all).
        self._env = {**env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"}
        self.application_name = application_name
        self._source = source
        self._prefix = prefix
        self._page_size = page_size
        self._window = asyncio.Semaphore(max_in_flight)
        self._ack_timeout = ack_timeout
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._on_position = on_position or (lambda position: None)
        self._events_factory = InfrastructureFactory.construct(
            Environment(application_name, self._env)
        )
        self._tracking_factory = InfrastructureFactory.construct(Environment(RELAY_NAME, self._env))
        self._events: ApplicationRecorder = self._events_factory.application_recorder()
        self._tracking: TrackingRecorder = self._tracking_factory.tracking_recorder(
            PostgresTrackingRecorder
        )
        self._last_seq = 0
        self.position = 0
        self.stats = RelayStats()
        self._lag = EVENT_RELAY_LAG.labels(application_name)
        self._published = EVENT_RELAY_PUBLISHED.labels(application_name)
        self._out_of_order = EVENT_RELAY_OUT_OF_ORDER.labels(application_name)

    def close(self) -> None:
        """Close the relay's database pools."""
        self._events_factory.close()
        self._tracking_factory.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set: catch up, then wake on each new event (LISTEN/NOTIFY)."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake))
        try:
            self.position = await self._relayed_position()
            self._on_position(self.position)
            log.info(
                "event relay %s starting after position %d", self.application_name, self.position
            )
            while not stop.is_set():
                if listener.done():
                    listener.result()  # the LISTEN connection failed: let the supervisor restart
                wake.clear()
                if await self.relay_page():
                    continue
                self._lag.set(0)
                waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(
                    waiters, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def relay_available(self) -> int:
        """Relay pages until caught up with the event store; return the events relayed."""
        self.position = await self._relayed_position()
        total = 0
        while count := await self.relay_page():
            total += count
        return total

    async def relay_page(self) -> int:
        """Relay the next page of notifications, record the position; return its size."""
        page = await asyncio.to_thread(
            self._events.select_notifications,
            self.position,
            self._page_size,
            inclusive_of_start=False,
        )
        if not page:
            return 0
        messages: list[OutgoingEvent] = []
        unrelayable: UnrelayableEvent | None = None
        for notification in page:
            try:
                messages.append(self._message(notification))
            except Exception as exc:  # a poison event: relay what precedes it, then stop
                unrelayable = UnrelayableEvent(notification, exc)
                break
        if messages:
            await self._publish(messages)
            last = page[len(messages) - 1].id
            await asyncio.to_thread(
                self._tracking.insert_tracking, Tracking(self.application_name, last)
            )
            self.position = last
            self._on_position(last)
            self.stats.pages += 1
            recorded = await asyncio.to_thread(self._events.max_notification_id)
            self._lag.set(max(0, (recorded or 0) - last))
        if unrelayable is not None:
            raise unrelayable
        return len(messages)

    async def _relayed_position(self) -> int:
        position = await asyncio.to_thread(self._tracking.max_tracking_id, self.application_name)
        return position or 0

    def _message(self, notification: Notification) -> OutgoingEvent:
        return outgoing_event(
            position=notification.id,
            originator_id=notification.originator_id,  # type: ignore[arg-type]
            originator_version=notification.originator_version,
            topic=notification.topic,
            state=notification.state,
            source=self._source,
            prefix=self._prefix,
        )

    async def _publish(self, messages: Sequence[OutgoingEvent]) -> None:
        """Publish in order; return when every message is acknowledged, else raise RelayError."""
        remaining = list(messages)
        delay = 0.1
        for attempt in range(1, self._max_attempts + 1):
            acked, remaining = await self._attempt(remaining)
            self._check_order(acked)
            if not remaining:
                return
            self.stats.retried += len(remaining)
            log.warning(
                "event relay: %d of %d messages unacknowledged (attempt %d of %d)",
                len(remaining),
                len(messages),
                attempt,
                self._max_attempts,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise RelayError(
            f"JetStream did not acknowledge {len(remaining)} events after position "
            f"{self.position} in {self._max_attempts} attempts"
        )

    async def _attempt(
        self, messages: list[OutgoingEvent]
    ) -> tuple[list[PubAck], list[OutgoingEvent]]:
        """Send once; return the acked prefix's acks and the messages from the first unacked."""
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for message in messages:
                await self._window.acquire()
                try:
                    future = await self._js.publish_async(
                        message.subject, message.payload, headers={Header.MSG_ID: message.msg_id}
                    )
                except BaseException:
                    self._window.release()
                    raise
                future.add_done_callback(lambda _: self._window.release())
                futures.append(future)
            await asyncio.wait(futures, timeout=self._ack_timeout)
        except Exception as exc:  # connection refused a publish: re-send from the first unacked
            log.warning("event relay: publish failed: %s", exc)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        acks: list[PubAck] = []
        for future in futures:
            if future.cancelled() or future.exception() is not None:
                break
            acks.append(future.result())
        self.stats.relayed += len(acks)
        self._published.inc(len(acks))
        self.stats.duplicates += sum(1 for ack in acks if ack.duplicate)
        return acks, messages[len(acks) :]

    def _check_order(self, acks: list[PubAck]) -> None:
        # JetStream keeps one connection's messages in order, but if it lost one message of a
        # window and stored later ones, the re-sent message lands behind them: say so loudly.
        for ack in acks:
            if ack.seq <= self._last_seq:
                self.stats.out_of_order += 1
                self._out_of_order.inc()
                log.error(
                    "event relay: stream sequence %d stored after %d (out of position order)",
                    ack.seq,
                    self._last_seq,
                )
            self._last_seq = max(self._last_seq, ack.seq)

    async def _listen(self, wake: asyncio.Event) -> None:
        """Set ``wake`` on every NOTIFY the event store sends when it records events."""
        channel = getattr(self._events, "channel_name", f"{self.application_name}_events")
        conninfo = psycopg.conninfo.make_conninfo(
            dbname=self._env.get("POSTGRES_DBNAME", "postgres"),
            host=self._env.get("POSTGRES_HOST", "127.0.0.1"),
            port=self._env.get("POSTGRES_PORT", "5432"),
            user=self._env.get("POSTGRES_USER", "postgres"),
            password=self._env.get("POSTGRES_PASSWORD", ""),
            connect_timeout=self._env.get("POSTGRES_CONNECT_TIMEOUT", "5"),
        )
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            async for _ in conn.notifies():
                wake.set()
