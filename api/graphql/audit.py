"""GraphQL audit queries: any aggregate's recorded history and its state at a past moment."""

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
from commands.audit import App, AuditEntry, history_of, locate, state_at, state_of
from commands.audit_verify import Finding, LogReport
from commands.policy import authorize_audit
from domain.errors import DomainError, FieldError, ValidationFailed
from domain.meter import Meter
from projections.audit_queries import VerificationRow
from projections.meters_queries import MeterRow

ContextInfo = Info[RequestContext, None]
T = TypeVar("T")


@strawberry.type(description="One recorded event of an aggregate, oldest first.")
class AuditEvent:
    position: str | None = strawberry.field(
        description="Place in its application's log (a 64-bit integer, as text)."
    )
    application: str = strawberry.field(
        description="The application whose log holds the event: meters, tariffs or alerts."
    )
    aggregate_type: str = strawberry.field(
        description="Class of the aggregate: Meter, Tariff, Alert or AlertSeries."
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
            application=entry.log,
            aggregate_type=entry.aggregate_type,
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


@strawberry.type(description="Any aggregate's state rebuilt from its events up to one version.")
class AggregateState:
    application: str = strawberry.field(description="meters, tariffs or alerts.")
    aggregate_type: str = strawberry.field(description="Meter, Tariff, Alert or AlertSeries.")
    aggregate_id: strawberry.ID
    version: int
    created_at: datetime = strawberry.field(description="Time of the aggregate's first event.")
    updated_at: datetime = strawberry.field(description="Time of the event of this version.")
    state: JSON = strawberry.field(
        description="The aggregate's own fields (snake_case), as the domain keeps them."
    )


@strawberry.type(description="What `hes audit verify` recomputed in one event log.")
class VerifiedLog:
    log: str
    intact: bool
    aggregates: int
    events: int
    checkpoints: int
    checkpointed_position: str = strawberry.field(
        description="Position of the log's last checkpoint (64-bit integer as text)."
    )
    unanchored_events: int = strawberry.field(
        description="Events after the last checkpoint (covered by their hash chains only)."
    )

    @classmethod
    def of(cls, part: LogReport) -> VerifiedLog:
        """GraphQL view of one log's part of the report."""
        return cls(
            log=part.log,
            intact=part.intact,
            aggregates=part.aggregates,
            events=part.events,
            checkpoints=part.checkpoints,
            checkpointed_position=str(part.checkpointed_position),
            unanchored_events=part.unanchored_events,
        )


@strawberry.type(description="A problem `hes audit verify` found.")
class VerifyFinding:
    log: str
    kind: str = strawberry.field(
        description="altered, removed, reordered, unchained or checkpoint."
    )
    aggregate_id: strawberry.ID | None
    version: int | None
    position: str | None = strawberry.field(description="Checkpoint position (as text).")
    detail: str

    @classmethod
    def of(cls, f: Finding) -> VerifyFinding:
        """GraphQL view of a finding."""
        return cls(
            log=f.log,
            kind=f.kind,
            aggregate_id=None if f.aggregate_id is None else strawberry.ID(str(f.aggregate_id)),
            version=f.version,
            position=None if f.position is None else str(f.position),
            detail=f.detail,
        )


@strawberry.type(description="The result of the newest `hes audit verify` run.")
class AuditVerification:
    ran_at: datetime
    ran_by: str = strawberry.field(description="OS user and host that ran the command.")
    intact: bool
    anchors: int = strawberry.field(description="Checkpoints given from outside the database.")
    aggregates: int
    events: int
    checkpoints: int
    unanchored_events: int
    seconds: float
    logs: list[VerifiedLog]
    findings: list[VerifyFinding]

    @classmethod
    def of(cls, row: VerificationRow) -> AuditVerification:
        """GraphQL view of a kept verification."""
        r = row.report
        return cls(
            ran_at=row.ran_at,
            ran_by=row.ran_by,
            intact=r.intact,
            anchors=row.anchors,
            aggregates=r.aggregates,
            events=r.events,
            checkpoints=r.checkpoints,
            unanchored_events=r.unanchored_events,
            seconds=r.seconds,
            logs=[VerifiedLog.of(p) for p in r.logs],
            findings=[VerifyFinding.of(f) for f in r.findings],
        )


def _apps(info: ContextInfo) -> tuple[App, ...]:
    container = info.context.container
    return (
        container.registry,
        container.tariffs,
        container.alerts,
        container.api_keys,
        container.operations,
    )


def _meter_at(apps: tuple[App, ...], value: str, at: datetime | None, version: int | None) -> Meter:
    app, id_ = locate(apps, value)
    if app.name != "meters":
        raise ValidationFailed(
            [
                FieldError(
                    "aggregateId",
                    "meter",
                    f"{value} is in the {app.name} log, not a meter: ask aggregateStateAt",
                )
            ]
        )
    return state_at(app, id_, at=at, version=version)


def _graphql_error(exc: DomainError) -> GraphQLError:
    code = "BAD_USER_INPUT" if isinstance(exc, ValidationFailed) else exc.code
    return GraphQLError(exc.message, extensions={"code": code})


def _authorise(info: ContextInfo) -> None:
    """Refuse anyone but auditors and admins (as GraphQL errors)."""
    try:
        actor = info.context.actor()
    except Unauthenticated as exc:
        raise GraphQLError(
            f"authentication required: {exc}", extensions={"code": "UNAUTHENTICATED"}
        ) from None
    try:
        authorize_audit(actor)
    except DomainError as exc:
        raise _graphql_error(exc) from None


async def _audited(info: ContextInfo, read: Callable[[], T]) -> T:
    """Authorise the caller as auditor, then run the blocking event-store read in a thread."""
    _authorise(info)
    try:
        return await anyio.to_thread.run_sync(read)
    except DomainError as exc:
        raise _graphql_error(exc) from None


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description=(
            "Every recorded event of an aggregate with from <= time < to, oldest first, at most"
            " `first` (max 5000). `aggregateId`: any aggregate's UUID (meter, tariff, alert),"
            " a meter serial, a tariff region or an alert dedup key. Auditors and admins only."
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
        apps = _apps(info)
        entries = await _audited(info, lambda: history_of(apps, aggregate_id, from_, to, first))
        return [AuditEvent.of(e) for e in entries]

    @strawberry.field(
        description="The result of the newest `hes audit verify` (null: never run). "
        "Auditors and admins only."
    )
    async def last_audit_verification(self, info: ContextInfo) -> AuditVerification | None:
        _authorise(info)
        found = await info.context.container.audit.last_verification()
        return None if found is None else AuditVerification.of(found)

    @strawberry.field(
        description=(
            "A meter's state at a moment (`at`: after its last event at or before then) or at a"
            " version; give exactly one. Tariffs and alerts: `aggregateStateAt`. Auditors and"
            " admins only."
        )
    )
    async def state_at(
        self,
        info: ContextInfo,
        aggregate_id: strawberry.ID,
        at: datetime | None = None,
        version: int | None = None,
    ) -> MeterState | None:
        apps = _apps(info)
        meter = await _audited(info, lambda: _meter_at(apps, aggregate_id, at, version))
        return MeterState.from_row(row_from_aggregate(meter))

    @strawberry.field(
        description=(
            "Any aggregate's state (meter, tariff, alert, alert series) at a moment (`at`) or a"
            " version, as JSON; give exactly one. `aggregateId` as for `history`. Auditors and"
            " admins only."
        )
    )
    async def aggregate_state_at(
        self,
        info: ContextInfo,
        aggregate_id: strawberry.ID,
        at: datetime | None = None,
        version: int | None = None,
    ) -> AggregateState | None:
        apps = _apps(info)
        found = await _audited(info, lambda: state_of(apps, aggregate_id, at=at, version=version))
        return AggregateState(
            application=found.log,
            aggregate_type=found.aggregate_type,
            aggregate_id=strawberry.ID(str(found.aggregate_id)),
            version=found.version,
            created_at=found.created_on,
            updated_at=found.modified_on,
            state=cast(JSON, found.state),
        )
