"""Projection workers run under supervision: restarted with backoff when they fail."""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import TrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner

from commands.alerts import AlertDesk
from commands.meters import MeterRegistry
from commands.tariffs import TariffBook
from hes.settings import Settings
from projections.alerts_projection import AlertsProjection
from projections.alerts_view import AlertsView
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView
from projections.tariffs_projection import TariffsProjection
from projections.tariffs_view import TariffsView

log = logging.getLogger(__name__)


class SupervisedProjection:
    """Runs a projection (the meters one by default) in a thread; restarts it after a failure."""

    def __init__(
        self,
        settings: Settings,
        max_backoff: float = 30.0,
        *,
        application_class: type[Application[Any]] = MeterRegistry,
        projection_class: type[Projection[Any]] = MetersProjection,
        view_class: type[TrackingRecorder] = MetersView,
    ) -> None:
        self._env = settings.eventsourcing_env()
        self._application_class = application_class
        self._projection_class = projection_class
        self._view_class = view_class
        self.name = projection_class.name
        self._stop = threading.Event()
        self._runner: ProjectionRunner[Any, Any] | None = None
        self._max_backoff = max_backoff
        self._thread = threading.Thread(
            target=self._loop, name=f"projection-{self.name}", daemon=True
        )
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
                    application_class=self._application_class,
                    projection_class=self._projection_class,
                    view_class=self._view_class,
                    env=self._env,
                ) as runner:
                    self._runner = runner
                    log.info("projection %s running", self.name)
                    backoff = 0.5
                    while not self._stop.is_set():
                        runner.run_forever(timeout=1.0)
                        if runner.is_interrupted.is_set():
                            break
            except Exception:
                log.exception("projection %s failed; restarting in %.1fs", self.name, backoff)
                self.restarts += 1
            finally:
                self._runner = None
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff)


def tariffs_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the tariffs read model (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=TariffBook,
        projection_class=TariffsProjection,
        view_class=TariffsView,
    )


def alerts_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the alerts read model (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=AlertDesk,
        projection_class=AlertsProjection,
        view_class=AlertsView,
    )


def run_projection_forever(settings: Settings) -> None:
    """Run the meters, tariffs and alerts projections until interrupted."""
    others = [tariffs_projection(settings), alerts_projection(settings)]
    for other in others:
        other.start()
    worker = SupervisedProjection(settings)
    worker.start()
    try:
        worker.join()
    finally:
        for other in others:
            other.stop()
