"""GraphQL object, input and error types of the meter registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeAlias
from uuid import UUID

import strawberry

from domain.errors import DomainError, FieldError, ValidationFailed
from domain.meter_view import spec_values
from domain.values import ConnectionProfile, Location, MeterSpec
from domain.values import MeterStatus as DomainMeterStatus
from domain.values import SecurityLevel as DomainSecurityLevel
from domain.values import Transport as DomainTransport
from projections.meters_queries import MeterRow

if TYPE_CHECKING:
    from api.graphql.dlms_profiles import DlmsCapabilities

MeterStatus = strawberry.enum(DomainMeterStatus, description="Lifecycle status of a meter.")
Transport = strawberry.enum(DomainTransport, description="DLMS transport over TCP.")
SecurityLevel = strawberry.enum(DomainSecurityLevel, description="DLMS association security.")


@strawberry.type(description="Where and how the head-end reaches the meter (no key material).")
class Connection:
    host: str
    port: int
    transport: Transport  # type: ignore[valid-type]
    client_address: int | None = strawberry.field(
        description="DLMS client SAP; null: the meter's DLMS profile gives it per security level."
    )
    server_address: int
    physical_address: int | None
    security: SecurityLevel  # type: ignore[valid-type]


@strawberry.type(description="Installation site.")
class Place:
    address: str
    latitude: float | None
    longitude: float | None


@strawberry.type(description="A meter as the read model shows it.")
class Meter:
    id: strawberry.ID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    meter_type: str | None
    phases: int
    region: str
    area: str
    status: MeterStatus  # type: ignore[valid-type]
    customer_account: str | None
    location: Place | None
    connection: Connection
    concentrator_id: str | None
    sim_card: str | None
    registered_at: datetime
    commissioned_at: datetime | None
    decommissioned_at: datetime | None
    decommission_reason: str | None
    updated_at: datetime
    version: int
    last_seen: datetime | None = strawberry.field(
        description="Timestamp of the newest reading (null until the meter reports)."
    )
    online: bool = strawberry.field(description="Reported within the last 15 minutes.")

    @strawberry.field(
        description="The meter's DLMS profile, client, its model's association view and the "
        "read plan made from them (staff only)."
    )
    async def dlms_capabilities(
        self, info: strawberry.Info
    ) -> Annotated[DlmsCapabilities, strawberry.lazy("api.graphql.dlms_profiles")] | None:
        from api.graphql.dlms_profiles import meter_capabilities

        return await meter_capabilities(info, UUID(str(self.id)))

    @classmethod
    def from_row(cls, row: MeterRow) -> Meter:
        """GraphQL view of a read-model row."""
        c = row.connection
        return cls(
            id=strawberry.ID(str(row.id)),
            serial=row.serial,
            manufacturer=row.manufacturer,
            model=row.model,
            firmware=row.firmware,
            meter_type=row.meter_type,
            phases=row.phases,
            region=row.region,
            area=row.area,
            status=row.status,
            customer_account=row.customer_account,
            location=Place(
                address=row.location.address,
                latitude=row.location.latitude,
                longitude=row.location.longitude,
            )
            if row.location
            else None,
            connection=Connection(
                host=c.host,
                port=c.port,
                transport=c.transport,
                client_address=c.client_address,
                server_address=c.server_address,
                physical_address=c.physical_address,
                security=c.security,
            ),
            concentrator_id=row.concentrator_id,
            sim_card=row.sim_card,
            registered_at=row.registered_at,
            commissioned_at=row.commissioned_at,
            decommissioned_at=row.decommissioned_at,
            decommission_reason=row.decommission_reason,
            updated_at=row.updated_at,
            version=row.version,
            last_seen=row.last_seen,
            online=row.online(datetime.now(UTC)),
        )


@strawberry.type
class MeterEdge:
    cursor: str
    node: Meter


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="A page of meters ordered by serial number.")
class MeterConnection:
    edges: list[MeterEdge]
    page_info: PageInfo


@strawberry.input(description="All given conditions must hold.")
class MeterFilterInput:
    region: str | None = None
    area: str | None = None
    status: MeterStatus | None = None  # type: ignore[valid-type]
    customer_account: str | None = None
    serial_prefix: str | None = strawberry.field(
        default=None, description="Serials starting with this text (any letter case)."
    )


@strawberry.input
class ConnectionInput:
    host: str
    port: int = 4059
    transport: Transport = DomainTransport.WRAPPER  # type: ignore[valid-type]
    client_address: int | None = strawberry.field(
        default=None,
        description="DLMS client SAP; omitted: the meter's DLMS profile's for its security level "
        "(IDIS: NONE 16, LLS 17, HLS_GMAC 1).",
    )
    server_address: int = 1
    physical_address: int | None = None
    security: SecurityLevel = DomainSecurityLevel.NONE  # type: ignore[valid-type]

    def to_domain(self) -> ConnectionProfile:
        """Domain value of this input."""
        return ConnectionProfile(
            host=self.host,
            port=self.port,
            transport=self.transport,
            client_address=self.client_address,
            server_address=self.server_address,
            physical_address=self.physical_address,
            security=self.security,
        )


@strawberry.input
class RegisterMeterInput:
    serial: str
    manufacturer: str
    model: str
    firmware: str
    phases: int
    region: str
    area: str
    connection: ConnectionInput
    meter_type: str | None = None
    concentrator_id: str | None = None
    sim_card: str | None = None

    def to_domain(self) -> MeterSpec:
        """Domain value of this input."""
        return MeterSpec(**{**spec_values(self), "connection": self.connection.to_domain()})


@strawberry.input
class LocationInput:
    address: str
    latitude: float | None = None
    longitude: float | None = None

    def to_domain(self) -> Location:
        """Domain value of this input."""
        return Location(address=self.address, latitude=self.latitude, longitude=self.longitude)


# -- typed errors --------------------------------------------------------------------


@strawberry.interface(description="A command was refused; nothing was recorded.")
class Error:
    message: str
    code: str


@strawberry.type(description="One broken rule on one input field.")
class FieldProblem:
    field: str
    rule: str
    message: str


@strawberry.type(description="The input breaks field rules.")
class ValidationError(Error):
    fields: list[FieldProblem]


@strawberry.type(description="The meter named by the command does not exist.")
class NotFoundError(Error):
    pass


@strawberry.type(description="The command contradicts the meter's current state.")
class ConflictError(Error):
    pass


@strawberry.type(description="The caller's role does not allow this command.")
class ForbiddenError(Error):
    pass


CommandError: TypeAlias = ValidationError | NotFoundError | ConflictError | ForbiddenError
MeterOrError: TypeAlias = Meter | CommandError
MeterResult = Annotated[MeterOrError, strawberry.union("MeterResult")]


def validation_error(errors: list[FieldError]) -> ValidationError:
    """GraphQL error value for field rule violations."""
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ValidationError(
        message=f"invalid input: {summary}",
        code=ValidationFailed.code,
        fields=[FieldProblem(field=e.field, rule=e.rule, message=e.message) for e in errors],
    )


def error_value(exc: DomainError) -> CommandError:
    """GraphQL error value of a domain error."""
    if isinstance(exc, ValidationFailed):
        return validation_error(exc.errors)
    if exc.code == "NOT_FOUND":
        return NotFoundError(message=exc.message, code=exc.code)
    if exc.code == "FORBIDDEN":
        return ForbiddenError(message=exc.message, code=exc.code)
    return ConflictError(message=exc.message, code=exc.code)
