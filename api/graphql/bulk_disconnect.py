"""Bulk relay disconnect: many meters in one mutation, guarded as a dangerous command.

More than ``HES_DANGEROUS_BULK_THRESHOLD`` meters need ``confirm: "disconnectMeters <n>"`` and
count against the actor's hourly limit of dangerous commands (``api.dangerous``). Each meter
gets its own queued remote command (the same one ``disconnectMeter`` queues); a meter that
cannot take it (unknown, decommissioned...) is reported in its item, the others go ahead.
"""

from __future__ import annotations

from typing import Annotated, TypeAlias
from uuid import UUID

import anyio.to_thread
import strawberry
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.graphql.dlms import RemoteCommand
from api.graphql.types import CommandError, FieldProblem, ValidationError, error_value
from commands.context import CommandContext
from commands.meters import CommandOutcome, MeterRegistry
from domain.errors import DomainError, FieldError, ValidationFailed
from domain.remote_commands import CommandArgs
from domain.remote_commands import CommandKind as DomainKind

ContextInfo = Info[RequestContext, None]
MAX_METERS = 1000


@strawberry.type(description="One meter of a bulk disconnect: its queued command, or why not.")
class BulkDisconnectItem:
    meter_id: strawberry.ID
    command: RemoteCommand | None
    error_code: str | None
    error_message: str | None


@strawberry.type(description="What a bulk disconnect queued, meter by meter, in request order.")
class BulkDisconnect:
    requested: int
    queued: int
    items: list[BulkDisconnectItem]


BulkOrError: TypeAlias = BulkDisconnect | CommandError
BulkDisconnectResult = Annotated[BulkOrError, strawberry.union("BulkDisconnectResult")]


def _meter_ids(ids: list[strawberry.ID]) -> list[UUID]:
    errors: list[FieldError] = []
    if not 1 <= len(ids) <= MAX_METERS:
        errors.append(FieldError("ids", "count", f"give 1 to {MAX_METERS} meter ids"))
    parsed: list[UUID] = []
    for i, value in enumerate(ids[:MAX_METERS]):
        try:
            parsed.append(UUID(value))
        except ValueError:
            errors.append(FieldError(f"ids[{i}]", "format", "must be a meter id (UUID)"))
    if len(set(parsed)) != len(parsed):
        errors.append(FieldError("ids", "unique", "each meter may appear once"))
    if errors:
        raise ValidationFailed(errors)
    return parsed


def _disconnect_all(
    registry: MeterRegistry, meters: list[UUID], ctx: CommandContext
) -> list[CommandOutcome | DomainError]:
    results: list[CommandOutcome | DomainError] = []
    for meter in meters:
        try:
            results.append(
                registry.request_remote_command(meter, DomainKind.DISCONNECT, CommandArgs(), ctx)
            )
        except DomainError as exc:
            results.append(exc)
    return results


@strawberry.type
class BulkDisconnectMutation:
    @strawberry.mutation(
        description=(
            "Open the relays of many meters (at most 1000). Above the configured threshold,"
            ' set confirm to "disconnectMeters <number of ids>"; such bulk disconnects are'
            " limited per operator and hour."
        )
    )
    async def disconnect_meters(
        self,
        info: ContextInfo,
        ids: list[strawberry.ID],
        confirm: str | None = None,
        idempotency_key: str | None = None,
    ) -> BulkDisconnectResult:
        context = info.context
        try:
            ctx = context.command(idempotency_key)
        except InvalidHeader as exc:
            problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
            return ValidationError(message=str(exc), code="VALIDATION", fields=[problem])
        try:
            meters = _meter_ids(ids)
            assert context.dangerous is not None
            await context.dangerous.admit(
                ctx.actor, "disconnectMeters", count=len(meters), confirm=confirm
            )
        except DomainError as exc:
            return error_value(exc)
        registry = context.container.registry
        results = await anyio.to_thread.run_sync(lambda: _disconnect_all(registry, meters, ctx))
        items = [
            BulkDisconnectItem(
                meter_id=strawberry.ID(str(meter)),
                command=None
                if isinstance(result, DomainError)
                else RemoteCommand.from_aggregate(meter, result.command),
                error_code=result.code if isinstance(result, DomainError) else None,
                error_message=result.message if isinstance(result, DomainError) else None,
            )
            for meter, result in zip(meters, results, strict=True)
        ]
        queued = sum(1 for item in items if item.command is not None)
        return BulkDisconnect(requested=len(meters), queued=queued, items=items)
