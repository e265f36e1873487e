"""Projection workers run under supervision: restarted with backoff when they fail."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import get_topic

from bootstrap.insights import SupervisedInsights
from bootstrap.supervision import FailureStreak, Supervised, status_reporter
from commands.alerts import AlertDesk
from commands.customers import CustomerBook
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from commands.sims import SimInventory
from commands.tariffs import TariffBook
from config.settings import Settings
from projections.alerts_projection import AlertsProjection
from projections.alerts_view import AlertsView
from projections.customers_projection import CustomersProjection
from projections.customers_view import CustomersView
from projections.feed_status import BY_NAME, EventRef, Stall, next_event
from projections.fleet_projection import FleetProjection
from projections.fleet_view import FleetView
from projections.meters_projection import MetersProjection
from projections.meters_view import MetersView
from projections.sims_projection import SimsProjection
from projections.sims_view import SimsView
from projections.tariffs_projection import TariffsProjection
from projections.tariffs_view import TariffsView

log = logging.getLogger(__name__)


class EventFailed(Exception):
    """A projection could not apply the event at ``ref``; the cause is chained."""

    def __init__(self, ref: EventRef, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.ref = ref


def guarded(projection_class: type[Projection[Any]]) -> type[Projection[Any]]:
    """The projection class, whose failures name the event they failed on."""

    class Guarded(projection_class):  # type: ignore[valid-type, misc]
        name = projection_class.name
        topics = projection_class.topics

        def process_event(self, domain_event: Any, tracking: Tracking) -> None:
            try:
                super().process_event(domain_event, tracking)
            except Exception as exc:
                ref = EventRef(
                    position=tracking.notification_id,
                    aggregate_id=domain_event.originator_id,
                    version=domain_event.originator_version,
                    topic=get_topic(type(domain_event)),
                )
                raise EventFailed(ref, exc) from exc

    Guarded.__qualname__ = Guarded.__name__ = f"Guarded{projection_class.__name__}"
    return Guarded


class SupervisedProjection(Supervised):
    """Runs a projection (the meters one by default) in a thread; restarts it after a failure.

    A failure starts a streak (bootstrap.supervision): logged once with the event it failed on,
    retried with exponential backoff, reported to ``projection_status`` as stalled, and
    reported running again once the projection got past that event (applied, or skipped with
    ``hes projections skip``).
    """

    def __init__(
        self,
        settings: Settings,
        max_backoff: float = 30.0,
        *,
        application_class: type[Application[Any]] = MeterRegistry,
        projection_class: type[Projection[Any]] = MetersProjection,
        view_class: type[TrackingRecorder] = MetersView,
    ) -> None:
        self._settings = settings
        self._env = settings.database.eventsourcing_env()
        self._application_class = application_class
        self._projection_class = guarded(projection_class)
        self._view_class = view_class
        self.name = projection_class.name
        self._feed = BY_NAME.get(self.name)
        self._runner: ProjectionRunner[Any, Any] | None = None
        super().__init__(
            FailureStreak(self.name, status_reporter(settings, self.name), max_backoff=max_backoff),
            f"projection-{self.name}",
        )

    def interrupt(self) -> None:
        """Stop the running projection runner, if any."""
        runner = self._runner
        if runner is not None:
            runner.stop()

    def stall_of(self, error: Exception) -> Stall:
        """The event the projection failed on, else the event it is at."""
        if isinstance(error, EventFailed):
            return self._stall(error.ref, error.__cause__ or error)
        return self._stall(None, error)

    def run_once(self) -> None:
        """Run the projection until stopped or interrupted; raise what it failed with."""
        try:
            self._run()
        finally:
            self._runner = None

    def _run(self) -> None:
        with ProjectionRunner(
            application_class=self._application_class,
            projection_class=self._projection_class,
            view_class=self._view_class,
            env=self._env,
        ) as runner:
            self._runner = runner
            if not self.streak.active:
                log.info("projection %s running", self.name)
            while not self.stopping:
                runner.run_forever(timeout=1.0)
                if self.streak.active and self._past_stall(runner):
                    self.streak.recovered()
                if runner.is_interrupted.is_set():
                    break

    def _past_stall(self, runner: ProjectionRunner[Any, Any]) -> bool:
        stall = self.streak.stall
        if stall is None or stall.position is None:
            return True  # it failed before reaching an event (database down): running now
        applied = runner.view.max_tracking_id(runner.app_name) or 0
        return bool(applied >= stall.position)

    def _stall(self, ref: EventRef | None, error: BaseException) -> Stall:
        """The stall of a failure: the event it names, else the event the projection is at."""
        if ref is None and self._feed is not None and self._settings.database.url is not None:
            try:
                with psycopg.connect(self._settings.database.url, connect_timeout=5) as conn:
                    ref = next_event(conn, self._settings.database.schema, self._feed)
            except psycopg.Error:
                ref = None  # the database is down: that is the failure, no event to name
        text = f"{type(error).__name__}: {error}"
        if ref is None:
            return Stall(position=None, error=text)
        return Stall(position=ref.position, event_id=ref.event_id, topic=ref.topic, error=text)


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


def sims_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the SIM cards read model (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=SimInventory,
        projection_class=SimsProjection,
        view_class=SimsView,
    )


def customers_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the customers read model (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=CustomerBook,
        projection_class=CustomersProjection,
        view_class=CustomersView,
    )


def fleet_projection(settings: Settings) -> SupervisedProjection:
    """A supervised worker for the fleet operations read models (not yet started)."""
    return SupervisedProjection(
        settings,
        application_class=FleetOperations,
        projection_class=FleetProjection,
        view_class=FleetView,
    )


def run_projection_forever(settings: Settings) -> None:
    """Run the meters, tariffs, alerts, SIM cards and customers projections and the insights
    analysis until interrupted."""
    others: list[Supervised] = [
        tariffs_projection(settings),
        alerts_projection(settings),
        sims_projection(settings),
        customers_projection(settings),
        fleet_projection(settings),
    ]
    for other in others:
        other.start()
    insights = SupervisedInsights(settings)
    if insights.enabled:
        insights.start()
        others.append(insights)
    worker = SupervisedProjection(settings)
    worker.start()
    try:
        worker.join()
    finally:
        for other in others:
            other.stop()
