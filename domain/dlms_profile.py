"""Per-model DLMS knowledge as data: a model profile and the catalogue of loaded profiles.

A profile says how to talk to one kind of meter: client addresses per security level, where
(if anywhere) its invocation counter lives, its event-code table, its push layouts, link sizes
and clock-setting quirks. Profiles are files (``docs/dlms-profiles.md`` documents format 1);
this module holds their shape and rules, and picks the profile of a meter: the one assigned to
it, else the first whose ``match`` fits its manufacturer/model/firmware, else the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from domain.dlms_units import unit_code
from domain.errors import FieldError, NotFound, ValidationFailed
from domain.meter_events import DISCONNECTOR_LOG, STANDARD_LOG, MeterEventKind, idis_table
from domain.obis import BY_OBIS
from domain.values import SecurityLevel

FORMAT_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
OBIS_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\Z")
COUNTER_TEMPLATE = "{client}"
MAX_RESYNC_STEP = 1 << 20
"""Largest forward jump of the invocation counter when a meter rejects ours (of 2^32)."""
MIN_HDLC_INFO = 32
MIN_PDU = 64


class Match(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which registered meters use the profile without an assignment (empty: none)."""

    manufacturers: tuple[str, ...] = ()
    """As registered, case-insensitive; empty: any manufacturer."""
    models: tuple[str, ...] = ()
    """As registered, case-insensitive; empty: any model."""
    firmware: tuple[str, ...] = ()
    """Firmware version prefixes; empty: any firmware."""

    @property
    def empty(self) -> bool:
        """True when the profile is only used where it is assigned (or as the default)."""
        return not (self.manufacturers or self.models or self.firmware)

    def fits(self, manufacturer: str, model: str, firmware: str) -> bool:
        """True when a meter of this manufacturer, model and firmware uses the profile."""
        if self.empty:
            return False
        if self.manufacturers and manufacturer.casefold() not in _folded(self.manufacturers):
            return False
        if self.models and model.casefold() not in _folded(self.models):
            return False
        return not self.firmware or any(firmware.startswith(p) for p in self.firmware)


def _folded(names: Iterable[str]) -> set[str]:
    return {n.casefold() for n in names}


