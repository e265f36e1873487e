"""Time-of-use calendars on a meter: activity calendar (class 20, 0.0.13.0.0.255) and special
days table (class 11, 0.0.11.0.0.255), encoded and decoded exactly as COSEM types them.

A season starts on a month and day of every year: it is written with the year unspecified
and read back in the year 2000 (``SEASON_YEAR``), the convention of ``domain.tou_calendar``.
A tier is the script selector of the tariffication script table (0.0.10.0.100.255).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import msgspec

from adapters.dlms import axdr
from adapters.dlms.axdr import AxdrError, Data, Tag
from adapters.dlms.cosem_time import CosemTimeError, decode_datetime, encode_datetime
from adapters.dlms.session import AttributeRef, CosemValue, MeterSession, SessionError
from domain.tou_calendar import DayProfile, DaySwitch, Season, SpecialDay, TouCalendar, WeekProfile

ACTIVITY_CALENDAR = 20
CALENDAR_OBIS = "0.0.13.0.0.255"
SPECIAL_DAYS = 11
SPECIAL_DAYS_OBIS = "0.0.11.0.0.255"
TARIFF_SCRIPTS_OBIS = "0.0.10.0.100.255"
ACTIVE_ATTRS = (2, 3, 4, 5)
PASSIVE_ATTRS = (6, 7, 8, 9)
ACTIVATION_TIME = 10
ACTIVATE_PASSIVE = 1
SEASON_YEAR = 2000
_NO_WEEKDAY = 0xFF


class CalendarFormatError(SessionError):
    """The meter's calendar attributes do not have the types COSEM gives them."""


def _ln(obis: str) -> bytes:
    return bytes(int(p) for p in obis.split("."))


def _season_start(start: date) -> bytes:
    return (
        b"\xff\xff"
        + bytes((start.month, start.day, _NO_WEEKDAY, 0, 0, 0, 0))
        + b"\x80\x00"
        + b"\xff"
    )


def encode_calendar(calendar: TouCalendar) -> tuple[Data, Data, Data, Data]:
    """Calendar name, season profiles, week profiles and day profiles as COSEM values."""
    name = axdr.octets(calendar.name.encode("ascii"))
    seasons = axdr.array(
        [
            axdr.structure(
                [
                    axdr.octets(s.name.encode("ascii")),
                    axdr.octets(_season_start(s.start)),
                    axdr.octets(s.week.encode("ascii")),
                ]
            )
            for s in calendar.seasons
        ]
    )
    weeks = axdr.array(
        [
            axdr.structure([axdr.octets(w.name.encode("ascii")), *(axdr.u8(d) for d in w.days)])
            for w in calendar.weeks
        ]
    )
    script = axdr.octets(_ln(TARIFF_SCRIPTS_OBIS))
    days = axdr.array(
        [
            axdr.structure(
                [
                    axdr.u8(d.day_id),
                    axdr.array(
                        [
                            axdr.structure(
                                [
                                    axdr.octets(bytes((s.start.hour, s.start.minute, 0, 0))),
                                    script,
                                    axdr.u16(s.tier),
                                ]
                            )
                            for s in d.switches
                        ]
                    ),
                ]
            )
            for d in calendar.days
        ]
    )
    return name, seasons, weeks, days


def encode_special_days(special_days: tuple[SpecialDay, ...]) -> Data:
    """The special days table entries (index, date, day id), by index."""
    return axdr.array(
        [
            axdr.structure(
                [
                    axdr.u16(s.index),
                    axdr.octets(
                        s.on.year.to_bytes(2, "big")
                        + bytes((s.on.month, s.on.day, s.on.isoweekday()))
                    ),
                    axdr.u8(s.day_id),
                ]
            )
            for s in sorted(special_days, key=lambda s: s.index)
        ]
    )


