"""GraphQL notification subscriptions (each user manages their own) and the delivery log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeAlias
from uuid import UUID

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

import api.graphql.alerts  # noqa: F401  (registers AlertType and Severity as GraphQL enums)
from api.context import InvalidHeader, RequestContext, check_idempotency_key
from api.graphql.types import (
    CommandError,
    FieldProblem,
    NotFoundError,
    PageInfo,
    ValidationError,
    error_value,
)
from commands.notification_subscriptions import Changes, Saved, SubscriptionRow
from domain import notifications as domain
from domain.alert import AlertType, Severity
from domain.errors import DomainError, ValidationFailed
from projections.notification_deliveries import DeliveryRow, encode_cursor

ContextInfo = Info[RequestContext, None]

# Registers the domain enums as GraphQL enums (strawberry marks the classes themselves).
strawberry.enum(domain.Channel, name="NotificationChannel", description="How one is reached.")
strawberry.enum(domain.EventKind, name="NotificationEventKind", description="What one is told.")
strawberry.enum(
    domain.DeliveryStatus,
    name="NotificationDeliveryStatus",
    description="Where one notification (an event for a subscription) stands.",
)
strawberry.enum(
    domain.Verdict,
    name="NotificationAttemptVerdict",
    description="How an attempt's answer was judged.",
)


@strawberry.type(description="Who is told about which alert and tariff events, and how.")
class NotificationSubscription:
    id: strawberry.ID
    owner: str
    channel: domain.Channel
    url: str | None = strawberry.field(description="Webhook URL (WEBHOOK only).")
    email: str | None = strawberry.field(description="Address (EMAIL only).")
    kinds: list[domain.EventKind]
    regions: list[str] = strawberry.field(description="Empty: every region the owner may see.")
    alert_types: list[AlertType] = strawberry.field(description="Empty: every alert type.")
    min_severity: Severity
    enabled: bool
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_row(cls, row: SubscriptionRow) -> NotificationSubscription:
        """GraphQL view of a stored subscription (never its secret)."""
        spec = row.spec
        webhook = spec.channel is domain.Channel.WEBHOOK
        p = spec.preferences
        return cls(
            id=strawberry.ID(str(row.id)),
            owner=row.owner.subject,
            channel=spec.channel,
            url=spec.target if webhook else None,
            email=None if webhook else spec.target,
            kinds=sorted(p.kinds),
            regions=sorted(p.regions),
            alert_types=sorted(p.alert_types),
            min_severity=p.min_severity,
            enabled=spec.enabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )


@strawberry.type(description="A saved subscription; the webhook secret appears only here, once.")
class NotificationSubscriptionSaved:
    subscription: NotificationSubscription
    webhook_secret: str | None = strawberry.field(
        description="Signing secret of X-HES-Signature: returned only by the create (or "
        "rotateSecret update) that made it; store it now, it is never shown again."
    )
    replayed: bool = strawberry.field(
        description="True when the idempotency key matched an earlier create (no secret then)."
    )

    @classmethod
    def from_saved(cls, saved: Saved) -> NotificationSubscriptionSaved:
        """GraphQL view of a create or update result."""
        return cls(
            subscription=NotificationSubscription.from_row(saved.subscription),
            webhook_secret=saved.secret,
            replayed=saved.replayed,
        )


@strawberry.type(description="A deleted subscription (its delivery log went with it).")
class NotificationSubscriptionDeleted:
    id: strawberry.ID


SavedOrError: TypeAlias = NotificationSubscriptionSaved | CommandError
SaveResult = Annotated[SavedOrError, strawberry.union("NotificationSubscriptionResult")]
DeletedOrError: TypeAlias = NotificationSubscriptionDeleted | CommandError
DeleteResult = Annotated[DeletedOrError, strawberry.union("DeleteNotificationSubscriptionResult")]


@strawberry.input(description="A new subscription: give url for WEBHOOK, email for EMAIL.")
class NotificationSubscriptionInput:
    channel: domain.Channel
    kinds: list[domain.EventKind]
    url: str | None = None
    email: str | None = None
    regions: list[str] = strawberry.field(default_factory=list)
    alert_types: list[AlertType] = strawberry.field(default_factory=list)
    min_severity: Severity = Severity.LOW
    enabled: bool = True

    def to_draft(self) -> domain.SubscriptionDraft:
        """The domain draft of this input."""
        return domain.SubscriptionDraft(
            channel=self.channel.value,
            url=self.url,
            email=self.email,
            kinds=[k.value for k in self.kinds],
            regions=list(self.regions),
            alert_types=[t.value for t in self.alert_types],
            min_severity=self.min_severity.value,
            enabled=self.enabled,
        )


@strawberry.input(description="Fields to replace (omitted ones stay); the channel cannot change.")
class NotificationSubscriptionChanges:
    url: str | None = None
    email: str | None = None
    kinds: list[domain.EventKind] | None = None
    regions: list[str] | None = None
    alert_types: list[AlertType] | None = None
    min_severity: Severity | None = None
    enabled: bool | None = None
    rotate_secret: bool = strawberry.field(
        default=False, description="Generate a new webhook secret (returned once)."
    )

    def to_changes(self) -> Changes:
        """The store's change set of this input."""
        return Changes(
            url=self.url,
            email=self.email,
            kinds=None if self.kinds is None else [k.value for k in self.kinds],
            regions=self.regions,
            alert_types=None if self.alert_types is None else [t.value for t in self.alert_types],
            min_severity=None if self.min_severity is None else self.min_severity.value,
            enabled=self.enabled,
            rotate_secret=self.rotate_secret,
        )


