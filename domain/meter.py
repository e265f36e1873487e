"""The Meter aggregate: a meter's registration and lifecycle, as immutable events."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from msgspec.structs import replace

from domain.errors import Collector, Conflict, ValidationFailed
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.values import (
    ConnectionProfile,
    Location,
    MeterSpec,
    MeterStatus,
    check_account,
)

METER_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:meter")


def meter_id(serial: str) -> UUID:
    """Deterministic aggregate id of the meter with this serial number (case-insensitive)."""
    return uuid5(METER_NAMESPACE, serial.strip().upper())


class Meter(Aggregate, RemembersCommands):
    """A physical meter known to the head-end, from registration to decommissioning."""

    class Registered(Aggregate.Created):
        """A meter entered the registry."""

        spec: MeterSpec
        meta: EventMeta

    class Commissioned(Aggregate.Event):
        """The meter was installed at a location, optionally for a customer."""

        location: Location
        customer_account: str | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter installed."""
            aggregate.status = MeterStatus.COMMISSIONED
            aggregate.location = self.location
            aggregate.commissioned_at = self.timestamp
            if self.customer_account is not None:
                aggregate.customer_account = self.customer_account
            aggregate.remember(self.meta)

    class CustomerAssigned(Aggregate.Event):
        """The meter now supplies this customer account."""

        customer_account: str
        previous: str | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Point the meter at its new customer."""
            aggregate.customer_account = self.customer_account
            aggregate.remember(self.meta)

    class CustomerUnassigned(Aggregate.Event):
        """The meter no longer supplies a customer account."""

        previous: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Clear the meter's customer."""
            aggregate.customer_account = None
            aggregate.remember(self.meta)

    class ConnectionProfileChanged(Aggregate.Event):
        """The head-end reaches the meter differently from now on."""

        connection: ConnectionProfile
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Replace the meter's connection profile."""
            aggregate.spec = replace(aggregate.spec, connection=self.connection)
            aggregate.remember(self.meta)

    class Decommissioned(Aggregate.Event):
        """The meter left service for good."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter out of service."""
            aggregate.status = MeterStatus.DECOMMISSIONED
            aggregate.decommission_reason = self.reason
            aggregate.decommissioned_at = self.timestamp
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(spec: MeterSpec, meta: EventMeta) -> UUID:
        """Derive the aggregate id from the serial number, so serials stay unique."""
        return meter_id(spec.serial)

    @classmethod
    def register(cls, spec: MeterSpec, meta: EventMeta) -> Meter:
        """Register a new meter after checking every field rule."""
        spec.check()
        return cls(spec=spec, meta=meta)

    @event(Registered)
    def __init__(self, spec: MeterSpec, meta: EventMeta) -> None:
        self.spec = spec
        self.status = MeterStatus.REGISTERED
        self.customer_account: str | None = None
        self.location: Location | None = None
        self.decommission_reason: str | None = None
        self.commissioned_at: datetime | None = None
        self.decommissioned_at: datetime | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    def _ensure_active(self, action: str) -> None:
        if self.status is MeterStatus.DECOMMISSIONED:
            raise Conflict(f"meter {self.spec.serial} is decommissioned: cannot {action}")

    # -- commands ----------------------------------------------------------------------

    def commission(self, location: Location, customer_account: str | None, meta: EventMeta) -> None:
        """Record the meter as installed at a location, optionally for a customer."""
        self._ensure_active("commission")
        if self.status is MeterStatus.COMMISSIONED:
            raise Conflict(f"meter {self.spec.serial} is already commissioned")
        errors = Collector()
        location.check(errors)
        if customer_account is not None:
            check_account(errors, "customerAccount", customer_account)
        errors.raise_if_any()
        self.trigger_event(
            self.Commissioned, location=location, customer_account=customer_account, meta=meta
        )

    def assign_customer(self, customer_account: str, meta: EventMeta) -> bool:
        """Assign the meter to a customer account; False when it already was."""
        self._ensure_active("assign a customer")
        errors = Collector()
        check_account(errors, "customerAccount", customer_account)
        errors.raise_if_any()
        if self.customer_account == customer_account:
            return False
        self.trigger_event(
            self.CustomerAssigned,
            customer_account=customer_account,
            previous=self.customer_account,
            meta=meta,
        )
        return True

    def unassign_customer(self, reason: str, meta: EventMeta) -> None:
        """Remove the meter's customer account (move-out, account closed)."""
        self._ensure_active("unassign a customer")
        if self.customer_account is None:
            raise Conflict(f"meter {self.spec.serial} has no customer to unassign")
        _check_reason(reason)
        self.trigger_event(
            self.CustomerUnassigned, previous=self.customer_account, reason=reason, meta=meta
        )

    def change_connection_profile(self, connection: ConnectionProfile, meta: EventMeta) -> bool:
        """Change how the head-end reaches the meter; False when nothing changes."""
        self._ensure_active("change its connection profile")
        errors = Collector()
        connection.check(errors)
        errors.raise_if_any()
        if connection == self.spec.connection:
            return False
        self.trigger_event(self.ConnectionProfileChanged, connection=connection, meta=meta)
        return True

    def decommission(self, reason: str, meta: EventMeta) -> None:
        """Take the meter out of service for good; later commands are refused."""
        self._ensure_active("decommission it again")
        _check_reason(reason)
        self.trigger_event(self.Decommissioned, reason=reason, meta=meta)


def _check_reason(reason: str) -> None:
    if not reason.strip() or len(reason) > 500:
        errors = Collector()
        errors.add("reason", "length", "reason must have 1..500 characters")
        raise ValidationFailed(errors.errors)