class Clients(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Client SAP (logical address) per security level."""

    none: int = 16
    lls: int = 17
    hls: int = 1

    def for_level(self, level: SecurityLevel) -> int:
        """The client address of an association at ``level``."""
        if level is SecurityLevel.LLS:
            return self.lls
        if level is SecurityLevel.HLS_GMAC:
            return self.hls
        return self.none


class InvocationCounter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the meter tells the counter it expects next, and how to resynchronise."""

    source: Literal["object", "persisted"] = "object"
    """``object``: read ``object`` before each HLS association; ``persisted``: the meter has
    no counter object, the head-end's own persisted counter is the only one."""
    object: str = "0.0.43.1.0.255"
    """Data object holding the last counter the meter accepted; ``{client}`` stands for the
    management client's address, for meters with one per client (``0.0.43.1.{client}.255``)."""
    read_by: int = 16
    """Client (usually the public one, without security) that reads the object."""
    resync_step: int = 1000
    """Forward jump of the head-end's counter when the meter rejects it and no object says
    what it expects (one retry)."""

    def obis_for(self, client: int) -> str | None:
        """The counter object's OBIS code for the management client ``client``."""
        if self.source == "persisted":
            return None
        return self.object.replace(COUNTER_TEMPLATE, str(client))


class Link(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sizes the head-end proposes: xDLMS max receive PDU, HDLC information field and window."""

    max_pdu: int = 1024
    hdlc_max_info: int = 128
    hdlc_window: int = 1


class Clock(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the meter's clock is set."""

    method: Literal["set", "shift"] = "set"
    """``set``: SET clock attribute 2; ``shift``: ACTION shift_time (method 6) by the offset."""
    deviation: Literal["zero", "unspecified"] = "zero"
    """Deviation sent with the UTC date-time: 0, or 0x8000 (not specified) for meters that
    refuse a deviation."""
    tolerance_seconds: float = 5.0
    """How far the clock read back may be off the head-end's for the sync to be confirmed."""
    max_shift_seconds: int = 900
    """Largest offset ``shift`` corrects (the Blue Book's shift_time range); beyond it SET."""


class Events(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The event logs read and what their codes mean."""

    logs: tuple[str, ...] = (STANDARD_LOG, DISCONNECTOR_LOG)
    kinds: dict[MeterEventKind, tuple[int, ...]] | None = None
    """Event codes per kind; ``None``: the IDIS table. Codes not listed are ``OTHER``."""


class PushLayoutSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One push setup's values after the logical device name and the clock."""

    name: str
    values: tuple[str, ...]
    """``OBIS:scaler:unit`` per register (unit codes of the Blue Book: 30 Wh, 35 V, …)."""
    setup: str | None = None
    """Logical name of the push setup when the body starts with it (IDIS style)."""


class ModelProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the head-end knows of one meter model (profile file format 1)."""

    format: int
    name: str
    version: str
    description: str = ""
    match: Match = Match()
    clients: Clients = Clients()
    invocation_counter: InvocationCounter = InvocationCounter()
    link: Link = Link()
    clock: Clock = Clock()
    events: Events = Events()
    push: tuple[PushLayoutSpec, ...] = ()
    """Push layouts of the model; empty: the fleet's (``HES_DLMS_PUSH_LAYOUT``)."""

    def problems(self) -> list[FieldError]:
        """Every rule the profile breaks, by field path."""
        out: list[FieldError] = []

        def add(path: str, rule: str, message: str) -> None:
            out.append(FieldError(path, rule, message))

        if self.format != FORMAT_VERSION:
            add("format", "version", f"format {self.format} is not {FORMAT_VERSION}")
        if not NAME_RE.match(self.name):
            add("name", "format", "name must be 1..64 of a-z, 0-9, '.', '_' or '-'")
        if not self.version.strip() or len(self.version) > 32:
            add("version", "length", "version must have 1..32 characters")
        if len(self.description) > 500:
            add("description", "length", "description must have at most 500 characters")
        for level in ("none", "lls", "hls"):
            value = getattr(self.clients, level)
            if not 1 <= value <= 0x7F:
                add(f"clients.{level}", "range", f"client address {value} is outside 1..127")
        counter = self.invocation_counter
        if not OBIS_RE.match(counter.object.replace(COUNTER_TEMPLATE, "1")):
            add("invocation_counter.object", "obis", f"{counter.object!r} is not an OBIS code")
        if not 1 <= counter.read_by <= 0x7F:
            add("invocation_counter.read_by", "range", "client address outside 1..127")
        if not 1 <= counter.resync_step <= MAX_RESYNC_STEP:
            add(
                "invocation_counter.resync_step",
                "range",
                f"step {counter.resync_step} is outside 1..{MAX_RESYNC_STEP}",
            )
        link = self.link
        if not MIN_PDU <= link.max_pdu <= 0xFFFF:
            add("link.max_pdu", "range", f"max PDU {link.max_pdu} is outside {MIN_PDU}..65535")
        if not MIN_HDLC_INFO <= link.hdlc_max_info <= 2030:
            add("link.hdlc_max_info", "range", f"outside {MIN_HDLC_INFO}..2030")
        if not 1 <= link.hdlc_window <= 7:
            add("link.hdlc_window", "range", "window size outside 1..7")
        if not 0 < self.clock.tolerance_seconds <= 3600:
            add("clock.tolerance_seconds", "range", "tolerance must be in (0, 3600] seconds")
        if not 1 <= self.clock.max_shift_seconds <= 900:
            add("clock.max_shift_seconds", "range", "shift_time corrects 1..900 seconds")
        for i, log in enumerate(self.events.logs):
            if not OBIS_RE.match(log):
                add(f"events.logs[{i}]", "obis", f"{log!r} is not an OBIS code")
        if self.events.kinds is not None:
            seen: dict[int, MeterEventKind] = {}
            for kind, codes in self.events.kinds.items():
                for code in codes:
                    if not 0 <= code <= 0xFFFF:
                        add(f"events.kinds.{kind}", "range", f"code {code} outside 0..65535")
                    elif code in seen and seen[code] is not kind:
                        add(
                            f"events.kinds.{kind}",
                            "unique",
                            f"code {code} is also {seen[code]}",
                        )
                    seen[code] = kind
        out.extend(_push_problems(self.push))
        return out

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every broken rule."""
        problems = self.problems()
        if problems:
            raise ValidationFailed(problems)

    def event_table(self) -> dict[int, MeterEventKind]:
        """Event code → kind for this model (codes not in it are ``OTHER``)."""
        if self.events.kinds is None:
            return idis_table()
        return {code: kind for kind, codes in self.events.kinds.items() for code in codes}


def parse_push_value(text: str) -> tuple[str, int, int]:
    """``OBIS:scaler:unit`` as (OBIS, scaler, unit code); ``ValueError`` names the rule."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"{text.strip()!r}: not OBIS:scaler:unit")
    obis, scaler, unit = (p.strip() for p in parts)
    try:
        scaler_value, unit_value = int(scaler), int(unit)
    except ValueError:
        raise ValueError(f"{text.strip()!r}: scaler and unit must be integers") from None
    if not -12 <= scaler_value <= 12:
        raise ValueError(f"{text.strip()!r}: scaler outside -12..12")
    return obis, scaler_value, unit_value


DEFAULT_PUSH_LAYOUT_TEXT = (
    "1.0.1.8.0.255:0:30,1.0.2.8.0.255:0:30,1.0.32.7.0.255:-1:35,1.0.31.7.0.255:-2:33"
)
"""Active energy import and export (Wh), L1 voltage (0.1 V) and L1 current (0.01 A): what the
simulated meters push (the fleet's push layout unless ``HES_DLMS_PUSH_LAYOUT`` names another)."""


def push_layout_problem(text: str) -> str | None:
    """Why a fleet push layout (``OBIS:scaler:unit,...``) cannot be used (naming the value)."""
    for position, item in enumerate(text.split(","), start=1):
        try:
            parse_push_value(item)
        except ValueError as exc:
            return f"push value {position} {exc}"
        problem = push_value_problem(item)
        if problem is not None:
            return f"push value {position}: {problem}"
    return None


def push_value_problem(text: str) -> str | None:
    """Why a push value cannot be used (unknown OBIS, unit unlike the catalogue's), or None."""
    try:
        obis, _scaler, unit = parse_push_value(text)
    except ValueError as exc:
        return str(exc)
    quantity = BY_OBIS.get(obis)
    if quantity is None:
        return f"{obis} is not a quantity the head-end knows"
    if unit_code(quantity.unit) != unit:
        return (
            f"{obis} is given in unit code {unit}; the head-end stores {quantity.alias} in "
            f"{quantity.unit} (code {unit_code(quantity.unit)})"
        )
    return None


def _push_problems(layouts: tuple[PushLayoutSpec, ...]) -> list[FieldError]:
    out: list[FieldError] = []
    names: set[str] = set()
    shapes: dict[tuple[str | None, int], str] = {}
    for i, layout in enumerate(layouts):
        path = f"push[{i}]"
        if not NAME_RE.match(layout.name):
            out.append(FieldError(f"{path}.name", "format", "name must be 1..64 of a-z0-9._-"))
        if layout.name in names:
            out.append(FieldError(f"{path}.name", "unique", f"layout {layout.name!r} twice"))
        names.add(layout.name)
        if not layout.values:
            out.append(FieldError(f"{path}.values", "count", "a push layout needs a value"))
        for j, value in enumerate(layout.values):
            problem = push_value_problem(value)
            if problem is not None:
                out.append(FieldError(f"{path}.values[{j}]", "value", problem))
        if layout.setup is not None and not OBIS_RE.match(layout.setup):
            out.append(FieldError(f"{path}.setup", "obis", f"{layout.setup!r} is not OBIS"))
        shape = (layout.setup, len(layout.values))
        if shape in shapes:
            out.append(
                FieldError(
                    f"{path}.values",
                    "distinct",
                    f"layout {layout.name!r} cannot be told from {shapes[shape]!r}: give each "
                    "layout of a model its own push setup or number of values",
                )
            )
        shapes[shape] = layout.name
    return out


class ProfileCatalogue:
    """The loaded profiles, the default among them, and which one each meter uses."""

    def __init__(
        self, profiles: Iterable[ModelProfile], default: str, fleet_push: tuple[str, ...]
    ) -> None:
        self._profiles: dict[str, ModelProfile] = {}
        for profile in profiles:
            if profile.name in self._profiles:
                raise ValueError(f"two profiles are named {profile.name!r}")
            self._profiles[profile.name] = profile
        if default not in self._profiles:
            raise ValueError(
                f"default DLMS profile {default!r} is not among the loaded profiles "
                f"({', '.join(sorted(self._profiles)) or 'none'})"
            )
        self.default = self._profiles[default]
        self.fleet_push = fleet_push
        self._resolved: dict[tuple[str | None, str, str, str], ModelProfile] = {}
        self._tables: dict[str, dict[int, MeterEventKind]] = {}

    @property
    def profiles(self) -> list[ModelProfile]:
        """Every profile, by name."""
        return [self._profiles[n] for n in sorted(self._profiles)]

    @property
    def names(self) -> list[str]:
        """The profiles' names, sorted."""
        return sorted(self._profiles)

    def get(self, name: str) -> ModelProfile:
        """The profile named ``name``; ``NotFound`` names the known ones."""
        profile = self._profiles.get(name)
        if profile is None:
            raise NotFound(f"no DLMS profile {name!r}; loaded: {', '.join(sorted(self._profiles))}")
        return profile

    def __contains__(self, name: object) -> bool:
        return name in self._profiles

    def resolve(
        self, assigned: str | None, manufacturer: str, model: str, firmware: str
    ) -> ModelProfile:
        """The profile a meter uses: assigned, else matched, else the default (cached)."""
        key = (assigned, manufacturer, model, firmware)
        found = self._resolved.get(key)
        if found is None:
            found = self._profiles.get(assigned) if assigned else None
            if found is None:
                found = next(
                    (p for p in self.profiles if p.match.fits(manufacturer, model, firmware)),
                    self.default,
                )
            self._resolved[key] = found
        return found

    def event_table(self, profile: ModelProfile) -> dict[int, MeterEventKind]:
        """The event-code table of ``profile`` (built once)."""
        table = self._tables.get(profile.name)
        if table is None:
            table = self._tables[profile.name] = profile.event_table()
        return table

    def push_layouts(self, profile: ModelProfile) -> tuple[PushLayoutSpec, ...]:
        """The profile's push layouts, or the fleet's layout when it names none."""
        if profile.push:
            return profile.push
        return (PushLayoutSpec(name="fleet", values=self.fleet_push),)
