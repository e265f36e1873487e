"""Projects Customer events into the customers read model."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.customer import Customer, CustomerStatus
from projections.customers_view import CustomersView


class CustomersProjection(Projection[CustomersView]):
    """Keeps one row per customer; an erasure nulls the row's sealed personal data."""

    name = "customers_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Customer.Created,
            Customer.ContactChanged,
            Customer.PlanChanged,
            Customer.Suspended,
            Customer.Reactivated,
            Customer.Closed,
            Customer.Erased,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Customer.Created, tracking: Tracking) -> None:
        self.view.created(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            e.account,
            e.sealed,
            e.profile,
            tracking,
        )

    @process_event.register
    def _(self, e: Customer.ContactChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            area=e.area,
            sealed=e.sealed,
        )

    @process_event.register
    def _(self, e: Customer.PlanChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            customer_type=e.customer_type,
            tariff_plan=e.tariff_plan,
        )

    @process_event.register
    def _(self, e: Customer.Suspended, tracking: Tracking) -> None:
        self._status(e, tracking, CustomerStatus.SUSPENDED)

    @process_event.register
    def _(self, e: Customer.Reactivated, tracking: Tracking) -> None:
        self._status(e, tracking, CustomerStatus.ACTIVE)

    @process_event.register
    def _(self, e: Customer.Closed, tracking: Tracking) -> None:
        self._status(e, tracking, CustomerStatus.CLOSED)

    @process_event.register
    def _(self, e: Customer.Erased, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            status=CustomerStatus.CLOSED,
            erased=True,
            sealed=None,
        )

    def _status(self, e: Any, tracking: Tracking, status: CustomerStatus) -> None:
        self.view.changed(
            e.originator_id, e.originator_version, e.timestamp, tracking, status=status
        )
