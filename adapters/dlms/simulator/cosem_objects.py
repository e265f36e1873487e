"""The COSEM object model of a simulated meter: GET, SET and ACTION per object and access right."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from adapters.dlms import axdr
from adapters.dlms.axdr import AxdrError, Data, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime, encode_datetime
from adapters.dlms.simulator import obis as O
from adapters.dlms.simulator.apdu import DataAccessResult, GetResult, Reference
from adapters.dlms.simulator.behaviour import Behaviour
from adapters.dlms.simulator.image_transfer import (
    SimulatedActivationSchedule,
    SimulatedImageTransfer,
)
from adapters.dlms.simulator.meter_model import SLOT_S
from adapters.dlms.simulator.profiles import Buffer, CaptureObject, Row, read_buffer
from adapters.dlms.simulator.tariff_objects import (
    SimulatedCalendar,
    SimulatedLimiter,
    SimulatedSpecialDays,
)

if TYPE_CHECKING:
    from adapters.dlms.simulator.meter import SimulatedMeter

DAR = DataAccessResult
LOAD_PROFILE_ROWS = 960
LOG_ROWS = 500
U32 = 0xFFFF_FFFF


class Role(enum.IntEnum):
    """What an association may do: public (read some), reader (LLS), manager (HLS)."""

    PUBLIC = 0
    READER = 1
    MANAGER = 2


@dataclass(frozen=True, slots=True)
class Spec:
    """One object: class, version, logical name and the least role per attribute and method."""

    class_id: int
    version: int
    obis: bytes
    read: dict[int, Role]
    write: dict[int, Role] = field(default_factory=dict)
    methods: dict[int, Role] = field(default_factory=dict)
    selective: bool = False


@dataclass(frozen=True, slots=True)
class RegisterDef:
    """A register: scaler, unit and how to read its raw value from the model."""

    scaler: int
    unit: int
    tag: Tag
    value: Callable[[SimulatedMeter, float], int]


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """What the association object reports about the association asking."""

    client_sap: int
    role: Role


P, R, M = Role.PUBLIC, Role.READER, Role.MANAGER
_ALL = {1: P, 2: P}


def _energy(i: int) -> Callable[[SimulatedMeter, float], int]:
    return lambda m, now: int(m.model.registers(now)[i]) & U32


def _volt(p: int) -> Callable[[SimulatedMeter, float], int]:
    return lambda m, now: min(round(m.model.instant(now).voltage[p] * 10), 0xFFFF)


def _amp(p: int) -> Callable[[SimulatedMeter, float], int]:
    return lambda m, now: min(round(m.model.instant(now).current[p] * 100), 0xFFFF)


REGISTERS: dict[bytes, RegisterDef] = {
    O.ACTIVE_IMPORT: RegisterDef(0, 30, Tag.DOUBLE_LONG_UNSIGNED, _energy(0)),
    O.ACTIVE_EXPORT: RegisterDef(0, 30, Tag.DOUBLE_LONG_UNSIGNED, _energy(1)),
    O.REACTIVE_IMPORT: RegisterDef(0, 32, Tag.DOUBLE_LONG_UNSIGNED, _energy(2)),
    O.REACTIVE_EXPORT: RegisterDef(0, 32, Tag.DOUBLE_LONG_UNSIGNED, _energy(3)),
    **{v: RegisterDef(-1, 35, Tag.LONG_UNSIGNED, _volt(p)) for p, v in enumerate(O.VOLTAGE)},
    **{c: RegisterDef(-2, 33, Tag.LONG_UNSIGNED, _amp(p)) for p, c in enumerate(O.CURRENT)},
    O.FREQUENCY: RegisterDef(
        -2, 44, Tag.LONG_UNSIGNED, lambda m, now: round(m.model.instant(now).frequency * 100)
    ),
    O.POWER_FACTOR: RegisterDef(
        -3, 255, Tag.LONG, lambda m, now: round(m.model.instant(now).power_factor * 1000)
    ),
}

CLOCK_TIME = CaptureObject(8, O.CLOCK, 2)
LOAD_PROFILE_CAPTURE = (
    CLOCK_TIME,
    CaptureObject(3, O.ACTIVE_IMPORT, 2),
    CaptureObject(3, O.ACTIVE_EXPORT, 2),
)
EVENT_LOG_CAPTURE = (CLOCK_TIME, CaptureObject(1, O.EVENT_CODE, 2))
DISCONNECTOR_LOG_CAPTURE = (CLOCK_TIME, CaptureObject(1, O.DISCONNECTOR_EVENT_CODE, 2))
PUSH_SETUP_NAME = CaptureObject(40, O.PUSH_SETUP, 1)


def push_objects(behaviour: Behaviour) -> tuple[CaptureObject, ...]:
    """The push setup's object list: [its own name,] device name, clock, registers."""
    head = (PUSH_SETUP_NAME,) if behaviour.push_setup_first else ()
    registers = tuple(CaptureObject(3, O.ln(code), 2) for code in behaviour.push_values)
    return (*head, CaptureObject(1, O.LOGICAL_DEVICE_NAME, 2), CLOCK_TIME, *registers)


