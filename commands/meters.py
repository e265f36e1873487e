"""Meter registry commands: load a Meter, act, save; idempotent and actor-stamped."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol
from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import CommandContext
from commands.policy import authorize
from domain.errors import Collector, Conflict, DomainError, FieldError, NotFound, ValidationFailed
from domain.meta import EventMeta
from domain.meter import Meter, meter_id
from domain.meter_events import LogEntry
from domain.meter_keys import KeyKind
from domain.remote_commands import (
    CommandArgs,
    CommandKind,
    CommandResult,
    CommandStatus,
    FirmwareStep,
    RemoteCommand,
    keyed_command_id,
)
from domain.values import ConnectionProfile, Location, MeterSpec, camel, check_account

REQUEST_PERMISSION: dict[CommandKind, str] = {
    CommandKind.DISCONNECT: "requestDisconnect",
    CommandKind.RECONNECT: "requestReconnect",
    CommandKind.SYNC_CLOCK: "requestClockSync",
    CommandKind.READ_ON_DEMAND: "requestOnDemandRead",
    CommandKind.DISCOVER: "requestDiscovery",
    CommandKind.FIRMWARE_UPDATE: "requestFirmwareUpdate",
    CommandKind.WRITE_CALENDAR: "requestCalendarWrite",
    CommandKind.SET_LOAD_LIMIT: "requestLoadLimit",
}
"""The policy entry that allows requesting (and retrying) each kind of remote command."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command did: the meter as it now is and where its last event sits."""

    meter: Meter
    notification_id: int | None
    """Position of the last recorded event; ``None`` when nothing new was recorded."""
    replayed: bool = False
    """True when an idempotency key matched an earlier, identical command."""


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a remote-command request or retry did: the command as the meter now holds it."""

    meter: Meter
    command: RemoteCommand
    notification_id: int | None
    replayed: bool = False


class ImportRowResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one meter of a bulk import."""

    serial: str
    status: str  # "created" | "unchanged" | "conflict"
    message: str = ""


class ActiveCustomers(Protocol):
    """Where the registry checks that an account exists and is active (``CustomerBook``)."""

    def require_active(self, account: str) -> object:
        """The customer; ``NotFound`` or ``Conflict`` unless it exists and is active."""
        ...


