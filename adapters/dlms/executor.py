"""The remote-command executor: takes requested commands from the ``remote_commands`` read
model, runs them on the meter and records sent → confirmed | failed on the Meter aggregate.

The aggregate is the arbiter: a command is sent only after ``RemoteCommandSent`` was saved
(a second executor, or a second look at a lagging read model, gets a conflict and skips it).
A command left SENT by an executor that died is failed after ``stale_after`` seconds with a
reason saying its outcome is unknown; it can then be retried (relay operations and clock
setting are idempotent on the meter).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from adapters.dlms.collection_store import CollectionStore
from adapters.dlms.collector import Collector, as_datetime
from adapters.dlms.cosem import (
    CLOCK,
    CLOCK_OBIS,
    CONTROL_STATE,
    DISCONNECT_CONTROL,
    DISCONNECT_METHOD,
    DISCONNECTOR,
    OUTPUT_STATE,
    RECONNECT_METHOD,
)
from adapters.dlms.fleet_device import FleetDevice, failed_step
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.session import AttributeRef, MeterSession, MeterTarget, SessionError
from commands.context import Actor, CommandContext, Role
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from domain.collection import Task
from domain.dlms_profile import ModelProfile
from domain.errors import DomainError
from domain.obis import BY_ID
from domain.read_back import differing_fields
from domain.read_plan import ReadPlan
from domain.readings import Quality, Source
from domain.remote_commands import (
    CommandArgs,
    CommandKind,
    CommandResult,
    FirmwareStep,
    ReadFailure,
    ReadValue,
)

log = logging.getLogger(__name__)

EXECUTOR = Actor(subject="dlms-executor", roles=frozenset({Role.ADMIN}))
SHIFT_TIME = 6
"""Clock (class 8) method shift_time(long seconds)."""


class CommandNotEffective(Exception):
    """The meter answered, but reading back shows the command did not take effect."""


class AwaitingActivation(Exception):
    """The image is verified and the meter activates it at the scheduled time: the command
    stays SENT until ``confirm_activations`` reads the meter's firmware after that time."""


class PendingCommand(msgspec.Struct, frozen=True):
    """A command row waiting for the executor."""

    command_id: UUID
    meter_id: UUID
    kind: CommandKind
    args: CommandArgs
    attempt: int


