"""The event relay under supervision: its own thread and event loop, restarted after a failure."""

from __future__ import annotations

import asyncio
import logging
import threading

import nats

from adapters.nats.event_relay import EventRelay
from commands.meters import MeterRegistry
from hes.settings import Settings

log = logging.getLogger(__name__)


class SupervisedRelay:
    """Runs one relay per application in a thread; a failed relay restarts with backoff."""

    def __init__(
        self,
        settings: Settings,
        application_name: str = MeterRegistry.name,
        max_backoff: float = 30.0,
    ) -> None:
        if settings.nats_url is None:
            raise ValueError("the event relay needs a resolved NATS URL")
        self._settings = settings
        self._application_name = application_name
        self._max_backoff = max_backoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"event-relay-{application_name}", daemon=True
        )
        self.restarts = 0

    def start(self) -> None:
        """Start the relay thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the relay to stop after its current page and wait for its thread."""
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def join(self) -> None:
        """Block until the relay stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def _main(self) -> None:
        asyncio.run(self._supervise())

    async def _supervise(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await self._run_once()
                backoff = 0.5
            except Exception:
                log.exception(
                    "event relay %s failed; restarting in %.1fs", self._application_name, backoff
                )
                self.restarts += 1
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except TimeoutError:
                backoff = min(backoff * 2, self._max_backoff)

    async def _run_once(self) -> None:
        s = self._settings
        assert self._stop is not None and s.nats_url is not None
        nc = await nats.connect(s.nats_url, max_reconnect_attempts=-1, connect_timeout=5)
        relay = EventRelay(
            nc,
            s.eventsourcing_env(),
            application_name=self._application_name,
            source=s.events_source,
            prefix=s.nats_prefix,
        )
        try:
            log.info("event relay %s running", self._application_name)
            await relay.run(self._stop)
        finally:
            relay.close()
            await nc.close()


RELAYED_APPLICATIONS = ("meters", "tariffs", "alerts")
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
