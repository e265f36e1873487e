"""GraphQL for fleet operations: firmware images, TOU plans, campaigns and their progress."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Annotated, TypeAlias, cast
from uuid import UUID

import anyio.to_thread
import msgspec
import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.fleet_forms import calendar_of, camel_keys
from api.graphql.types import (
    CommandError,
    FieldProblem,
    ValidationError,
    error_value,
)
from commands.context import CommandContext
from commands.fleet import FleetOperations, FleetOutcome
from domain.campaign import CampaignKind as DomainCampaignKind
from domain.campaign import CampaignLimits, CampaignSpec, CohortFilter
from domain.campaign import CampaignStatus as DomainCampaignStatus
from domain.campaign import MeterState as DomainMeterState
from domain.errors import DomainError, FieldError, ValidationFailed
from domain.load_limit import EmergencyProfile, LoadLimit
from projections import fleet_queries as q

ContextInfo = Info[RequestContext, None]
CampaignKind = strawberry.enum(DomainCampaignKind, name="CampaignKind")
CampaignStatus = strawberry.enum(DomainCampaignStatus, name="CampaignStatus")
CampaignMeterState = strawberry.enum(DomainMeterState, name="CampaignMeterState")
FINISHED = frozenset({DomainCampaignStatus.COMPLETED, DomainCampaignStatus.CANCELLED})
POLL_S = 1.0


def _invalid(field: str, rule: str, message: str) -> ValidationError:
    return ValidationError(
        message=f"invalid input: {field}: {message}",
        code="VALIDATION",
        fields=[FieldProblem(field=field, rule=rule, message=message)],
    )


def _id(value: str, field: str) -> UUID | ValidationError:
    try:
        return UUID(value)
    except ValueError:
        return _invalid(field, "format", f"{value!r} is not a UUID")


@strawberry.type(description="An uploaded firmware image (its bytes stay in the head-end).")
class FirmwareImage:
    id: strawberry.ID
    identifier: str = strawberry.field(description="The image identifier the meter is told.")
    manufacturer: str
    model: str
    sha256: str
    size: int
    uploaded_by: str
    uploaded_at: datetime

    @classmethod
    def from_row(cls, row: q.FirmwareImageRow) -> FirmwareImage:
        """GraphQL view of a read-model row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            identifier=row.identifier,
            manufacturer=row.manufacturer,
            model=row.model,
            sha256=row.sha256,
            size=row.size,
            uploaded_by=row.uploaded_by,
            uploaded_at=row.uploaded_at,
        )


@strawberry.type(description="One version of a TOU plan.")
class TouPlanVersion:
    version: int
    calendar: JSON = strawberry.field(description="The calendar (see docs/fleet-operations.md).")
    created_by: str
    created_at: datetime