PUSH_OBJECTS = push_objects(Behaviour())
_PROFILE_READ = {1: P, 2: R, 3: R, 4: R, 5: R, 6: R, 7: R, 8: R}

SPECS: tuple[Spec, ...] = (
    Spec(8, 0, O.CLOCK, {a: P for a in range(1, 10)}, {2: R}, {m: R for m in range(1, 7)}),
    Spec(1, 0, O.LOGICAL_DEVICE_NAME, _ALL),
    Spec(1, 0, O.SERIAL_NUMBER, _ALL),
    Spec(1, 0, O.INVOCATION_COUNTER, _ALL),
    *(Spec(3, 0, ln, {1: P, 2: P, 3: P}) for ln in REGISTERS),
    Spec(7, 1, O.LOAD_PROFILE, {a: P for a in range(1, 9)}, selective=True),
    Spec(7, 1, O.EVENT_LOG, _PROFILE_READ, selective=True),
    Spec(1, 0, O.EVENT_CODE, {1: P, 2: R}),
    Spec(7, 1, O.DISCONNECTOR_LOG, _PROFILE_READ, selective=True),
    Spec(1, 0, O.DISCONNECTOR_EVENT_CODE, {1: P, 2: R}),
    Spec(70, 0, O.DISCONNECT_CONTROL, {1: P, 2: R, 3: R, 4: R}, {}, {1: M, 2: M}),
    Spec(40, 0, O.PUSH_SETUP, {a: R for a in range(1, 8)}, {}, {1: M}),
    Spec(15, 1, O.ASSOCIATION, {1: P, 2: P, 3: P, 8: P}, {}, {1: P}),
    Spec(1, 0, O.ACTIVE_FIRMWARE, _ALL),
    Spec(22, 0, O.IMAGE_ACTIVATION_SCHEDULE, {1: R, 2: R, 3: R, 4: R}, {4: M}),
    Spec(18, 0, O.IMAGE_TRANSFER, {a: R for a in range(1, 8)}, {5: M}, {m: M for m in range(1, 5)}),
    Spec(
        20,
        0,
        O.ACTIVITY_CALENDAR,
        {a: R for a in range(1, 11)},
        {a: M for a in range(6, 11)},
        {1: M},
    ),
    Spec(11, 0, O.SPECIAL_DAYS, {1: R, 2: R}, {2: M}, {1: M, 2: M}),
    Spec(71, 0, O.LIMITER, {a: R for a in range(1, 12)}, {a: M for a in (2, 4, 5, 6, 7, 8, 9, 11)}),
)


def specs_for(behaviour: Behaviour) -> tuple[Spec, ...]:
    """The objects of a meter that behaves as ``behaviour`` says."""
    out: list[Spec] = []
    for spec in SPECS:
        code = O.text(spec.obis)
        if spec.obis == O.INVOCATION_COUNTER:
            counter = behaviour.counter_obis()
            if counter is None:
                continue
            spec = Spec(spec.class_id, spec.version, O.ln(counter), spec.read)
            code = counter
        if code in behaviour.hidden:
            continue
        if code in behaviour.denied:
            read = {a: (role if a == 1 else M) for a, role in spec.read.items()}
            spec = Spec(
                spec.class_id,
                spec.version,
                spec.obis,
                read,
                spec.write,
                spec.methods,
                spec.selective,
            )
        out.append(spec)
    return tuple(out)


def _time_value(data: Data) -> float:
    if data.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME):
        raise AxdrError(f"expected a date-time, got {data.tag.name}")
    return decode_datetime(data.octets()).timestamp()


def _stamp(t: float) -> Data:
    return axdr.octets(encode_datetime(datetime.fromtimestamp(t, UTC)))


class Operated(Protocol):
    """An object whose attributes and methods live in its own module."""

    def read(self, attr: int) -> Data:
        """GET an attribute other than the logical name."""
        ...

    def write(self, attr: int, value: Data) -> DataAccessResult:
        """SET a writable attribute."""
        ...

    def act(self, method: int, params: Data | None) -> DataAccessResult:
        """ACTION a method."""
        ...


