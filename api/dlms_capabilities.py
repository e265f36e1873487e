"""What the head-end knows of a meter's DLMS side, as both APIs show it: its model profile,
the client it talks as, its model's association view, the read plan made from them, the units
the meter reports, and how its collection tasks last ran."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec

from domain.dlms_profile import ModelProfile, ProfileCatalogue
from domain.dlms_units import unit_symbol
from domain.meter_events import MeterEventKind
from domain.read_plan import plan_reads
from projections.dlms_queries import CollectionTaskRow, DlmsQueries


class EventCodesView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Event codes of one kind."""

    kind: MeterEventKind
    codes: list[int]


class PushLayoutView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One push layout: its name, the push setup it starts with, its values."""

    name: str
    setup: str | None
    values: list[str]


class ProfileView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A DLMS model profile as loaded."""

    name: str
    version: str
    description: str
    default: bool
    match_manufacturers: list[str]
    match_models: list[str]
    match_firmware: list[str]
    client_none: int
    client_lls: int
    client_hls: int
    counter_source: str
    counter_object: str | None
    counter_read_by: int
    counter_resync_step: int
    max_pdu: int
    hdlc_max_info: int
    hdlc_window: int
    clock_method: str
    clock_deviation: str
    clock_tolerance_seconds: float
    event_logs: list[str]
    event_table: str
    """``IDIS`` (built in) or ``profile`` (the profile's own codes)."""
    event_codes: list[EventCodesView]
    push_layouts: list[PushLayoutView]

    @classmethod
    def of(cls, profile: ModelProfile, catalogue: ProfileCatalogue) -> ProfileView:
        """View of a loaded profile."""
        by_kind: dict[MeterEventKind, list[int]] = {}
        for code, kind in sorted(catalogue.event_table(profile).items()):
            by_kind.setdefault(kind, []).append(code)
        counter = profile.invocation_counter
        return cls(
            name=profile.name,
            version=profile.version,
            description=profile.description,
            default=profile.name == catalogue.default.name,
            match_manufacturers=list(profile.match.manufacturers),
            match_models=list(profile.match.models),
            match_firmware=list(profile.match.firmware),
            client_none=profile.clients.none,
            client_lls=profile.clients.lls,
            client_hls=profile.clients.hls,
            counter_source=counter.source,
            counter_object=counter.object if counter.source == "object" else None,
            counter_read_by=counter.read_by,
            counter_resync_step=counter.resync_step,
            max_pdu=profile.link.max_pdu,
            hdlc_max_info=profile.link.hdlc_max_info,
            hdlc_window=profile.link.hdlc_window,
            clock_method=profile.clock.method,
            clock_deviation=profile.clock.deviation,
            clock_tolerance_seconds=profile.clock.tolerance_seconds,
            event_logs=list(profile.events.logs),
            event_table="IDIS" if profile.events.kinds is None else "profile",
            event_codes=[EventCodesView(kind=k, codes=c) for k, c in by_kind.items()],
            push_layouts=[
                PushLayoutView(name=p.name, setup=p.setup, values=list(p.values))
                for p in catalogue.push_layouts(profile)
            ],
        )


class AccessView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Access right of one attribute or method."""

    index: int
    mode: int


class ObjectView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One object of the association view."""

    class_id: int
    version: int
    obis: str
    attributes: list[AccessView]
    methods: list[AccessView]


class PlanItemView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One planned attribute or method and whether it is asked for."""

    step: str
    class_id: int
    obis: str
    attribute: int
    method: int
    write: bool
    status: str
    reason: str | None


class RegisterUnitView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A register's scaler and raw unit code as the meter reported them."""

    obis: str
    scaler: int | None
    unit_code: int | None
    unit: str | None
    """The Blue Book name of the unit code (null: not a Blue Book unit)."""
    verified: bool
    note: str | None
    seen_at: datetime


