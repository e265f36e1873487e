"""The event relay under supervision: its own thread and event loop, restarted after a failure."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import psycopg

from adapters.nats.cloudevents import event_id
from adapters.nats.event_relay import EventRelay, UnrelayableEvent
from bootstrap.connections import connect_nats
from bootstrap.supervision import FailureStreak, SupervisedLoop, status_reporter
from commands.meters import MeterRegistry
from config.settings import Settings
from projections.feed_status import Stall, next_event, relay_feed

log = logging.getLogger(__name__)


class SupervisedRelay(SupervisedLoop):
    """Runs one relay per application in a thread; a failed relay restarts with backoff."""

    def __init__(
        self,
        settings: Settings,
        application_name: str = MeterRegistry.name,
        max_backoff: float = 30.0,
    ) -> None:
        if settings.nats.url is None:
            raise ValueError("the event relay needs a resolved NATS URL")
        self._settings = settings
        self._application_name = application_name
        self._max_backoff = max_backoff
        self._feed = relay_feed(application_name)
        super().__init__(
            FailureStreak(
                self._feed.name, status_reporter(settings, self._feed.name), max_backoff=max_backoff
            ),
            f"event-relay-{application_name}",
        )

    def stall_of(self, error: Exception) -> Stall:
        """The event the relay could not publish, else the event it waits at."""
        if isinstance(error, UnrelayableEvent):
            return Stall(
                position=error.position,
                event_id=event_id(UUID(str(error.originator_id)), error.originator_version),
                topic=error.topic,
                error=str(error),
            )
        return self._stall(error)

    def _stall(self, error: BaseException) -> Stall:
        """A failure not tied to one event (NATS down…): the relay waits at its next event."""
        text = f"{type(error).__name__}: {error}"
        try:
            assert self._settings.database.url is not None
            with psycopg.connect(self._settings.database.url, connect_timeout=5) as conn:
                ref = next_event(conn, self._settings.database.schema, self._feed)
        except psycopg.Error:
            ref = None
        if ref is None:
            return Stall(position=None, error=text)
        return Stall(position=ref.position, event_id=ref.event_id, topic=ref.topic, error=text)

    def _progress(self, position: int) -> None:
        stall = self.streak.stall
        if stall is not None and (stall.position is None or position >= stall.position):
            # A blocking database write; rare (once per streak), so done on the loop.
            self.streak.recovered()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay the application's events until ``stop`` is set."""
        s = self._settings
        assert s.nats.url is not None
        nc = await connect_nats(s.nats, max_reconnect_attempts=-1, connect_timeout=5)
        relay = EventRelay(
            nc,
            s.database.eventsourcing_env(),
            application_name=self._application_name,
            source=s.events_source,
            prefix=s.nats.prefix,
            on_position=self._progress,
        )
        try:
            log.info("event relay %s running", self._application_name)
            await relay.run(stop)
        finally:
            relay.close()
            await nc.close()


RELAYED_APPLICATIONS = ("meters", "tariffs", "alerts", "sims", "customers", "fleet")
"""Every application whose events go to HES_EVENTS, each with its own relay and tracking row."""


def relays(settings: Settings) -> list[SupervisedRelay]:
    """One supervised relay per relayed application (not yet started)."""
    return [SupervisedRelay(settings, name) for name in RELAYED_APPLICATIONS]


def run_relay_forever(settings: Settings) -> None:
    """Run the event relays in the foreground until interrupted (``hes events relay``)."""
    running = relays(settings)
    for relay in running:
        relay.start()
    try:
        running[0].join()
    finally:
        for relay in running:
            relay.stop()