def _text(value: CosemValue, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise CalendarFormatError(f"{what} is not ASCII text") from None
    if isinstance(value, str):
        return value
    raise CalendarFormatError(f"{what} is not an octet-string")


def _octets(value: CosemValue, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise CalendarFormatError(f"{what} is not an octet-string of {size} octets")
    return value


def _int(value: CosemValue, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CalendarFormatError(f"{what} is not an integer")
    return value


def _list(value: CosemValue, what: str, size: int | None = None) -> list[CosemValue]:
    if value is None and size is None:
        return []  # gurux reads an empty array as None
    if not isinstance(value, list) or (size is not None and len(value) != size):
        raise CalendarFormatError(f"{what} is not a {'structure' if size else 'array'}")
    return value


def decode_calendar(
    name: CosemValue,
    seasons: CosemValue,
    weeks: CosemValue,
    days: CosemValue,
    special_days: CosemValue = None,
    activation: CosemValue = None,
) -> TouCalendar:
    """A ``TouCalendar`` from the calendar and special days attributes as the session reads them."""
    season_list = []
    for i, raw in enumerate(_list(seasons, "season_profile")):
        s_name, s_start, s_week = _list(raw, f"season_profile[{i}]", 3)
        start = _octets(s_start, 12, f"season_profile[{i}].season_start")
        year = int.from_bytes(start[0:2], "big")
        try:
            on = date(SEASON_YEAR if year == 0xFFFF else year, start[2], start[3])
        except ValueError:
            raise CalendarFormatError(f"season_profile[{i}].season_start is no date") from None
        season_list.append(
            Season(name=_text(s_name, "season name"), start=on, week=_text(s_week, "week name"))
        )
    week_list = []
    for i, raw in enumerate(_list(weeks, "week_profile_table")):
        fields = _list(raw, f"week_profile_table[{i}]", 8)
        ids = tuple(_int(v, f"week_profile_table[{i}] day") for v in fields[1:])
        week_list.append(WeekProfile(name=_text(fields[0], "week name"), days=ids))  # type: ignore[arg-type]
    day_list = []
    for i, raw in enumerate(_list(days, "day_profile_table")):
        day_id, day_schedule = _list(raw, f"day_profile_table[{i}]", 2)
        switches = []
        for j, action in enumerate(_list(day_schedule, f"day_profile_table[{i}].day_schedule")):
            start_time, _script, selector = _list(action, f"day_profile_table[{i}][{j}]", 3)
            t = _octets(start_time, 4, f"day_profile_table[{i}][{j}].start_time")
            if t[0] > 23 or t[1] > 59:
                raise CalendarFormatError(f"day_profile_table[{i}][{j}].start_time is no time")
            switches.append(
                DaySwitch(start=time(t[0], t[1]), tier=_int(selector, "script_selector"))
            )
        day_list.append(DayProfile(day_id=_int(day_id, "day_id"), switches=tuple(switches)))
    special = []
    for i, raw in enumerate(
        _list(special_days, "special days") if special_days is not None else []
    ):
        index, on_raw, s_day = _list(raw, f"special day [{i}]", 3)
        raw_date = _octets(on_raw, 5, f"special day [{i}] date")
        try:
            when = date(int.from_bytes(raw_date[0:2], "big"), raw_date[2], raw_date[3])
        except ValueError:
            raise CalendarFormatError(f"special day [{i}] date is no specific date") from None
        special.append(
            SpecialDay(index=_int(index, "index"), on=when, day_id=_int(s_day, "day_id"))
        )
    activate_at: datetime | None = None
    if isinstance(activation, bytes):
        try:
            activate_at = decode_datetime(activation)
        except CosemTimeError:
            activate_at = None  # not specified: no scheduled activation
    return TouCalendar(
        name=_text(name, "calendar_name"),
        seasons=tuple(season_list),
        weeks=tuple(week_list),
        days=tuple(day_list),
        special_days=tuple(sorted(special, key=lambda s: s.index)),
        activate_at=activate_at,
    )


def as_meter_keeps(calendar: TouCalendar) -> TouCalendar:
    """``calendar`` as it reads back from a meter: seasons in ``SEASON_YEAR``, special days by
    index, the activation time in UTC to the hundredth of a second (compare a read with this)."""
    activate_at = calendar.activate_at
    if activate_at is not None:
        utc = activate_at.astimezone(UTC)
        activate_at = utc.replace(microsecond=utc.microsecond // 10_000 * 10_000)
    return msgspec.structs.replace(
        calendar,
        seasons=tuple(
            msgspec.structs.replace(s, start=s.start.replace(year=SEASON_YEAR))
            for s in calendar.seasons
        ),
        special_days=tuple(sorted(calendar.special_days, key=lambda s: s.index)),
        activate_at=activate_at,
    )


def _ref(attribute: int) -> AttributeRef:
    return AttributeRef(ACTIVITY_CALENDAR, CALENDAR_OBIS, attribute)


async def write_calendar(session: MeterSession, calendar: TouCalendar) -> None:
    """Write ``calendar`` as the passive calendar and special days, then schedule its activation
    (``activate_at``) or activate it at once."""
    try:
        values = encode_calendar(calendar)
    except (AxdrError, UnicodeEncodeError) as exc:
        raise ValueError(f"calendar {calendar.name!r} cannot be encoded: {exc}") from None
    for attribute, value in zip(PASSIVE_ATTRS, values, strict=True):
        await session.set(_ref(attribute), value)
    await session.set(
        AttributeRef(SPECIAL_DAYS, SPECIAL_DAYS_OBIS, 2), encode_special_days(calendar.special_days)
    )
    if calendar.activate_at is not None:
        stamp = Data(Tag.OCTET_STRING, encode_datetime(calendar.activate_at))
        await session.set(_ref(ACTIVATION_TIME), stamp)
    else:
        await session.action(ACTIVITY_CALENDAR, CALENDAR_OBIS, ACTIVATE_PASSIVE, axdr.i8(0))


async def read_calendar(session: MeterSession, *, passive: bool = True) -> TouCalendar:
    """The meter's passive (with its activation time) or active calendar, with special days."""
    attrs = (*PASSIVE_ATTRS, ACTIVATION_TIME) if passive else ACTIVE_ATTRS
    refs = [_ref(a) for a in attrs] + [AttributeRef(SPECIAL_DAYS, SPECIAL_DAYS_OBIS, 2)]
    plain: list[CosemValue] = []
    for value in await session.get_many(refs):
        if isinstance(value, SessionError):
            raise value
        plain.append(value)
    if passive:
        name, seasons, weeks, days, activation, special = plain
    else:
        (name, seasons, weeks, days, special), activation = plain, None
    return decode_calendar(name, seasons, weeks, days, special, activation)
