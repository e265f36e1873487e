"""The notifier under supervision: its own thread and event loop, restarted after a failure."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import nats

from hes.settings import Settings
from projections.notifier import Notifier

log = logging.getLogger(__name__)


class SupervisedNotifier:
    """Runs the notifier in a thread; a failed notifier restarts with backoff."""

    def __init__(self, settings: Settings, max_backoff: float = 30.0) -> None:
        if settings.nats_url is None or settings.database_url is None:
            raise ValueError("the notifier needs resolved database and NATS URLs")
        self._settings = settings
        self._max_backoff = max_backoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="notifier", daemon=True)
        self.restarts = 0
        self.notifier: Notifier | None = None

    def start(self) -> None:
        """Start the notifier thread."""
        # httpx logs every request line, and webhook URLs may carry the receiver's tokens.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the notifier to stop (running sends finish or time out) and wait for its thread."""
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        if self._thread.ident is not None:  # never started (HES_RUN_WORKERS=false): no thread
            self._thread.join(timeout)

    def join(self) -> None:
        """Block until the notifier stops (Ctrl-C stops it)."""
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
        while not self._stopping.is_set():
            run_stop = asyncio.Event()
            forward = asyncio.create_task(self._forward(run_stop))
            try:
                await self._run_once(run_stop)
                backoff = 0.5
            except Exception:
                log.exception("notifier failed; restarting in %.1fs", backoff)
                self.restarts += 1
            finally:
                forward.cancel()
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except TimeoutError:
                backoff = min(backoff * 2, self._max_backoff)

    async def _forward(self, run_stop: asyncio.Event) -> None:
        assert self._stop is not None
        await self._stop.wait()
        run_stop.set()

    async def _run_once(self, stop: asyncio.Event) -> None:
        s = self._settings
        assert s.nats_url is not None
        nc = await nats.connect(
            s.nats_url, name="hes-notifier", max_reconnect_attempts=-1, connect_timeout=5
        )
        try:
            self.notifier = Notifier(s, nc)
            log.info("notifier running")
            await self.notifier.run(stop)
        finally:
            await nc.close()


def run_notifier_forever(settings: Settings) -> None:
    """Run the notifier until SIGINT or SIGTERM (``hes notifications run``)."""
    signal.signal(signal.SIGTERM, _interrupt)
    notifier = SupervisedNotifier(settings)
    notifier.start()
    notifier.join()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