@strawberry.type(description="The time-of-use calendar of a tariff plan, in numbered versions.")
class TouPlan:
    id: strawberry.ID
    tariff_plan: str
    latest_version: int
    updated_at: datetime
    versions: list[TouPlanVersion]

    @classmethod
    def from_row(cls, row: q.TouPlanRow) -> TouPlan:
        """GraphQL view of a read-model row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            tariff_plan=row.tariff_plan,
            latest_version=row.latest_version,
            updated_at=row.updated_at,
            versions=[
                TouPlanVersion(
                    version=v.version,
                    calendar=cast(JSON, camel_keys(msgspec.to_builtins(v.calendar))),
                    created_by=v.created_by,
                    created_at=v.created_at,
                )
                for v in row.versions
            ],
        )


@strawberry.type(description="One meter of a campaign.")
class CampaignMeter:
    serial: str
    meter_id: strawberry.ID
    cell: str = strawberry.field(description="Concentrator id, or meter:<serial> for a lone one.")
    state: CampaignMeterState  # type: ignore[valid-type]
    attempts: int
    command_id: strawberry.ID | None
    reason: str | None
    updated_at: datetime


@strawberry.type(description="A fleet operation over a cohort of meters and its progress.")
class Campaign:
    id: strawberry.ID
    name: str
    kind: CampaignKind  # type: ignore[valid-type]
    status: CampaignStatus  # type: ignore[valid-type]
    started_by: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    meters: int
    pending: int
    running: int
    awaiting: int = strawberry.field(
        description="Firmware verified on the meter, waiting for the scheduled activation."
    )
    succeeded: int
    failed: int
    skipped: int
    attempts: int = strawberry.field(description="Attempts made over all meters.")
    throughput_per_minute: float | None = strawberry.field(
        description="Meters finished (succeeded or failed) per minute since the start."
    )
    eta_seconds: float | None = strawberry.field(
        description="Seconds the pending and running meters still need at that throughput."
    )
    spec: JSON = strawberry.field(description="What the campaign does, to whom, how fast.")
    version: int

    @strawberry.field(description="The campaign's meters by serial, `first` at a time (max 1000).")
    async def meter_states(
        self,
        info: ContextInfo,
        state: CampaignMeterState | None = None,  # type: ignore[valid-type]
        after: str | None = None,
        first: int = 100,
    ) -> list[CampaignMeter]:
        container = info.context.container
        rows = await q.campaign_meters(
            container.pool,
            container.settings.database.schema,
            UUID(str(self.id)),
            state,
            after=after,
            limit=first,
        )
        return [
            CampaignMeter(
                serial=r.serial,
                meter_id=strawberry.ID(str(r.meter_id)),
                cell=r.cell,
                state=r.state,
                attempts=r.attempts,
                command_id=strawberry.ID(str(r.command_id)) if r.command_id else None,
                reason=r.reason,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    @classmethod
    def from_row(cls, row: q.CampaignProgress) -> Campaign:
        """GraphQL view of a read-model row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            kind=row.kind,
            status=row.status,
            started_by=row.started_by,
            started_at=row.started_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            meters=row.meters,
            pending=row.pending,
            running=row.running,
            awaiting=row.awaiting,
            succeeded=row.succeeded,
            failed=row.failed,
            skipped=row.skipped,
            attempts=row.attempts,
            throughput_per_minute=row.throughput_per_minute,
            eta_seconds=row.eta_seconds,
            spec=cast(JSON, camel_keys(row.spec)),
            version=row.version,
        )


@strawberry.type(description="What a fleet command recorded.")
class FleetCommandDone:
    id: strawberry.ID = strawberry.field(description="The image, TOU plan or campaign.")
    version: int = strawberry.field(description="Its aggregate version after the command.")
    changed: bool = strawberry.field(description="False when nothing new was recorded.")


FleetOrError: TypeAlias = FleetCommandDone | CommandError
FleetResult = Annotated[FleetOrError, strawberry.union("FleetCommandResult")]


@strawberry.input(description="The limiter's thresholds (COSEM class 71).")
class LoadLimitInput:
    threshold_normal_w: float
    threshold_emergency_w: float
    min_over_threshold_s: int = 60
    min_under_threshold_s: int = 60
    emergency_profile_id: int | None = None
    emergency_activation: datetime | None = None
    emergency_duration_s: int | None = None

    def value(self) -> LoadLimit:
        """The domain value (rules are checked by the command)."""
        emergency = None
        if self.emergency_profile_id is not None or self.emergency_activation is not None:
            if self.emergency_activation is None or self.emergency_duration_s is None:
                raise ValidationFailed(
                    [
                        FieldError(
                            "emergency",
                            "complete",
                            "an emergency profile needs profileId, activation and durationS",
                        )
                    ]
                )
            emergency = EmergencyProfile(
                profile_id=self.emergency_profile_id or 0,
                activation=self.emergency_activation,
                duration_s=self.emergency_duration_s,
            )
        return LoadLimit(
            threshold_normal_w=self.threshold_normal_w,
            threshold_emergency_w=self.threshold_emergency_w,
            min_over_threshold_s=self.min_over_threshold_s,
            min_under_threshold_s=self.min_under_threshold_s,
            emergency=emergency,
        )


@strawberry.input(description="Which meters: attribute filters, or an explicit serial list.")
class CohortInput:
    region: str | None = None
    area: str | None = None
    model: str | None = None
    firmware: str | None = None
    serials: list[str] | None = None


