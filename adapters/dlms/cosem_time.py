"""COSEM date-time: 12 octets of date, time, deviation from UTC (minutes) and clock status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEVIATION_UNSPECIFIED = -0x8000


class CosemTimeError(ValueError):
    """A date-time that is malformed or has unspecified fields where a full instant is needed."""


def encode_datetime(when: datetime, *, deviation: int = 0, status: int = 0) -> bytes:
    """Encode an aware datetime as UTC with the given deviation (minutes) and clock status."""
    if when.tzinfo is None:
        raise CosemTimeError("date-time must be timezone-aware")
    # Green Book convention: deviation = UTC - local time, in minutes.
    local = when.astimezone(UTC) - timedelta(minutes=deviation)
    return (
        local.year.to_bytes(2, "big")
        + bytes(
            (
                local.month,
                local.day,
                local.isoweekday(),
                local.hour,
                local.minute,
                local.second,
                local.microsecond // 10_000,
            )
        )
        + deviation.to_bytes(2, "big", signed=True)
        + bytes((status,))
    )


def decode_datetime(raw: bytes) -> datetime:
    """Decode a fully specified date-time to an aware UTC datetime.

    An unspecified deviation (0x8000) means the meter's local time, which is UTC here.
    """
    if len(raw) != 12:
        raise CosemTimeError(f"date-time needs 12 octets, got {len(raw)}")
    year = int.from_bytes(raw[0:2], "big")
    month, day, _weekday, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    if year == 0xFFFF or 0xFF in (month, day, hour, minute) or month > 12:
        raise CosemTimeError("date-time has unspecified or special fields (wildcards)")
    second = 0 if second == 0xFF else second
    hundredths = 0 if hundredths == 0xFF else hundredths
    try:
        local = datetime(year, month, day, hour, minute, second, hundredths * 10_000, tzinfo=UTC)
    except ValueError as exc:
        raise CosemTimeError(f"date-time is not a valid instant: {exc}") from None
    if deviation == DEVIATION_UNSPECIFIED:
        return local
    if not -720 <= deviation <= 720:
        raise CosemTimeError(f"deviation {deviation} outside -720..720 minutes")
    return local + timedelta(minutes=deviation)
