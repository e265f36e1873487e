"""COSEM objects the head-end reads and writes, and turning raw register values into readings.

Pure code with no DLMS stack behind it: any ``MeterSession`` implementation shares it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from domain.dlms_units import unit_symbol
from domain.obis import BY_OBIS, Quantity
from domain.profile_ledger import LOAD_PROFILE as LOAD_PROFILE
from domain.read_plan import REGISTER_OBIS
from domain.readings import Quality

# Interface classes (Blue Book).
DATA = 1
REGISTER = 3
PROFILE_GENERIC = 7
CLOCK = 8
DISCONNECT_CONTROL = 70

CLOCK_OBIS = "0.0.1.0.0.255"
LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
SERIAL_NUMBER = "0.0.96.1.0.255"
INVOCATION_COUNTER = "0.0.43.1.0.255"
DISCONNECTOR = "0.0.96.3.10.255"
DISCONNECT_METHOD = 1
RECONNECT_METHOD = 2
OUTPUT_STATE = 2
CONTROL_STATE = 3

REGISTERS: tuple[str, ...] = REGISTER_OBIS
"""Registers of a full register read (``domain.read_plan``)."""
ASSOCIATION_CLASS = 15
ASSOCIATION_LN = "0.0.40.0.0.255"
OBJECT_LIST = 2


class DataAccessResult(enum.IntEnum):
    """Data-Access-Result of GET/SET and Action-Result of ACTION (same numbers, Green Book)."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


def result_name(code: int) -> str:
    """``hardware-fault`` for 1, …; ``result <n>`` for codes outside the enumeration."""
    try:
        return DataAccessResult(code).name.lower().replace("_", "-")
    except ValueError:
        return f"result {code}"


DENIED_RESULTS = frozenset(
    {DataAccessResult.READ_WRITE_DENIED, DataAccessResult.SCOPE_OF_ACCESS_VIOLATED}
)
MISSING_RESULTS = frozenset(
    {
        DataAccessResult.OBJECT_UNDEFINED,
        DataAccessResult.OBJECT_CLASS_INCONSISTENT,
        DataAccessResult.OBJECT_UNAVAILABLE,
    }
)


class ScalingError(ValueError):
    """A register value that cannot become a reading: wrong unit, not a number."""


class UnitMismatch(ScalingError):
    """The register is reported in a Blue Book unit other than the catalogue's: refused."""


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    """A register's scaler (power of ten) and DLMS unit code."""

    scaler: int
    unit: int

    @classmethod
    def parse(cls, value: object, obis: str) -> ScalerUnit:
        """From the ``scaler_unit`` attribute: a structure of (integer, enum)."""
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ScalingError(f"{obis} scaler_unit is not a structure of two integers")
        scaler, unit = value
        if not -12 <= scaler <= 12:
            raise ScalingError(f"{obis} scaler {scaler} is outside -12..12")
        return cls(scaler=scaler, unit=unit)


@dataclass(frozen=True, slots=True)
class Scaling:
    """How one register's raw values become readings, checked once for many values."""

    quantity: Quantity
    factor: float
    digits: int
    quality: int = Quality.VALID
    """``UNIT_UNVERIFIED`` when the meter's unit (or scaler) is unknown: stored, flagged."""

    @classmethod
    def of(cls, obis: str, scaler_unit: ScalerUnit) -> Scaling:
        """The scaling of ``obis`` reported with ``scaler_unit``.

        A unit code outside the Blue Book's enumeration (e.g. 0) gives a flagged scaling
        (the value is stored with ``UNIT_UNVERIFIED``); a Blue Book unit other than the
        catalogue's raises ``UnitMismatch`` (the register measures something else).
        """
        quantity = _quantity(obis)
        unit = unit_symbol(scaler_unit.unit)
        if unit is not None and unit != quantity.unit:
            raise UnitMismatch(
                f"{obis} is reported in unit code {scaler_unit.unit} ({unit}); "
                f"the head-end stores {quantity.alias} in {quantity.unit}"
            )
        quality = Quality.VALID if unit is not None else Quality.UNIT_UNVERIFIED
        # Rounding to these digits removes binary noise from the power of ten
        # (e.g. 2314 * 0.1 → 231.4, not 231.40000001).
        return cls(quantity, 10.0**scaler_unit.scaler, max(0, -scaler_unit.scaler) + 6, quality)

    @classmethod
    def unverified(cls, obis: str) -> Scaling:
        """Raw values of ``obis`` taken as they are (scaler 0), flagged: no scaler_unit known."""
        return cls(_quantity(obis), 1.0, 6, Quality.UNIT_UNVERIFIED)

    def apply(self, raw: object) -> float:
        """``raw`` * 10^scaler in the quantity's unit."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ScalingError(f"{self.quantity.obis} value is not a number")
        value = float(raw) * self.factor
        if not math.isfinite(value):
            raise ScalingError(f"{self.quantity.obis} value is not finite")
        return round(value, self.digits)


def _quantity(obis: str) -> Quantity:
    quantity = BY_OBIS.get(obis)
    if quantity is None:
        raise ScalingError(f"{obis} is not a quantity the head-end knows")
    return quantity


def scaled(obis: str, raw: object, scaler_unit: ScalerUnit) -> tuple[Quantity, float]:
    """The catalogue quantity of ``obis`` and ``raw`` * 10^scaler in the quantity's unit."""
    scaling = Scaling.of(obis, scaler_unit)
    return scaling.quantity, scaling.apply(raw)
