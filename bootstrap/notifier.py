"""The notifier under supervision: its own thread and event loop, restarted after a failure."""

from __future__ import annotations

import asyncio
import logging
import signal

from bootstrap.connections import connect_nats, notifier_pool
from bootstrap.supervision import FailureStreak, SupervisedLoop, status_reporter
from config.settings import Settings
from processes.notifier import NOTIFIER, Notifier, UndeliverableMessage, secret_box
from projections.feed_status import Stall

log = logging.getLogger(__name__)


class SupervisedNotifier(SupervisedLoop):
    """Runs the notifier in a thread; a failed notifier restarts with backoff."""

    def __init__(self, settings: Settings, max_backoff: float = 30.0) -> None:
        if settings.nats.url is None or settings.database.url is None:
            raise ValueError("the notifier needs resolved database and NATS URLs")
        self._settings = settings
        self._max_backoff = max_backoff
        super().__init__(
            FailureStreak(NOTIFIER, status_reporter(settings, NOTIFIER), max_backoff=max_backoff),
            "notifier",
        )
        self.notifier: Notifier | None = None

    def start(self) -> None:
        """Start the notifier thread."""
        # httpx logs every request line, and webhook URLs may carry the receiver's tokens.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        super().start()

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the notifier to stop (running sends finish or time out) and wait for its thread."""
        super().stop(timeout)

    def stall_of(self, error: Exception) -> Stall:
        """The message the notifier could not handle, else no position."""
        if isinstance(error, UndeliverableMessage):
            return Stall(
                position=error.sequence, event_id=error.event_id, topic=error.type, error=str(error)
            )
        return super().stall_of(error)

    def _progress(self, aggregate: str, sequence: int | None) -> None:
        """A consumer's round went well; past the stall (if any) it recovers."""
        stall = self.streak.stall
        if stall is None:
            return
        failed_on = (stall.topic or "").split(".")[1:2]  # hes.alert.Resolved.v1 -> ["alert"]
        if stall.position is None or (
            failed_on == [aggregate] and sequence is not None and sequence >= stall.position
        ):
            self.streak.recovered()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the notifier until ``stop`` is set."""
        s = self._settings
        assert s.nats.url is not None
        nc = await connect_nats(
            s.nats, name="hes-notifier", max_reconnect_attempts=-1, connect_timeout=5
        )
        try:
            self.notifier = Notifier(
                s.database,
                s.nats,
                s.notifications,
                nc,
                notifier_pool(s.database),
                box=secret_box(s.notifications, s.runtime.data_dir),
                on_position=self._progress,
            )
            log.info("notifier running")
            await self.notifier.run(stop)
        finally:
            await nc.close()


def run_notifier_forever(settings: Settings) -> None:
    """Run the notifier until SIGINT or SIGTERM (``hes notifications run``)."""
    signal.signal(signal.SIGTERM, interrupt)
    notifier = SupervisedNotifier(settings)
    notifier.start()
    notifier.join()


def interrupt(signum: int, frame: object) -> None:
    """Signal handler: stop the main thread as Ctrl-C does."""
    raise KeyboardInterrupt