@strawberry.input(description="A campaign to start.")
class StartCampaignInput:
    name: str
    kind: CampaignKind  # type: ignore[valid-type]
    cohort: CohortInput
    concurrency: int = 10
    per_cell: int = strawberry.field(default=2, description="Meters at once per concentrator.")
    max_attempts: int = 3
    image_id: strawberry.ID | None = None
    tou_plan_id: strawberry.ID | None = None
    tou_plan_version: int | None = None
    load_limit: LoadLimitInput | None = None
    activate_at: datetime | None = strawberry.field(
        default=None,
        description="FIRMWARE: meters activate the image at this time (null: each at once).",
    )

    def spec(self) -> CampaignSpec:
        """The domain spec (rules are checked by the command)."""
        ids: dict[str, UUID | None] = {}
        for name, value in (("imageId", self.image_id), ("touPlanId", self.tou_plan_id)):
            parsed = _id(value, name) if value is not None else None
            if isinstance(parsed, ValidationError):
                raise ValidationFailed([FieldError(name, "format", "not a UUID")])
            ids[name] = parsed
        c = self.cohort
        return CampaignSpec(
            name=self.name,
            kind=self.kind,
            cohort=CohortFilter(
                region=c.region,
                area=c.area,
                model=c.model,
                firmware=c.firmware,
                serials=tuple(c.serials or ()),
            ),
            limits=CampaignLimits(
                concurrency=self.concurrency, per_cell=self.per_cell, max_attempts=self.max_attempts
            ),
            image_id=ids["imageId"],
            tou_plan_id=ids["touPlanId"],
            tou_plan_version=self.tou_plan_version,
            load_limit=self.load_limit.value() if self.load_limit is not None else None,
            activate_at=self.activate_at,
        )


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    action: Callable[[FleetOperations, CommandContext], FleetOutcome],
) -> FleetOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        return _invalid("idempotencyKey", "format", str(exc))
    fleet = context.container.fleet
    try:
        outcome = await anyio.to_thread.run_sync(lambda: action(fleet, ctx))
    except DomainError as exc:
        return error_value(exc)
    if outcome.notification_id is not None:
        container = context.container
        await container.fleet_position.wait_for(
            outcome.notification_id, container.settings.api.projection_wait_seconds
        )
    return FleetCommandDone(
        id=strawberry.ID(str(outcome.aggregate.id)),
        version=outcome.aggregate.version,
        changed=outcome.notification_id is not None,
    )


async def _start(
    info: ContextInfo, input: StartCampaignInput, idempotency_key: str | None, *, firmware: bool
) -> FleetOrError:
    container = info.context.container
    if (input.kind is DomainCampaignKind.FIRMWARE) is not firmware:
        door = (
            "startFirmwareCampaign"
            if input.kind is DomainCampaignKind.FIRMWARE
            else "startCampaign"
        )
        return _invalid("kind", "door", f"start a {input.kind} campaign with {door}")
    try:
        spec = input.spec()
        spec.check()
        cohort = await q.resolve_cohort(
            container.pool, container.settings.database.schema, spec.cohort
        )
    except DomainError as exc:
        return error_value(exc)
    return await _run(info, idempotency_key, lambda f, c: f.start_campaign(spec, cohort, c))


@strawberry.type
class FleetQuery:
    @strawberry.field(description="Firmware images not deleted (staff).")
    async def firmware_images(self, info: ContextInfo) -> list[FirmwareImage]:
        container = info.context.container
        rows = await q.list_images(container.pool, container.settings.database.schema)
        return [FirmwareImage.from_row(r) for r in rows]

    @strawberry.field(description="TOU plans with their versions (staff).")
    async def tou_plans(self, info: ContextInfo) -> list[TouPlan]:
        container = info.context.container
        rows = await q.list_tou_plans(container.pool, container.settings.database.schema)
        return [TouPlan.from_row(r) for r in rows]

    @strawberry.field(description="The latest 200 campaigns, newest first (staff).")
    async def campaigns(
        self,
        info: ContextInfo,
        status: CampaignStatus | None = None,  # type: ignore[valid-type]
    ) -> list[Campaign]:
        container = info.context.container
        rows = await q.list_campaigns(container.pool, container.settings.database.schema, status)
        return [Campaign.from_row(r) for r in rows]

    @strawberry.field(description="One campaign with its progress and meters (staff).")
    async def campaign(self, info: ContextInfo, id: strawberry.ID) -> Campaign | None:
        parsed = _id(id, "id")
        if isinstance(parsed, ValidationError):
            return None
        container = info.context.container
        row = await q.get_campaign(container.pool, container.settings.database.schema, parsed)
        return Campaign.from_row(row) if row is not None else None


