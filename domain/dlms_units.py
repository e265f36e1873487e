"""DLMS unit codes (Blue Book, ``scaler_unit`` of registers) and the catalogue's unit symbols."""

from __future__ import annotations

BLUE_BOOK_UNITS: dict[int, str] = {
    1: "a",
    2: "mo",
    3: "wk",
    4: "d",
    5: "h",
    6: "min",
    7: "s",
    8: "°",
    9: "°C",
    10: "currency",
    11: "m",
    12: "m/s",
    13: "m³",
    14: "m³ (corrected)",
    15: "m³/h",
    16: "m³/h (corrected)",
    17: "m³/d",
    18: "m³/d (corrected)",
    19: "l",
    20: "kg",
    21: "N",
    22: "Nm",
    23: "Pa",
    24: "bar",
    25: "J",
    26: "J/h",
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    34: "C",
    35: "V",
    36: "V/m",
    37: "F",
    38: "Ω",
    39: "Ωm²/m",
    40: "Wb",
    41: "T",
    42: "A/m",
    43: "H",
    44: "Hz",
    45: "1/(Wh)",
    46: "1/(varh)",
    47: "1/(VAh)",
    48: "V²h",
    49: "A²h",
    50: "kg/s",
    51: "S",
    52: "K",
    53: "1/(V²h)",
    54: "1/(A²h)",
    55: "1/m³",
    56: "%",
    57: "Ah",
    254: "other",
    255: "1",
}
"""Unit codes of the Blue Book's enumeration this head-end recognises (255: no unit, a count)."""


def unit_symbol(code: int) -> str | None:
    """The symbol of a Blue Book unit code; ``None`` for a code outside the enumeration."""
    return BLUE_BOOK_UNITS.get(code)


def unit_code(symbol: str) -> int | None:
    """The Blue Book code of a unit symbol as the quantity catalogue writes it."""
    for code, known in BLUE_BOOK_UNITS.items():
        if known == symbol:
            return code
    return None
