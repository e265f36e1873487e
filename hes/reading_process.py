"""The reading-worker process: `hes workers run`, also started as a child by `hes up`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import nats
from prometheus_client import start_http_server

from adapters.nats.closing import drain_or_close
from hes.embedded import spawn_child
from hes.settings import Settings
from projections.reading_worker import ReadingWorker

log = logging.getLogger(__name__)


async def run_reading_workers(settings: Settings) -> None:
    """Consume every READINGS partition until SIGINT/SIGTERM."""
    assert settings.nats_url is not None
    nc = await nats.connect(
        settings.nats_url,
        name="hes-reading-worker",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        flush_timeout=5,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.metrics_port is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        start_http_server(settings.metrics_port, addr=settings.host)
    worker = ReadingWorker(settings, nc)
    log.info("reading workers consuming %d partitions", settings.reading_partitions)
    try:
        await worker.run(stop)
    finally:
        await drain_or_close(nc)


class WorkerProcess:
    """A supervised child process running `hes workers run` with the resolved server URLs."""

    def __init__(
        self,
        settings: Settings,
        max_backoff: float = 30.0,
        command: tuple[str, ...] = ("workers", "run"),
        name: str = "reading workers",
    ) -> None:
        self._command = command
        self._name = name
        self._env = {
            **os.environ,
            "HES_DATABASE_URL": settings.database_url or "",
            "HES_NATS_URL": settings.nats_url or "",
        }
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._max_backoff = max_backoff
        self._thread = threading.Thread(target=self._loop, name=name.replace(" ", "-"), daemon=True)
        self.restarts = 0

    def start(self) -> None:
        """Start the child and its supervisor."""
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the child to finish its batches and exit; kill it if it does not."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(timeout)

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            # Dies with us even if we are killed hard (no orphaned workers holding connections).
            self._proc = spawn_child(
                [sys.executable, "-m", "hes.cli", *self._command],
                env=self._env,
                death_signal=signal.SIGTERM,
            )
            code = self._proc.wait()
            if self._stop.is_set():
                break
            self.restarts += 1
            if time.monotonic() - started > 60:
                backoff = 0.5
            log.error("%s exited with %s; restarting in %.1fs", self._name, code, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)
