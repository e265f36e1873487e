"""GraphQL for DLMS model profiles and what the head-end knows of a meter's DLMS side: the
profiles loaded, a meter's profile, client, its model's association view and read plan,
how its collection tasks last ran; choosing a meter's profile and refreshing the view."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeAlias
from uuid import UUID

import anyio.to_thread
import strawberry
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.dlms_capabilities import (
    CapabilitiesView,
    CollectionTaskView,
    ProfileView,
    capabilities,
)
from api.graphql.dlms import (
    _WAIT,
    RemoteCommandResult,
    _invalid,
    _readable,
    _request,
    _staff,
    _uuid,
)
from api.graphql.types import CommandError, NotFoundError, error_value
from domain.errors import DomainError
from domain.remote_commands import CommandArgs
from domain.remote_commands import CommandKind as DomainKind

ContextInfo = Info[RequestContext, None]


@strawberry.type(description="Event codes of one kind in a model's event table.")
class DlmsEventCodes:
    kind: str
    codes: list[int]


@strawberry.type(description="A push layout: the values after the device name and clock.")
class DlmsPushLayout:
    name: str
    setup: str | None = strawberry.field(
        description="Logical name of the push setup the body starts with (null: none)."
    )
    values: list[str] = strawberry.field(description="OBIS:scaler:unit per value.")


@strawberry.type(description="A DLMS model profile: per-model knowledge as data.")
class DlmsProfile:
    name: str
    version: str
    description: str
    default: bool = strawberry.field(description="The profile of meters nothing else fits.")
    match_manufacturers: list[str]
    match_models: list[str]
    match_firmware: list[str] = strawberry.field(description="Firmware prefixes.")
    client_none: int
    client_lls: int
    client_hls: int
    counter_source: str = strawberry.field(description="object or persisted.")
    counter_object: str | None
    counter_read_by: int
    counter_resync_step: int
    max_pdu: int
    hdlc_max_info: int
    hdlc_window: int
    clock_method: str = strawberry.field(description="set (attribute 2) or shift (shift_time).")
    clock_deviation: str
    clock_tolerance_seconds: float
    event_logs: list[str]
    event_table: str = strawberry.field(description="IDIS (built in) or profile.")
    event_codes: list[DlmsEventCodes]
    push_layouts: list[DlmsPushLayout]

    @classmethod
    def of(cls, v: ProfileView) -> DlmsProfile:
        """GraphQL view of a profile."""
        return cls(
            name=v.name,
            version=v.version,
            description=v.description,
            default=v.default,
            match_manufacturers=v.match_manufacturers,
            match_models=v.match_models,
            match_firmware=v.match_firmware,
            client_none=v.client_none,
            client_lls=v.client_lls,
            client_hls=v.client_hls,
            counter_source=v.counter_source,
            counter_object=v.counter_object,
            counter_read_by=v.counter_read_by,
            counter_resync_step=v.counter_resync_step,
            max_pdu=v.max_pdu,
            hdlc_max_info=v.hdlc_max_info,
            hdlc_window=v.hdlc_window,
            clock_method=v.clock_method,
            clock_deviation=v.clock_deviation,
            clock_tolerance_seconds=v.clock_tolerance_seconds,
            event_logs=v.event_logs,
            event_table=v.event_table,
            event_codes=[DlmsEventCodes(kind=e.kind.value, codes=e.codes) for e in v.event_codes],
            push_layouts=[
                DlmsPushLayout(name=p.name, setup=p.setup, values=p.values) for p in v.push_layouts
            ],
        )


@strawberry.type(description="Access right of one attribute or method (Blue Book mode).")
class CosemAccess:
    index: int
    mode: int


@strawberry.type(description="One object of a model's association view.")
class CosemObject:
    class_id: int
    version: int
    obis: str
    attributes: list[CosemAccess]
    methods: list[CosemAccess]


@strawberry.type(description="One attribute or method the head-end may use, and whether it will.")
class PlannedRead:
    step: str = strawberry.field(description="registers, profile, events or commands.")
    class_id: int
    obis: str
    attribute: int
    method: int
    write: bool
    status: str = strawberry.field(
        description="READ, UNCHECKED (no view yet: asked), MISSING or DENIED (not asked)."
    )
    reason: str | None


@strawberry.type(description="A register's scaler and raw unit code as the meter reports them.")
class RegisterUnit:
    obis: str
    scaler: int | None
    unit_code: int | None
    unit: str | None = strawberry.field(description="Blue Book name (null: not a Blue Book unit).")
    verified: bool
    note: str | None
    seen_at: datetime


@strawberry.type(description="What the head-end knows of a meter's DLMS side.")
class DlmsCapabilities:
    meter_id: strawberry.ID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    profile: DlmsProfile = strawberry.field(description="The profile the meter uses.")
    profile_assigned: str | None = strawberry.field(
        description="The profile assigned to it (null: by model match, else the default)."
    )
    client_address: int
    client_address_source: str = strawberry.field(description="connection or profile.")
    discovered_at: datetime | None
    discovery_error: str | None
    discovered_from: str | None = strawberry.field(
        description="Serial of the meter whose session read the model's view."
    )
    association_version: int | None
    objects: list[CosemObject]
    plan: list[PlannedRead]
    register_units: list[RegisterUnit]
    counter_resyncs: int
    counter_resynced_at: datetime | None
    counter_resync_strategy: str | None

    @classmethod
    def of(cls, v: CapabilitiesView) -> DlmsCapabilities:
        """GraphQL view of a meter's capabilities."""
        return cls(
            meter_id=strawberry.ID(str(v.meter_id)),
            serial=v.serial,
            manufacturer=v.manufacturer,
            model=v.model,
            firmware=v.firmware,
            profile=DlmsProfile.of(v.profile),
            profile_assigned=v.profile_assigned,
            client_address=v.client_address,
            client_address_source=v.client_address_source,
            discovered_at=v.discovered_at,
            discovery_error=v.discovery_error,
            discovered_from=v.discovered_from,
            association_version=v.association_version,
            objects=[
                CosemObject(
                    class_id=o.class_id,
                    version=o.version,
                    obis=o.obis,
                    attributes=[CosemAccess(index=a.index, mode=a.mode) for a in o.attributes],
                    methods=[CosemAccess(index=m.index, mode=m.mode) for m in o.methods],
                )
                for o in v.objects
            ],
            plan=[
                PlannedRead(
                    step=i.step,
                    class_id=i.class_id,
                    obis=i.obis,
                    attribute=i.attribute,
                    method=i.method,
                    write=i.write,
                    status=i.status,
                    reason=i.reason,
                )
                for i in v.plan
            ],
            register_units=[
                RegisterUnit(
                    obis=u.obis,
                    scaler=u.scaler,
                    unit_code=u.unit_code,
                    unit=u.unit,
                    verified=u.verified,
                    note=u.note,
                    seen_at=u.seen_at,
                )
                for u in v.register_units
            ],
            counter_resyncs=v.counter_resyncs,
            counter_resynced_at=v.counter_resynced_at,
            counter_resync_strategy=v.counter_resync_strategy,
        )


