"""GraphQL audit queries: an aggregate's recorded history and its state at a past moment."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, TypeVar, cast

import anyio.to_thread
import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from api.auth import Unauthenticated
from api.context import RequestContext
from api.graphql.types import Connection, MeterStatus, Place
from api.presenters import row_from_aggregate
from commands.audit import AuditEntry, history, resolve_id, state_at
from commands.policy import authorize_audit
from domain.errors import DomainError, ValidationFailed
from projections.meters_queries import MeterRow

ContextInfo = Info[RequestContext, None]
T = TypeVar("T")


@strawberry.type(description="One recorded event of an aggregate, oldest first.")
class AuditEvent:
    position: str | None = strawberry.field(
        description="Place in the event store's global order (a 64-bit integer, as text)."
    )
    aggregate_id: strawberry.ID
    version: int
    type: str = strawberry.field(description="Event type, e.g. Commissioned.")
    time: datetime
    actor: str | None = strawberry.field(description="Subject of the caller who caused it.")
    correlation_id: str | None
    idempotency_key: str | None
    payload: JSON = strawberry.field(description="The event's fields as recorded (snake_case).")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEvent:
        """GraphQL view of an audit entry."""
        return cls(
            position=None if entry.position is None else str(entry.position),
            aggregate_id=strawberry.ID(str(entry.aggregate_id)),
            version=entry.version,
            type=entry.type,
            time=entry.time,
            actor=entry.actor,
            correlation_id=entry.correlation_id,
            idempotency_key=entry.idempotency_key,
            payload=cast(JSON, entry.payload),
        )


@strawberry.type(description="A meter's state rebuilt from its events up to one version.")
class MeterState:
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
    updated_at: datetime = strawberry.field(description="Time of the event of this version.")
    version: int

    @classmethod
    def from_row(cls, row: MeterRow) -> MeterState:
        """GraphQL view of the row the aggregate's state maps to."""
        c = row.connection
        loc = row.location
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
            location=Place(address=loc.address, latitude=loc.latitude, longitude=loc.longitude)
            if loc
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
        )


def _graphql_error(exc: DomainError) -> GraphQLError:
    code = "BAD_USER_INPUT" if isinstance(exc, ValidationFailed) else exc.code
    return GraphQLError(exc.message, extensions={"code": code})


async def _audited(info: ContextInfo, read: Callable[[], T]) -> T:
    """Authorise the caller as auditor, then run the blocking event-store read in a thread."""
    try:
        actor = info.context.actor()
    except Unauthenticated as exc:
        raise GraphQLError(
            f"authentication required: {exc}", extensions={"code": "UNAUTHENTICATED"}
        ) from None
    try:
        authorize_audit(actor)
        return await anyio.to_thread.run_sync(read)
    except DomainError as exc:
        raise _graphql_error(exc) from None


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description=(
            "Every recorded event of an aggregate (meter id or serial) with from <= time < to,"
            " oldest first, at most `first` (max 5000). Auditors and admins only."
        )
    )
    async def history(
        self,
        info: ContextInfo,
        aggregate_id: strawberry.ID,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        first: int = 500,
    ) -> list[AuditEvent]:
        registry = info.context.container.registry
        id_ = resolve_id(aggregate_id)
        entries = await _audited(info, lambda: history(registry, id_, from_, to, first))
        return [AuditEvent.of(e) for e in entries]

    @strawberry.field(
        description=(
            "A meter's state at a moment (`at`: after its last event at or before then) or at a"
            " version; give exactly one. Auditors and admins only."
        )
    )
    async def state_at(
        self,
        info: ContextInfo,
        aggregate_id: strawberry.ID,
        at: datetime | None = None,
        version: int | None = None,
    ) -> MeterState | None:
        registry = info.context.container.registry
        id_ = resolve_id(aggregate_id)
        meter = await _audited(info, lambda: state_at(registry, id_, at=at, version=version))
        return MeterState.from_row(row_from_aggregate(meter))
