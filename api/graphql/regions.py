"""GraphQL mutation setting a region's capacity (admin) through the TariffBook."""

from __future__ import annotations

from typing import Annotated, TypeAlias

import anyio.to_thread
import strawberry
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.graphql.types import CommandError, FieldProblem, ValidationError, error_value
from domain.errors import DomainError

ContextInfo = Info[RequestContext, None]


@strawberry.type(description="A region's capacity: the 100 % of its load percentage.")
class RegionCapacity:
    region: str
    capacity_kw: float
    version: int = strawberry.field(description="Version of the region's aggregate.")
    changed: bool = strawberry.field(
        description="False when the region already had this capacity (nothing recorded)."
    )
    applied: bool = strawberry.field(
        description="True when the read model (region_capacity, used by the tariff engine) "
        "shows the change; false with wait=false or when the projection did not catch up in time."
    )


RegionCapacityOrError: TypeAlias = RegionCapacity | CommandError
RegionCapacityResult = Annotated[RegionCapacityOrError, strawberry.union("RegionCapacityResult")]


@strawberry.type
class RegionMutation:
    @strawberry.mutation(
        description="Set a region's capacity in kW, which moves its load percentage and price "
        "(admin; recorded as Region.CapacitySet).",
    )
    async def set_region_capacity(
        self,
        info: ContextInfo,
        region: str,
        kw: float,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> RegionCapacityResult:
        context = info.context
        try:
            ctx = context.command(idempotency_key)
        except InvalidHeader as exc:
            problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
            return ValidationError(
                message=f"invalid input: idempotencyKey: {exc}", code="VALIDATION", fields=[problem]
            )
        book = context.container.tariffs
        try:
            outcome = await anyio.to_thread.run_sync(
                lambda: book.set_region_capacity(region, kw, ctx)
            )
        except DomainError as exc:
            return error_value(exc)
        queries = context.container.tariff_queries
        applied = outcome.notification_id is None
        if outcome.notification_id is not None and wait:
            seconds = context.container.settings.api.projection_wait_seconds
            applied = await queries.wait_for(outcome.notification_id, seconds)
        found = outcome.region
        return RegionCapacity(
            region=found.region,
            capacity_kw=found.capacity_kw or 0.0,
            version=found.version,
            changed=outcome.notification_id is not None,
            applied=applied,
        )