@strawberry.type(description="Something a task's last run did not read (or stored flagged).")
class TaskProblem:
    step: str
    obis: str
    reason: str
    stored: bool = strawberry.field(description="Stored all the same, with a quality flag.")


@strawberry.type(description="A collection task of a meter and how its last run went.")
class CollectionTask:
    task: str
    status: str | None = strawberry.field(description="OK, PARTIAL or FAILED; null before a run.")
    next_due: datetime
    running: bool = strawberry.field(description="A collector holds the task's lease now.")
    last_run_at: datetime | None
    last_ok_at: datetime | None
    consecutive_failures: int = strawberry.field(description="Failed runs since the last success.")
    last_error: str | None
    problems: list[TaskProblem]

    @classmethod
    def of(cls, v: CollectionTaskView) -> CollectionTask:
        """GraphQL view of a task."""
        return cls(
            task=v.task,
            status=v.status,
            next_due=v.next_due,
            running=v.running,
            last_run_at=v.last_run_at,
            last_ok_at=v.last_ok_at,
            consecutive_failures=v.consecutive_failures,
            last_error=v.last_error,
            problems=[
                TaskProblem(step=p.step, obis=p.obis, reason=p.reason, stored=p.stored)
                for p in v.problems
            ],
        )


@strawberry.type(description="The DLMS profile assigned to a meter and the one it uses.")
class DlmsProfileAssignment:
    meter_id: strawberry.ID
    profile: str | None
    effective_profile: str


