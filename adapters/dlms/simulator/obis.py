"""Logical names (OBIS codes) the simulated meter serves, as 6-byte values."""

from __future__ import annotations


def ln(code: str) -> bytes:
    """``"1.0.1.8.0.255"`` -> the 6-byte logical name."""
    parts = [int(p) for p in code.split(".")]
    if len(parts) != 6 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"{code!r} is not an OBIS code of 6 numbers 0..255")
    return bytes(parts)


def text(obis: bytes) -> str:
    """The dotted form of a 6-byte logical name."""
    return ".".join(str(b) for b in obis)


CLOCK = ln("0.0.1.0.0.255")
LOGICAL_DEVICE_NAME = ln("0.0.42.0.0.255")
SERIAL_NUMBER = ln("0.0.96.1.0.255")
INVOCATION_COUNTER = ln("0.0.43.1.0.255")
ASSOCIATION = ln("0.0.40.0.0.255")
LOAD_PROFILE = ln("1.0.99.1.0.255")
EVENT_LOG = ln("0.0.99.98.0.255")
EVENT_CODE = ln("0.0.96.11.0.255")
DISCONNECTOR_LOG = ln("0.0.99.98.2.255")
DISCONNECTOR_EVENT_CODE = ln("0.0.96.11.2.255")
DISCONNECT_CONTROL = ln("0.0.96.3.10.255")
PUSH_SETUP = ln("0.0.25.9.0.255")

ACTIVE_IMPORT = ln("1.0.1.8.0.255")
ACTIVE_EXPORT = ln("1.0.2.8.0.255")
REACTIVE_IMPORT = ln("1.0.3.8.0.255")
REACTIVE_EXPORT = ln("1.0.4.8.0.255")
VOLTAGE = (ln("1.0.32.7.0.255"), ln("1.0.52.7.0.255"), ln("1.0.72.7.0.255"))
CURRENT = (ln("1.0.31.7.0.255"), ln("1.0.51.7.0.255"), ln("1.0.71.7.0.255"))
FREQUENCY = ln("1.0.14.7.0.255")
POWER_FACTOR = ln("1.0.13.7.0.255")
ACTIVE_FIRMWARE = ln("1.0.0.2.0.255")
IMAGE_TRANSFER = ln("0.0.44.0.0.255")
ACTIVITY_CALENDAR = ln("0.0.13.0.0.255")
SPECIAL_DAYS = ln("0.0.11.0.0.255")
LIMITER = ln("0.0.17.0.0.255")
TARIFF_SCRIPTS = ln("0.0.10.0.100.255")
ACTIVE_POWER_IMPORT = ln("1.0.1.7.0.255")
IMAGE_ACTIVATION_SCHEDULE = ln("0.0.15.0.2.255")
