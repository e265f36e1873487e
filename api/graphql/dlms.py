"""GraphQL for the DLMS side: remote commands (disconnect, reconnect, clock sync, on-demand
read), their status, meter keys (admin), communication statistics, relay and event-log state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, TypeAlias
from uuid import UUID

import anyio.to_thread
import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.graphql.fleet import LoadLimitInput
from api.graphql.types import (
    CommandError,
    FieldProblem,
    NotFoundError,
    ValidationError,
    error_value,
)
from api.presenters import present_command
from commands.context import Actor, CommandContext, Role
from commands.meters import CommandOutcome
from domain.errors import DomainError, FieldError, ValidationFailed
from domain.meter_keys import KeyKind as DomainKeyKind
from domain.meter_keys import MeterKeys
from domain.profile_ledger import LOAD_PROFILE
from domain.remote_commands import CommandArgs, CommandResult
from domain.remote_commands import CommandKind as DomainKind
from domain.remote_commands import CommandStatus as DomainStatus
from domain.remote_commands import RemoteCommand as DomainCommand
from projections.dlms_queries import (
    CommunicationRow,
    DlmsStateRow,
    LedgerDayRow,
    LogEventRow,
    RemoteCommandRow,
)

ContextInfo = Info[RequestContext, None]
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})
MAX_OUTCOME_WAIT_S = 60.0

RemoteCommandKind = strawberry.enum(DomainKind, name="RemoteCommandKind")
RemoteCommandStatus = strawberry.enum(DomainStatus, name="RemoteCommandStatus")
KeyKind = strawberry.enum(DomainKeyKind, name="KeyKind")


def _staff(actor: Actor) -> None:
    if actor.roles.isdisjoint(_STAFF):
        raise GraphQLError(
            "your roles may not read DLMS data of meters", extensions={"code": "FORBIDDEN"}
        )


def _uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise GraphQLError(
            f"{field}: {value!r} is not a UUID", extensions={"code": "BAD_USER_INPUT"}
        ) from None


@strawberry.type(description="A value read from the meter, scaler applied.")
class ReadValue:
    obis: str
    value: float
    unit: str
    at: datetime
    unverified: bool = strawberry.field(
        description="The meter gave no known unit or scaler: stored as read, flagged."
    )


@strawberry.type(description="A quantity an on-demand read could not store, and why.")
class ReadFailure:
    obis: str
    reason: str


@strawberry.type(description="What the meter read back for a confirmed command.")
class CommandReadBack:
    relay_connected: bool | None = strawberry.field(
        description="Output state after a relay operation (true = supply connected)."
    )
    control_state: int | None = strawberry.field(
        description="0 disconnected, 1 connected, 2 ready for reconnection."
    )
    clock_before: datetime | None
    clock_after: datetime | None
    values: list[ReadValue]
    failures: list[ReadFailure] = strawberry.field(
        description="Quantities of an on-demand read not stored, and why (the others were)."
    )
    objects: int | None = strawberry.field(
        description="Objects in the association view a DISCOVER command read."
    )
    firmware: str | None = strawberry.field(
        description="FIRMWARE_UPDATE: the active firmware identifier read after activation."
    )
    blocks_total: int | None = strawberry.field(description="FIRMWARE_UPDATE: image blocks.")
    blocks_sent: int | None = strawberry.field(
        description="FIRMWARE_UPDATE: blocks this attempt sent (fewer when it resumed)."
    )
    calendar: str | None = strawberry.field(
        description="WRITE_CALENDAR: the calendar name read back."
    )

    @classmethod
    def of(cls, result: CommandResult) -> CommandReadBack:
        """GraphQL view of a command result."""
        return cls(
            relay_connected=result.relay_connected,
            control_state=result.control_state,
            clock_before=result.clock_before,
            clock_after=result.clock_after,
            values=[
                ReadValue(obis=v.obis, value=v.value, unit=v.unit, at=v.at, unverified=v.unverified)
                for v in result.values
            ],
            failures=[ReadFailure(obis=f.obis, reason=f.reason) for f in result.failures],
            objects=result.objects,
            firmware=result.firmware,
            blocks_total=result.blocks_total,
            blocks_sent=result.blocks_sent,
            calendar=result.calendar,
        )


@strawberry.type(
    description="A remote command and where it stands: requested → sent → confirmed | failed."
)
class RemoteCommand:
    id: strawberry.ID
    meter_id: strawberry.ID
    kind: RemoteCommandKind  # type: ignore[valid-type]
    quantities: list[str] = strawberry.field(description="OBIS codes (on-demand reads).")
    status: RemoteCommandStatus  # type: ignore[valid-type]
    attempt: int
    requested_by: str
    requested_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    reason: str | None = strawberry.field(description="Why the last attempt failed.")
    result: CommandReadBack | None

    @classmethod
    def from_row(cls, row: RemoteCommandRow) -> RemoteCommand:
        """GraphQL view of a read-model row."""
        return cls(
            id=strawberry.ID(str(row.command_id)),
            meter_id=strawberry.ID(str(row.meter_id)),
            kind=row.kind,
            quantities=list(row.args.quantities),
            status=row.status,
            attempt=row.attempt,
            requested_by=row.requested_by,
            requested_at=row.requested_at,
            sent_at=row.sent_at,
            finished_at=row.finished_at,
            reason=row.reason,
            result=CommandReadBack.of(row.result) if row.result is not None else None,
        )

    @classmethod
    def from_aggregate(cls, meter: UUID, command: DomainCommand) -> RemoteCommand:
        """GraphQL view of the command as the aggregate holds it (read model lagging)."""
        return cls(
            id=strawberry.ID(str(command.id)),
            meter_id=strawberry.ID(str(meter)),
            kind=command.kind,
            quantities=list(command.args.quantities),
            status=command.status,
            attempt=command.attempt,
            requested_by=command.requested_by,
            requested_at=command.requested_at,
            sent_at=None,
            finished_at=None,
            reason=command.reason,
            result=CommandReadBack.of(command.result) if command.result is not None else None,
        )


@strawberry.type(description="How the head-end's DLMS sessions with a meter went.")
class MeterCommunication:
    meter_id: strawberry.ID
    attempts: int
    successes: int
    failures: int
    success_rate: float | None = strawberry.field(description="successes / attempts (0..1).")
    consecutive_failures: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @classmethod
    def from_row(cls, row: CommunicationRow) -> MeterCommunication:
        """GraphQL view of a statistics row."""
        return cls(
            meter_id=strawberry.ID(str(row.meter_id)),
            attempts=row.attempts,
            successes=row.successes,
            failures=row.attempts - row.successes,
            success_rate=row.success_rate,
            consecutive_failures=row.consecutive_failures,
            last_attempt_at=row.last_attempt_at,
            last_success_at=row.last_success_at,
            last_error=row.last_error,
            last_error_at=row.last_error_at,
        )


@strawberry.type(description="A meter's DLMS state: relay (from read-back), keys, event log.")
class MeterDlmsState:
    meter_id: strawberry.ID
    relay_connected: bool | None
    relay_changed_at: datetime | None
    key_version: int
    keys_changed_at: datetime | None
    events_logged: int
    last_event_at: datetime | None

    @classmethod
    def from_row(cls, row: DlmsStateRow) -> MeterDlmsState:
        """GraphQL view of a state row."""
        return cls(
            meter_id=strawberry.ID(str(row.meter_id)),
            relay_connected=row.relay_connected,
            relay_changed_at=row.relay_changed_at,
            key_version=row.key_version,
            keys_changed_at=row.keys_changed_at,
            events_logged=row.events_logged,
            last_event_at=row.last_event_at,
        )


@strawberry.type(description="An event from a meter's own event log.")
class MeterLogEvent:
    log: str = strawberry.field(description="OBIS code of the event log.")
    at: datetime
    code: int
    kind: str = strawberry.field(description="POWER_DOWN, POWER_UP, TAMPER, RELAY_... or OTHER.")
    recorded_at: datetime

    @classmethod
    def from_row(cls, row: LogEventRow) -> MeterLogEvent:
        """GraphQL view of a logged event."""
        return cls(
            log=row.log, at=row.at, code=row.code, kind=row.kind, recorded_at=row.recorded_at
        )


@strawberry.type(description="One UTC day of a meter's load profile ledger (intervals).")
class LoadProfileDay:
    day: date
    period_seconds: int
    expected: int
    received: int
    absent: int = strawberry.field(description="Asked for, and the meter does not have them.")
    missing: int = strawberry.field(description="Still to be read (caught up by later reads).")

    @classmethod
    def from_row(cls, row: LedgerDayRow) -> LoadProfileDay:
        """GraphQL view of a ledger day."""
        return cls(
            day=row.day,
            period_seconds=row.period_s,
            expected=row.expected,
            received=row.received,
            absent=row.absent,
            missing=row.missing,
        )


@strawberry.type(description="New DLMS secrets were stored (the secrets are never shown).")
class MeterKeysSet:
    meter_id: strawberry.ID
    key_version: int
    changed: list[KeyKind]  # type: ignore[valid-type]


@strawberry.input(description="Secrets to set; omitted kinds keep their current value.")
class MeterKeysInput:
    lls_password: str | None = None
    ek: str | None = strawberry.field(default=None, description="32 hex digits.")
    ak: str | None = strawberry.field(default=None, description="32 hex digits.")
    system_title: str | None = strawberry.field(
        default=None, description="The meter's system title, 16 hex digits (not secret)."
    )


RemoteCommandOrError: TypeAlias = RemoteCommand | CommandError
RemoteCommandResult = Annotated[RemoteCommandOrError, strawberry.union("RemoteCommandResult")]
MeterKeysOrError: TypeAlias = MeterKeysSet | CommandError
MeterKeysResult = Annotated[MeterKeysOrError, strawberry.union("MeterKeysResult")]


def _invalid(field: str, rule: str, message: str) -> ValidationError:
    return ValidationError(
        message=f"invalid input: {field}: {message}",
        code="VALIDATION",
        fields=[FieldProblem(field=field, rule=rule, message=message)],
    )


async def _request(
    info: ContextInfo,
    meter: str,
    idempotency_key: str | None,
    wait_seconds: float,
    command: Callable[[UUID, CommandContext], CommandOutcome],
) -> RemoteCommandOrError:
    context = info.context
    try:
        meter_id = UUID(meter)
    except ValueError:
        return NotFoundError(message=f"no meter with id {meter!r}", code="NOT_FOUND")
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        return _invalid("idempotencyKey", "format", str(exc))
    if not 0 <= wait_seconds <= MAX_OUTCOME_WAIT_S:
        return _invalid("waitSeconds", "range", f"must be between 0 and {MAX_OUTCOME_WAIT_S:g}")
    try:
        outcome = await anyio.to_thread.run_sync(command, meter_id, ctx)
    except DomainError as exc:
        return error_value(exc)
    container = context.container
    row = await present_command(
        outcome, container.dlms, wait_seconds, container.settings.api.projection_wait_seconds
    )
    if row is None:
        return RemoteCommand.from_aggregate(meter_id, outcome.command)
    return RemoteCommand.from_row(row)


async def _fleet_command(
    info: ContextInfo,
    meter: str,
    idempotency_key: str | None,
    wait_seconds: float,
    kind: DomainKind,
    args: CommandArgs,
) -> RemoteCommandOrError:
    registry = info.context.container.registry
    return await _request(
        info,
        meter,
        idempotency_key,
        wait_seconds,
        lambda m, c: registry.request_remote_command(m, kind, args, c),
    )


async def _readable(info: ContextInfo, meter: str) -> UUID:
    actor = info.context.actor()
    _staff(actor)
    return _uuid(meter, "id")


@strawberry.type
class DlmsQuery:
    @strawberry.field(description="A meter's remote commands, newest first (staff).")
    async def remote_commands(
        self, info: ContextInfo, meter_id: strawberry.ID, first: int = 50
    ) -> list[RemoteCommand]:
        meter = await _readable(info, meter_id)
        rows = await info.context.container.dlms.commands(meter, first)
        return [RemoteCommand.from_row(r) for r in rows]

    @strawberry.field(description="One remote command by id (staff).")
    async def remote_command(self, info: ContextInfo, id: strawberry.ID) -> RemoteCommand | None:
        _staff(info.context.actor())
        row = await info.context.container.dlms.command(_uuid(id, "id"))
        return RemoteCommand.from_row(row) if row is not None else None

    @strawberry.field(description="DLMS session statistics of a meter (null before the first).")
    async def meter_communication(
        self, info: ContextInfo, id: strawberry.ID
    ) -> MeterCommunication | None:
        row = await info.context.container.dlms.communication(await _readable(info, id))
        return MeterCommunication.from_row(row) if row is not None else None

    @strawberry.field(
        description="Relay state (confirmed by read-back), key version, event counts."
    )
    async def meter_dlms_state(self, info: ContextInfo, id: strawberry.ID) -> MeterDlmsState | None:
        row = await info.context.container.dlms.state(await _readable(info, id))
        return MeterDlmsState.from_row(row) if row is not None else None

    @strawberry.field(description="Events from the meter's own event logs, newest first.")
    async def meter_log_events(
        self, info: ContextInfo, id: strawberry.ID, first: int = 100
    ) -> list[MeterLogEvent]:
        rows = await info.context.container.dlms.log_events(await _readable(info, id), first)
        return [MeterLogEvent.from_row(r) for r in rows]

    @strawberry.field(description="Load-profile intervals expected, received, absent per day.")
    async def load_profile_ledger(
        self, info: ContextInfo, id: strawberry.ID, days: int = 7
    ) -> list[LoadProfileDay]:
        if not 1 <= days <= 60:
            raise GraphQLError(
                "days: must be between 1 and 60", extensions={"code": "BAD_USER_INPUT"}
            )
        rows = await info.context.container.dlms.ledger(
            await _readable(info, id), LOAD_PROFILE, days
        )
        return [LoadProfileDay.from_row(r) for r in rows]


_WAIT = strawberry.argument(
    description="Wait up to this many seconds for the meter's outcome (0: return once recorded)."
)


@strawberry.type
class DlmsMutation:
    @strawberry.mutation(description="Open the meter's relay (confirmed by reading it back).")
    async def disconnect_meter(
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
            lambda m, c: registry.request_remote_command(
                m, DomainKind.DISCONNECT, CommandArgs(), c
            ),
        )

    @strawberry.mutation(description="Close the meter's relay (confirmed by reading it back).")
    async def reconnect_meter(
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
            lambda m, c: registry.request_remote_command(m, DomainKind.RECONNECT, CommandArgs(), c),
        )

    @strawberry.mutation(description="Set the meter's clock to the head-end's UTC time.")
    async def synchronize_meter_clock(
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
            lambda m, c: registry.request_remote_command(
                m, DomainKind.SYNC_CLOCK, CommandArgs(), c
            ),
        )

    @strawberry.mutation(description="Read chosen quantities (OBIS codes or aliases) now.")
    async def read_meter_on_demand(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        quantities: list[str],
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        registry = info.context.container.registry
        args = CommandArgs(quantities=tuple(quantities))
        return await _request(
            info,
            id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.request_remote_command(m, DomainKind.READ_ON_DEMAND, args, c),
        )

    @strawberry.mutation(
        description="Transfer, verify and activate a firmware image on the meter, then read "
        "its active firmware (admin)."
    )
    async def update_firmware(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        image_id: strawberry.ID,
        activate_at: Annotated[
            datetime | None,
            strawberry.argument(description="The meter activates the image at this time."),
        ] = None,
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        try:
            args = CommandArgs(image_id=UUID(image_id), activate_at=activate_at)
        except ValueError:
            return _invalid("imageId", "format", f"{image_id!r} is not a UUID")
        return await _fleet_command(
            info, id, idempotency_key, wait_seconds, DomainKind.FIRMWARE_UPDATE, args
        )

    @strawberry.mutation(
        description="Write a TOU plan version's calendar and special days; read back to compare."
    )
    async def write_calendar(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        tou_plan_id: strawberry.ID,
        version: int,
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        try:
            args = CommandArgs(tou_plan_id=UUID(tou_plan_id), tou_plan_version=version)
        except ValueError:
            return _invalid("touPlanId", "format", f"{tou_plan_id!r} is not a UUID")
        container = info.context.container
        try:
            await anyio.to_thread.run_sync(
                lambda: container.fleet.tou_plan(UUID(tou_plan_id)).calendar(version)
            )
        except DomainError as exc:
            return error_value(exc)
        return await _fleet_command(
            info, id, idempotency_key, wait_seconds, DomainKind.WRITE_CALENDAR, args
        )

    @strawberry.mutation(description="Write the limiter's thresholds; read back to compare.")
    async def set_load_limit(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        limit: LoadLimitInput,
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        try:
            args = CommandArgs(load_limit=limit.value())
        except DomainError as exc:
            return error_value(exc)
        return await _fleet_command(
            info, id, idempotency_key, wait_seconds, DomainKind.SET_LOAD_LIMIT, args
        )

    @strawberry.mutation(description="Send a failed remote command again (a new attempt).")
    async def retry_remote_command(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        command_id: strawberry.ID,
        idempotency_key: str | None = None,
        wait_seconds: Annotated[float, _WAIT] = 0.0,
    ) -> RemoteCommandResult:
        registry = info.context.container.registry
        try:
            command = UUID(command_id)
        except ValueError:
            return NotFoundError(message=f"no remote command {command_id!r}", code="NOT_FOUND")
        return await _request(
            info,
            id,
            idempotency_key,
            wait_seconds,
            lambda m, c: registry.retry_remote_command(m, command, c),
        )

    @strawberry.mutation(description="Set a meter's LLS password, EK/AK and system title (admin).")
    async def set_meter_keys(
        self,
        info: ContextInfo,
        id: strawberry.ID,
        input: MeterKeysInput,
        confirm: str | None = None,
        idempotency_key: str | None = None,
    ) -> MeterKeysResult:
        context = info.context
        try:
            meter = UUID(id)
        except ValueError:
            return NotFoundError(message=f"no meter with id {id!r}", code="NOT_FOUND")
        try:
            ctx = context.command(idempotency_key)
        except InvalidHeader as exc:
            return _invalid("idempotencyKey", "format", str(exc))
        title: bytes | None = None
        try:
            keys = MeterKeys.parse(input.lls_password, input.ek, input.ak, prefix="input.")
            if input.system_title is not None:
                title = _system_title(input.system_title)
            if context.dangerous is not None:
                await context.dangerous.admit(
                    ctx.actor, "setMeterKeys", confirm=confirm, always=True
                )
            change = await anyio.to_thread.run_sync(
                lambda: context.container.meter_keys.set_keys(meter, keys, ctx, system_title=title)
            )
        except DomainError as exc:
            return error_value(exc)
        return MeterKeysSet(
            meter_id=strawberry.ID(str(meter)),
            key_version=change.key_version,
            changed=change.changed,
        )


def _system_title(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise ValidationFailed(
            [FieldError("input.systemTitle", "format", "system title must be 16 hex digits")]
        )
    return raw
