"""REST fleet operations: firmware images, TOU plans and campaigns (queries and commands)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from api.context import RequestContext
from api.fleet_forms import calendar_of, camel_keys
from api.rest.commands import IdempotencyKey
from api.rest.fleet_bodies import LoadLimitBody
from commands.context import CommandContext
from commands.fleet import FleetOperations, FleetOutcome
from domain.campaign import (
    CampaignKind,
    CampaignLimits,
    CampaignSpec,
    CampaignStatus,
    CohortFilter,
    MeterState,
)
from domain.errors import FieldError, NotFound, ValidationFailed
from projections import fleet_queries as q


class FleetDone(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a fleet command recorded: the image, TOU plan or campaign, and its version."""

    id: UUID
    version: int
    changed: bool


class TouPlanBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A tariff plan's calendar (docs/fleet-operations.md shows its shape)."""

    tariff_plan: str
    calendar: dict[str, Any]


class CohortBody(msgspec.Struct, frozen=True, kw_only=True):
    """Attribute filters, or an explicit serial list."""

    region: str | None = None
    area: str | None = None
    model: str | None = None
    firmware: str | None = None
    serials: list[str] = []


class StartCampaignBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A campaign to start."""

    name: str
    kind: CampaignKind
    cohort: CohortBody
    concurrency: int = 10
    per_cell: int = 2
    max_attempts: int = 3
    image_id: UUID | None = None
    tou_plan_id: UUID | None = None
    tou_plan_version: int | None = None
    load_limit: LoadLimitBody | None = None
    activate_at: datetime | None = None
    """FIRMWARE: meters activate the image at this time (null: each at once)."""

    def spec(self) -> CampaignSpec:
        """The domain spec."""
        c = self.cohort
        return CampaignSpec(
            name=self.name,
            kind=self.kind,
            cohort=CohortFilter(
                region=c.region,
                area=c.area,
                model=c.model,
                firmware=c.firmware,
                serials=tuple(c.serials),
            ),
            limits=CampaignLimits(
                concurrency=self.concurrency, per_cell=self.per_cell, max_attempts=self.max_attempts
            ),
            image_id=self.image_id,
            tou_plan_id=self.tou_plan_id,
            tou_plan_version=self.tou_plan_version,
            load_limit=self.load_limit.value() if self.load_limit is not None else None,
            activate_at=self.activate_at,
        )


class CancelBody(msgspec.Struct, frozen=True, kw_only=True):
    """Why the campaign is cancelled."""

    reason: str


async def _run(
    ctx: RequestContext,
    key: str | None,
    action: Callable[[FleetOperations, CommandContext], FleetOutcome],
) -> FleetDone:
    command_ctx = ctx.command(key)
    fleet = ctx.container.fleet
    outcome = await anyio.to_thread.run_sync(lambda: action(fleet, command_ctx))
    if outcome.notification_id is not None:
        container = ctx.container
        await container.fleet_position.wait_for(
            outcome.notification_id, container.settings.api.projection_wait_seconds
        )
    return FleetDone(
        id=outcome.aggregate.id,
        version=outcome.aggregate.version,
        changed=outcome.notification_id is not None,
    )


async def _start(
    ctx: RequestContext, data: StartCampaignBody, key: str | None, *, firmware: bool
) -> FleetDone:
    if (data.kind is CampaignKind.FIRMWARE) is not firmware:
        door = "firmware-campaigns" if data.kind is CampaignKind.FIRMWARE else "campaigns"
        raise ValidationFailed(
            [FieldError("kind", "door", f"start a {data.kind} campaign at /api/v1/commands/{door}")]
        )
    spec = data.spec()
    spec.check()
    cohort = await q.resolve_cohort(ctx.container.pool, _schema(ctx), spec.cohort)
    return await _run(ctx, key, lambda f, c: f.start_campaign(spec, cohort, c))


def _schema(ctx: RequestContext) -> str:
    return ctx.container.settings.database.schema


class FleetQueries(Controller):
    """Firmware images, TOU plans and campaigns as the read models show them (staff)."""

    tags = ["fleet operations"]

    @get("/api/v1/firmware-images", summary="List firmware images")
    async def images(self, ctx: NamedDependency[RequestContext]) -> list[dict[str, Any]]:
        """Images not deleted, by manufacturer, model and identifier."""
        rows = await q.list_images(ctx.container.pool, _schema(ctx))
        return [camel_keys(msgspec.to_builtins(r)) for r in rows]

    @get("/api/v1/tou-plans", summary="List TOU plans")
    async def tou_plans(self, ctx: NamedDependency[RequestContext]) -> list[dict[str, Any]]:
        """TOU plans with their versions, by tariff plan."""
        rows = await q.list_tou_plans(ctx.container.pool, _schema(ctx))
        return [camel_keys(msgspec.to_builtins(r)) for r in rows]

    @get("/api/v1/campaigns", summary="List campaigns")
    async def campaigns(
        self,
        ctx: NamedDependency[RequestContext],
        status: Annotated[CampaignStatus | None, QueryParameter(required=False)] = None,
    ) -> list[dict[str, Any]]:
        """The latest 200 campaigns with their progress, newest first."""
        rows = await q.list_campaigns(ctx.container.pool, _schema(ctx), status)
        return [camel_keys(msgspec.to_builtins(r)) for r in rows]

    @get("/api/v1/campaigns/{campaign_id:uuid}", summary="One campaign's progress")
    async def campaign(
        self, ctx: NamedDependency[RequestContext], campaign_id: FromPath[UUID]
    ) -> dict[str, Any]:
        """Counts per state, throughput, ETA and the spec (404 when unknown)."""
        row = await q.get_campaign(ctx.container.pool, _schema(ctx), campaign_id)
        if row is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        found: dict[str, Any] = camel_keys(msgspec.to_builtins(row))
        return found

    @get("/api/v1/campaigns/{campaign_id:uuid}/meters", summary="A campaign's meters")
    async def campaign_meters(
        self,
        ctx: NamedDependency[RequestContext],
        campaign_id: FromPath[UUID],
        meter_state: Annotated[
            MeterState | None, QueryParameter(name="state", required=False)
        ] = None,
        after: Annotated[str | None, QueryParameter(required=False)] = None,
        first: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The campaign's meters by serial, after the serial ``after``."""
        rows = await q.campaign_meters(
            ctx.container.pool, _schema(ctx), campaign_id, meter_state, after=after, limit=first
        )
        return [camel_keys(msgspec.to_builtins(r)) for r in rows]


