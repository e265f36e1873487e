"""GraphQL alerts: the priority-ordered list, operator acknowledge/resolve, live raised alerts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeAlias, cast
from uuid import UUID

import anyio.to_thread
import msgspec
import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from adapters.nats.subjects import event_subject
from api.context import InvalidHeader, RequestContext
from api.graphql.types import CommandError, FieldProblem, PageInfo, ValidationError, error_value
from commands.alerts import AlertOutcome
from commands.context import Actor, CommandContext, Role
from domain import alert as domain
from domain.errors import DomainError
from projections.alerts_queries import (
    MAX_PAGE,
    AlertFilter,
    AlertQueries,
    AlertRow,
    InvalidAlertCursor,
    encode_cursor,
)

ContextInfo = Info[RequestContext, None]
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})

# Registers the domain enums as GraphQL enums (strawberry marks the classes themselves).
strawberry.enum(domain.AlertType, name="AlertType")
strawberry.enum(domain.Severity, name="Severity")
strawberry.enum(domain.AlertStatus, name="AlertStatus")


@strawberry.type(description="An operational problem, from raise to resolution.")
class Alert:
    id: strawberry.ID
    type: domain.AlertType
    severity: domain.Severity
    status: domain.AlertStatus
    region: str
    meter_id: strawberry.ID | None
    message: str
    evidence: JSON
    dedup_key: str = strawberry.field(description="The cause: one open alert per key.")
    occurrences: int = strawberry.field(description="How often the cause was seen while open.")
    raised_at: datetime
    last_seen: datetime
    customers_affected: int
    priority: float = strawberry.field(
        description="Score from severity, age and customers affected (higher first)."
    )
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    auto_resolved: bool
    version: int

    @classmethod
    def from_row(cls, row: AlertRow) -> Alert:
        """GraphQL view of a read-model row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            type=row.alert_type,
            severity=row.severity,
            status=row.status,
            region=row.region,
            meter_id=None if row.meter_id is None else strawberry.ID(str(row.meter_id)),
            message=row.message,
            evidence=cast(JSON, row.evidence),
            dedup_key=row.dedup_key,
            occurrences=row.occurrences,
            raised_at=row.raised_at,
            last_seen=row.last_seen,
            customers_affected=row.customers_affected,
            priority=round(row.priority, 3),
            acknowledged_by=row.acknowledged_by,
            acknowledged_at=row.acknowledged_at,
            resolved_by=row.resolved_by,
            resolved_at=row.resolved_at,
            resolution_note=row.resolution_note,
            auto_resolved=row.auto_resolved,
            version=row.version,
        )


@strawberry.type
class AlertEdge:
    cursor: str
    node: Alert


@strawberry.type
class AlertConnection:
    edges: list[AlertEdge]
    page_info: PageInfo


AlertOrError: TypeAlias = Alert | CommandError
AlertResult = Annotated[AlertOrError, strawberry.union("AlertResult")]


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def _scope(actor: Actor) -> str | None:
    """The customer account an actor is limited to, or None for staff; refuses others."""
    if not actor.roles.isdisjoint(_STAFF):
        return None
    if Role.CUSTOMER in actor.roles and actor.customer_account is not None:
        return actor.customer_account
    raise GraphQLError("your roles may not read alerts", extensions={"code": "FORBIDDEN"})


def _uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise _bad(f"{field}: {value!r} is not an alert id (UUID)") from None


def row_from_alert(alert: domain.Alert, now: datetime) -> AlertRow:
    """The read-model row the alerts projection will write for this aggregate state."""
    return AlertRow(
        id=alert.id,
        dedup_key=alert.dedup_key,
        generation=alert.generation,
        alert_type=alert.alert_type,
        severity=alert.severity,
        region=alert.region,
        meter_id=alert.meter,
        message=alert.message,
        evidence=alert.evidence,
        status=alert.status,
        raised_at=alert.raised_at,
        last_seen=alert.last_seen,
        occurrences=alert.occurrences,
        customers_affected=0,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        resolved_by=alert.resolved_by,
        resolved_at=alert.resolved_at,
        resolution_note=alert.resolution_note,
        auto_resolved=alert.auto_resolved,
        version=alert.version,
        position=0,
        updated_at=alert.modified_on,
        priority=alert.priority(now, 0),
    )


async def present_alert(
    outcome: AlertOutcome, queries: AlertQueries, wait_seconds: float
) -> AlertRow:
    """The alert after a command: from the read model once it caught up, else the aggregate."""
    now = datetime.now(UTC)
    if wait_seconds > 0:
        if outcome.notification_id is not None:
            await queries.wait_for(outcome.notification_id, wait_seconds)
        row = await queries.by_id(outcome.alert.id, now)
        if row is not None and row.version >= outcome.alert.version:
            return row
    return row_from_alert(outcome.alert, now)


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[CommandContext], AlertOutcome],
) -> AlertOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
        return ValidationError(message=str(exc), code="VALIDATION", fields=[problem])
    try:
        outcome = await anyio.to_thread.run_sync(command, ctx)
    except DomainError as exc:
        return error_value(exc)
    container = context.container
    wait_seconds = container.settings.api.projection_wait_seconds if wait else 0.0
    return Alert.from_row(await present_alert(outcome, container.alert_queries, wait_seconds))