class CapabilitiesView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter's DLMS capabilities and read plan."""

    meter_id: UUID
    serial: str
    manufacturer: str
    model: str
    firmware: str
    profile: ProfileView
    profile_assigned: str | None
    """The profile assigned to the meter (null: chosen by model match or the default)."""
    client_address: int
    client_address_source: str
    """``connection`` (the meter's own) or ``profile``."""
    discovered_at: datetime | None
    discovery_error: str | None
    discovered_from: str | None
    """Serial of the meter whose session read the model's view."""
    association_version: int | None
    objects: list[ObjectView]
    plan: list[PlanItemView]
    register_units: list[RegisterUnitView]
    counter_resyncs: int
    counter_resynced_at: datetime | None
    counter_resync_strategy: str | None


async def capabilities(
    queries: DlmsQueries, catalogue: ProfileCatalogue, meter: UUID
) -> CapabilitiesView | None:
    """The meter's capabilities (None: no such meter)."""
    row = await queries.meter_model(meter)
    if row is None:
        return None
    profile = catalogue.resolve(row.profile, row.manufacturer, row.model, row.firmware)
    own = row.connection.client_address
    client = own if own is not None else profile.clients.for_level(row.connection.security)
    stored = await queries.model_view(row.manufacturer, row.model, row.firmware, client)
    view = stored.view if stored is not None else None
    plan = plan_reads(view, profile, row.phases, client)
    units = await queries.register_units(meter)
    return CapabilitiesView(
        meter_id=row.meter_id,
        serial=row.serial,
        manufacturer=row.manufacturer,
        model=row.model,
        firmware=row.firmware,
        profile=ProfileView.of(profile, catalogue),
        profile_assigned=row.profile,
        client_address=client,
        client_address_source="connection" if own is not None else "profile",
        discovered_at=stored.discovered_at if stored is not None else None,
        discovery_error=stored.error if stored is not None else None,
        discovered_from=stored.serial if stored is not None else None,
        association_version=stored.association_version if stored is not None else None,
        objects=[
            ObjectView(
                class_id=o.class_id,
                version=o.version,
                obis=o.obis,
                attributes=[AccessView(index=a.index, mode=a.mode) for a in o.attributes],
                methods=[AccessView(index=m.index, mode=m.mode) for m in o.methods],
            )
            for o in (view.objects if view is not None else ())
        ],
        plan=[
            PlanItemView(
                step=i.step.value,
                class_id=i.class_id,
                obis=i.obis,
                attribute=i.attribute,
                method=i.method,
                write=i.write,
                status=i.status.value,
                reason=i.reason,
            )
            for i in plan.items
        ],
        register_units=[
            RegisterUnitView(
                obis=u.obis,
                scaler=u.scaler,
                unit_code=u.unit_code,
                unit=unit_symbol(u.unit_code) if u.unit_code is not None else None,
                verified=u.verified,
                note=u.note,
                seen_at=u.seen_at,
            )
            for u in units
        ],
        counter_resyncs=row.counter_resyncs,
        counter_resynced_at=row.counter_resynced_at,
        counter_resync_strategy=row.counter_resync_strategy,
    )


class TaskProblemView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Something a task's last run did not read (or stored flagged), and why."""

    step: str
    obis: str
    reason: str
    stored: bool


class CollectionTaskView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A collection task of a meter and how its last run went."""

    task: str
    status: str | None
    """``OK``, ``PARTIAL`` (see problems) or ``FAILED`` (see lastError); null before a run."""
    next_due: datetime
    running: bool
    """A collector holds the task's lease now."""
    last_run_at: datetime | None
    last_ok_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    problems: list[TaskProblemView]

    @classmethod
    def of(cls, row: CollectionTaskRow) -> CollectionTaskView:
        """View of a task row."""
        return cls(
            task=row.task,
            status=row.last_status,
            next_due=row.next_due,
            running=row.lease_until is not None and row.lease_until > datetime.now(UTC),
            last_run_at=row.last_run_at,
            last_ok_at=row.last_ok_at,
            consecutive_failures=row.failures,
            last_error=row.last_error,
            problems=[
                TaskProblemView(step=p.step, obis=p.obis, reason=p.reason, stored=p.stored)
                for p in row.last_problems or ()
            ],
        )
