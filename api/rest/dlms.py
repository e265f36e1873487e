"""REST endpoints of the DLMS side: remote commands on a meter, their status, meter keys,
communication statistics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

import anyio.to_thread
import msgspec
from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from api.context import RequestContext
from api.dlms_capabilities import (
    CapabilitiesView,
    CollectionTaskView,
    ProfileView,
    capabilities,
)
from api.presenters import present_command
from api.rest.fleet_bodies import LoadLimitBody
from commands.context import CommandContext, Role
from commands.meters import CommandOutcome
from domain.errors import FieldError, Forbidden, NotFound, ValidationFailed
from domain.meter_keys import KeyKind, MeterKeys
from domain.remote_commands import CommandArgs, CommandKind, CommandResult, CommandStatus
from projections.dlms_queries import CommunicationRow, RemoteCommandRow

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="Retrying with the same key never records the command twice.",
    ),
]
WaitSeconds = Annotated[
    float,
    QueryParameter(
        name="waitSeconds",
        ge=0,
        le=60,
        description="Wait up to this long for the meter's outcome (0: answer once recorded).",
    ),
]
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})


class FirmwareUpdateBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The uploaded firmware image to transfer, verify and activate."""

    image_id: UUID
    activate_at: datetime | None = None
    """When the meter activates the image by itself (null: at once)."""


class CalendarBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The TOU plan version to write."""

    tou_plan_id: UUID
    version: int


class ReadBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Quantities to read on demand (OBIS codes or aliases)."""

    quantities: list[str]


class KeysBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Secrets to set; omitted kinds keep their current value. Never echoed back."""

    lls_password: str | None = None
    ek: str | None = None
    ak: str | None = None
    system_title: str | None = None
    confirm: str | None = None
    """``setMeterKeys 1``: key changes are dangerous commands."""


class RemoteCommandView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A remote command and where it stands."""

    id: UUID
    meter_id: UUID
    kind: CommandKind
    quantities: list[str]
    status: CommandStatus
    attempt: int
    requested_by: str
    requested_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    result: CommandResult | None

    @classmethod
    def from_row(cls, row: RemoteCommandRow) -> RemoteCommandView:
        """View of a read-model row."""
        return cls(
            id=row.command_id,
            meter_id=row.meter_id,
            kind=row.kind,
            quantities=list(row.args.quantities),
            status=row.status,
            attempt=row.attempt,
            requested_by=row.requested_by,
            requested_at=row.requested_at,
            sent_at=row.sent_at,
            finished_at=row.finished_at,
            reason=row.reason,
            result=row.result,
        )

    @classmethod
    def from_outcome(cls, outcome: CommandOutcome) -> RemoteCommandView:
        """View of the command as the aggregate holds it (the read model lags)."""
        c = outcome.command
        return cls(
            id=c.id,
            meter_id=outcome.meter.id,
            kind=c.kind,
            quantities=list(c.args.quantities),
            status=c.status,
            attempt=c.attempt,
            requested_by=c.requested_by,
            requested_at=c.requested_at,
            sent_at=None,
            finished_at=None,
            reason=c.reason,
            result=c.result,
        )


class ProfileBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The DLMS model profile to use (null: by model match, else the default)."""

    profile: str | None


class ProfileAssignmentView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The profile assigned and the one the meter uses."""

    meter_id: UUID
    profile: str | None
    effective_profile: str


class KeysView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What setting keys did (never the keys)."""

    meter_id: UUID
    key_version: int
    changed: list[KeyKind]


class CommunicationView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A meter's DLMS session statistics."""

    meter_id: UUID
    attempts: int
    successes: int
    success_rate: float | None
    consecutive_failures: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @classmethod
    def from_row(cls, row: CommunicationRow) -> CommunicationView:
        """View of a statistics row."""
        return cls(
            meter_id=row.meter_id,
            attempts=row.attempts,
            successes=row.successes,
            success_rate=row.success_rate,
            consecutive_failures=row.consecutive_failures,
            last_attempt_at=row.last_attempt_at,
            last_success_at=row.last_success_at,
            last_error=row.last_error,
            last_error_at=row.last_error_at,
        )


async def _request(
    ctx: RequestContext,
    meter_id: UUID,
    key: str | None,
    wait_seconds: float,
    command: Callable[[UUID, CommandContext], CommandOutcome],
) -> RemoteCommandView:
    command_ctx = ctx.command(key)
    outcome = await anyio.to_thread.run_sync(command, meter_id, command_ctx)
    container = ctx.container
    row = await present_command(
        outcome, container.dlms, wait_seconds, container.settings.api.projection_wait_seconds
    )
    return (
        RemoteCommandView.from_outcome(outcome) if row is None else RemoteCommandView.from_row(row)
    )