@strawberry.type
class AlertQuery:
    @strawberry.field(
        description="Alerts matching the filters, highest priority first, `first` at a time "
        f"(max {MAX_PAGE}); a customer sees only alerts of their own meters.",
    )
    async def alerts(
        self,
        info: ContextInfo,
        status: list[domain.AlertStatus] | None = None,
        region: str | None = None,
        severity: Annotated[
            domain.Severity | None, strawberry.argument(description="Minimum severity.")
        ] = None,
        type: domain.AlertType | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> AlertConnection:
        customer = _scope(info.context.actor())
        if not 1 <= first <= MAX_PAGE:
            raise _bad(f"first: must be between 1 and {MAX_PAGE}, got {first}")
        f = AlertFilter(
            statuses=tuple(status or ()),
            region=region,
            severity=severity,
            alert_type=type,
            customer_account=customer,
        )
        try:
            page = await info.context.container.alert_queries.page(
                f, first, after, datetime.now(UTC)
            )
        except InvalidAlertCursor as exc:
            raise _bad(str(exc)) from None
        return AlertConnection(
            edges=[
                AlertEdge(
                    cursor=encode_cursor(page.ranked_at, row.priority, row.id),
                    node=Alert.from_row(row),
                )
                for row in page.items
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        description="One alert by id (customers: only alerts of their meters).",
    )
    async def alert(self, info: ContextInfo, id: strawberry.ID) -> Alert | None:
        customer = _scope(info.context.actor())
        container = info.context.container
        row = await container.alert_queries.by_id(_uuid(id, "id"), datetime.now(UTC))
        if row is None:
            return None
        if customer is not None and not await _owns(info, customer, row.meter_id):
            return None
        return Alert.from_row(row)


async def _owns(info: ContextInfo, customer: str, meter: UUID | None) -> bool:
    if meter is None:
        return False
    row = await info.context.container.meters.by_id(meter)
    return row is not None and row.customer_account == customer


@strawberry.type
class AlertMutation:
    @strawberry.mutation(
        description="Take ownership of an open alert (operator).",
    )
    async def acknowledge_alert(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> AlertResult:
        desk = info.context.container.alerts
        alert_id = _uuid(id, "id")
        return await _run(info, idempotency_key, wait, lambda c: desk.acknowledge(alert_id, c))

    @strawberry.mutation(description="Close an alert with a note (operator).")
    async def resolve_alert(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        note: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> AlertResult:
        desk = info.context.container.alerts
        alert_id = _uuid(id, "id")
        return await _run(info, idempotency_key, wait, lambda c: desk.resolve(alert_id, note, c))


class _EventHead(msgspec.Struct):
    """The CloudEvents fields that name the alert and the version an event made."""

    subject: UUID
    aggregateversion: int


_head_decoder = msgspec.json.Decoder(_EventHead)


async def _alert_stream(
    info: ContextInfo, event_name: str, region: str | None
) -> AsyncGenerator[Alert, None]:
    """Alerts as relayed ``alert.<event_name>`` events change them, once the read model shows
    the change; only ``region``'s (any letter case), and a customer's own meters' only."""
    customer = _scope(info.context.actor())
    container = info.context.container
    nc = container.nats
    if nc is None:
        raise GraphQLError("live alerts are unavailable: not connected to NATS")
    wanted = None if region is None else region.strip().upper()
    sub = await nc.subscribe(event_subject(container.settings.nats.prefix, "alert", event_name))
    try:
        async for msg in sub.messages:
            try:
                head = _head_decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not ours to judge: the relay only publishes well-formed events
            row = await container.alert_queries.wait_for_version(
                head.subject, head.aggregateversion, 5.0
            )
            if row is None or (wanted is not None and row.region.upper() != wanted):
                continue
            if customer is not None and not await _owns(info, customer, row.meter_id):
                continue
            yield Alert.from_row(row)
    finally:
        await sub.unsubscribe()


@strawberry.type
class AlertSubscription:
    @strawberry.subscription(
        description="Alerts as they are raised, optionally for one region "
        "(customers: only alerts of their own meters).",
    )
    async def alert_raised(
        self, info: ContextInfo, region: str | None = None
    ) -> AsyncGenerator[Alert, None]:
        async for alert in _alert_stream(info, "Raised", region):
            yield alert

    @strawberry.subscription(
        description="Each alert after every change (raised, repeated, escalated, acknowledged, "
        "resolved), optionally for one region (customers: only alerts of their own meters).",
    )
    async def alert_changed(
        self, info: ContextInfo, region: str | None = None
    ) -> AsyncGenerator[Alert, None]:
        async for alert in _alert_stream(info, "*", region):
            yield alert
