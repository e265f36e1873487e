"""The quantities the head-end understands, named by OBIS code, with units and physical limits."""

from __future__ import annotations

import enum

import msgspec


class Kind(enum.StrEnum):
    """Whether a quantity is a cumulative register or an instantaneous value."""

    REGISTER = "REGISTER"
    """Cumulative (energy): never negative, never decreasing over time."""
    INSTANT = "INSTANT"


class Quantity(msgspec.Struct, frozen=True, kw_only=True):
    """One measurable quantity: OBIS code, short id for storage, alias, unit and limits."""

    id: int
    """Stable small integer used in the time-series tables (never reuse a retired id)."""
    obis: str
    alias: str
    unit: str
    kind: Kind
    minimum: float
    maximum: float


def _q(id_: int, obis: str, alias: str, unit: str, kind: Kind, lo: float, hi: float) -> Quantity:
    return Quantity(id=id_, obis=obis, alias=alias, unit=unit, kind=kind, minimum=lo, maximum=hi)


R, INST = Kind.REGISTER, Kind.INSTANT
E_MAX = 1e13  # Wh: 10 TWh, beyond any meter register

# Units are DLMS's (Blue Book unit enumeration): Wh, varh, V, A, W, var, Hz, and 1 for
# power factor; values are stored after the scaler is applied (no k/M prefixes).
QUANTITIES: tuple[Quantity, ...] = (
    _q(1, "1.0.1.8.0.255", "energy_import", "Wh", R, 0, E_MAX),
    _q(2, "1.0.2.8.0.255", "energy_export", "Wh", R, 0, E_MAX),
    _q(3, "1.0.3.8.0.255", "reactive_energy_import", "varh", R, 0, E_MAX),
    _q(4, "1.0.4.8.0.255", "reactive_energy_export", "varh", R, 0, E_MAX),
    _q(10, "1.0.1.7.0.255", "power_import", "W", INST, 0, 5e6),
    _q(11, "1.0.2.7.0.255", "power_export", "W", INST, 0, 5e6),
    _q(12, "1.0.3.7.0.255", "reactive_power_import", "var", INST, 0, 5e6),
    _q(20, "1.0.32.7.0.255", "voltage_l1", "V", INST, 0, 500),
    _q(21, "1.0.52.7.0.255", "voltage_l2", "V", INST, 0, 500),
    _q(22, "1.0.72.7.0.255", "voltage_l3", "V", INST, 0, 500),
    _q(30, "1.0.31.7.0.255", "current_l1", "A", INST, 0, 2000),
    _q(31, "1.0.51.7.0.255", "current_l2", "A", INST, 0, 2000),
    _q(32, "1.0.71.7.0.255", "current_l3", "A", INST, 0, 2000),
    _q(40, "1.0.13.7.0.255", "power_factor", "1", INST, -1, 1),
    _q(41, "1.0.14.7.0.255", "frequency", "Hz", INST, 45, 65),
)

BY_OBIS: dict[str, Quantity] = {q.obis: q for q in QUANTITIES}
BY_ALIAS: dict[str, Quantity] = {q.alias: q for q in QUANTITIES}
BY_ID: dict[int, Quantity] = {q.id: q for q in QUANTITIES}

ENERGY_IMPORT = BY_ALIAS["energy_import"]
POWER_IMPORT = BY_ALIAS["power_import"]


def lookup(code_or_alias: str) -> Quantity | None:
    """The quantity with this OBIS code (``1.0.1.8.0.255``, also ``1-0:1.8.0*255``) or alias."""
    key = code_or_alias.strip()
    if key in BY_ALIAS:
        return BY_ALIAS[key]
    return BY_OBIS.get(normalise_obis(key))


def normalise_obis(code: str) -> str:
    """Dotted form of an OBIS code given as ``A-B:C.D.E*F`` or ``A.B.C.D.E.F``."""
    text = code.replace("-", ".").replace(":", ".").replace("*", ".")
    parts = text.split(".")
    if len(parts) == 5:
        parts.append("255")
    return ".".join(parts)