class CommandExecutor:
    """Runs requested remote commands, a few at a time, each meter one session at a time."""

    def __init__(
        self,
        access: MeterAccess,
        collector: Collector,
        registry: MeterRegistry,
        store: CollectionStore,
        pool: AsyncConnectionPool[Any],
        schema: str,
        *,
        poll_seconds: float = 0.5,
        stale_after: float = 300.0,
        activation_grace: float = 2.0,
        fleet: FleetOperations | None = None,
        device: FleetDevice | None = None,
    ) -> None:
        self.access = access
        self.collector = collector
        self.registry = registry
        self.store = store
        self.pool = pool
        self.table = sql.Identifier(schema, "remote_commands")
        self.poll = poll_seconds
        self.stale_after = stale_after
        self._in_flight: dict[UUID, asyncio.Task[None]] = {}
        self.fleet = fleet
        self.device = device
        self.activation_grace = activation_grace
        """Seconds after a scheduled activation before its confirmation is read (clock skew)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll for requested commands until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.start_pending()
                await self.confirm_activations()
                await self.fail_stale()
            except Exception:
                log.exception("command executor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=30)

    async def run_once(self) -> int:
        """Start every requested command and wait for them all; return how many ran."""
        started = await self.start_pending() + await self.confirm_activations()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()))
        return started

    async def start_pending(self) -> int:
        """Start the requested commands not already running here."""
        query = sql.SQL(
            "SELECT command_id, meter_id, kind, args, attempt FROM {} WHERE status = 'REQUESTED' "
            "ORDER BY updated_at LIMIT 200"
        ).format(self.table)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query)).fetchall()
        started = 0
        for row in rows:
            command = msgspec.convert(
                dict(zip(("command_id", "meter_id", "kind", "args", "attempt"), row, strict=True)),
                PendingCommand,
            )
            if command.command_id in self._in_flight:
                continue
            task = asyncio.create_task(self.execute(command))
            self._in_flight[command.command_id] = task
            task.add_done_callback(self._forget)
            started += 1
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        for command_id, running in list(self._in_flight.items()):
            if running is task:
                del self._in_flight[command_id]

    async def confirm_activations(self) -> int:
        """Start confirming firmware updates whose scheduled activation time has passed."""
        query = sql.SQL(
            "SELECT command_id, meter_id, kind, args, attempt FROM {} WHERE status = 'SENT' "
            "AND kind = 'FIRMWARE_UPDATE' AND firmware_step = 'ACTIVATION_SCHEDULED' "
            "AND (args->>'activate_at')::timestamptz <= %s ORDER BY updated_at LIMIT 200"
        ).format(self.table)
        due = datetime.now(UTC) - timedelta(seconds=self.activation_grace)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (due,))).fetchall()
        started = 0
        for row in rows:
            command = msgspec.convert(
                dict(zip(("command_id", "meter_id", "kind", "args", "attempt"), row, strict=True)),
                PendingCommand,
            )
            if command.command_id in self._in_flight:
                continue
            task = asyncio.create_task(self.confirm_activation(command))
            self._in_flight[command.command_id] = task
            task.add_done_callback(self._forget)
            started += 1
        return started

    async def confirm_activation(self, command: PendingCommand) -> None:
        """Read the firmware a meter runs after its scheduled activation; confirm or fail."""
        fleet, device = self._fleet()
        assert command.args.image_id is not None and command.args.activate_at is not None
        image = await asyncio.to_thread(fleet.image, command.args.image_id)
        target = (await self.store.targets([command.meter_id])).get(command.meter_id)
        if target is None:
            await self._record(
                self.registry.fail_command,
                command.meter_id,
                command.command_id,
                "meter is decommissioned or no longer in the registry",
            )
            return
        try:
            firmware = await self.access.run(target, device.active_firmware)
        except SessionError as exc:
            # The meter is unreachable now: the next round asks again (until stale).
            log.info("meter %s: activation not confirmed yet: %s", target.serial, exc.message)
            return
        at = command.args.activate_at.isoformat()
        if firmware != image.spec.identifier:
            await self._firmware_step_failed(command, "scheduled activation", None)
            await self._record(
                self.registry.fail_command,
                command.meter_id,
                command.command_id,
                f"meter {target.serial} runs firmware {firmware!r} after the activation "
                f"scheduled at {at}, not the image's {image.spec.identifier!r}",
            )
            return
        await self._step(command, FirmwareStep.ACTIVATED, 0, 0)
        await self._record(
            self.registry.confirm_command,
            command.meter_id,
            command.command_id,
            CommandResult(firmware=firmware),
        )

    async def fail_stale(self) -> int:
        """Fail commands left SENT longer than ``stale_after`` (their executor stopped); a
        firmware update awaiting a scheduled activation counts from its activation time."""
        query = sql.SQL(
            "SELECT command_id, meter_id FROM {} WHERE status = 'SENT' AND sent_at < %(cutoff)s "
            "AND COALESCE((args->>'activate_at')::timestamptz, '-infinity') < %(cutoff)s"
        ).format(self.table)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_after)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, {"cutoff": cutoff})).fetchall()
        failed = 0
        for command_id, meter_id in rows:
            if command_id in self._in_flight:
                continue
            reason = (
                f"no outcome recorded within {self.stale_after:g} s of sending: the executor "
                "stopped mid-command; the meter may or may not have acted — retry to be sure"
            )
            if await self._record(self.registry.fail_command, meter_id, command_id, reason):
                failed += 1
        return failed

    async def execute(self, command: PendingCommand) -> None:
        """Send one command and record its outcome."""
        if not await self._record(
            self.registry.mark_command_sent, command.meter_id, command.command_id
        ):
            return  # not REQUESTED any more: another executor took it, or it was handled
        target = (await self.store.targets([command.meter_id])).get(command.meter_id)
        if target is None:
            await self._record(
                self.registry.fail_command,
                command.meter_id,
                command.command_id,
                "meter is decommissioned or no longer in the registry",
            )
            return

        step = _Step(f"{command.kind} on meter {target.serial}")

        async def job(session: MeterSession) -> CommandResult:
            return await self._perform(session, target, command, step)

        try:
            result = await self.access.run(target, job)
        except AwaitingActivation:
            return  # confirmed (or failed) by confirm_activations after the scheduled time
        except SessionError as exc:
            reason = exc.message
            if command.kind is CommandKind.FIRMWARE_UPDATE:
                reason = await self._firmware_failed(command, step, exc)
            await self._record(
                self.registry.fail_command, command.meter_id, command.command_id, reason
            )
            return
        except CommandNotEffective as exc:
            reason = str(exc)
            if command.kind is CommandKind.FIRMWARE_UPDATE:
                await self._firmware_step_failed(command, step.name, None)
            await self._record(
                self.registry.fail_command, command.meter_id, command.command_id, reason
            )
            return
        except Exception as exc:
            log.exception("remote command %s failed unexpectedly", command.command_id)
            await self._record(
                self.registry.fail_command,
                command.meter_id,
                command.command_id,
                f"meter {target.serial}, {command.kind}, step {step.name}: internal error in the "
                f"head-end ({type(exc).__name__}: {exc}); see the server log",
            )
            return
        await self._record(
            self.registry.confirm_command, command.meter_id, command.command_id, result
        )
        if command.kind in (CommandKind.DISCONNECT, CommandKind.RECONNECT):
            # The meter logged the relay change: fetch its event log and registers soon.
            await self.store.make_due(command.meter_id, [Task.EVENTS, Task.REGISTERS])

    async def _perform(
        self, session: MeterSession, target: MeterTarget, command: PendingCommand, step: _Step
    ) -> CommandResult:
        if command.kind is CommandKind.FIRMWARE_UPDATE:
            return await self._firmware_update(session, target, command, step)
        if command.kind is CommandKind.WRITE_CALENDAR:
            return await self._write_calendar(session, target, command, step)
        if command.kind is CommandKind.SET_LOAD_LIMIT:
            return await self._set_load_limit(session, target, command, step)
        if command.kind is CommandKind.DISCOVER:
            step.name = "read association view"
            stored = await self.collector.discover(session, target)
            if stored.view is None:
                raise CommandNotEffective(
                    f"meter {target.serial}: association view not read: {stored.error}"
                )
            return CommandResult(objects=len(stored.view.objects))
        plan = await self.collector.plan_for(target)
        if command.kind is CommandKind.DISCONNECT:
            return await _relay(session, target, plan, DISCONNECT_METHOD, False, step)
        if command.kind is CommandKind.RECONNECT:
            return await _relay(session, target, plan, RECONNECT_METHOD, True, step)
        if command.kind is CommandKind.SYNC_CLOCK:
            return await _sync_clock(session, target, self.access.profile_of(target), step)
        step.name = "read registers"
        read = await self.collector.read_registers(
            session, target, list(command.args.quantities), plan
        )
        failures = tuple(
            ReadFailure(obis=p.obis, reason=p.reason) for p in read.problems if not p.stored
        )
        if not read.readings:
            raise CommandNotEffective(
                f"meter {target.serial}: no quantity could be read: "
                + "; ".join(f"{f.obis}: {f.reason}" for f in failures)
            )
        step.name = "publish readings"
        await self.collector.outlet.publish(target, read.readings, Source.DLMS_PULL)
        values = tuple(
            ReadValue(
                obis=BY_ID[r.quantity].obis,
                value=r.value,
                unit=BY_ID[r.quantity].unit,
                at=read.at,
                unverified=bool(r.quality & Quality.UNIT_UNVERIFIED),
            )
            for r in read.readings
        )
        return CommandResult(values=values, failures=failures)

    def _fleet(self) -> tuple[FleetOperations, FleetDevice]:
        if self.fleet is None or self.device is None:
            raise CommandNotEffective("this executor runs no fleet operations (not configured)")
        return self.fleet, self.device

    async def _firmware_update(
        self, session: MeterSession, target: MeterTarget, command: PendingCommand, step: _Step
    ) -> CommandResult:
        fleet, device = self._fleet()
        assert command.args.image_id is not None
        step.name = "load the firmware image"
        spec, image = await asyncio.to_thread(fleet.image_bytes, command.args.image_id)
        if (spec.manufacturer, spec.model) != (target.manufacturer, target.model):
            raise CommandNotEffective(
                f"meter {target.serial} is a {target.manufacturer} {target.model}; image "
                f"{spec.identifier} is for {spec.manufacturer} {spec.model}"
            )
        milestones = step.milestones

        async def on_block(done: int, total: int) -> None:
            tenth = done * 10 // total if total else 0
            if tenth > milestones[-1] and tenth < 10:
                milestones.append(tenth)
                await self._step(command, FirmwareStep.PROGRESS, done, total)

        step.name = "image transfer"
        await self._step(command, FirmwareStep.TRANSFER_STARTED, 0, 0)
        outcome = await device.transfer_image(session, spec.identifier, image, on_block=on_block)
        total = outcome.blocks_total
        await self._step(command, FirmwareStep.TRANSFERRED, total, total)
        step.name = "image verify"
        await device.verify_image(session)
        await self._step(command, FirmwareStep.VERIFIED, total, total)
        activate_at = command.args.activate_at
        if activate_at is not None and activate_at > datetime.now(UTC):
            step.name = "schedule image activation"
            await device.schedule_activation(session, activate_at)
            await self._step(command, FirmwareStep.ACTIVATION_SCHEDULED, total, total)
            raise AwaitingActivation(activate_at.isoformat())
        step.name = "image activate"
        await device.activate_image(session)
        await self._step(command, FirmwareStep.ACTIVATED, total, total)
        step.name = "read active firmware identifier"
        firmware = await device.active_firmware(session)
        if firmware != spec.identifier:
            raise CommandNotEffective(
                f"meter {target.serial} runs firmware {firmware!r} after activation, "
                f"not the image's {spec.identifier!r}"
            )
        return CommandResult(firmware=firmware, blocks_total=total, blocks_sent=outcome.blocks_sent)

    async def _step(
        self, command: PendingCommand, step: FirmwareStep, done: int, total: int
    ) -> None:
        await self._record_kw(
            self.registry.record_firmware_step,
            command.meter_id,
            command.command_id,
            step,
            done,
            total,
        )

    async def _firmware_failed(
        self, command: PendingCommand, step: _Step, exc: SessionError
    ) -> str:
        name, code = failed_step(exc)
        name = name or step.name
        await self._firmware_step_failed(command, name, code)
        where = f"firmware update failed at step {name}"
        if code is not None:
            where += f" with meter result code {code}"
        return f"{where}: {exc.message}"

    async def _firmware_step_failed(
        self, command: PendingCommand, name: str, code: int | None
    ) -> None:
        await self._record_kw(
            self.registry.record_firmware_step,
            command.meter_id,
            command.command_id,
            FirmwareStep.FAILED,
            0,
            0,
            failed_step=name,
            result_code=code,
        )

    async def _write_calendar(
        self, session: MeterSession, target: MeterTarget, command: PendingCommand, step: _Step
    ) -> CommandResult:
        fleet, device = self._fleet()
        plan_id, version = command.args.tou_plan_id, command.args.tou_plan_version
        assert plan_id is not None and version is not None
        step.name = "load the TOU plan"
        plan = await asyncio.to_thread(fleet.tou_plan, plan_id)
        calendar = plan.calendar(version)
        step.name = "write activity calendar and special days"
        await device.write_calendar(session, calendar)
        step.name = "read back the passive calendar"
        back = await device.read_calendar(session)
        differs = differing_fields(device.expected_calendar(calendar), back)
        if differs:
            raise CommandNotEffective(
                f"meter {target.serial} reads back a calendar that differs in "
                + ", ".join(differs[:12])
                + (f" and {len(differs) - 12} more" if len(differs) > 12 else "")
            )
        return CommandResult(calendar=back.name)

    async def _set_load_limit(
        self, session: MeterSession, target: MeterTarget, command: PendingCommand, step: _Step
    ) -> CommandResult:
        _, device = self._fleet()
        limit = command.args.load_limit
        assert limit is not None
        step.name = "write limiter thresholds"
        await device.write_load_limit(session, limit)
        step.name = "read back the limiter"
        back = await device.read_load_limit(session)
        differs = differing_fields(device.expected_load_limit(limit), back)
        if differs:
            raise CommandNotEffective(
                f"meter {target.serial} reads back a load limit that differs in "
                + ", ".join(differs)
            )
        return CommandResult(load_limit=back)

    async def _record_kw(self, action: Any, *args: Any, **kwargs: Any) -> bool:
        """Like ``_record``, with keyword arguments after the context."""
        ctx = CommandContext(actor=EXECUTOR)
        try:
            await asyncio.to_thread(functools.partial(action, *args, ctx, **kwargs))
        except DomainError as exc:
            log.info("remote command %s: %s", args[1] if len(args) > 1 else args, exc.message)
            return False
        return True

    async def _record(self, action: Any, *args: Any) -> bool:
        """Run a registry command as the executor (in a thread); False when it was refused."""
        ctx = CommandContext(actor=EXECUTOR)
        try:
            await asyncio.to_thread(functools.partial(action, *args, ctx))
        except DomainError as exc:
            log.info("remote command %s: %s", args[1] if len(args) > 1 else args, exc.message)
            return False
        return True


class _Step:
    """The step a command is at, for error messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.milestones = [0]
        """Tenths of a firmware image already recorded as progress (across session retries)."""


