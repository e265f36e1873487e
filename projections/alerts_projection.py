"""Projects Alert events into the alerts read model."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from domain.alert import Alert, AlertStatus
from projections.alerts_view import AlertsView


class AlertsProjection(Projection[AlertsView]):
    """Keeps one row per alert, from raise to resolution."""

    name = "alerts_view"
    # Every event, the series' included: a command's last position may be a series event, and
    # read-your-writes waits for the tracking record to reach it.
    topics = ()

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show (the series'), but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Alert.Raised, tracking: Tracking) -> None:
        self.view.raised(e.originator_id, e.spec, e.generation, e.at, tracking)

    @process_event.register
    def _(self, e: Alert.Recurred, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            occurrences=e.occurrences,
            last_seen=e.last_seen,
            evidence=e.evidence,
        )

    @process_event.register
    def _(self, e: Alert.Escalated, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            severity=e.severity.value,
            severity_weight=e.severity.weight,
        )

    @process_event.register
    def _(self, e: Alert.Acknowledged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            status=AlertStatus.ACKNOWLEDGED.value,
            acknowledged_by=e.by,
            acknowledged_at=e.at,
        )

    @process_event.register
    def _(self, e: Alert.Resolved, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            status=AlertStatus.RESOLVED.value,
            resolved_by=e.by,
            resolved_at=e.at,
            resolution_note=e.note,
        )

    @process_event.register
    def _(self, e: Alert.AutoResolved, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            status=AlertStatus.RESOLVED.value,
            resolved_by=e.meta.actor,
            resolved_at=e.at,
            auto_resolved=True,
        )
