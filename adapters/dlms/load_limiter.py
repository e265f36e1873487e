"""Load limitation on a meter: the limiter (COSEM class 71, 0.0.17.0.0.255) monitoring import
active power (1.0.1.7.0.255, register attribute 2).

Thresholds are whole watts (double-long-unsigned, the monitored register's type with scaler
0); durations are seconds. No emergency profile is written as profile 0 with an unspecified
activation time and duration 0, and an empty emergency profile group list.
"""

from __future__ import annotations

from datetime import UTC

import msgspec

from adapters.dlms import axdr
from adapters.dlms.axdr import Data
from adapters.dlms.cosem import REGISTER
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime, encode_datetime
from adapters.dlms.session import AttributeRef, CosemValue, MeterSession, SessionError
from domain.load_limit import EmergencyProfile, LoadLimit

LIMITER = 71
LIMITER_OBIS = "0.0.17.0.0.255"
MONITORED_OBIS = "1.0.1.7.0.255"
MONITORED, NORMAL, EMERGENCY, MIN_OVER, MIN_UNDER, PROFILE, GROUPS = 2, 4, 5, 6, 7, 8, 9
NOT_SPECIFIED = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")


class LimiterFormatError(SessionError):
    """The meter's limiter attributes do not have the types COSEM gives them."""


def _ref(attribute: int) -> AttributeRef:
    return AttributeRef(LIMITER, LIMITER_OBIS, attribute)


def encode_load_limit(limit: LoadLimit) -> dict[int, Data]:
    """The limiter attributes that hold ``limit``, by attribute index (in writing order)."""
    emergency = limit.emergency
    if emergency is None:
        profile = axdr.structure([axdr.u16(0), axdr.octets(NOT_SPECIFIED), axdr.u32(0)])
        groups = axdr.array([])
    else:
        profile = axdr.structure(
            [
                axdr.u16(emergency.profile_id),
                axdr.octets(encode_datetime(emergency.activation)),
                axdr.u32(emergency.duration_s),
            ]
        )
        groups = axdr.array([axdr.u16(emergency.profile_id)])
    monitored = bytes(int(p) for p in MONITORED_OBIS.split("."))
    return {
        MONITORED: axdr.structure([axdr.u16(REGISTER), axdr.octets(monitored), axdr.i8(2)]),
        NORMAL: axdr.u32(round(limit.threshold_normal_w)),
        EMERGENCY: axdr.u32(round(limit.threshold_emergency_w)),
        MIN_OVER: axdr.u32(limit.min_over_threshold_s),
        MIN_UNDER: axdr.u32(limit.min_under_threshold_s),
        PROFILE: profile,
        GROUPS: groups,
    }


def as_meter_keeps(limit: LoadLimit) -> LoadLimit:
    """``limit`` as it reads back from a meter: whole watts, the emergency activation in UTC
    to the hundredth of a second (compare a read with this)."""
    emergency = limit.emergency
    if emergency is not None:
        utc = emergency.activation.astimezone(UTC)
        emergency = msgspec.structs.replace(
            emergency, activation=utc.replace(microsecond=utc.microsecond // 10_000 * 10_000)
        )
    return msgspec.structs.replace(
        limit,
        threshold_normal_w=float(round(limit.threshold_normal_w)),
        threshold_emergency_w=float(round(limit.threshold_emergency_w)),
        emergency=emergency,
    )


def _number(value: CosemValue, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimiterFormatError(f"limiter {what} is not a number")
    return value


def decode_load_limit(
    normal: CosemValue,
    emergency: CosemValue,
    min_over: CosemValue,
    min_under: CosemValue,
    profile: CosemValue,
) -> LoadLimit:
    """A ``LoadLimit`` from the limiter attributes 4..8 as the session reads them."""
    if not isinstance(profile, list) or len(profile) != 3:
        raise LimiterFormatError("limiter emergency_profile is not a structure of 3")
    profile_id, activation, duration = profile
    active_profile: EmergencyProfile | None = None
    if _number(duration, "emergency_duration"):
        if not isinstance(activation, bytes):
            raise LimiterFormatError("limiter emergency_activation_time is not an octet-string")
        try:
            start = decode_datetime(activation)
        except CosemTimeError as exc:
            raise LimiterFormatError(f"limiter emergency_activation_time: {exc}") from None
        active_profile = EmergencyProfile(
            profile_id=int(_number(profile_id, "emergency_profile_id")),
            activation=start,
            duration_s=int(_number(duration, "emergency_duration")),
        )
    return LoadLimit(
        threshold_normal_w=float(_number(normal, "threshold_normal")),
        threshold_emergency_w=float(_number(emergency, "threshold_emergency")),
        min_over_threshold_s=int(_number(min_over, "min_over_threshold_duration")),
        min_under_threshold_s=int(_number(min_under, "min_under_threshold_duration")),
        emergency=active_profile,
    )


async def write_load_limit(session: MeterSession, limit: LoadLimit) -> None:
    """Write ``limit`` to the meter's limiter: monitored value, thresholds, durations, emergency."""
    limit.check()
    for attribute, value in encode_load_limit(limit).items():
        await session.set(_ref(attribute), value)


async def read_load_limit(session: MeterSession) -> LoadLimit:
    """The load limit the meter's limiter holds."""
    values = await session.get_many(
        [_ref(a) for a in (NORMAL, EMERGENCY, MIN_OVER, MIN_UNDER, PROFILE)]
    )
    plain: list[CosemValue] = []
    for value in values:
        if isinstance(value, SessionError):
            raise value
        plain.append(value)
    return decode_load_limit(*plain)