DlmsProfileAssignmentOrError: TypeAlias = DlmsProfileAssignment | CommandError
DlmsProfileAssignmentResult = Annotated[
    DlmsProfileAssignmentOrError, strawberry.union("DlmsProfileAssignmentResult")
]


async def meter_capabilities(info: ContextInfo, meter: UUID) -> DlmsCapabilities | None:
    """A meter's capabilities for a staff caller (None: no such meter)."""
    _staff(info.context.actor())
    container = info.context.container
    found = await capabilities(container.dlms, container.dlms_profiles, meter)
    return DlmsCapabilities.of(found) if found is not None else None


@strawberry.type
class DlmsProfileQuery:
    @strawberry.field(description="The DLMS model profiles loaded (staff).")
    async def dlms_profiles(self, info: ContextInfo) -> list[DlmsProfile]:
        _staff(info.context.actor())
        catalogue = info.context.container.dlms_profiles
        return [DlmsProfile.of(ProfileView.of(p, catalogue)) for p in catalogue.profiles]

    @strawberry.field(
        description="A meter's DLMS profile, client, association view and read plan (staff)."
    )
    async def dlms_capabilities(
        self, info: ContextInfo, id: strawberry.ID
    ) -> DlmsCapabilities | None:
        return await meter_capabilities(info, _uuid(id, "id"))

    @strawberry.field(description="A meter's collection tasks and how each last ran (staff).")
    async def meter_collection(self, info: ContextInfo, id: strawberry.ID) -> list[CollectionTask]:
        rows = await info.context.container.dlms.collection_tasks(await _readable(info, id))
        return [CollectionTask.of(CollectionTaskView.of(r)) for r in rows]


@strawberry.type
class DlmsProfileMutation:
    @strawberry.mutation(
        description="Choose the meter's DLMS model profile (null: by model match, else default)."
    )
    async def set_meter_dlms_profile(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        profile: Annotated[
            str | None, strawberry.argument(description="A loaded profile's name; null: automatic.")
        ] = None,
        idempotency_key: str | None = None,
    ) -> DlmsProfileAssignmentResult:
        context = info.context
        try:
            meter = UUID(id)
        except ValueError:
            return NotFoundError(message=f"no meter with id {id!r}", code="NOT_FOUND")
        try:
            ctx = context.command(idempotency_key)
        except InvalidHeader as exc:
            return _invalid("idempotencyKey", "format", str(exc))
        catalogue = context.container.dlms_profiles
        try:
            outcome = await anyio.to_thread.run_sync(
                lambda: context.container.registry.assign_dlms_profile(
                    meter, profile, catalogue.names, ctx
                )
            )
        except DomainError as exc:
            return error_value(exc)
        spec = outcome.meter.spec
        used = catalogue.resolve(profile, spec.manufacturer, spec.model, spec.firmware)
        return DlmsProfileAssignment(
            meter_id=strawberry.ID(str(meter)), profile=profile, effective_profile=used.name
        )

    @strawberry.mutation(
        description="Read the meter's association view again (its model's objects and rights)."
    )
    async def refresh_dlms_capabilities(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        registry = info.context.container.registry
        return await _request(
            info,
            id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(m, DomainKind.DISCOVER, CommandArgs(), c),
        )
