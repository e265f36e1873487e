"""The reading-worker process: `hes workers run`, also started as a child by `hes up`."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from prometheus_client import start_http_server

from adapters.metrics import CHILD_RESTARTS
from adapters.nats.closing import drain_or_close
from bootstrap.child import NOTIFY_FD, notify_ready
from bootstrap.connections import connect_nats_service
from bootstrap.embedded import spawn_child
from bootstrap.reading_worker import reading_worker
from config.settings import Settings

log = logging.getLogger(__name__)


async def run_reading_workers(settings: Settings) -> None:
    """Consume every READINGS partition until SIGINT/SIGTERM."""
    assert settings.nats.url is not None
    nc = await connect_nats_service(settings.nats, "hes-reading-worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.runtime.metrics_port is not None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        start_http_server(settings.runtime.metrics_port, addr=settings.runtime.host)
    worker = reading_worker(settings, nc)
    log.info(
        "reading worker %s sharing %d partitions (leases)",
        worker.leases.worker if worker.leases else "",
        settings.readings.partitions,
    )
    notify_ready()
    try:
        await worker.run(stop)
    finally:
        await drain_or_close(nc)


class ChildState(enum.StrEnum):
    """Where a supervised child process is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    STOPPED = "stopped"


QUICK_EXIT_SECONDS = 10.0
"""A child that exits sooner than this after it said it was ready counts as crashing."""
CRASH_LOOP = 3
"""Quick exits in a row that make a child crash-looping (readiness and banner say so)."""


class WorkerProcess:
    """A supervised child process (`hes workers run` by default) with the resolved server URLs.

    The child says when it works (bootstrap.child.notify_ready); until then, while it is down and
    while it crash-loops, ``health()`` says so. It is killed if this process dies
    (PR_SET_PDEATHSIG), so it never outlives ``hes up``.
    """

    def __init__(
        self,
        settings: Settings,
        max_backoff: float = 30.0,
        command: tuple[str, ...] = ("workers", "run"),
        name: str = "reading workers",
    ) -> None:
        self._command = command
        self.title = name
        self.name = name.replace(" ", "_").lower()
        """Its readiness check's name (reading_workers, dlms_workers)."""
        self._env = {
            **os.environ,
            "HES_DATABASE_URL": settings.database.url or "",
            "HES_NATS_URL": settings.nats.url or "",
        }
        self.pass_fds: tuple[int, ...] = ()
        """Descriptors the child inherits (with their numbers in ``extra_env``)."""
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._max_backoff = max_backoff
        self._thread = threading.Thread(target=self._loop, name=name.replace(" ", "-"), daemon=True)
        self._changed = threading.Condition()
        self.state = ChildState.STARTING
        self.restarts = 0
        self.quick_exits = 0
        self.last_exit: int | None = None
        self._ready_at = 0.0
        self._retry_at = 0.0
        self._restarted = CHILD_RESTARTS.labels(self.name)

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the child and its supervisor."""
        self._env.update(extra_env or {})
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
        self._set(ChildState.STOPPED)

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def crash_looping(self) -> bool:
        """True after several quick exits in a row (until it stays up)."""
        return self.quick_exits >= CRASH_LOOP

    def wait_started(self, timeout: float) -> ChildState:
        """Wait until the child works, or crash-loops, or ``timeout``; return its state."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.state is ChildState.RUNNING or self.crash_looping):
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
            return self.state

    def health(self) -> tuple[bool, str]:
        """Whether the child works now, and how it is."""
        state = self.state
        if state is ChildState.RUNNING and time.monotonic() - self._ready_at >= QUICK_EXIT_SECONDS:
            self.quick_exits = 0  # it stayed up: whatever came before is over
        looping = (
            f"; crash-looping: {self.quick_exits} quick exits in a row"
            if self.crash_looping
            else ""
        )
        if state is ChildState.RUNNING:
            return not self.crash_looping, f"running (pid {self.pid}){looping}"
        if state is ChildState.STARTING:
            return False, f"starting (pid {self.pid}){looping}"
        if state is ChildState.EXITED:
            wait = max(0.0, self._retry_at - time.monotonic())
            return False, f"exited with {self.last_exit}; restarting in {wait:.1f}s{looping}"
        return False, "stopped"

    def summary(self) -> str:
        """One line for the banner."""
        return self.health()[1]

    def _set(self, state: ChildState) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            ready, code = self._run_once()
            if self._stop.is_set():
                break
            self.restarts += 1
            self._restarted.inc()
            self.last_exit = code
            quick = not ready or time.monotonic() - self._ready_at < QUICK_EXIT_SECONDS
            self.quick_exits = self.quick_exits + 1 if quick else 0
            if not quick:
                backoff = 0.5
            self._retry_at = time.monotonic() + backoff
            self._set(ChildState.EXITED)
            if self.quick_exits == CRASH_LOOP:
                log.error(
                    "%s are crash-looping: %d quick exits in a row, the last with %s; "
                    "restarting with backoff up to %.0fs",
                    self.title,
                    self.quick_exits,
                    code,
                    self._max_backoff,
                )
            elif self.quick_exits < CRASH_LOOP:
                log.error("%s exited with %s; restarting in %.1fs", self.title, code, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)

    def _run_once(self) -> tuple[bool, int]:
        """Start the child, wait for it to say it is ready, then for it to exit."""
        reader, writer = os.pipe()
        try:
            # Killed with us even if we are killed hard: no orphan holding ports or connections.
            self._proc = spawn_child(
                [sys.executable, "-m", "hes.cli", *self._command],
                env={**self._env, NOTIFY_FD: str(writer)},
                death_signal=signal.SIGKILL,
                pass_fds=(writer, *self.pass_fds),
            )
        finally:
            os.close(writer)
        self._set(ChildState.STARTING)
        with os.fdopen(reader, "rb") as notes:
            ready = notes.readline().startswith(b"ready")  # b"" when it exits first
        if ready:
            self._ready_at = time.monotonic()
            self._set(ChildState.RUNNING)
        return ready, self._proc.wait()