@strawberry.type(description="One try to hand a notification over.")
class NotificationAttempt:
    attempt: int
    at: datetime
    duration_ms: float
    verdict: domain.Verdict
    status_code: int | None = strawberry.field(
        description="HTTP status (webhooks) or SMTP reply code (e-mail); null: no answer."
    )
    detail: str | None


@strawberry.type(description="One event for one subscription, with every attempt.")
class NotificationDelivery:
    id: strawberry.ID
    subscription_id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(description="CloudEvents id (X-HES-Event-Id).")
    event_type: str
    event_time: datetime
    kind: domain.EventKind
    status: domain.DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = strawberry.field(description="When PENDING: next try.")
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[NotificationAttempt]

    @classmethod
    def from_row(cls, row: DeliveryRow) -> NotificationDelivery:
        """GraphQL view of a delivery-log row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            subscription_id=strawberry.ID(str(row.subscription_id)),
            event_id=strawberry.ID(str(row.event_id)),
            event_type=row.event_type,
            event_time=row.event_time,
            kind=row.kind,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            created_at=row.created_at,
            finished_at=row.finished_at,
            attempt_log=[
                NotificationAttempt(
                    attempt=a.attempt,
                    at=a.at,
                    duration_ms=round(a.duration_ms, 3),
                    verdict=a.verdict,
                    status_code=a.status_code,
                    detail=a.detail,
                )
                for a in row.attempt_log
            ],
        )


@strawberry.type
class NotificationDeliveryEdge:
    cursor: str
    node: NotificationDelivery


@strawberry.type(description="Deliveries, newest first.")
class NotificationDeliveryConnection:
    edges: list[NotificationDeliveryEdge]
    page_info: PageInfo


def _query_error(exc: DomainError) -> GraphQLError:
    if isinstance(exc, ValidationFailed):
        code = "BAD_USER_INPUT"
    else:
        code = {"NOT_FOUND": "NOT_FOUND", "FORBIDDEN": "FORBIDDEN"}.get(exc.code, exc.code)
    return GraphQLError(exc.message, extensions={"code": code})


def _id(value: str) -> UUID | NotFoundError:
    try:
        return UUID(value)
    except ValueError:
        return NotFoundError(
            message=f"no notification subscription with id {value!r}", code="NOT_FOUND"
        )


async def _save(info: ContextInfo, command: Callable[[], Awaitable[Saved]]) -> SavedOrError:
    try:
        return NotificationSubscriptionSaved.from_saved(await command())
    except DomainError as exc:
        return error_value(exc)


@strawberry.type
class NotificationQuery:
    @strawberry.field(
        description="Your notification subscriptions (admins: everyone's with allOwners).",
    )
    async def notification_subscriptions(
        self, info: ContextInfo, all_owners: bool = False
    ) -> list[NotificationSubscription]:
        actor = info.context.actor()
        try:
            rows = await info.context.container.notifications.listed(actor, all_owners)
        except DomainError as exc:
            raise _query_error(exc) from None
        return [NotificationSubscription.from_row(r) for r in rows]

    @strawberry.field(
        description="Delivery log, newest first, with every attempt: your own subscriptions' "
        "(operators and admins: anyone's).",
    )
    async def notification_deliveries(
        self,
        info: ContextInfo,
        subscription_id: strawberry.ID | None = None,
        status: domain.DeliveryStatus | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> NotificationDeliveryConnection:
        actor = info.context.actor()
        sub_id = None
        if subscription_id is not None:
            parsed = _id(subscription_id)
            if isinstance(parsed, NotFoundError):
                raise GraphQLError(parsed.message, extensions={"code": "NOT_FOUND"})
            sub_id = parsed
        try:
            page = await info.context.container.notification_deliveries.page(
                actor, subscription_id=sub_id, status=status, first=first, after=after
            )
        except DomainError as exc:
            raise _query_error(exc) from None
        return NotificationDeliveryConnection(
            edges=[
                NotificationDeliveryEdge(
                    cursor=encode_cursor(row.seq), node=NotificationDelivery.from_row(row)
                )
                for row in page.items
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )


@strawberry.type
class NotificationMutation:
    @strawberry.mutation(
        description="Subscribe to alert and tariff events by webhook or e-mail (any role).",
    )
    async def create_notification_subscription(
        self,
        info: ContextInfo,
        input: NotificationSubscriptionInput,
        idempotency_key: str | None = None,
    ) -> SaveResult:
        try:
            key = check_idempotency_key(idempotency_key)
        except InvalidHeader as exc:
            problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
            return ValidationError(message=str(exc), code="VALIDATION", fields=[problem])
        actor = info.context.actor()
        store = info.context.container.notifications
        draft = input.to_draft()
        return await _save(info, lambda: store.create(actor, draft, key))

    @strawberry.mutation(
        description="Change your subscription (admins: anyone's); expectedVersion guards races.",
    )
    async def update_notification_subscription(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        changes: NotificationSubscriptionChanges,
        expected_version: int | None = None,
    ) -> SaveResult:
        sub_id = _id(id)
        if isinstance(sub_id, NotFoundError):
            return sub_id
        actor = info.context.actor()
        store = info.context.container.notifications
        change_set = changes.to_changes()
        return await _save(info, lambda: store.update(actor, sub_id, change_set, expected_version))

    @strawberry.mutation(
        description="Delete your subscription and its delivery log (admins: anyone's).",
    )
    async def delete_notification_subscription(
        self, info: ContextInfo, id: strawberry.ID
    ) -> DeleteResult:
        sub_id = _id(id)
        if isinstance(sub_id, NotFoundError):
            return sub_id
        try:
            await info.context.container.notifications.delete(info.context.actor(), sub_id)
        except DomainError as exc:
            return error_value(exc)
        return NotificationSubscriptionDeleted(id=strawberry.ID(str(sub_id)))