class FleetCommands(Controller):
    """Fleet commands: images (admin), TOU plans, campaigns and their control."""

    path = "/api/v1/commands"
    tags = ["fleet operations"]

    @post("/firmware-images", status_code=201, summary="Upload a firmware image")
    async def upload(
        self,
        ctx: NamedDependency[RequestContext],
        request: Request[Any, Any, Any],
        identifier: Annotated[str, QueryParameter()],
        manufacturer: Annotated[str, QueryParameter()],
        model: Annotated[str, QueryParameter()],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """The request body is the image itself (application/octet-stream; admin)."""
        image = await request.body()
        return await _run(
            ctx,
            idempotency_key,
            lambda f, c: f.upload_image(image, identifier, manufacturer, model, c),
        )

    @post("/firmware-images/{image_id:uuid}/delete", status_code=200, summary="Delete an image")
    async def delete(
        self,
        ctx: NamedDependency[RequestContext],
        image_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Delete the image and its bytes (admin)."""
        return await _run(ctx, idempotency_key, lambda f, c: f.delete_image(image_id, c))

    @post("/tou-plans", status_code=200, summary="Create or revise a TOU plan")
    async def tou_plan(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[TouPlanBody],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Create the tariff plan's TOU plan, or add a version when the calendar changed."""
        calendar = calendar_of(data.calendar)
        return await _run(
            ctx, idempotency_key, lambda f, c: f.save_tou_plan(data.tariff_plan, calendar, c)
        )

    @post("/campaigns", status_code=201, summary="Start a calendar or load-limit campaign")
    async def start(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[StartCampaignBody],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Start a CALENDAR or LOAD_LIMIT campaign over a cohort resolved now."""
        return await _start(ctx, data, idempotency_key, firmware=False)

    @post("/firmware-campaigns", status_code=201, summary="Start a firmware campaign")
    async def start_firmware(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[StartCampaignBody],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Start a FIRMWARE campaign over a cohort resolved now (admin)."""
        return await _start(ctx, data, idempotency_key, firmware=True)

    @post("/campaigns/{campaign_id:uuid}/pause", status_code=200, summary="Pause a campaign")
    async def pause(
        self,
        ctx: NamedDependency[RequestContext],
        campaign_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Running meters finish; none starts until resumed."""
        return await _run(ctx, idempotency_key, lambda f, c: f.pause_campaign(campaign_id, c))

    @post("/campaigns/{campaign_id:uuid}/resume", status_code=200, summary="Resume a campaign")
    async def resume(
        self,
        ctx: NamedDependency[RequestContext],
        campaign_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Meters start again."""
        return await _run(ctx, idempotency_key, lambda f, c: f.resume_campaign(campaign_id, c))

    @post("/campaigns/{campaign_id:uuid}/cancel", status_code=200, summary="Cancel a campaign")
    async def cancel(
        self,
        ctx: NamedDependency[RequestContext],
        campaign_id: FromPath[UUID],
        data: JSONBody[CancelBody],
        idempotency_key: IdempotencyKey = None,
    ) -> FleetDone:
        """Pending meters are skipped; running ones finish."""
        return await _run(
            ctx, idempotency_key, lambda f, c: f.cancel_campaign(campaign_id, data.reason, c)
        )
