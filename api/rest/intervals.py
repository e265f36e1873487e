"""Interval consumption of a meter for MDM and billing, as JSON or CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from api.context import RequestContext
from api.rest.errors import problem
from commands.context import Scope
from commands.policy import may_read_meter
from domain.errors import NotFound
from domain.meter import meter_id
from projections.intervals import to_csv
from projections.reading_queries import Interval


@get(
    "/api/v1/meters/{meter:str}/intervals",
    summary="Interval consumption of a meter",
    tags=["export"],
)
async def meter_intervals(
    ctx: NamedDependency[RequestContext],
    meter: FromPath[str],
    start: Annotated[datetime, QueryParameter(name="from", description="UTC, inclusive")],
    end: Annotated[datetime, QueryParameter(name="to", description="UTC, exclusive")],
    interval: Annotated[Interval, QueryParameter(name="interval")] = Interval.M15,
    fmt: Annotated[Literal["json", "csv"], QueryParameter(name="format")] = "json",
) -> Response[Any]:
    """Energy per 15/30-minute window with quality flags (meter: id or serial number)."""
    actor = ctx.actor()
    try:
        id_ = UUID(meter)
    except ValueError:
        id_ = meter_id(meter)
    row = await ctx.container.meters.by_id(id_)
    allowed = row is not None and (
        Scope.EXPORT in actor.scopes or may_read_meter(actor, row.customer_account)
    )
    if row is None or not allowed:
        raise NotFound(f"no meter {meter!r}")
    if interval is Interval.M1:
        return problem(400, "BAD_REQUEST", "interval: M15 or M30")
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        return problem(400, "BAD_REQUEST", "from/to: UTC timestamps with from < to")
    try:
        data = await ctx.container.intervals.for_meter(id_, row.serial, interval, start, end)
    except ValueError as exc:
        return problem(400, "BAD_REQUEST", str(exc))
    if fmt == "csv":
        return Response(
            to_csv(data),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{row.serial}-intervals.csv"'},
        )
    return Response(data)


@get(
    "/api/v1/meters/{meter:str}/billing-determinants",
    summary="Billing determinants of a meter",
    tags=["export"],
)
async def meter_billing_determinants(
    ctx: NamedDependency[RequestContext],
    meter: FromPath[str],
    start: Annotated[datetime, QueryParameter(name="from", description="UTC, inclusive")],
    end: Annotated[datetime, QueryParameter(name="to", description="UTC, exclusive")],
) -> Response[Any]:
    """Energy per tariff price in force, each with the price's event-store position."""
    actor = ctx.actor()
    try:
        id_ = UUID(meter)
    except ValueError:
        id_ = meter_id(meter)
    row = await ctx.container.meters.by_id(id_)
    if row is None or not (
        Scope.EXPORT in actor.scopes or may_read_meter(actor, row.customer_account)
    ):
        raise NotFound(f"no meter {meter!r}")
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        return problem(400, "BAD_REQUEST", "from/to: UTC timestamps with from < to")
    try:
        data = await ctx.container.billing.for_meter(id_, row.serial, row.region, start, end)
    except ValueError as exc:
        return problem(400, "BAD_REQUEST", str(exc))
    return Response(data)