def _refused_by_plan(target: MeterTarget, plan: ReadPlan, obis: str, **where: int) -> None:
    """Fail before asking when the model's association view says the client may not."""
    item = plan.item(obis, **where)
    if item is not None and not item.asked:
        raise CommandNotEffective(
            f"meter {target.serial}: {item.target} is {item.status.value.lower()} for "
            f"client {plan.client}: {item.reason}"
        )


async def _relay(
    session: MeterSession,
    target: MeterTarget,
    plan: ReadPlan,
    method: int,
    connected: bool,
    step: _Step,
) -> CommandResult:
    _refused_by_plan(target, plan, DISCONNECTOR, method=method)
    action = "reconnect" if connected else "disconnect"
    step.name = f"remote_{action} (ACTION {DISCONNECTOR} method {method})"
    await session.invoke(DISCONNECT_CONTROL, DISCONNECTOR, method, 0)
    step.name = f"read back {DISCONNECTOR} output_state and control_state"
    output, control = await session.get_many(
        [
            AttributeRef(DISCONNECT_CONTROL, DISCONNECTOR, OUTPUT_STATE),
            AttributeRef(DISCONNECT_CONTROL, DISCONNECTOR, CONTROL_STATE),
        ]
    )
    if isinstance(output, SessionError):
        raise output
    if not isinstance(output, bool | int):
        raise CommandNotEffective(f"meter {target.serial} output_state is not a boolean")
    state = control if isinstance(control, int) and not isinstance(control, bool) else None
    if bool(output) is not connected:
        raise CommandNotEffective(
            f"meter {target.serial} accepted remote_{action} but reads back output_state "
            f"{'connected' if output else 'disconnected'} (control_state {state})"
        )
    return CommandResult(relay_connected=bool(output), control_state=state)


