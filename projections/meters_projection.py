"""Projects Meter events into the meters read model."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.meter import Meter
from projections.meters_view import MetersView


class MetersProjection(Projection[MetersView]):
    """Keeps one row per meter, current as of the last applied event."""

    name = "meters_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Meter.Registered,
            Meter.Commissioned,
            Meter.CustomerAssigned,
            Meter.CustomerUnassigned,
            Meter.ConnectionProfileChanged,
            Meter.Decommissioned,
            Meter.FirmwareChanged,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Meter.Registered, tracking: Tracking) -> None:
        self.view.registered(e.originator_id, e.originator_version, e.timestamp, e.spec, tracking)

    @process_event.register
    def _(self, e: Meter.Commissioned, tracking: Tracking) -> None:
        columns: dict[str, Any] = {
            "status": "COMMISSIONED",
            "location": e.location,
            "commissioned_at": e.timestamp,
        }
        if e.customer_account is not None:
            columns["customer_account"] = e.customer_account
        self.view.changed(e.originator_id, e.originator_version, e.timestamp, tracking, **columns)

    @process_event.register
    def _(self, e: Meter.CustomerAssigned, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            customer_account=e.customer_account,
        )

    @process_event.register
    def _(self, e: Meter.CustomerUnassigned, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id, e.originator_version, e.timestamp, tracking, customer_account=None
        )

    @process_event.register
    def _(self, e: Meter.ConnectionProfileChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            connection=e.connection,
        )

    @process_event.register
    def _(self, e: Meter.FirmwareChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id, e.originator_version, e.timestamp, tracking, firmware=e.firmware
        )

    @process_event.register
    def _(self, e: Meter.Decommissioned, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            status="DECOMMISSIONED",
            decommissioned_at=e.timestamp,
            decommission_reason=e.reason,
        )