class MeterObjects:
    """Serves the objects of one meter."""

    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        self.behaviour = meter.behaviour
        self.object_list = specs_for(meter.behaviour)
        self.specs = {spec.obis: spec for spec in self.object_list}
        counter = meter.behaviour.counter_obis()
        self.counter_ln = O.ln(counter) if counter is not None else None
        self.push_objects = push_objects(meter.behaviour)
        self._preset: tuple[float, float, float] | None = None
        self.image_transfer = SimulatedImageTransfer(meter)
        self.calendar = SimulatedCalendar(meter)
        self.special_days = SimulatedSpecialDays()
        self.limiter = SimulatedLimiter(meter)
        self._operated: dict[bytes, Operated] = {
            O.IMAGE_TRANSFER: self.image_transfer,
            O.IMAGE_ACTIVATION_SCHEDULE: SimulatedActivationSchedule(self.image_transfer),
            O.ACTIVITY_CALENDAR: self.calendar,
            O.SPECIAL_DAYS: self.special_days,
            O.LIMITER: self.limiter,
        }
        self._started = meter.now()
        self.object_list_reads = 0
        """GETs of the association's object list (how often a client discovered the model)."""

    # -- access checks --------------------------------------------------------------------
    def _spec(self, ref: Reference) -> Spec | DataAccessResult:
        spec = self.specs.get(ref.obis)
        if spec is None:
            return DAR.OBJECT_UNDEFINED
        if spec.class_id != ref.class_id:
            return DAR.OBJECT_CLASS_INCONSISTENT
        return spec

    def get(self, ref: Reference, role: Role, assoc: AssociationInfo) -> GetResult:
        """GET one attribute."""
        spec = self._spec(ref)
        if isinstance(spec, DataAccessResult):
            return spec
        need = spec.read.get(ref.index)
        if need is None:
            return DAR.READ_WRITE_DENIED if ref.index in spec.write else DAR.OBJECT_UNDEFINED
        if role < need:
            return DAR.READ_WRITE_DENIED
        if ref.selection is not None and not (spec.selective and ref.index == 2):
            return DAR.OTHER_REASON
        if ref.index == 1:
            return axdr.octets(spec.obis)
        try:
            return self._read(spec, ref, assoc)
        except (AxdrError, CosemTimeError):
            return DAR.TYPE_UNMATCHED

    def set(self, ref: Reference, value: Data, role: Role) -> DataAccessResult:
        """SET one attribute."""
        spec = self._spec(ref)
        if isinstance(spec, DataAccessResult):
            return spec
        need = spec.write.get(ref.index)
        if need is None:
            known = ref.index in spec.read
            return DAR.READ_WRITE_DENIED if known else DAR.OBJECT_UNDEFINED
        if role < need:
            return DAR.READ_WRITE_DENIED
        if self.behaviour.set_result:
            return DAR(self.behaviour.set_result)
        if spec.obis == O.CLOCK and ref.index == 2:
            try:
                self.meter.set_meter_time(_time_value(value))
            except (AxdrError, CosemTimeError):
                return DAR.TYPE_UNMATCHED
            return DAR.SUCCESS
        operated = self._operated.get(spec.obis)
        if operated is not None:
            return operated.write(ref.index, value)
        return DAR.READ_WRITE_DENIED  # pragma: no cover - every writable attribute is above

    def action(
        self, ref: Reference, params: Data | None, role: Role
    ) -> tuple[DataAccessResult, Data | None]:
        """ACTION one method."""
        spec = self._spec(ref)
        if isinstance(spec, DataAccessResult):
            return spec, None
        need = spec.methods.get(ref.index)
        if need is None:
            return DAR.OBJECT_UNDEFINED, None
        if role < need:
            return DAR.READ_WRITE_DENIED, None
        if self.behaviour.action_result and spec.obis == O.DISCONNECT_CONTROL:
            return DAR(self.behaviour.action_result), None
        try:
            return self._act(spec, ref.index, params), None
        except (AxdrError, CosemTimeError):
            return DAR.TYPE_UNMATCHED, None

    # -- reads ----------------------------------------------------------------------------
    def _read(self, spec: Spec, ref: Reference, assoc: AssociationInfo) -> GetResult:
        m, now = self.meter, self.meter.now()
        attr, ln = ref.index, spec.obis
        operated = self._operated.get(ln)
        if operated is not None:
            return operated.read(attr)
        if spec.class_id == 3:
            reg = REGISTERS[ln]
            if attr == 3:
                unit = self.behaviour.units.get(O.text(ln), reg.unit)
                return axdr.structure([axdr.i8(reg.scaler), axdr.enum_(unit)])
            return Data(reg.tag, reg.value(m, now))
        if spec.class_id == 8:
            return self._read_clock(attr)
        if spec.class_id == 1:
            return self._read_data(ln)
        if spec.class_id == 7:
            return self._read_profile(ln, attr, ref)
        if spec.class_id == 70:
            connected = m.relay_connected
            return {
                2: axdr.boolean(connected),
                3: axdr.enum_(1 if connected else 0),
                4: axdr.enum_(2),
            }[attr]
        if spec.class_id == 40:
            return self._read_push_setup(attr)
        return self._read_association(attr, assoc)

    def _read_clock(self, attr: int) -> Data:
        dst_begin = bytes.fromhex("FFFF03FE0702000000800000")
        dst_end = bytes.fromhex("FFFF0AFE0703000000800000")
        values = {
            2: _stamp(self.meter.meter_now()),
            3: axdr.i16(0),
            4: axdr.u8(0),
            5: axdr.octets(dst_begin),
            6: axdr.octets(dst_end),
            7: axdr.i8(60),
            8: axdr.boolean(False),
            9: axdr.enum_(1),
        }
        return values[attr]

    def _read_data(self, ln: bytes) -> Data:
        m = self.meter
        if ln == O.LOGICAL_DEVICE_NAME:
            return axdr.octets(m.logical_device_name)
        if ln == O.SERIAL_NUMBER:
            return axdr.visible(m.serial)
        if ln == O.ACTIVE_FIRMWARE:
            self.image_transfer.refresh()
            return axdr.octets(m.state.firmware.encode("ascii", "replace"))
        if ln == self.counter_ln:
            return axdr.u32(max(m.state.client_ic_last, 0))
        entries = self._event_entries() if ln == O.EVENT_CODE else self._disconnector_entries()
        return axdr.u8(entries[-1][1] if entries else 0)

    def _event_entries(self) -> list[tuple[float, int]]:
        m, b = self.meter, self.behaviour
        offset = m.state.clock_offset
        now = m.now()
        events = m.model.events(m.model.history_start, now)
        extra = [(self._started - hours * 3600, code) for hours, code in b.extra_events]
        logged = sorted([(t, b.code(c)) for t, c in events] + [e for e in extra if e[0] < now])
        return [(t + offset, code) for t, code in logged[-LOG_ROWS:]]

    def _disconnector_entries(self) -> list[tuple[float, int]]:
        return [(t, self.behaviour.code(c)) for t, c in self.meter.state.disconnector_log()]

    def buffer(self, ln: bytes) -> Buffer:
        """The profile buffer of a profile generic object, computed now."""
        m = self.meter
        if ln == O.LOAD_PROFILE:
            offset = m.state.clock_offset
            last = int(m.meter_now() // SLOT_S) * SLOT_S
            first = max(
                last - (LOAD_PROFILE_ROWS - 1) * SLOT_S,
                -int(-(m.model.history_start + offset) // SLOT_S) * SLOT_S,
            )
            times = range(first, last + 1, SLOT_S)

            def render(i: int, j: int) -> list[Row]:
                values = m.model.series(times[i] - offset, j - i) if i < j else iter(())
                return [
                    (_stamp(times[i + k]), axdr.u32(int(v[0]) & U32), axdr.u32(int(v[1]) & U32))
                    for k, v in enumerate(values)
                ]

            return Buffer(LOAD_PROFILE_CAPTURE, times, render)
        if ln == O.EVENT_LOG:
            entries, capture = self._event_entries(), EVENT_LOG_CAPTURE
        else:
            entries, capture = self._disconnector_entries()[-LOG_ROWS:], DISCONNECTOR_LOG_CAPTURE

        def render_log(i: int, j: int) -> list[Row]:
            return [(_stamp(t), axdr.u8(code)) for t, code in entries[i:j]]

        return Buffer(capture, [t for t, _ in entries], render_log)

    def _read_profile(self, ln: bytes, attr: int, ref: Reference) -> GetResult:
        capture = {
            O.LOAD_PROFILE: LOAD_PROFILE_CAPTURE,
            O.EVENT_LOG: EVENT_LOG_CAPTURE,
            O.DISCONNECTOR_LOG: DISCONNECTOR_LOG_CAPTURE,
        }[ln]
        if attr == 2:
            return read_buffer(self.buffer(ln), ref.selection)
        if attr == 3:
            return axdr.array([c.to_data() for c in capture])
        if attr == 4:
            return axdr.u32(SLOT_S if ln == O.LOAD_PROFILE else 0)
        if attr == 5:
            return axdr.enum_(1)  # fifo
        if attr == 6:
            return CLOCK_TIME.to_data()
        if attr == 7:
            return axdr.u32(len(self.buffer(ln).times))
        return axdr.u32(LOAD_PROFILE_ROWS if ln == O.LOAD_PROFILE else LOG_ROWS)

    def _read_push_setup(self, attr: int) -> Data:
        destination = (self.meter.push_destination or "").encode()
        values = {
            2: axdr.array([c.to_data() for c in self.push_objects]),
            3: axdr.structure([axdr.enum_(0), axdr.octets(destination), axdr.enum_(0)]),
            4: axdr.array([]),
            5: axdr.u16(0),
            6: axdr.u8(0),
            7: axdr.u16(0),
        }
        return values[attr]

    def _read_association(self, attr: int, assoc: AssociationInfo) -> Data:
        if attr == 3:
            return axdr.structure([axdr.i8(assoc.client_sap), axdr.u16(1)])
        if attr == 8:
            return axdr.enum_(2)  # associated
        self.object_list_reads += 1
        return axdr.array([self._object_list_entry(s, assoc.role) for s in self.object_list])

    @staticmethod
    def _object_list_entry(spec: Spec, role: Role) -> Data:
        attributes = []
        for attr in sorted(set(spec.read) | set(spec.write)):
            readable = attr in spec.read and role >= spec.read[attr]
            writable = attr in spec.write and role >= spec.write[attr]
            mode = (1 if readable else 0) | (2 if writable else 0)
            selectors = (
                axdr.array([axdr.i8(1), axdr.i8(2)]) if spec.selective and attr == 2 else axdr.NULL
            )
            attributes.append(axdr.structure([axdr.i8(attr), axdr.enum_(mode), selectors]))
        methods = [
            axdr.structure([axdr.i8(mid), axdr.enum_(1 if role >= need else 0)])
            for mid, need in sorted(spec.methods.items())
        ]
        return axdr.structure(
            [
                axdr.u16(spec.class_id),
                axdr.u8(spec.version),
                axdr.octets(spec.obis),
                axdr.structure([axdr.array(attributes), axdr.array(methods)]),
            ]
        )

    def push_body(self) -> Data:
        """The data-notification body: the push object list's values now."""
        assoc = AssociationInfo(1, Role.MANAGER)
        values = []
        for c in self.push_objects:
            value = self.get(Reference(c.class_id, c.obis, c.attribute), Role.MANAGER, assoc)
            assert isinstance(value, Data)
            values.append(value)
        return axdr.structure(values)

    # -- actions --------------------------------------------------------------------------
    def _act(self, spec: Spec, method: int, params: Data | None) -> DataAccessResult:
        m = self.meter
        if spec.obis == O.DISCONNECT_CONTROL:
            m.set_relay(connected=method == 2)
            return DAR.SUCCESS
        if spec.obis == O.PUSH_SETUP:
            return DAR.SUCCESS if m.request_push() else DAR.TEMPORARY_FAILURE
        if spec.obis == O.CLOCK:
            return self._clock_method(method, params)
        operated = self._operated.get(spec.obis)
        if operated is not None:
            return operated.act(method, params)
        return DAR.READ_WRITE_DENIED  # association method 1 outside an HLS association

    def _clock_method(self, method: int, params: Data | None) -> DataAccessResult:
        m = self.meter
        now = m.meter_now()
        # Blue Book clock methods: 1 adjust_to_quarter, 2 adjust_to_measuring_period,
        # 3 adjust_to_minute, 4 adjust_to_preset_time, 5 preset_adjusting_time, 6 shift_time.
        if method in (1, 2):  # the measuring period is the quarter hour here
            m.set_meter_time(round(now / SLOT_S) * SLOT_S)
        elif method == 3:
            m.set_meter_time(round(now / 60) * 60)
        elif method == 6:  # shift_time(long seconds)
            if params is None:
                return DAR.TYPE_UNMATCHED
            shift = params.integer()
            if not -900 <= shift <= 900:
                return DAR.OTHER_REASON
            m.set_meter_time(now + shift)
        elif method == 5:  # preset_adjusting_time(preset, validity start, validity end)
            if params is None or len(params.items()) != 3:
                return DAR.TYPE_UNMATCHED
            preset, start, end = (_time_value(p) for p in params.items())
            self._preset = (preset, start, end)
        elif method == 4:  # adjust_to_preset_time
            if self._preset is None or not self._preset[1] <= now <= self._preset[2]:
                return DAR.TEMPORARY_FAILURE
            m.set_meter_time(self._preset[0])
            self._preset = None
        return DAR.SUCCESS
