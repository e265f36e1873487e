"""Remote commands sent to a meter over DLMS: kinds, arguments, outcomes and their lifecycle."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from domain.errors import Collector, Conflict
from domain.obis import lookup

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


class CommandStatus(enum.StrEnum):
    """Where a remote command stands: requested → sent → confirmed | failed."""

    REQUESTED = "REQUESTED"
    SENT = "SENT"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


PENDING = frozenset({CommandStatus.REQUESTED, CommandStatus.SENT})
RELAY_KINDS = frozenset({CommandKind.DISCONNECT, CommandKind.RECONNECT})


class CommandArgs(msgspec.Struct, frozen=True, kw_only=True):
    """Arguments of a remote command (only READ_ON_DEMAND takes any: OBIS codes)."""

    quantities: tuple[str, ...] = ()

    def check(self, kind: CommandKind) -> None:
        """Raise ``ValidationFailed`` naming every rule these arguments break for ``kind``."""
        errors = Collector()
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
        return CommandArgs(quantities=tuple(codes))


class ReadValue(msgspec.Struct, frozen=True, kw_only=True):
    """One value read from the meter, scaler applied, in the quantity's unit."""

    obis: str
    value: float
    unit: str
    at: datetime


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


def keyed_command_id(meter: UUID, idempotency_key: str) -> UUID:
    """Id of a command requested with an idempotency key: the same for every retry."""
    return uuid5(COMMAND_NAMESPACE, f"{meter}:{idempotency_key}")


def check_reason(reason: str) -> str:
    """A failure reason fit to record: one line, at most ``MAX_REASON_CHARS`` characters."""
    text = " ".join(reason.split()) or "unspecified failure"
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def ensure_status(command: RemoteCommand, allowed: frozenset[CommandStatus], action: str) -> None:
    """Raise ``Conflict`` unless the command is in one of the ``allowed`` states."""
    if command.status not in allowed:
        raise Conflict(f"remote command {command.id} is {command.status}: cannot {action}")
