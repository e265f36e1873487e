"""The Meter aggregate: a meter's registration and lifecycle, as immutable events."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from msgspec.structs import replace

from domain.dlms_profile import NAME_RE as PROFILE_NAME_RE
from domain.errors import Collector, Conflict, FieldError, NotFound, ValidationFailed
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.meter_events import LogEntry, LogMemory, MeterEventKind, event_kind, new_entries
from domain.meter_keys import KeyKind
from domain.remote_commands import (
    MAX_KEPT_COMMANDS,
    PENDING,
    RELAY_KINDS,
    CommandArgs,
    CommandKind,
    CommandResult,
    CommandStatus,
    FirmwareStep,
    RemoteCommand,
    check_reason,
    ensure_status,
)
from domain.text import check_text
from domain.values import (
    ConnectionProfile,
    Location,
    MeterSpec,
    MeterStatus,
    check_account,
)

METER_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:meter")


def meter_id(serial: str) -> UUID:
    """Deterministic aggregate id of the meter with this serial number (case-insensitive)."""
    return uuid5(METER_NAMESPACE, serial.strip().upper())


class Meter(Aggregate, RemembersCommands):
    """A physical meter known to the head-end, from registration to decommissioning."""

    class Registered(Aggregate.Created):
        """A meter entered the registry."""

        spec: MeterSpec
        meta: EventMeta

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v2: the client address may be null (the DLMS profile's); v1 states stay valid."""

    class Commissioned(Aggregate.Event):
        """The meter was installed at a location, optionally for a customer."""

        location: Location
        customer_account: str | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter installed."""
            aggregate.status = MeterStatus.COMMISSIONED
            aggregate.location = self.location
            aggregate.commissioned_at = self.timestamp
            if self.customer_account is not None:
                aggregate.customer_account = self.customer_account
            aggregate.remember(self.meta)

    class CustomerAssigned(Aggregate.Event):
        """The meter now supplies this customer account."""

        customer_account: str
        previous: str | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Point the meter at its new customer."""
            aggregate.customer_account = self.customer_account
            aggregate.remember(self.meta)

    class CustomerUnassigned(Aggregate.Event):
        """The meter no longer supplies a customer account."""

        previous: str
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Clear the meter's customer."""
            aggregate.customer_account = None
            aggregate.remember(self.meta)

    class ConnectionProfileChanged(Aggregate.Event):
        """The head-end reaches the meter differently from now on."""

        connection: ConnectionProfile
        meta: EventMeta

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v2: the client address may be null (the DLMS profile's); v1 states stay valid."""

        def apply(self, aggregate: Any) -> None:
            """Replace the meter's connection profile."""
            aggregate.spec = replace(aggregate.spec, connection=self.connection)
            aggregate.remember(self.meta)

    class Decommissioned(Aggregate.Event):
        """The meter left service for good."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the meter out of service."""
            aggregate.status = MeterStatus.DECOMMISSIONED
            aggregate.decommission_reason = self.reason
            aggregate.decommissioned_at = self.timestamp
            aggregate.remember(self.meta)

    class RemoteCommandRequested(Aggregate.Event):
        """Someone asked the head-end to run a command on the meter (disconnect, read...)."""

        command_id: UUID
        kind: CommandKind
        args: CommandArgs
        meta: EventMeta

        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """v2: the kind may be DISCOVER; v1 states stay valid."""

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """v3: fleet kinds (firmware, calendar, load limit) and their arguments; v2 valid."""

        def apply(self, aggregate: Any) -> None:
            """Add the command, waiting to be sent."""
            aggregate.remote_commands[self.command_id] = RemoteCommand(
                id=self.command_id,
                kind=self.kind,
                args=self.args,
                status=CommandStatus.REQUESTED,
                attempt=1,
                requested_at=self.timestamp,
                requested_by=self.meta.actor,
                updated_at=self.timestamp,
            )
            aggregate.remember(self.meta)

    class RemoteCommandSent(Aggregate.Event):
        """The head-end sent the command to the meter (attempt ``attempt``)."""

        command_id: UUID
        attempt: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Mark the command in flight."""
            command = aggregate.remote_commands[self.command_id]
            command.status = CommandStatus.SENT
            command.attempt = self.attempt
            command.updated_at = self.timestamp
            aggregate.remember(self.meta)

    class RemoteCommandConfirmed(Aggregate.Event):
        """The meter carried the command out; ``result`` holds what it read back."""

        command_id: UUID
        result: CommandResult
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Close the command; a relay operation also sets the relay state read back."""
            command = aggregate.remote_commands[self.command_id]
            command.status = CommandStatus.CONFIRMED
            command.result = self.result
            command.reason = None
            command.updated_at = self.timestamp
            if command.kind in RELAY_KINDS and self.result.relay_connected is not None:
                aggregate.relay_connected = self.result.relay_connected
                aggregate.relay_changed_at = self.timestamp
            aggregate.forget_finished_commands()
            aggregate.remember(self.meta)

    class RemoteCommandFailed(Aggregate.Event):
        """The command's attempt failed (unreachable meter, refusal, wrong read-back...)."""

        command_id: UUID
        reason: str
        attempt: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Close the attempt as failed; the command may be retried."""
            command = aggregate.remote_commands[self.command_id]
            command.status = CommandStatus.FAILED
            command.reason = self.reason
            command.attempt = self.attempt
            command.updated_at = self.timestamp
            aggregate.forget_finished_commands()
            aggregate.remember(self.meta)

    class RemoteCommandRetried(Aggregate.Event):
        """A failed command was requested again: attempt ``attempt`` waits to be sent."""

        command_id: UUID
        attempt: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Put the command back in the queue with a new attempt number."""
            command = aggregate.remote_commands[self.command_id]
            command.status = CommandStatus.REQUESTED
            command.attempt = self.attempt
            command.reason = None
            command.updated_at = self.timestamp
            aggregate.remember(self.meta)

    class FirmwareUpdateStepped(Aggregate.Event):
        """A firmware update reached a step (transfer started, 10 % more, verified...)."""

        command_id: UUID
        step: FirmwareStep
        blocks_done: int
        blocks_total: int
        failed_step: str | None
        result_code: int | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Remember the command's step (its status moves with its own events)."""
            command = aggregate.remote_commands.get(self.command_id)
            if command is not None:
                command.firmware_step = self.step
            aggregate.remember(self.meta)

    class FirmwareChanged(Aggregate.Event):
        """The meter runs other firmware, read back after a firmware update's activation."""

        firmware: str
        previous: str
        command_id: UUID
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Update the meter's firmware identifier."""
            aggregate.spec = replace(aggregate.spec, firmware=self.firmware)
            aggregate.remember(self.meta)

    class MeterEventLogged(Aggregate.Event):
        """The meter's event log recorded an event (power failure, tamper, relay change...)."""

        log: str
        code: int
        kind: MeterEventKind
        at: datetime
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Remember the entry so that it is recorded once."""
            entry = LogEntry(log=self.log, code=self.code, at=self.at)
            aggregate.event_logs.setdefault(self.log, LogMemory()).remember(entry)
            aggregate.remember(self.meta)

    class SecurityKeysChanged(Aggregate.Event):
        """New DLMS secrets of these kinds were stored for the meter (never the secrets)."""

        kinds: tuple[KeyKind, ...]
        key_version: int
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Move the meter to its new key version."""
            aggregate.key_version = self.key_version
            aggregate.remember(self.meta)

    class DlmsProfileAssigned(Aggregate.Event):
        """The meter uses this DLMS model profile from now on (None: matched or default)."""

        profile: str | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Remember the meter's profile."""
            aggregate.dlms_profile = self.profile
            aggregate.remember(self.meta)

    class InvocationCounterResynchronised(Aggregate.Event):
        """The meter rejected the head-end's invocation counter; the head-end moved it on.

        ``strategy`` is ``object`` (read the meter's counter object again), ``meter-hint``
        (the least counter the meter named) or ``step`` (a bounded forward jump).
        """

        key_version: int
        strategy: str
        previous: int
        next: int
        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Only recorded: counters live in the head-end's counter ledger."""
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(spec: MeterSpec, meta: EventMeta) -> UUID:
        """Derive the aggregate id from the serial number, so serials stay unique."""
        return meter_id(spec.serial)

    @classmethod
    def register(cls, spec: MeterSpec, meta: EventMeta) -> Meter:
        """Register a new meter after checking every field rule."""
        spec.check()
        return cls(spec=spec, meta=meta)

    @event(Registered)
    def __init__(self, spec: MeterSpec, meta: EventMeta) -> None:
        self.spec = spec
        self.status = MeterStatus.REGISTERED
        self.customer_account: str | None = None
        self.location: Location | None = None
        self.decommission_reason: str | None = None
        self.commissioned_at: datetime | None = None
        self.decommissioned_at: datetime | None = None
        self.commands: dict[str, str | None] = {}
        self.remote_commands: dict[UUID, RemoteCommand] = {}
        self.relay_connected: bool | None = None
        self.relay_changed_at: datetime | None = None
        self.event_logs: dict[str, LogMemory] = {}
        self.key_version = 0
        self.dlms_profile: str | None = None
        self.remember(meta)

    def _ensure_active(self, action: str) -> None:
        if self.status is MeterStatus.DECOMMISSIONED:
            raise Conflict(f"meter {self.spec.serial} is decommissioned: cannot {action}")

    # -- commands ----------------------------------------------------------------------

    def commission(self, location: Location, customer_account: str | None, meta: EventMeta) -> None:
        """Record the meter as installed at a location, optionally for a customer."""
        self._ensure_active("commission")
        if self.status is MeterStatus.COMMISSIONED:
            raise Conflict(f"meter {self.spec.serial} is already commissioned")
        errors = Collector()
        location.check(errors)
        if customer_account is not None:
            check_account(errors, "customerAccount", customer_account)
        errors.raise_if_any()
        self.trigger_event(
            self.Commissioned, location=location, customer_account=customer_account, meta=meta
        )

    def assign_customer(self, customer_account: str, meta: EventMeta) -> bool:
        """Assign the meter to a customer account; False when it already was."""
        self._ensure_active("assign a customer")
        errors = Collector()
        check_account(errors, "customerAccount", customer_account)
        errors.raise_if_any()
        if self.customer_account == customer_account:
            return False
        self.trigger_event(
            self.CustomerAssigned,
            customer_account=customer_account,
            previous=self.customer_account,
            meta=meta,
        )
        return True

    def unassign_customer(self, reason: str, meta: EventMeta) -> None:
        """Remove the meter's customer account (move-out, account closed)."""
        self._ensure_active("unassign a customer")
        if self.customer_account is None:
            raise Conflict(f"meter {self.spec.serial} has no customer to unassign")
        _check_reason(reason)
        self.trigger_event(
            self.CustomerUnassigned, previous=self.customer_account, reason=reason, meta=meta
        )

    def change_connection_profile(self, connection: ConnectionProfile, meta: EventMeta) -> bool:
        """Change how the head-end reaches the meter; False when nothing changes."""
        self._ensure_active("change its connection profile")
        errors = Collector()
        connection.check(errors)
        errors.raise_if_any()
        if connection == self.spec.connection:
            return False
        self.trigger_event(self.ConnectionProfileChanged, connection=connection, meta=meta)
        return True

    def decommission(self, reason: str, meta: EventMeta) -> None:
        """Take the meter out of service for good; later commands are refused."""
        self._ensure_active("decommission it again")
        _check_reason(reason)
        self.trigger_event(self.Decommissioned, reason=reason, meta=meta)

    # -- remote commands -----------------------------------------------------------------

    def request_command(
        self, command_id: UUID, kind: CommandKind, args: CommandArgs, meta: EventMeta
    ) -> RemoteCommand:
        """Queue a remote command for the meter; one relay operation at a time."""
        self._ensure_active(f"run {kind}")
        args.check(kind)
        if command_id in self.remote_commands:
            raise Conflict(f"remote command {command_id} already exists")
        if kind in RELAY_KINDS:
            for other in self.remote_commands.values():
                if other.kind in RELAY_KINDS and other.status in PENDING:
                    raise Conflict(
                        f"meter {self.spec.serial} has relay command {other.id} ({other.kind}) "
                        f"{other.status}; wait for its outcome"
                    )
        self.trigger_event(
            self.RemoteCommandRequested,
            command_id=command_id,
            kind=kind,
            args=args.normalised(),
            meta=meta,
        )
        return self.remote_commands[command_id]

    def command(self, command_id: UUID) -> RemoteCommand:
        """The meter's remote command with this id, or ``NotFound``."""
        try:
            return self.remote_commands[command_id]
        except KeyError:
            raise NotFound(f"meter {self.spec.serial} has no remote command {command_id}") from None

    def mark_command_sent(self, command_id: UUID, meta: EventMeta) -> None:
        """Record that the head-end is sending the command now."""
        command = self.command(command_id)
        ensure_status(command, frozenset({CommandStatus.REQUESTED}), "send it")
        self.trigger_event(
            self.RemoteCommandSent, command_id=command_id, attempt=command.attempt, meta=meta
        )

    def confirm_command(self, command_id: UUID, result: CommandResult, meta: EventMeta) -> None:
        """Record the meter's confirmation of a sent command and what it read back."""
        command = self.command(command_id)
        ensure_status(command, frozenset({CommandStatus.SENT}), "confirm it")
        self.trigger_event(
            self.RemoteCommandConfirmed, command_id=command_id, result=result, meta=meta
        )
        firmware = result.firmware
        if (
            command.kind is CommandKind.FIRMWARE_UPDATE
            and firmware is not None
            and firmware != self.spec.firmware
        ):
            self.trigger_event(
                self.FirmwareChanged,
                firmware=firmware,
                previous=self.spec.firmware,
                command_id=command_id,
                meta=meta,
            )

    def record_firmware_step(
        self,
        command_id: UUID,
        step: FirmwareStep,
        blocks_done: int,
        blocks_total: int,
        meta: EventMeta,
        *,
        failed_step: str | None = None,
        result_code: int | None = None,
    ) -> None:
        """Record a step of a sent firmware update on the meter's history."""
        command = self.command(command_id)
        if command.kind is not CommandKind.FIRMWARE_UPDATE:
            raise Conflict(f"remote command {command_id} is {command.kind}, not a firmware update")
        ensure_status(command, frozenset({CommandStatus.SENT}), "record a firmware step")
        self.trigger_event(
            self.FirmwareUpdateStepped,
            command_id=command_id,
            step=step,
            blocks_done=blocks_done,
            blocks_total=blocks_total,
            failed_step=failed_step,
            result_code=result_code,
            meta=meta,
        )

    def fail_command(self, command_id: UUID, reason: str, meta: EventMeta) -> None:
        """Record that the command's current attempt failed, and why."""
        command = self.command(command_id)
        ensure_status(command, PENDING, "fail it")
        self.trigger_event(
            self.RemoteCommandFailed,
            command_id=command_id,
            reason=check_reason(reason),
            attempt=command.attempt,
            meta=meta,
        )

    def retry_command(self, command_id: UUID, meta: EventMeta) -> RemoteCommand:
        """Queue a failed command again as a new attempt."""
        self._ensure_active("retry a remote command")
        command = self.command(command_id)
        ensure_status(command, frozenset({CommandStatus.FAILED}), "retry it")
        self.trigger_event(
            self.RemoteCommandRetried,
            command_id=command_id,
            attempt=command.attempt + 1,
            meta=meta,
        )
        return command

    def forget_finished_commands(self) -> None:
        """Drop the oldest finished commands beyond the kept number (the events stay)."""
        excess = len(self.remote_commands) - MAX_KEPT_COMMANDS
        if excess <= 0:
            return
        finished = [c.id for c in self.remote_commands.values() if c.status not in PENDING]
        for id_ in finished[:excess]:
            del self.remote_commands[id_]

    # -- meter event logs and keys -----------------------------------------------------

    def record_log_entries(self, entries: list[LogEntry], meta: EventMeta) -> list[LogEntry]:
        """Record event-log entries not recorded before; return those recorded now."""
        self._ensure_active("record its event log")
        fresh = new_entries(self.event_logs, entries)
        for entry in fresh:
            self.trigger_event(
                self.MeterEventLogged,
                log=entry.log,
                code=entry.code,
                kind=entry.kind or event_kind(entry.code),
                at=entry.at,
                meta=meta,
            )
        return fresh

    def assign_dlms_profile(self, profile: str | None, meta: EventMeta) -> bool:
        """Use the DLMS model profile ``profile`` (None: automatic); False when unchanged."""
        self._ensure_active("assign a DLMS profile")
        if profile is not None and not PROFILE_NAME_RE.match(profile):
            raise ValidationFailed(
                [FieldError("profile", "format", "a profile name is 1..64 of a-z0-9._-")]
            )
        if profile == getattr(self, "dlms_profile", None):
            return False
        self.trigger_event(self.DlmsProfileAssigned, profile=profile, meta=meta)
        return True

    def record_counter_resync(
        self,
        key_version: int,
        strategy: str,
        previous: int,
        next_: int,
        reason: str,
        meta: EventMeta,
    ) -> None:
        """Record that the head-end moved its invocation counter after the meter rejected it."""
        if strategy not in COUNTER_STRATEGIES:
            raise ValidationFailed(
                [FieldError("strategy", "allowed", f"{strategy!r} is not a resync strategy")]
            )
        if next_ <= previous:
            raise ValidationFailed(
                [FieldError("next", "increase", "a resynchronised counter must move forward")]
            )
        self.trigger_event(
            self.InvocationCounterResynchronised,
            key_version=key_version,
            strategy=strategy,
            previous=previous,
            next=next_,
            reason=check_reason(reason),
            meta=meta,
        )

    def change_security_keys(self, kinds: list[KeyKind], meta: EventMeta) -> int:
        """Record that new secrets of ``kinds`` were stored; return the new key version."""
        self._ensure_active("change its keys")
        if not kinds:
            raise ValidationFailed(
                [FieldError("keys", "required", "give at least one kind of key")]
            )
        version = self.key_version + 1
        self.trigger_event(
            self.SecurityKeysChanged,
            kinds=tuple(sorted(set(kinds), key=list(KeyKind).index)),
            key_version=version,
            meta=meta,
        )
        return version


COUNTER_STRATEGIES = frozenset({"object", "meter-hint", "step"})


def _check_reason(reason: str) -> None:
    errors = Collector()
    check_text(errors, "reason", reason, max_chars=500, multiline=True)
    errors.raise_if_any()
