"""JSON bodies of the REST command endpoints (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from domain.meter_view import spec_values
from domain.values import (
    ConnectionProfile,
    Location,
    MeterSpec,
    MeterStatus,
    SecurityLevel,
    Transport,
)
from projections.meters_queries import MeterRow


class ConnectionBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Where and how to reach the meter's DLMS server (no key material)."""

    host: str
    port: int = 4059
    transport: Transport = Transport.WRAPPER
    client_address: int | None = None
    """DLMS client SAP; omitted: the meter's DLMS profile's for its security level."""
    server_address: int = 1
    physical_address: int | None = None
    security: SecurityLevel = SecurityLevel.NONE

    def to_domain(self) -> ConnectionProfile:
        """Domain value of this body."""
        return msgspec.convert(self, ConnectionProfile, from_attributes=True)


class LocationBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Installation site."""

    address: str
    latitude: float | None = None
    longitude: float | None = None

    def to_domain(self) -> Location:
        """Domain value of this body."""
        return Location(address=self.address, latitude=self.latitude, longitude=self.longitude)


class RegisterMeterBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter to register."""

    serial: str
    manufacturer: str
    model: str
    firmware: str
    phases: int
    region: str
    area: str
    connection: ConnectionBody
    meter_type: str | None = None
    concentrator_id: str | None = None
    sim_card: str | None = None

    def to_domain(self) -> MeterSpec:
        """Domain value of this body."""
        return MeterSpec(**{**spec_values(self), "connection": self.connection.to_domain()})


class CommissionBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Installation of a meter."""

    location: LocationBody
    customer_account: str | None = None


class AssignCustomerBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The customer account the meter now supplies."""

    customer_account: str


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Why the operator does this."""

    reason: str


class ConnectionProfileBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The new connection profile."""

    connection: ConnectionBody


class ConnectionView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Connection profile as returned by the API."""

    host: str
    port: int
    transport: Transport
    client_address: int | None
    server_address: int
    physical_address: int | None
    security: SecurityLevel


class LocationView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Installation site as returned by the API."""

    address: str
    latitude: float | None
    longitude: float | None


class MeterView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter as the API returns it."""

    id: UUID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    meter_type: str | None
    phases: int
    region: str
    area: str
    status: MeterStatus
    customer_account: str | None
    location: LocationView | None
    connection: ConnectionView
    concentrator_id: str | None
    sim_card: str | None
    registered_at: datetime
    commissioned_at: datetime | None
    decommissioned_at: datetime | None
    decommission_reason: str | None
    updated_at: datetime
    version: int
    last_seen: datetime | None = None

    @classmethod
    def from_row(cls, row: MeterRow) -> MeterView:
        """API view of a read-model row."""
        return msgspec.convert(row, cls, from_attributes=True)


class ProblemField(msgspec.Struct, frozen=True):
    """One broken rule on one field."""

    field: str
    rule: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, plus our error code and field errors."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemField] = []