class MeterRegistry(Application[UUID]):
    """The write side of the meter registry."""

    name = "meters"
    customers: ActiveCustomers | None = None
    """When set (the API's container and the CSV imports set it), a meter is assigned only to
    an existing, active customer account (docs/customers.md)."""

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    # -- queries on the write model (used by commands, never by clients) -------------

    def get(self, id_: UUID) -> Meter:
        """Load a meter or raise ``NotFound``."""
        try:
            meter: Meter = self.repository.get(id_)
        except AggregateNotFoundError:
            raise NotFound(f"no meter with id {id_}") from None
        return meter

    # -- commands ------------------------------------------------------------------

    def register_meter(self, spec: MeterSpec, ctx: CommandContext) -> Outcome:
        """Register a meter; its serial number must not be registered yet."""
        authorize(ctx.actor, "registerMeter")
        meta = ctx.meta("registerMeter", spec)
        try:
            existing = self.get(meter_id(spec.serial))
        except NotFound:
            meter = Meter.register(spec, meta)
            try:
                recordings = self.save(meter)
            except IntegrityError:
                existing = self.get(meter_id(spec.serial))
            else:
                return Outcome(meter=meter, notification_id=last_position(recordings))
        if existing.seen(meta):
            return Outcome(meter=existing, notification_id=None, replayed=True)
        raise Conflict(f"serial {spec.serial!r} is already registered as {existing.id}")

    def commission_meter(
        self, id_: UUID, location: Location, customer_account: str | None, ctx: CommandContext
    ) -> Outcome:
        """Record the meter as installed at a location, optionally for a customer."""
        authorize(ctx.actor, "commissionMeter")
        meta = ctx.meta("commissionMeter", id_, location, customer_account)
        if customer_account is not None:
            self._require_customer(customer_account)
        return self._update(id_, meta, lambda m: m.commission(location, customer_account, meta))

    def assign_customer(self, id_: UUID, customer_account: str, ctx: CommandContext) -> Outcome:
        """Assign the meter to a customer account."""
        authorize(ctx.actor, "assignCustomer")
        meta = ctx.meta("assignCustomer", id_, customer_account)
        self._require_customer(customer_account)
        return self._update(id_, meta, lambda m: m.assign_customer(customer_account, meta))

    def unassign_customer(self, id_: UUID, reason: str, ctx: CommandContext) -> Outcome:
        """Remove the meter's customer account."""
        authorize(ctx.actor, "unassignCustomer")
        meta = ctx.meta("unassignCustomer", id_, reason)
        return self._update(id_, meta, lambda m: m.unassign_customer(reason, meta))

    def change_connection_profile(
        self, id_: UUID, connection: ConnectionProfile, ctx: CommandContext
    ) -> Outcome:
        """Change how the head-end reaches the meter."""
        authorize(ctx.actor, "changeConnectionProfile")
        meta = ctx.meta("changeConnectionProfile", id_, connection)
        return self._update(id_, meta, lambda m: m.change_connection_profile(connection, meta))

    def decommission_meter(self, id_: UUID, reason: str, ctx: CommandContext) -> Outcome:
        """Take the meter out of service for good."""
        authorize(ctx.actor, "decommissionMeter")
        meta = ctx.meta("decommissionMeter", id_, reason)
        return self._update(id_, meta, lambda m: m.decommission(reason, meta))

    # -- remote commands (DLMS) ----------------------------------------------------

    def request_remote_command(
        self, id_: UUID, kind: CommandKind, args: CommandArgs, ctx: CommandContext
    ) -> CommandOutcome:
        """Queue a remote command (disconnect, reconnect, clock sync, on-demand read)."""
        permission = REQUEST_PERMISSION[kind]
        authorize(ctx.actor, permission)
        meta = ctx.meta(permission, id_, args)
        command = (
            keyed_command_id(id_, ctx.idempotency_key)
            if ctx.idempotency_key is not None
            else uuid4()
        )
        outcome = self._update(id_, meta, lambda m: m.request_command(command, kind, args, meta))
        return CommandOutcome(
            meter=outcome.meter,
            command=outcome.meter.command(command),
            notification_id=outcome.notification_id,
            replayed=outcome.replayed,
        )

    def request_campaign_command(
        self,
        id_: UUID,
        command_id: UUID,
        kind: CommandKind,
        args: CommandArgs,
        ctx: CommandContext,
        *,
        attempt: int = 1,
    ) -> RemoteCommand:
        """Make the meter hold the campaign's command ``command_id`` at attempt ``attempt``.

        Idempotent: absent, it is requested; FAILED at an earlier attempt, it is retried;
        otherwise it stands as it is (a runner that died between its steps asks again).
        """
        authorize(ctx.actor, REQUEST_PERMISSION[kind])
        meta = ctx.meta("requestCampaignCommand", id_, command_id, attempt)

        def act(meter: Meter) -> None:
            existing = meter.remote_commands.get(command_id)
            if existing is None:
                meter.request_command(command_id, kind, args, meta)
            elif existing.status is CommandStatus.FAILED and existing.attempt < attempt:
                meter.retry_command(command_id, meta)

        return self._update(id_, meta, act).meter.command(command_id)

    def record_firmware_step(
        self,
        id_: UUID,
        command_id: UUID,
        step: FirmwareStep,
        blocks_done: int,
        blocks_total: int,
        ctx: CommandContext,
        *,
        failed_step: str | None = None,
        result_code: int | None = None,
    ) -> Outcome:
        """Record a step of a firmware update on the meter's history."""
        authorize(ctx.actor, "recordRemoteCommand")
        meta = ctx.meta("recordFirmwareStep", id_, command_id, step, blocks_done)
        return self._update(
            id_,
            meta,
            lambda m: m.record_firmware_step(
                command_id,
                step,
                blocks_done,
                blocks_total,
                meta,
                failed_step=failed_step,
                result_code=result_code,
            ),
        )

    def retry_remote_command(
        self, id_: UUID, command_id: UUID, ctx: CommandContext
    ) -> CommandOutcome:
        """Queue a failed remote command again as a new attempt."""
        kind = self.get(id_).command(command_id).kind
        permission = REQUEST_PERMISSION[kind]
        authorize(ctx.actor, permission)
        meta = ctx.meta("retryRemoteCommand", id_, command_id)
        outcome = self._update(id_, meta, lambda m: m.retry_command(command_id, meta))
        return CommandOutcome(
            meter=outcome.meter,
            command=outcome.meter.command(command_id),
            notification_id=outcome.notification_id,
            replayed=outcome.replayed,
        )

    def mark_command_sent(self, id_: UUID, command_id: UUID, ctx: CommandContext) -> Outcome:
        """Record that the executor is sending the command now (refused unless REQUESTED)."""
        authorize(ctx.actor, "recordRemoteCommand")
        meta = ctx.meta("markCommandSent", id_, command_id)
        return self._update(id_, meta, lambda m: m.mark_command_sent(command_id, meta))

    def confirm_command(
        self, id_: UUID, command_id: UUID, result: CommandResult, ctx: CommandContext
    ) -> Outcome:
        """Record the meter's confirmation of a sent command and what it read back."""
        authorize(ctx.actor, "recordRemoteCommand")
        meta = ctx.meta("confirmCommand", id_, command_id, result)
        return self._update(id_, meta, lambda m: m.confirm_command(command_id, result, meta))

    def fail_command(
        self, id_: UUID, command_id: UUID, reason: str, ctx: CommandContext
    ) -> Outcome:
        """Record that a command's attempt failed, with the reason."""
        authorize(ctx.actor, "recordRemoteCommand")
        meta = ctx.meta("failCommand", id_, command_id, reason)
        return self._update(id_, meta, lambda m: m.fail_command(command_id, reason, meta))

    def record_log_entries(
        self, id_: UUID, entries: list[LogEntry], ctx: CommandContext
    ) -> list[LogEntry]:
        """Record the meter's event-log entries not recorded before; return those recorded now."""
        authorize(ctx.actor, "recordMeterEvents")
        meta = ctx.meta("recordMeterEvents", id_, entries)
        recorded: list[LogEntry] = []

        def record(meter: Meter) -> None:
            recorded[:] = meter.record_log_entries(entries, meta)

        self._update(id_, meta, record)
        return recorded

    def assign_dlms_profile(
        self, id_: UUID, profile: str | None, known: Collection[str], ctx: CommandContext
    ) -> Outcome:
        """Make the meter use the DLMS model profile ``profile`` (None: automatic choice)."""
        authorize(ctx.actor, "setDlmsProfile")
        if profile is not None and profile not in known:
            raise ValidationFailed(
                [
                    FieldError(
                        "profile",
                        "known",
                        f"no DLMS profile {profile!r} is loaded; loaded: {', '.join(known)}",
                    )
                ]
            )
        meta = ctx.meta("setDlmsProfile", id_, profile)
        return self._update(id_, meta, lambda m: m.assign_dlms_profile(profile, meta))

    def record_counter_resync(
        self,
        id_: UUID,
        key_version: int,
        strategy: str,
        previous: int,
        next_: int,
        reason: str,
        ctx: CommandContext,
    ) -> Outcome:
        """Record that the DLMS side moved the meter's invocation counter on."""
        authorize(ctx.actor, "recordCounterResync")
        meta = ctx.meta("recordCounterResync", id_, key_version, strategy, previous, next_)
        return self._update(
            id_,
            meta,
            lambda m: m.record_counter_resync(key_version, strategy, previous, next_, reason, meta),
        )

    def change_security_keys(
        self, id_: UUID, kinds: list[KeyKind], expected_version: int, ctx: CommandContext
    ) -> int:
        """Record new secrets of ``kinds`` stored as version ``expected_version`` + 1.

        Raises ``Conflict`` when the meter's key version moved meanwhile (the caller stored
        its secrets under a version that is no longer the next one).
        """
        authorize(ctx.actor, "setMeterKeys")
        meta = ctx.meta("setMeterKeys", id_, kinds, expected_version)
        version: list[int] = []

        def change(meter: Meter) -> None:
            if meter.key_version != expected_version:
                raise Conflict(
                    f"meter {meter.spec.serial} keys changed concurrently "
                    f"(version {meter.key_version}, expected {expected_version}); try again"
                )
            version.append(meter.change_security_keys(kinds, meta))

        outcome = self._update(id_, meta, change)
        return version[0] if version else outcome.meter.key_version

    def import_meters(
        self, rows: list[tuple[MeterSpec, str | None]], ctx: CommandContext
    ) -> tuple[list[ImportRowResult], int | None]:
        """Register many meters (with optional customer) in one transaction; skip identical ones."""
        authorize(ctx.actor, "importMeters")
        results: list[ImportRowResult] = []
        new: list[Meter] = []
        seen_ids: set[UUID] = set()
        for spec, customer in rows:
            id_ = meter_id(spec.serial)
            if id_ in seen_ids:
                results.append(_conflict(spec, "serial appears earlier in the same import"))
                continue
            seen_ids.add(id_)
            try:
                existing = self.get(id_)
            except NotFound:
                refused = self._customer_refusal(customer)
                if refused is not None:
                    results.append(_conflict(spec, refused))
                    continue
                meta = ctx.meta("importMeters", spec, customer)
                meter = Meter.register(spec, meta)
                if customer is not None:
                    meter.assign_customer(customer, meta)
                new.append(meter)
                results.append(ImportRowResult(serial=spec.serial, status="created"))
                continue
            if existing.spec == spec and (
                customer is None or existing.customer_account == customer
            ):
                results.append(ImportRowResult(serial=spec.serial, status="unchanged"))
            else:
                results.append(_conflict(spec, _difference(existing, spec, customer)))
        if not new:
            return results, None
        try:
            return results, last_position(self.save(*new))
        except IntegrityError:
            # Someone registered one of these meanwhile: fall back to one save per meter.
            return self._save_one_by_one(new, results)

    # -- plumbing ------------------------------------------------------------------

    def _require_customer(self, account: str) -> None:
        errors = Collector()
        check_account(errors, "customerAccount", account)
        errors.raise_if_any()
        if self.customers is not None:
            self.customers.require_active(account)

    def _customer_refusal(self, account: str | None) -> str | None:
        if account is None or self.customers is None:
            return None
        try:
            self._require_customer(account)
        except DomainError as exc:
            return f"customer: {exc.message}"
        return None

    def _update(self, id_: UUID, meta: EventMeta, action: Callable[[Meter], object]) -> Outcome:
        def attempt() -> Outcome | Save[Outcome]:
            meter = self.get(id_)
            if meter.seen(meta):
                return Outcome(meter=meter, notification_id=None, replayed=True)
            action(meter)
            return Save((meter,), lambda r: Outcome(meter=meter, notification_id=last_position(r)))

        return save_with_retry(self, attempt, f"meter {id_} is changing too fast; try again")

    def _save_one_by_one(
        self, new: list[Meter], results: list[ImportRowResult]
    ) -> tuple[list[ImportRowResult], int | None]:
        last: int | None = None
        by_serial = {r.serial: i for i, r in enumerate(results)}
        for meter in new:
            try:
                last = last_position(self.save(meter)) or last
            except IntegrityError:
                i = by_serial[meter.spec.serial]
                results[i] = _conflict(meter.spec, "registered concurrently by another request")
        return results, last


def _conflict(spec: MeterSpec, message: str) -> ImportRowResult:
    return ImportRowResult(serial=spec.serial, status="conflict", message=message)


def _difference(existing: Meter, spec: MeterSpec, customer: str | None) -> str:
    old = msgspec.structs.asdict(existing.spec)
    new = msgspec.structs.asdict(spec)
    fields = [k for k in new if old.get(k) != new[k]]
    if customer is not None and existing.customer_account != customer:
        fields.append("customer")
    return "already registered with different " + ", ".join(camel(f) for f in fields)