async def _fleet(
    ctx: RequestContext,
    meter_id: UUID,
    key: str | None,
    wait_seconds: float,
    args: CommandArgs,
) -> RemoteCommandView:
    kind = (
        CommandKind.FIRMWARE_UPDATE
        if args.image_id is not None
        else CommandKind.WRITE_CALENDAR
        if args.tou_plan_id is not None
        else CommandKind.SET_LOAD_LIMIT
    )
    registry = ctx.container.registry
    return await _request(
        ctx,
        meter_id,
        key,
        wait_seconds,
        lambda m, c: registry.request_remote_command(m, kind, args, c),
    )


def _staff(ctx: RequestContext) -> None:
    actor = ctx.actor()
    if actor.roles.isdisjoint(_STAFF):
        raise Forbidden(f"{actor.subject} may not read DLMS data of meters")


class DlmsCommands(Controller):
    """Remote commands on a meter (operator or admin); each answers with the command."""

    path = "/api/v1/commands/meters/{meter_id:uuid}"
    tags = ["meter remote commands (DLMS)"]

    @post("/disconnect", status_code=202, summary="Open the meter's relay")
    async def disconnect(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue a relay disconnect, confirmed by reading the output state back."""
        registry = ctx.container.registry
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(
                m, CommandKind.DISCONNECT, CommandArgs(), c
            ),
        )

    @post("/reconnect", status_code=202, summary="Close the meter's relay")
    async def reconnect(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue a relay reconnect, confirmed by reading the output state back."""
        registry = ctx.container.registry
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(
                m, CommandKind.RECONNECT, CommandArgs(), c
            ),
        )

    @post("/sync-clock", status_code=202, summary="Synchronise the meter's clock")
    async def sync_clock(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue setting the meter's clock to the head-end's UTC time."""
        registry = ctx.container.registry
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(
                m, CommandKind.SYNC_CLOCK, CommandArgs(), c
            ),
        )

    @post("/firmware-update", status_code=202, summary="Update the meter's firmware")
    async def firmware_update(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[FirmwareUpdateBody],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue transferring, verifying and activating an image (admin)."""
        args = CommandArgs(image_id=data.image_id, activate_at=data.activate_at)
        return await _fleet(ctx, meter_id, idempotency_key, wait_seconds, args)

    @post("/calendar", status_code=202, summary="Write a TOU calendar to the meter")
    async def calendar(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[CalendarBody],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue writing a TOU plan version; the meter's read-back must equal it."""
        fleet = ctx.container.fleet
        await anyio.to_thread.run_sync(
            lambda: fleet.tou_plan(data.tou_plan_id).calendar(data.version)
        )
        args = CommandArgs(tou_plan_id=data.tou_plan_id, tou_plan_version=data.version)
        return await _fleet(ctx, meter_id, idempotency_key, wait_seconds, args)

    @post("/load-limit", status_code=202, summary="Set the meter's load limit")
    async def load_limit(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[LoadLimitBody],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue writing the limiter's thresholds; the meter's read-back must equal them."""
        args = CommandArgs(load_limit=data.value())
        return await _fleet(ctx, meter_id, idempotency_key, wait_seconds, args)

    @post("/read", status_code=202, summary="Read quantities on demand")
    async def read(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[ReadBody],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue an on-demand read of the given quantities."""
        registry = ctx.container.registry
        args = CommandArgs(quantities=tuple(data.quantities))
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(m, CommandKind.READ_ON_DEMAND, args, c),
        )

    @post("/discover", status_code=202, summary="Read the meter's association view again")
    async def discover(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Queue a DISCOVER command: the model's objects and access rights are read again."""
        registry = ctx.container.registry
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(m, CommandKind.DISCOVER, CommandArgs(), c),
        )

    @post("/remote-commands/{command_id:uuid}/retry", status_code=202, summary="Retry a command")
    async def retry(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        command_id: FromPath[UUID],
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 0.0,
    ) -> RemoteCommandView:
        """Send a failed remote command again (a new attempt)."""
        registry = ctx.container.registry
        return await _request(
            ctx,
            meter_id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.retry_remote_command(m, command_id, c),
        )


class MeterDlms(Controller):
    """A meter's remote commands, communication statistics and keys."""

    path = "/api/v1/meters/{meter_id:uuid}"
    tags = ["meter remote commands (DLMS)"]

    @get("/remote-commands", summary="A meter's remote commands")
    async def remote_commands(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        first: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> list[RemoteCommandView]:
        """The meter's remote commands, newest first."""
        _staff(ctx)
        rows = await ctx.container.dlms.commands(meter_id, first)
        return [RemoteCommandView.from_row(r) for r in rows]

    @get("/remote-commands/{command_id:uuid}", summary="One remote command")
    async def remote_command(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        command_id: FromPath[UUID],
    ) -> RemoteCommandView:
        """One remote command and its status."""
        _staff(ctx)
        row = await ctx.container.dlms.command(command_id)
        if row is None or row.meter_id != meter_id:
            raise NotFound(f"meter {meter_id} has no remote command {command_id}")
        return RemoteCommandView.from_row(row)

    @get("/communication", summary="DLMS communication statistics")
    async def communication(
        self, ctx: NamedDependency[RequestContext], meter_id: FromPath[UUID]
    ) -> CommunicationView:
        """Attempts, successes, success rate and last error of the meter's sessions."""
        _staff(ctx)
        row = await ctx.container.dlms.communication(meter_id)
        if row is None:
            raise NotFound(f"the head-end has not talked to meter {meter_id} yet")
        return CommunicationView.from_row(row)

    @get("/dlms-capabilities", summary="DLMS profile, association view and read plan")
    async def dlms_capabilities(
        self, ctx: NamedDependency[RequestContext], meter_id: FromPath[UUID]
    ) -> CapabilitiesView:
        """The meter's DLMS profile, client, its model's association view and the read plan."""
        _staff(ctx)
        found = await capabilities(ctx.container.dlms, ctx.container.dlms_profiles, meter_id)
        if found is None:
            raise NotFound(f"no meter with id {meter_id}")
        return found

    @get("/collection", summary="Collection tasks and how each last ran")
    async def collection(
        self, ctx: NamedDependency[RequestContext], meter_id: FromPath[UUID]
    ) -> list[CollectionTaskView]:
        """Each collection task: status (OK, PARTIAL, FAILED), what failed, next run."""
        _staff(ctx)
        rows = await ctx.container.dlms.collection_tasks(meter_id)
        return [CollectionTaskView.of(r) for r in rows]

    @put("/dlms-profile", status_code=200, summary="Choose the meter's DLMS model profile")
    async def set_dlms_profile(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[ProfileBody],
        idempotency_key: IdempotencyKey = None,
    ) -> ProfileAssignmentView:
        """Assign a loaded profile (``null``: chosen by model match, else the default)."""
        command_ctx = ctx.command(idempotency_key)
        catalogue = ctx.container.dlms_profiles
        outcome = await anyio.to_thread.run_sync(
            lambda: ctx.container.registry.assign_dlms_profile(
                meter_id, data.profile, catalogue.names, command_ctx
            )
        )
        spec = outcome.meter.spec
        used = catalogue.resolve(data.profile, spec.manufacturer, spec.model, spec.firmware)
        return ProfileAssignmentView(
            meter_id=meter_id, profile=data.profile, effective_profile=used.name
        )

    @put("/keys", status_code=200, summary="Set the meter's DLMS keys (admin)")
    async def set_keys(
        self,
        ctx: NamedDependency[RequestContext],
        meter_id: FromPath[UUID],
        data: JSONBody[KeysBody],
        idempotency_key: IdempotencyKey = None,
    ) -> KeysView:
        """Store LLS password, EK/AK (suite 0) and system title; answers with the key version."""
        command_ctx = ctx.command(idempotency_key)
        keys = MeterKeys.parse(data.lls_password, data.ek, data.ak)
        title = None
        if data.system_title is not None:
            try:
                title = bytes.fromhex(data.system_title.strip())
            except ValueError:
                title = b""
            if len(title) != 8:
                raise ValidationFailed(
                    [FieldError("systemTitle", "format", "system title must be 16 hex digits")]
                )
        if ctx.dangerous is not None:
            await ctx.dangerous.admit(
                command_ctx.actor,
                "setMeterKeys",
                confirm=data.confirm,
                always=True,
                interface="rest",
            )
        change = await anyio.to_thread.run_sync(
            lambda: ctx.container.meter_keys.set_keys(
                meter_id, keys, command_ctx, system_title=title
            )
        )
        return KeysView(meter_id=meter_id, key_version=change.key_version, changed=change.changed)


class DlmsProfiles(Controller):
    """The DLMS model profiles loaded by the head-end."""

    path = "/api/v1/dlms"
    tags = ["meter remote commands (DLMS)"]

    @get("/profiles", summary="DLMS model profiles")
    async def profiles(self, ctx: NamedDependency[RequestContext]) -> list[ProfileView]:
        """Every loaded profile (built-in and HES_DLMS_PROFILE_DIR), the default marked."""
        _staff(ctx)
        catalogue = ctx.container.dlms_profiles
        return [ProfileView.of(p, catalogue) for p in catalogue.profiles]