@strawberry.type
class FleetMutation:
    @strawberry.mutation(description="Upload a firmware image, base64-encoded (admin).")
    async def upload_firmware_image(
        self,
        info: ContextInfo,
        identifier: str,
        manufacturer: str,
        model: str,
        image_base64: str,
        idempotency_key: str | None = None,
    ) -> FleetResult:
        try:
            image = base64.b64decode(image_base64, validate=True)
        except (binascii.Error, ValueError):
            return _invalid("imageBase64", "format", "imageBase64 is not base64")
        return await _run(
            info,
            idempotency_key,
            lambda f, c: f.upload_image(image, identifier, manufacturer, model, c),
        )

    @strawberry.mutation(description="Delete a firmware image and its bytes (admin).")
    async def delete_firmware_image(
        self, info: ContextInfo, id: strawberry.ID, idempotency_key: str | None = None
    ) -> FleetResult:
        parsed = _id(id, "id")
        if isinstance(parsed, ValidationError):
            return parsed
        return await _run(info, idempotency_key, lambda f, c: f.delete_image(parsed, c))

    @strawberry.mutation(
        description="Create a tariff plan's TOU plan, or add a version when the calendar changed."
    )
    async def create_tou_plan(
        self,
        info: ContextInfo,
        tariff_plan: str,
        calendar: JSON,
        idempotency_key: str | None = None,
    ) -> FleetResult:
        try:
            value = calendar_of(calendar)
        except ValidationFailed as exc:
            return error_value(exc)
        return await _run(
            info, idempotency_key, lambda f, c: f.save_tou_plan(tariff_plan, value, c)
        )

    @strawberry.mutation(
        description="Start a calendar or load-limit campaign over a cohort resolved now."
    )
    async def start_campaign(
        self, info: ContextInfo, input: StartCampaignInput, idempotency_key: str | None = None
    ) -> FleetResult:
        return await _start(info, input, idempotency_key, firmware=False)

    @strawberry.mutation(
        description="Start a firmware campaign (kind FIRMWARE) over a cohort resolved now (admin)."
    )
    async def start_firmware_campaign(
        self, info: ContextInfo, input: StartCampaignInput, idempotency_key: str | None = None
    ) -> FleetResult:
        return await _start(info, input, idempotency_key, firmware=True)

    @strawberry.mutation(description="Pause a campaign: running meters finish, none starts.")
    async def pause_campaign(
        self, info: ContextInfo, id: strawberry.ID, idempotency_key: str | None = None
    ) -> FleetResult:
        parsed = _id(id, "id")
        if isinstance(parsed, ValidationError):
            return parsed
        return await _run(info, idempotency_key, lambda f, c: f.pause_campaign(parsed, c))

    @strawberry.mutation(description="Resume a paused campaign.")
    async def resume_campaign(
        self, info: ContextInfo, id: strawberry.ID, idempotency_key: str | None = None
    ) -> FleetResult:
        parsed = _id(id, "id")
        if isinstance(parsed, ValidationError):
            return parsed
        return await _run(info, idempotency_key, lambda f, c: f.resume_campaign(parsed, c))

    @strawberry.mutation(description="Cancel a campaign: pending meters are skipped.")
    async def cancel_campaign(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        reason: str,
        idempotency_key: str | None = None,
    ) -> FleetResult:
        parsed = _id(id, "id")
        if isinstance(parsed, ValidationError):
            return parsed
        return await _run(info, idempotency_key, lambda f, c: f.cancel_campaign(parsed, reason, c))


@strawberry.type
class FleetSubscription:
    @strawberry.subscription(
        description="A campaign's progress now and at each change, until it is over (staff)."
    )
    async def campaign_progress(
        self, info: ContextInfo, id: strawberry.ID
    ) -> AsyncGenerator[Campaign, None]:
        parsed = _id(id, "id")
        container = info.context.container
        schema = container.settings.database.schema
        if isinstance(parsed, ValidationError):
            raise GraphQLError(parsed.message, extensions={"code": "BAD_USER_INPUT"})
        seen: tuple[int, int] | None = None
        while True:
            row = await q.get_campaign(container.pool, schema, parsed)
            if row is None:
                raise GraphQLError(f"no campaign with id {id}", extensions={"code": "NOT_FOUND"})
            if (row.version, row.running) != seen:
                seen = (row.version, row.running)
                yield Campaign.from_row(row)
            if row.status in FINISHED and row.running == 0:
                return
            await asyncio.sleep(POLL_S)
