"""Reading workers on a thread and event loop of their own, as in their own process.

Tests drive the API through Litestar's test client, which runs the app behind a blocking portal:
while a request is served, the test's event loop stands still. Workers on that loop would stop
in the middle of a transaction (holding, e.g., a new partition's lock) while the request waits
for that lock. On their own loop they go on, as the real worker process does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import nats

from bootstrap.reading_worker import reading_worker
from config.settings import Settings
from processes.detectors import DetectorReport
from projections.reading_worker import ReadingWorker

T = TypeVar("T")


class WorkerThread:
    """A ``ReadingWorker`` running on its own thread until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._worker: ReadingWorker | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-reading-worker", daemon=True)

    def start(self) -> None:
        """Start the worker and wait until it consumes."""
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"reading worker did not start: {self._failure!r}")

    def stop(self) -> None:
        """Let the worker finish its batches and stop."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def apply_tariffs(self) -> list[str]:
        """Run the worker's tariff engine once, on the worker's loop."""
        return await self._call(lambda w: w.apply_tariffs())

    async def run_detectors(self, now: datetime | None = None) -> DetectorReport:
        """Run the worker's detectors once (at ``now``, default the clock), on its loop."""
        return await self._call(lambda w: w.run_detectors(now))

    async def _call(self, action: Callable[[ReadingWorker], Awaitable[T]]) -> T:
        assert self._loop is not None and self._worker is not None
        worker = self._worker

        async def run() -> T:
            return await action(worker)

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        assert self.settings.nats.url
        nc = await nats.connect(self.settings.nats.url, max_reconnect_attempts=-1)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._worker = reading_worker(self.settings, nc)
        task = asyncio.create_task(self._worker.run(self._stop))
        self._ready.set()
        try:
            await task
        finally:
            await nc.drain()