async def _sync_clock(
    session: MeterSession, target: MeterTarget, profile: ModelProfile, step: _Step
) -> CommandResult:
    ref = AttributeRef(CLOCK, CLOCK_OBIS, 2)
    quirks = profile.clock
    step.name = f"read clock {CLOCK_OBIS}"
    before = as_datetime(await session.get(ref), f"meter {target.serial} clock")
    offset = (datetime.now(UTC) - before).total_seconds()
    if quirks.method == "shift" and abs(offset) <= quirks.max_shift_seconds:
        step.name = f"shift_time (ACTION {CLOCK_OBIS} method {SHIFT_TIME}) by {offset:.0f} s"
        await session.invoke(CLOCK, CLOCK_OBIS, SHIFT_TIME, round(offset), long=True)
    else:
        step.name = f"SET clock {CLOCK_OBIS} attribute 2"
        await session.set_datetime(
            ref, datetime.now(UTC), deviation_unspecified=quirks.deviation == "unspecified"
        )
    # Read back only after the meter answered success (a failed result raised above).
    step.name = f"read back clock {CLOCK_OBIS}"
    after = as_datetime(await session.get(ref), f"meter {target.serial} clock")
    off = abs((after - datetime.now(UTC)).total_seconds())
    if off > quirks.tolerance_seconds:
        raise CommandNotEffective(
            f"meter {target.serial} clock reads {after.isoformat()} after setting it, "
            f"{off:.0f} s off the head-end clock"
        )
    return CommandResult(clock_before=before, clock_after=after)
