"""Projection workers run under supervision: restarted with backoff when they fail."""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventsourcing.projection import ProjectionRunner

from commands.meters import MeterRegistry
from hes.settings import Settings
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView

log = logging.getLogger(__name__)


class SupervisedProjection:
    """Runs the meters projection in a thread and restarts it after a failure."""

    def __init__(self, settings: Settings, max_backoff: float = 30.0) -> None:
        self._env = settings.eventsourcing_env()
        self._stop = threading.Event()
        self._runner: ProjectionRunner[Any, Any] | None = None
        self._max_backoff = max_backoff
        self._thread = threading.Thread(target=self._loop, name="projection-meters", daemon=True)
        self.restarts = 0

    def start(self) -> None:
        """Start the supervising thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the projection and wait for its thread."""
        self._stop.set()
        runner = self._runner
        if runner is not None:
            runner.stop()
        self._thread.join(timeout)

    def join(self) -> None:
        """Block until the worker stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with ProjectionRunner(
                    application_class=MeterRegistry,
                    projection_class=MetersProjection,
                    view_class=MetersView,
                    env=self._env,
                ) as runner:
                    self._runner = runner
                    log.info("projection %s running", MetersProjection.name)
                    backoff = 0.5
                    while not self._stop.is_set():
                        runner.run_forever(timeout=1.0)
                        if runner.is_interrupted.is_set():
                            break
            except Exception:
                log.exception(
                    "projection %s failed; restarting in %.1fs", MetersProjection.name, backoff
                )
                self.restarts += 1
            finally:
                self._runner = None
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)


def run_projection_forever(settings: Settings) -> None:
    """Run the meters projection in the foreground until interrupted (``hes projections run``)."""
    worker = SupervisedProjection(settings)
    worker.start()
    worker.join()
