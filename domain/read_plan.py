"""What the head-end asks a meter for, planned from its model's association view.

Objects the model lacks, or denies to the client, are not requested: each planned item says
READ, MISSING or DENIED with the reason, or UNCHECKED while no view is known (then everything
is asked for and the meter's answers decide).
"""

from __future__ import annotations

import enum

import msgspec

from domain.association_view import AssociationView
from domain.dlms_profile import ModelProfile

CLOCK_CLASS, REGISTER_CLASS, PROFILE_CLASS, DISCONNECT_CLASS = 8, 3, 7, 70
CLOCK_OBIS = "0.0.1.0.0.255"
LOAD_PROFILE_OBIS = "1.0.99.1.0.255"
DISCONNECTOR_OBIS = "0.0.96.3.10.255"
REGISTER_OBIS: tuple[str, ...] = (
    "1.0.1.8.0.255",
    "1.0.2.8.0.255",
    "1.0.3.8.0.255",
    "1.0.4.8.0.255",
    "1.0.32.7.0.255",
    "1.0.52.7.0.255",
    "1.0.72.7.0.255",
    "1.0.31.7.0.255",
    "1.0.51.7.0.255",
    "1.0.71.7.0.255",
    "1.0.14.7.0.255",
    "1.0.13.7.0.255",
)
"""Registers of a full register read: energy in/out (active, reactive), per-phase voltage and
current, frequency and power factor."""
THREE_PHASE_ONLY = frozenset(
    {"1.0.52.7.0.255", "1.0.72.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255"}
)


class Status(enum.StrEnum):
    """Whether an item is asked for."""

    READ = "READ"
    """In the view and allowed: asked for."""
    MISSING = "MISSING"
    """Not in the model's view (or of another class): not asked for."""
    DENIED = "DENIED"
    """In the view, but this client may not use it: not asked for."""
    UNCHECKED = "UNCHECKED"
    """No view known yet: asked for, the meter's answer decides."""


class Step(enum.StrEnum):
    """Where an item is used."""

    REGISTERS = "registers"
    PROFILE = "profile"
    EVENTS = "events"
    COMMANDS = "commands"


class PlannedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One attribute (or method) the head-end may use, and whether it will."""

    step: Step
    class_id: int
    obis: str
    attribute: int = 0
    method: int = 0
    write: bool = False
    status: Status
    reason: str | None = None

    @property
    def asked(self) -> bool:
        """True when the head-end requests it."""
        return self.status in (Status.READ, Status.UNCHECKED)

    @property
    def target(self) -> str:
        """``OBIS attr N`` / ``OBIS method N`` for messages."""
        if self.method:
            return f"{self.obis} method {self.method}"
        return f"{self.obis} attribute {self.attribute}"


class ReadPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Every item of a meter's plan and whether a view backs it."""

    items: tuple[PlannedItem, ...]
    view_known: bool
    client: int

    def item(self, obis: str, *, attribute: int = 0, method: int = 0) -> PlannedItem | None:
        """The planned item of an attribute or method."""
        return next(
            (
                i
                for i in self.items
                if i.obis == obis and i.attribute == attribute and i.method == method
            ),
            None,
        )

    def skipped(self, step: Step) -> list[PlannedItem]:
        """Items of ``step`` that are not asked for."""
        return [i for i in self.items if i.step is step and not i.asked]

    def asked(self, obis: str, attribute: int) -> bool:
        """True unless the plan knows the meter lacks or denies the attribute."""
        found = self.item(obis, attribute=attribute)
        return found is None or found.asked


def register_codes(phases: int) -> list[str]:
    """The registers of a full read of a meter (single-phase meters have L1 only)."""
    return [o for o in REGISTER_OBIS if phases == 3 or o not in THREE_PHASE_ONLY]


def plan_reads(
    view: AssociationView | None, profile: ModelProfile, phases: int, client: int
) -> ReadPlan:
    """The plan of a meter of ``phases`` phases whose model shows ``view`` to ``client``."""
    wanted: list[tuple[Step, int, str, int, int, bool]] = [
        (Step.REGISTERS, CLOCK_CLASS, CLOCK_OBIS, 2, 0, False)
    ]
    for obis in register_codes(phases):
        wanted += [
            (Step.REGISTERS, REGISTER_CLASS, obis, 2, 0, False),
            (Step.REGISTERS, REGISTER_CLASS, obis, 3, 0, False),
        ]
    wanted += [(Step.PROFILE, PROFILE_CLASS, LOAD_PROFILE_OBIS, a, 0, False) for a in (2, 3, 4)]
    wanted += [(Step.EVENTS, PROFILE_CLASS, log, 2, 0, False) for log in profile.events.logs]
    wanted += [
        (Step.COMMANDS, CLOCK_CLASS, CLOCK_OBIS, 2, 0, True),
        (Step.COMMANDS, DISCONNECT_CLASS, DISCONNECTOR_OBIS, 2, 0, False),
        (Step.COMMANDS, DISCONNECT_CLASS, DISCONNECTOR_OBIS, 0, 1, False),
        (Step.COMMANDS, DISCONNECT_CLASS, DISCONNECTOR_OBIS, 0, 2, False),
    ]
    items = []
    for step, class_id, obis, attribute, method, write in wanted:
        status, reason = _judge(view, class_id, obis, attribute, method, write, client)
        items.append(
            PlannedItem(
                step=step,
                class_id=class_id,
                obis=obis,
                attribute=attribute,
                method=method,
                write=write,
                status=status,
                reason=reason,
            )
        )
    return ReadPlan(items=tuple(items), view_known=view is not None, client=client)


def _judge(
    view: AssociationView | None,
    class_id: int,
    obis: str,
    attribute: int,
    method: int,
    write: bool,
    client: int,
) -> tuple[Status, str | None]:
    if view is None:
        return Status.UNCHECKED, None
    obj = view.find(obis)
    if obj is None:
        return Status.MISSING, f"{obis} is not in the association view of client {client}"
    if obj.class_id != class_id:
        return Status.MISSING, f"{obis} is of class {obj.class_id} in the view, not {class_id}"
    if method:
        allowed, what = view.callable(obj, method), f"method {method} may not be invoked"
    elif write:
        allowed, what = view.writable(obj, attribute), f"attribute {attribute} may not be written"
    else:
        allowed, what = view.readable(obj, attribute), f"attribute {attribute} may not be read"
    if allowed:
        return Status.READ, None
    return Status.DENIED, f"{obis} {what} by client {client}"
