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
from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.session import AttributeRef, MeterSession, MeterTarget, SessionError
from commands.context import Actor, CommandContext, Role
from commands.meters import MeterRegistry
from domain.collection import Task
from domain.errors import DomainError
from domain.obis import BY_ID
from domain.readings import Source
from domain.remote_commands import CommandArgs, CommandKind, CommandResult, ReadValue

log = logging.getLogger(__name__)

EXECUTOR = Actor(subject="dlms-executor", roles=frozenset({Role.ADMIN}))
CLOCK_TOLERANCE_S = 5.0


class CommandNotEffective(Exception):
    """The meter answered, but reading back shows the command did not take effect."""


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

    async def run(self, stop: asyncio.Event) -> None:
        """Poll for requested commands until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.start_pending()
                await self.fail_stale()
            except Exception:
                log.exception("command executor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=30)

    async def run_once(self) -> int:
        """Start every requested command and wait for them all; return how many ran."""
        started = await self.start_pending()
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

    async def fail_stale(self) -> int:
        """Fail commands left SENT longer than ``stale_after`` (their executor stopped)."""
        query = sql.SQL(
            "SELECT command_id, meter_id FROM {} WHERE status = 'SENT' AND sent_at < %s"
        ).format(self.table)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_after)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, (cutoff,))).fetchall()
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

        async def job(session: MeterSession) -> CommandResult:
            return await self._perform(session, target, command)

        try:
            result = await self.access.run(target, job)
        except SessionError as exc:
            await self._record(
                self.registry.fail_command, command.meter_id, command.command_id, exc.message
            )
            return
        except CommandNotEffective as exc:
            await self._record(
                self.registry.fail_command, command.meter_id, command.command_id, str(exc)
            )
            return
        except Exception as exc:
            log.exception("remote command %s failed unexpectedly", command.command_id)
            await self._record(
                self.registry.fail_command,
                command.meter_id,
                command.command_id,
                f"internal error in the head-end ({type(exc).__name__}); see the server log",
            )
            return
        await self._record(
            self.registry.confirm_command, command.meter_id, command.command_id, result
        )
        if command.kind in (CommandKind.DISCONNECT, CommandKind.RECONNECT):
            # The meter logged the relay change: fetch its event log and registers soon.
            await self.store.make_due(command.meter_id, [Task.EVENTS, Task.REGISTERS])

    async def _perform(
        self, session: MeterSession, target: MeterTarget, command: PendingCommand
    ) -> CommandResult:
        if command.kind is CommandKind.DISCONNECT:
            return await _relay(session, target, DISCONNECT_METHOD, connected=False)
        if command.kind is CommandKind.RECONNECT:
            return await _relay(session, target, RECONNECT_METHOD, connected=True)
        if command.kind is CommandKind.SYNC_CLOCK:
            return await _sync_clock(session, target)
        at, readings = await self.collector.read_registers(
            session, target, list(command.args.quantities)
        )
        await self.collector.outlet.publish(target, readings, Source.DLMS_PULL)
        values = tuple(
            ReadValue(
                obis=BY_ID[r.quantity].obis, value=r.value, unit=BY_ID[r.quantity].unit, at=at
            )
            for r in readings
        )
        return CommandResult(values=values)

    async def _record(self, action: Any, *args: Any) -> bool:
        """Run a registry command as the executor (in a thread); False when it was refused."""
        ctx = CommandContext(actor=EXECUTOR)
        try:
            await asyncio.to_thread(functools.partial(action, *args, ctx))
        except DomainError as exc:
            log.info("remote command %s: %s", args[1] if len(args) > 1 else args, exc.message)
            return False
        return True


async def _relay(
    session: MeterSession, target: MeterTarget, method: int, *, connected: bool
) -> CommandResult:
    await session.invoke(DISCONNECT_CONTROL, DISCONNECTOR, method, 0)
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
        action = "reconnect" if connected else "disconnect"
        raise CommandNotEffective(
            f"meter {target.serial} accepted remote_{action} but reads back output_state "
            f"{'connected' if output else 'disconnected'} (control_state {state})"
        )
    return CommandResult(relay_connected=bool(output), control_state=state)


async def _sync_clock(session: MeterSession, target: MeterTarget) -> CommandResult:
    ref = AttributeRef(CLOCK, CLOCK_OBIS, 2)
    before = as_datetime(await session.get(ref), f"meter {target.serial} clock")
    await session.set_datetime(ref, datetime.now(UTC))
    after = as_datetime(await session.get(ref), f"meter {target.serial} clock")
    off = abs((after - datetime.now(UTC)).total_seconds())
    if off > CLOCK_TOLERANCE_S:
        raise CommandNotEffective(
            f"meter {target.serial} clock reads {after.isoformat()} after setting it, "
            f"{off:.0f} s off the head-end clock"
        )
    return CommandResult(clock_before=before, clock_after=after)
