"""COSEM objects the head-end reads and writes, and turning raw register values into readings.

Pure code with no DLMS stack behind it: any ``MeterSession`` implementation shares it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from domain.obis import BY_OBIS, Quantity
from domain.profile_ledger import LOAD_PROFILE as LOAD_PROFILE

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

REGISTERS: tuple[str, ...] = (
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

# DLMS unit enumeration (Blue Book, class 3 scaler_unit) → the catalogue's unit symbols.
UNITS: dict[int, str] = {
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    35: "V",
    44: "Hz",
    255: "1",
}


class ScalingError(ValueError):
    """A register value that cannot become a reading: wrong unit, not a number."""


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

    @classmethod
    def of(cls, obis: str, scaler_unit: ScalerUnit) -> Scaling:
        """The scaling of ``obis`` reported with ``scaler_unit``; ``ScalingError`` if it can't."""
        quantity = BY_OBIS.get(obis)
        if quantity is None:
            raise ScalingError(f"{obis} is not a quantity the head-end knows")
        unit = UNITS.get(scaler_unit.unit)
        if unit != quantity.unit:
            raise ScalingError(
                f"{obis} is reported in unit code {scaler_unit.unit} ({unit or 'unknown'}); "
                f"the head-end stores {quantity.alias} in {quantity.unit}"
            )
        # Rounding to these digits removes binary noise from the power of ten
        # (e.g. 2314 * 0.1 → 231.4, not 231.40000001).
        return cls(quantity, 10.0**scaler_unit.scaler, max(0, -scaler_unit.scaler) + 6)

    def apply(self, raw: object) -> float:
        """``raw`` * 10^scaler in the quantity's unit."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ScalingError(f"{self.quantity.obis} value is not a number")
        value = float(raw) * self.factor
        if not math.isfinite(value):
            raise ScalingError(f"{self.quantity.obis} value is not finite")
        return round(value, self.digits)


def scaled(obis: str, raw: object, scaler_unit: ScalerUnit) -> tuple[Quantity, float]:
    """The catalogue quantity of ``obis`` and ``raw`` * 10^scaler in the quantity's unit."""
    scaling = Scaling.of(obis, scaler_unit)
    return scaling.quantity, scaling.apply(raw)
