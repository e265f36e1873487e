"""The GraphQL schema: meter, reading, audit and tariff queries; meter and tariff mutations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

import anyio.to_thread
import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, Info

from api.context import InvalidHeader, RequestContext
from api.graphql.access import protect, protect_fields, record_refusal
from api.graphql.alerts import AlertMutation, AlertQuery, AlertSubscription
from api.graphql.api_keys import ApiKeyMutation, ApiKeyQuery
from api.graphql.arguments import guard_arguments
from api.graphql.audit import AuditQuery
from api.graphql.bulk_disconnect import BulkDisconnectMutation
from api.graphql.customers import CustomerMutation, CustomerQuery
from api.graphql.dashboard import DashboardQuery, DashboardSubscription
from api.graphql.dlms import DlmsMutation, DlmsQuery
from api.graphql.dlms_profiles import DlmsProfileMutation, DlmsProfileQuery
from api.graphql.fleet import FleetMutation, FleetQuery, FleetSubscription
from api.graphql.insights import InsightMutation, InsightQuery
from api.graphql.limits import limits
from api.graphql.me import MeQuery
from api.graphql.notifications import NotificationMutation, NotificationQuery
from api.graphql.readings import ReadingQuery, ReadingSubscription
from api.graphql.redaction import without_values
from api.graphql.regions import RegionMutation
from api.graphql.sims import SimMutation, SimQuery
from api.graphql.tariffs import (
    TariffMutation,
    TariffOverride,
    TariffQuery,
    TariffSubscription,
)
from api.graphql.types import (
    ConnectionInput,
    FieldProblem,
    ForbiddenError,
    LocationInput,
    Meter,
    MeterConnection,
    MeterEdge,
    MeterFilterInput,
    MeterOrError,
    MeterResult,
    NotFoundError,
    PageInfo,
    RegisterMeterInput,
    ValidationError,
    error_value,
)
from api.presenters import present
from commands.context import CommandContext, Role
from commands.meters import MeterRegistry, Outcome
from commands.policy import may_read_meter
from domain.errors import DomainError
from projections.meters_queries import InvalidCursor, MeterFilter, encode_cursor

ContextInfo = Info[RequestContext, None]
log = logging.getLogger(__name__)


def _bad_request(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def _parse_id(value: str, field: str = "id") -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise _bad_request(f"{field}: {value!r} is not a meter id (UUID)") from None


@strawberry.type
class MeterQuery:
    @strawberry.field(
        description="Meters matching the filter, ordered by serial, `first` at a time (max 500).",
    )
    async def meters(
        self,
        info: ContextInfo,
        filter: MeterFilterInput | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> MeterConnection:
        actor = info.context.actor()
        if not 1 <= first <= 500:
            raise _bad_request(f"first: must be between 1 and 500, got {first}")
        f = filter or MeterFilterInput()
        customer = f.customer_account
        if actor.roles == {Role.CUSTOMER}:
            if customer is not None and customer != actor.customer_account:
                return MeterConnection(
                    edges=[], page_info=PageInfo(has_next_page=False, end_cursor=None)
                )
            customer = actor.customer_account
        elif not may_read_meter(actor, None):
            raise GraphQLError("your roles may not read meters", extensions={"code": "FORBIDDEN"})
        try:
            page = await info.context.container.meters.page(
                MeterFilter(
                    region=f.region,
                    area=f.area,
                    status=f.status,
                    customer_account=customer,
                    serial_prefix=f.serial_prefix,
                ),
                first,
                after,
            )
        except InvalidCursor as exc:
            raise _bad_request(str(exc)) from None
        return MeterConnection(
            edges=[
                MeterEdge(cursor=encode_cursor(r.serial), node=Meter.from_row(r))
                for r in page.items
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        description="One meter by id or by serial number (give exactly one).",
    )
    async def meter(
        self, info: ContextInfo, id: strawberry.ID | None = None, serial: str | None = None
    ) -> Meter | None:
        actor = info.context.actor()
        if (id is None) == (serial is None):
            raise _bad_request("meter: give exactly one of id or serial")
        queries = info.context.container.meters
        row = await (
            queries.by_id(_parse_id(id)) if id is not None else queries.by_serial(serial or "")
        )
        if row is None or not may_read_meter(actor, row.customer_account):
            return None  # a customer cannot even learn that another's meter exists
        return Meter.from_row(row)


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[CommandContext], Outcome],
) -> MeterOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        return ValidationError(
            message=str(exc),
            code="VALIDATION",
            fields=[FieldProblem(field="idempotencyKey", rule="format", message=str(exc))],
        )
    try:
        outcome = await anyio.to_thread.run_sync(command, ctx)
    except DomainError as exc:
        return error_value(exc)
    wait_seconds = context.container.settings.api.projection_wait_seconds if wait else 0.0
    return Meter.from_row(await present(outcome, context.container.meters, wait_seconds))


async def _run_on(
    info: ContextInfo,
    id_: str,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[MeterRegistry, UUID, CommandContext], Outcome],
) -> MeterOrError:
    meter_id = _meter_id(id_)
    if isinstance(meter_id, NotFoundError):
        return meter_id
    registry = info.context.container.registry
    return await _run(info, idempotency_key, wait, lambda c: command(registry, meter_id, c))


def _meter_id(value: str) -> UUID | NotFoundError:
    try:
        return UUID(value)
    except ValueError:
        return NotFoundError(message=f"no meter with id {value!r}", code="NOT_FOUND")


@strawberry.type
class MeterMutation:
    @strawberry.mutation(description="Register a new meter.")
    async def register_meter(
        self,
        info: ContextInfo,
        input: RegisterMeterInput,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        registry = info.context.container.registry
        spec = input.to_domain()
        return await _run(info, idempotency_key, wait, lambda c: registry.register_meter(spec, c))

    @strawberry.mutation(
        description="Record a meter as installed at a location, optionally for a customer.",
    )
    async def commission_meter(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        location: LocationInput,
        customer_account: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        loc = location.to_domain()
        return await _run_on(
            info,
            id,
            idempotency_key,
            wait,
            lambda r, mid, c: r.commission_meter(mid, loc, customer_account, c),
        )

    @strawberry.mutation(description="Assign a customer account.")
    async def assign_customer(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        customer_account: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        return await _run_on(
            info,
            id,
            idempotency_key,
            wait,
            lambda r, mid, c: r.assign_customer(mid, customer_account, c),
        )

    @strawberry.mutation(description="Remove the customer account.")
    async def unassign_customer(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        return await _run_on(
            info,
            id,
            idempotency_key,
            wait,
            lambda r, mid, c: r.unassign_customer(mid, reason, c),
        )

    @strawberry.mutation(description="Change how the meter is reached.")
    async def change_connection_profile(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        connection: ConnectionInput,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        profile = connection.to_domain()
        return await _run_on(
            info,
            id,
            idempotency_key,
            wait,
            lambda r, mid, c: r.change_connection_profile(mid, profile, c),
        )

    @strawberry.mutation(description="Take a meter out of service for good.")
    async def decommission_meter(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> MeterResult:
        return await _run_on(
            info,
            id,
            idempotency_key,
            wait,
            lambda r, mid, c: r.decommission_meter(mid, reason, c),
        )


def _unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class HesSchema(strawberry.Schema):
    """Schema that logs refusals quietly and failures loudly (clients see failures masked)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log each error at the level it deserves (input values cut from coercion errors)."""
        for error in errors:
            error.message = without_values(error.message)
            if _unexpected(error):
                log.error(
                    "GraphQL resolver failed at %s", error.path, exc_info=error.original_error
                )
            else:
                log.info("GraphQL request refused: %s", error.message)
                record_refusal(error, execution_context)


Query = merge_types(
    "Query",
    (
        MeterQuery,
        ReadingQuery,
        AuditQuery,
        TariffQuery,
        AlertQuery,
        NotificationQuery,
        ApiKeyQuery,
        DlmsQuery,
        DashboardQuery,
        DlmsProfileQuery,
        SimQuery,
        MeQuery,
        CustomerQuery,
        FleetQuery,
        InsightQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        MeterMutation,
        TariffMutation,
        RegionMutation,
        AlertMutation,
        NotificationMutation,
        ApiKeyMutation,
        DlmsMutation,
        DlmsProfileMutation,
        SimMutation,
        BulkDisconnectMutation,
        CustomerMutation,
        FleetMutation,
        InsightMutation,
    ),
)
Subscription = merge_types(
    "Subscription",
    (
        ReadingSubscription,
        AlertSubscription,
        TariffSubscription,
        DashboardSubscription,
        FleetSubscription,
    ),
)
guard_arguments(Query, Subscription)  # identifiers and filters hold no control characters
protect(Query, Mutation, Subscription)  # every root field checked by api.graphql.operations
protect_fields(TariffOverride, Meter)  # and the fields its FIELDS name

schema = HesSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    types=[ForbiddenError],
    extensions=[
        lambda: MaskErrors(
            should_mask_error=_unexpected,
            error_message="internal error; the server log has the details",
        ),
        *limits(),
    ],
)


def sdl() -> str:
    """The schema in GraphQL SDL, as published in docs/schema.graphql (``hes schema graphql``)."""
    return schema.as_str() + "\n"
