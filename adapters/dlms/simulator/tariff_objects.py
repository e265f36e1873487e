"""The activity calendar (class 20), special days table (class 11) and limiter (class 71) of a
simulated meter: values kept as written (type-checked), the passive calendar made active by
its method or once its activation time has passed on the meter clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.dlms import axdr
from adapters.dlms.axdr import Data, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime
from adapters.dlms.simulator import obis as O
from adapters.dlms.simulator.apdu import DataAccessResult as DAR
from adapters.dlms.simulator.shapes import AnyInteger, ArrayOf, Octets, Shape, StructOf, fits

if TYPE_CHECKING:
    from adapters.dlms.simulator.meter import SimulatedMeter

NOT_SPECIFIED = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
"""A date-time with every field unspecified (no activation scheduled)."""
_U8 = Tag.UNSIGNED
CALENDAR_SHAPES: dict[int, Shape] = {
    6: Octets(),
    7: ArrayOf(StructOf((Octets(), Octets(12), Octets()))),
    8: ArrayOf(StructOf((Octets(), _U8, _U8, _U8, _U8, _U8, _U8, _U8))),
    9: ArrayOf(StructOf((_U8, ArrayOf(StructOf((Octets(4), Octets(6), Tag.LONG_UNSIGNED)))))),
    10: Octets(12),
}
SPECIAL_DAY: Shape = StructOf((Tag.LONG_UNSIGNED, Octets(5), _U8))
LIMITER_SHAPES: dict[int, Shape] = {
    2: StructOf((Tag.LONG_UNSIGNED, Octets(6), Tag.INTEGER)),
    4: AnyInteger(),
    5: AnyInteger(),
    6: Tag.DOUBLE_LONG_UNSIGNED,
    7: Tag.DOUBLE_LONG_UNSIGNED,
    8: StructOf((Tag.LONG_UNSIGNED, Octets(12), Tag.DOUBLE_LONG_UNSIGNED)),
    9: ArrayOf(Tag.LONG_UNSIGNED),
    11: StructOf(
        (StructOf((Octets(6), Tag.LONG_UNSIGNED)), StructOf((Octets(6), Tag.LONG_UNSIGNED)))
    ),
}


def _default_calendar() -> list[Data]:
    """name, seasons, weeks, days: one season, every day tier 1."""
    start = bytes.fromhex("FFFF0101FF000000FF8000FF")
    return [
        axdr.octets(b"STD"),
        axdr.array([axdr.structure([axdr.octets(b"ALL"), axdr.octets(start), axdr.octets(b"W")])]),
        axdr.array([axdr.structure([axdr.octets(b"W"), *(axdr.u8(1) for _ in range(7))])]),
        axdr.array(
            [
                axdr.structure(
                    [
                        axdr.u8(1),
                        axdr.array(
                            [
                                axdr.structure(
                                    [
                                        axdr.octets(bytes(4)),
                                        axdr.octets(O.TARIFF_SCRIPTS),
                                        axdr.u16(1),
                                    ]
                                )
                            ]
                        ),
                    ]
                )
            ]
        ),
    ]


class SimulatedCalendar:
    """Activity calendar: attributes 2..5 active, 6..9 passive, 10 activation time."""

    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        self.active = _default_calendar()
        self.passive = [axdr.octets(b""), axdr.array([]), axdr.array([]), axdr.array([])]
        self.activation = axdr.octets(NOT_SPECIFIED)
        self.activations = 0

    def _activate(self) -> None:
        self.active = list(self.passive)
        self.activation = axdr.octets(NOT_SPECIFIED)
        self.activations += 1

    def _due(self) -> None:
        try:
            at = decode_datetime(self.activation.octets()).timestamp()
        except CosemTimeError:
            return
        if at <= self.meter.meter_now():
            self._activate()

    def read(self, attr: int) -> Data:
        """GET attribute ``attr`` (2..10)."""
        self._due()
        if attr == 10:
            return self.activation
        return self.active[attr - 2] if attr <= 5 else self.passive[attr - 6]

    def write(self, attr: int, value: Data) -> DAR:
        """SET a passive attribute (6..9) or the activation time (10)."""
        if not fits(value, CALENDAR_SHAPES[attr]):
            return DAR.TYPE_UNMATCHED
        if attr == 10:
            self.activation = value
            self._due()
        else:
            self.passive[attr - 6] = value
        return DAR.SUCCESS

    def act(self, method: int, params: Data | None) -> DAR:
        """Method 1: activate_passive_calendar."""
        self._activate()
        return DAR.SUCCESS


class SimulatedSpecialDays:
    """Special days table: attribute 2 entries; methods 1 insert, 2 delete."""

    def __init__(self) -> None:
        self.entries: dict[int, Data] = {}

    def read(self, attr: int) -> Data:
        """GET attribute 2: the entries by index."""
        return axdr.array([self.entries[i] for i in sorted(self.entries)])

    def write(self, attr: int, value: Data) -> DAR:
        """SET attribute 2: replace every entry."""
        if not fits(value, ArrayOf(SPECIAL_DAY)):
            return DAR.TYPE_UNMATCHED
        entries = {e.items()[0].integer(): e for e in value.items()}
        if len(entries) != len(value.items()):
            return DAR.OTHER_REASON
        self.entries = entries
        return DAR.SUCCESS

    def act(self, method: int, params: Data | None) -> DAR:
        """Method 1 inserts (or replaces) an entry, method 2 deletes one by index."""
        if method == 1:
            if params is None or not fits(params, SPECIAL_DAY):
                return DAR.TYPE_UNMATCHED
            self.entries[params.items()[0].integer()] = params
            return DAR.SUCCESS
        if params is None or params.tag is not Tag.LONG_UNSIGNED:
            return DAR.TYPE_UNMATCHED
        self.entries.pop(params.integer(), None)
        return DAR.SUCCESS


class SimulatedLimiter:
    """Limiter: thresholds, durations and emergency profile as written; 3 and 10 computed."""

    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        no_action = axdr.structure([axdr.octets(bytes(6)), axdr.u16(0)])
        self.values: dict[int, Data] = {
            2: axdr.structure([axdr.u16(3), axdr.octets(O.ACTIVE_POWER_IMPORT), axdr.i8(2)]),
            4: axdr.u32(0),
            5: axdr.u32(0),
            6: axdr.u32(0),
            7: axdr.u32(0),
            8: axdr.structure([axdr.u16(0), axdr.octets(NOT_SPECIFIED), axdr.u32(0)]),
            9: axdr.array([]),
            11: axdr.structure([no_action, no_action]),
        }

    def _emergency_active(self) -> bool:
        profile_id, activation, duration = self.values[8].items()
        groups = {g.integer() for g in self.values[9].items()}
        try:
            start = decode_datetime(activation.octets()).timestamp()
        except CosemTimeError:
            return False
        now = self.meter.meter_now()
        return profile_id.integer() in groups and start <= now < start + duration.integer()

    def read(self, attr: int) -> Data:
        """GET attribute ``attr`` (2..11)."""
        if attr == 3:
            return self.values[5 if self._emergency_active() else 4]
        if attr == 10:
            return axdr.boolean(self._emergency_active())
        return self.values[attr]

    def write(self, attr: int, value: Data) -> DAR:
        """SET a writable attribute (2, 4..9, 11)."""
        if not fits(value, LIMITER_SHAPES[attr]):
            return DAR.TYPE_UNMATCHED
        self.values[attr] = value
        return DAR.SUCCESS

    def act(self, method: int, params: Data | None) -> DAR:
        """The limiter has no methods."""
        return DAR.OBJECT_UNDEFINED
