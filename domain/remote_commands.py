"""Remote commands sent to a meter over DLMS: kinds, arguments, outcomes and their lifecycle."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from domain.errors import Collector, Conflict, DomainError
from domain.load_limit import LoadLimit
from domain.obis import lookup
from domain.text import printable

COMMAND_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:remote-command")
MAX_ON_DEMAND_QUANTITIES = 16
MAX_REASON_CHARS = 500
MAX_KEPT_COMMANDS = 200
"""Finished commands a meter keeps in its state (the event store keeps them all)."""


class CommandKind(enum.StrEnum):
    """What a remote command does on the meter."""

    DISCONNECT = "DISCONNECT"
    """Open the relay (disconnect control method 1), confirmed by reading the output state."""
    RECONNECT = "RECONNECT"
    """Close the relay (disconnect control method 2), confirmed by reading the output state."""
    SYNC_CLOCK = "SYNC_CLOCK"
    """Set the meter's clock to the head-end's UTC time."""
    READ_ON_DEMAND = "READ_ON_DEMAND"
    """Read chosen quantities now (they also enter the reading pipeline)."""
    DISCOVER = "DISCOVER"
    """Read the meter's association view again: its model's objects and access rights."""
    FIRMWARE_UPDATE = "FIRMWARE_UPDATE"
    """Transfer a firmware image (class 18), verify and activate it, read the active firmware."""
    WRITE_CALENDAR = "WRITE_CALENDAR"
    """Write a TOU plan's calendar (classes 20 and 11) and read it back to compare."""
    SET_LOAD_LIMIT = "SET_LOAD_LIMIT"
    """Write the limiter's thresholds (class 71) and read them back to compare."""


class CommandStatus(enum.StrEnum):
    """Where a remote command stands: requested → sent → confirmed | failed."""

    REQUESTED = "REQUESTED"
    SENT = "SENT"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


PENDING = frozenset({CommandStatus.REQUESTED, CommandStatus.SENT})
RELAY_KINDS = frozenset({CommandKind.DISCONNECT, CommandKind.RECONNECT})


FLEET_KINDS = frozenset(
    {CommandKind.FIRMWARE_UPDATE, CommandKind.WRITE_CALENDAR, CommandKind.SET_LOAD_LIMIT}
)
"""Long operations that campaigns run over fleets."""


class CommandArgs(msgspec.Struct, frozen=True, kw_only=True):
    """Arguments of a remote command: each kind takes its own (the others stay empty)."""

    quantities: tuple[str, ...] = ()
    """READ_ON_DEMAND: the OBIS codes to read."""
    image_id: UUID | None = None
    """FIRMWARE_UPDATE: the uploaded firmware image."""
    tou_plan_id: UUID | None = None
    """WRITE_CALENDAR: the TOU plan ..."""
    tou_plan_version: int | None = None
    """... and its version to write."""
    load_limit: LoadLimit | None = None
    """SET_LOAD_LIMIT: the thresholds to write."""
    activate_at: datetime | None = None
    """FIRMWARE_UPDATE: the meter activates the verified image at this time (None: at once)."""

    def check(self, kind: CommandKind) -> None:
        """Raise ``ValidationFailed`` naming every rule these arguments break for ``kind``."""
        errors = Collector()
        wanted = {
            CommandKind.FIRMWARE_UPDATE: {"image_id"},
            CommandKind.WRITE_CALENDAR: {"tou_plan_id", "tou_plan_version"},
            CommandKind.SET_LOAD_LIMIT: {"load_limit"},
        }.get(kind, set())
        for name in ("image_id", "tou_plan_id", "tou_plan_version", "load_limit"):
            given = getattr(self, name) is not None
            if name in wanted and not given:
                errors.add(_camel(name), "required", f"{kind} needs {_camel(name)}")
            elif given and name not in wanted:
                errors.add(_camel(name), "not-allowed", f"{kind} takes no {_camel(name)}")
        if self.activate_at is not None:
            if kind is not CommandKind.FIRMWARE_UPDATE:
                errors.add("activateAt", "not-allowed", f"{kind} takes no activateAt")
            elif self.activate_at.tzinfo is None:
                errors.add("activateAt", "timezone", "activateAt must carry a UTC offset")
        if self.tou_plan_version is not None and self.tou_plan_version < 1:
            errors.add("touPlanVersion", "range", "touPlanVersion must be 1 or more")
        if self.load_limit is not None:
            try:
                self.load_limit.check()
            except DomainError as exc:
                for error in getattr(exc, "errors", []):
                    errors.add(f"loadLimit.{error.field}", error.rule, error.message)
        if kind is CommandKind.READ_ON_DEMAND:
            if not 1 <= len(self.quantities) <= MAX_ON_DEMAND_QUANTITIES:
                errors.add(
                    "quantities",
                    "count",
                    f"give 1..{MAX_ON_DEMAND_QUANTITIES} quantities to read",
                )
            for i, code in enumerate(self.quantities):
                if lookup(code) is None:
                    errors.add(
                        f"quantities[{i}]", "known", f"{code!r} is not a known OBIS quantity"
                    )
            known = [q.obis for q in map(lookup, self.quantities) if q is not None]
            if len(set(known)) != len(known):
                errors.add("quantities", "unique", "each quantity may be given once")
        elif self.quantities:
            errors.add("quantities", "not-allowed", f"{kind} takes no quantities")
        errors.raise_if_any()

    def normalised(self) -> CommandArgs:
        """The same arguments with OBIS codes in dotted form (aliases resolved)."""
        codes = []
        for code in self.quantities:
            quantity = lookup(code)
            codes.append(quantity.obis if quantity is not None else code)
        return msgspec.structs.replace(self, quantities=tuple(codes))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class ReadValue(msgspec.Struct, frozen=True, kw_only=True):
    """One value read from the meter, scaler applied, in the quantity's unit."""

    obis: str
    value: float
    unit: str
    at: datetime
    unverified: bool = False
    """The meter gave no known unit or scaler: stored as read, flagged ``unit_unverified``."""


class ReadFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A quantity an on-demand read could not store, and why."""

    obis: str
    reason: str


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the meter answered to a confirmed command (fields depend on the kind)."""

    relay_connected: bool | None = None
    """Output state read back after a relay operation (True = supply connected)."""
    control_state: int | None = None
    """Disconnect-control state read back: 0 disconnected, 1 connected, 2 ready to reconnect."""
    clock_before: datetime | None = None
    """The meter's clock (UTC) just before it was set."""
    clock_after: datetime | None = None
    """The meter's clock (UTC) read back after setting it."""
    values: tuple[ReadValue, ...] = ()
    failures: tuple[ReadFailure, ...] = ()
    """Quantities of an on-demand read that were not stored (the others were)."""
    objects: int | None = None
    """Objects in the association view read by a DISCOVER command."""
    firmware: str | None = None
    """FIRMWARE_UPDATE: the active firmware identifier read after activation."""
    blocks_total: int | None = None
    """FIRMWARE_UPDATE: blocks of the image ..."""
    blocks_sent: int | None = None
    """... sent by this attempt (the others were on the meter already: a resumed transfer)."""
    calendar: str | None = None
    """WRITE_CALENDAR: the calendar name read back from the passive calendar."""
    load_limit: LoadLimit | None = None
    """SET_LOAD_LIMIT: the limiter's thresholds read back."""


class FirmwareStep(enum.StrEnum):
    """A step of a firmware update, each recorded as an event on the meter's history."""

    TRANSFER_STARTED = "TRANSFER_STARTED"
    PROGRESS = "PROGRESS"
    """Another tenth of the image's blocks is on the meter."""
    TRANSFERRED = "TRANSFERRED"
    VERIFIED = "VERIFIED"
    ACTIVATION_SCHEDULED = "ACTIVATION_SCHEDULED"
    """The meter will activate the image by itself at the command's ``activate_at``."""
    ACTIVATED = "ACTIVATED"
    FAILED = "FAILED"
    """A step failed: ``failed_step`` and the meter's ``result_code`` say which and why."""


class RemoteCommand(msgspec.Struct, kw_only=True):
    """A meter's remote command as its aggregate keeps it."""

    id: UUID
    kind: CommandKind
    args: CommandArgs
    status: CommandStatus
    attempt: int
    requested_at: datetime
    requested_by: str
    reason: str | None = None
    result: CommandResult | None = None
    updated_at: datetime | None = None
    firmware_step: FirmwareStep | None = None
    """FIRMWARE_UPDATE: the last step recorded."""


def keyed_command_id(meter: UUID, idempotency_key: str) -> UUID:
    """Id of a command requested with an idempotency key: the same for every retry."""
    return uuid5(COMMAND_NAMESPACE, f"{meter}:{idempotency_key}")


def check_reason(reason: str) -> str:
    """A failure reason fit to record: one printable line of at most ``MAX_REASON_CHARS``.

    Reasons often quote what a meter sent, so control characters are escaped, not refused:
    the failure is a fact to keep.
    """
    text = printable(" ".join(reason.split())) or "unspecified failure"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def ensure_status(command: RemoteCommand, allowed: frozenset[CommandStatus], action: str) -> None:
    """Raise ``Conflict`` unless the command is in one of the ``allowed`` states."""
    if command.status not in allowed:
        raise Conflict(f"remote command {command.id} is {command.status}: cannot {action}")
