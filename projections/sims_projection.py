"""Projects SimCard events into the SIM cards read model."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.sim_card import SimCard
from domain.sim_rules import SimStatus
from projections.sims_view import SimsView


class SimsProjection(Projection[SimsView]):
    """Keeps one row per SIM card, current as of the last applied event."""

    name = "sims_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            SimCard.AddedToStock,
            SimCard.ServiceUpdated,
            SimCard.Activated,
            SimCard.Suspended,
            SimCard.Terminated,
            SimCard.Installed,
            SimCard.Removed,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: SimCard.AddedToStock, tracking: Tracking) -> None:
        self.view.added(e.originator_id, e.originator_version, e.timestamp, e.spec, tracking)

    @process_event.register
    def _(self, e: SimCard.ServiceUpdated, tracking: Tracking) -> None:
        self._changed(
            e,
            tracking,
            provider=e.provider,
            apn=e.apn,
            ip_address=e.ip_address,
            data_limit_mb=e.data_limit_mb,
        )

    @process_event.register
    def _(self, e: SimCard.Activated, tracking: Tracking) -> None:
        self._changed(e, tracking, status=SimStatus.ACTIVE.value, activation_date=e.activation_date)

    @process_event.register
    def _(self, e: SimCard.Suspended, tracking: Tracking) -> None:
        self._changed(e, tracking, status=SimStatus.SUSPENDED.value)

    @process_event.register
    def _(self, e: SimCard.Terminated, tracking: Tracking) -> None:
        self._changed(e, tracking, status=SimStatus.TERMINATED.value)

    @process_event.register
    def _(self, e: SimCard.Installed, tracking: Tracking) -> None:
        self._changed(e, tracking, meter_serial=e.meter_serial)

    @process_event.register
    def _(self, e: SimCard.Removed, tracking: Tracking) -> None:
        self._changed(e, tracking, meter_serial=None)

    def _changed(self, e: SimCard.Event, tracking: Tracking, **columns: Any) -> None:
        self.view.changed(e.originator_id, e.originator_version, e.timestamp, tracking, **columns)
