"""Failure streaks of supervised parts: backoff, one log line per streak, metrics, status.

A part (a projection, a relay, the notifier) that fails on the same event over and over must
neither flood the log nor go quiet: the first failure of a streak is logged with the event's
position and id (and the traceback), later ones only count (``hes_projection_failures_total``)
and wait longer (exponential backoff up to a ceiling); the recovery is logged once. The state
goes to ``projection_status`` (projections.feed_status) for the probe and the CLI.

``Supervised`` (``SupervisedLoop`` for a coroutine) is the one loop that runs such a part in its
own thread and restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

import psycopg

from adapters.metrics import PROJECTION_FAILURES, PROJECTION_STALLED
from config.settings import Settings
from projections.feed_status import Stall, State, report

log = logging.getLogger(__name__)

Reporter = Callable[[State, Stall | None, int], None]
"""Records a state change: (state, the stall or None, failures in the streak)."""


def status_reporter(settings: Settings, name: str) -> Reporter:
    """A reporter writing ``name``'s state to the database (best effort: it may be down)."""

    def write(state: State, stall: Stall | None, failures: int) -> None:
        if settings.database.url is None:
            return
        try:
            with psycopg.connect(settings.database.url, autocommit=True, connect_timeout=5) as c:
                report(c, settings.database.schema, name, state, stall=stall, failures=failures)
        except psycopg.Error as exc:
            log.debug("could not record the state of %s: %s", name, exc)

    return write


class FailureStreak:
    """Consecutive failures of one part: when to retry, what to log, what to report."""

    def __init__(
        self,
        name: str,
        reporter: Reporter | None = None,
        *,
        base: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self._report = reporter or (lambda state, stall, failures: None)
        self._base = base
        self._max = max_backoff
        self.failures = 0
        self.stall: Stall | None = None
        self._stalled = PROJECTION_STALLED.labels(name)
        self._failed = PROJECTION_FAILURES.labels(name)

    @property
    def active(self) -> bool:
        """True while the part has failed and not yet got past the failure."""
        return self.failures > 0

    def running(self) -> None:
        """The part (re)started without a pending failure."""
        self._stalled.set(0)
        self._report(State.RUNNING, None, 0)

    def stopped(self) -> None:
        """The part was stopped on purpose."""
        self._report(State.STOPPED, None, self.failures)

    def failed(self, stall: Stall, error: BaseException) -> float:
        """Count a failure; log it if it starts a streak; return the wait before the retry."""
        self._failed.inc()
        new = self.stall is None or self.stall.position != stall.position
        self.failures = 1 if new else self.failures + 1
        self.stall = stall
        delay = float(min(self._base * 2 ** (self.failures - 1), self._max))
        if new:
            log.error(
                "%s is stalled %s; retrying with backoff (up to %.0fs) and logging again only "
                "when it gets past it; `hes projections status` shows it",
                self.name,
                stall.describe(),
                self._max,
                exc_info=error,
                extra={"projection": self.name, "position": stall.position},
            )
            self._stalled.set(1)
            self._report(State.STALLED, stall, self.failures)
        else:
            log.debug(
                "%s failed again (%d in a row) %s", self.name, self.failures, stall.describe()
            )
        return delay

    def recovered(self) -> None:
        """The part got past what it failed on."""
        if not self.active:
            return
        stall = self.stall
        log.warning(
            "%s resumed after %d failures %s",
            self.name,
            self.failures,
            stall.describe() if stall else "",
            extra={"projection": self.name},
        )
        self.failures = 0
        self.stall = None
        self._stalled.set(0)
        self._report(State.RUNNING, None, 0)


class Supervised(ABC):
    """A part run in its own thread until stopped, restarted with backoff after each failure.

    The one supervision loop of the projections, the event relays and the notifier: a subclass
    says how to run the part once (``run_once``, returning when stopped), how to describe a
    failure (``stall_of``) and how to interrupt a run from another thread (``interrupt``);
    ``streak`` logs, counts and reports the failures and says how long to wait.
    """

    def __init__(self, streak: FailureStreak, thread_name: str) -> None:
        self.streak = streak
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=thread_name, daemon=True)

    @property
    def restarts(self) -> int:
        """Failures in the current streak (0 while running normally)."""
        return self.streak.failures

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was asked."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the supervising thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the part to stop and wait for its thread."""
        self._stopping.set()
        self.interrupt()
        if self._thread.ident is not None:  # never started (HES_RUN_WORKERS=false): no thread
            self._thread.join(timeout)

    def join(self) -> None:
        """Block until the part stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    @abstractmethod
    def run_once(self) -> None:
        """Run the part until it is stopped (return) or fails (raise)."""

    def stall_of(self, error: Exception) -> Stall:
        """Where the part is stuck after ``error``."""
        return Stall(position=None, error=f"{type(error).__name__}: {error}")

    def interrupt(self) -> None:  # noqa: B027 (an optional hook, a no-op by default)
        """Make a running ``run_once`` return soon (called from another thread)."""

    def _main(self) -> None:
        if self._stopping.is_set():
            return
        self.streak.running()
        while not self._stopping.is_set():
            delay = 0.5
            try:
                self.run_once()
            except Exception as exc:
                delay = self.streak.failed(self.stall_of(exc), exc)
            if self._stopping.wait(delay):
                break
        self.streak.stopped()


class SupervisedLoop(Supervised):
    """A supervised part whose run is a coroutine, on the thread's own event loop."""

    def __init__(self, streak: FailureStreak, thread_name: str) -> None:
        super().__init__(streak, thread_name)
        self._runner: asyncio.Runner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_stop: asyncio.Event | None = None

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Run the part until ``stop`` is set (return) or it fails (raise)."""

    def run_once(self) -> None:
        assert self._runner is not None
        self._runner.run(self._run_until_stopped())

    async def _run_until_stopped(self) -> None:
        stop = asyncio.Event()
        self._run_stop = stop
        if self._stopping.is_set():  # stop() came before this run's event existed
            stop.set()
        try:
            await self.run(stop)
        finally:
            self._run_stop = None

    def interrupt(self) -> None:
        loop, stop = self._loop, self._run_stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    def _main(self) -> None:
        # One loop for every run of this part; closing it cancels what a run left behind.
        with asyncio.Runner() as runner:
            self._runner = runner
            self._loop = runner.get_loop()
            super()._main()
