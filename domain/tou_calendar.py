"""Time-of-use calendars as a meter keeps them: seasons, week and day profiles, special days.

The shape follows COSEM's activity calendar (class 20) and special days table (class 11):
a day profile switches the tariff tier (the script selector) at given times, a week profile
names a day profile per weekday, seasons choose a week profile from their start date on, and
special days override the weekday's profile on given dates.
"""

from __future__ import annotations

from datetime import date, datetime, time

import msgspec

from domain.errors import Collector
from domain.text import NAME_RE, NAME_RULE, check_identifier

MAX_DAY_PROFILES = 32
MAX_SWITCHES_PER_DAY = 16
MAX_WEEK_PROFILES = 8
MAX_SEASONS = 12
MAX_SPECIAL_DAYS = 64
MAX_TIER = 8
"""Tiers are script selectors 1..MAX_TIER of the tariffication script table (0.0.10.0.100.255)."""
NAME_CHARS = 8
"""Calendar, season and week names: COSEM octet-strings, kept short for every meter's sake."""


class DaySwitch(msgspec.Struct, frozen=True, kw_only=True):
    """From ``start`` (local time of the meter) on, the tier ``tier`` applies."""

    start: time
    tier: int


class DayProfile(msgspec.Struct, frozen=True, kw_only=True):
    """One day's tier switches, in order of time; the first starts at midnight."""

    day_id: int
    switches: tuple[DaySwitch, ...]


class WeekProfile(msgspec.Struct, frozen=True, kw_only=True):
    """The day profile of each weekday, Monday first."""

    name: str
    days: tuple[int, int, int, int, int, int, int]


class Season(msgspec.Struct, frozen=True, kw_only=True):
    """From ``start`` (month and day, every year) on, the week profile ``week`` applies."""

    name: str
    start: date
    week: str


class SpecialDay(msgspec.Struct, frozen=True, kw_only=True):
    """On ``on`` the day profile ``day_id`` applies whatever the weekday."""

    index: int
    on: date
    day_id: int


class TouCalendar(msgspec.Struct, frozen=True, kw_only=True):
    """A complete time-of-use calendar, written to the meter's passive calendar."""

    name: str
    seasons: tuple[Season, ...]
    weeks: tuple[WeekProfile, ...]
    days: tuple[DayProfile, ...]
    special_days: tuple[SpecialDay, ...] = ()
    activate_at: datetime | None = None
    """When the meter makes the passive calendar active (None: at once, by the action)."""

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every rule this calendar breaks."""
        errors = Collector()
        _check_name(errors, "name", self.name)
        _check_days(errors, self.days)
        day_ids = {d.day_id for d in self.days}
        if not 1 <= len(self.weeks) <= MAX_WEEK_PROFILES:
            errors.add("weeks", "count", f"give 1..{MAX_WEEK_PROFILES} week profiles")
        week_names = [w.name for w in self.weeks]
        if len(set(week_names)) != len(week_names):
            errors.add("weeks", "unique", "week profile names must be unique")
        for i, week in enumerate(self.weeks):
            _check_name(errors, f"weeks[{i}].name", week.name)
            for d, day_id in enumerate(week.days):
                if day_id not in day_ids:
                    errors.add(
                        f"weeks[{i}].days[{d}]", "known", f"day profile {day_id} is not defined"
                    )
        if not 1 <= len(self.seasons) <= MAX_SEASONS:
            errors.add("seasons", "count", f"give 1..{MAX_SEASONS} seasons")
        starts = [(s.start.month, s.start.day) for s in self.seasons]
        if len(set(starts)) != len(starts):
            errors.add("seasons", "unique", "two seasons cannot start on the same day")
        for i, season in enumerate(self.seasons):
            _check_name(errors, f"seasons[{i}].name", season.name)
            if season.week not in week_names:
                errors.add(
                    f"seasons[{i}].week", "known", f"week profile {season.week!r} is not defined"
                )
        _check_special_days(errors, self.special_days, day_ids)
        if self.activate_at is not None and self.activate_at.tzinfo is None:
            errors.add("activateAt", "timezone", "activateAt must carry a UTC offset")
        errors.raise_if_any()

    def tier_at(self, moment: datetime) -> int:
        """The tier this calendar applies at ``moment`` (the meter's local time)."""
        day = moment.date()
        special = {s.on: s.day_id for s in self.special_days}
        day_id = special.get(day)
        if day_id is None:
            key = (day.month, day.day)
            ordered = sorted(self.seasons, key=lambda s: (s.start.month, s.start.day))
            current = [s for s in ordered if (s.start.month, s.start.day) <= key]
            season = current[-1] if current else ordered[-1]  # before the first: last year's
            week = next(w for w in self.weeks if w.name == season.week)
            day_id = week.days[day.weekday()]
        profile = next(d for d in self.days if d.day_id == day_id)
        tier = profile.switches[0].tier
        for switch in profile.switches:
            if switch.start <= moment.time():
                tier = switch.tier
        return tier


def _check_name(errors: Collector, field: str, value: str) -> None:
    if not 1 <= len(value) <= NAME_CHARS:
        errors.add(field, "length", f"{field} must have 1..{NAME_CHARS} characters")
    else:
        check_identifier(errors, field, value, NAME_RE, NAME_RULE)


def _check_days(errors: Collector, days: tuple[DayProfile, ...]) -> None:
    if not 1 <= len(days) <= MAX_DAY_PROFILES:
        errors.add("days", "count", f"give 1..{MAX_DAY_PROFILES} day profiles")
    ids = [d.day_id for d in days]
    if len(set(ids)) != len(ids):
        errors.add("days", "unique", "day profile ids must be unique")
    for i, day in enumerate(days):
        if not 0 <= day.day_id <= 255:
            errors.add(f"days[{i}].dayId", "range", "dayId must be 0..255")
        if not 1 <= len(day.switches) <= MAX_SWITCHES_PER_DAY:
            errors.add(
                f"days[{i}].switches", "count", f"give 1..{MAX_SWITCHES_PER_DAY} tier switches"
            )
            continue
        if day.switches[0].start != time(0, 0):
            errors.add(f"days[{i}].switches[0].start", "midnight", "the first switch is 00:00")
        starts = [s.start for s in day.switches]
        if starts != sorted(set(starts)):
            errors.add(f"days[{i}].switches", "order", "switch times must strictly increase")
        for j, switch in enumerate(day.switches):
            if not 1 <= switch.tier <= MAX_TIER:
                errors.add(f"days[{i}].switches[{j}].tier", "range", f"tier must be 1..{MAX_TIER}")
            if switch.start.second or switch.start.microsecond or switch.start.tzinfo:
                errors.add(
                    f"days[{i}].switches[{j}].start", "minutes", "give whole minutes, local time"
                )


def _check_special_days(
    errors: Collector, special_days: tuple[SpecialDay, ...], day_ids: set[int]
) -> None:
    if len(special_days) > MAX_SPECIAL_DAYS:
        errors.add("specialDays", "count", f"give at most {MAX_SPECIAL_DAYS} special days")
    indices = [s.index for s in special_days]
    if len(set(indices)) != len(indices):
        errors.add("specialDays", "unique", "special day indices must be unique")
    dates = [s.on for s in special_days]
    if len(set(dates)) != len(dates):
        errors.add("specialDays", "unique-date", "each date may be special once")
    for i, special in enumerate(special_days):
        if not 0 <= special.index <= 65535:
            errors.add(f"specialDays[{i}].index", "range", "index must be 0..65535")
        if special.day_id not in day_ids:
            errors.add(
                f"specialDays[{i}].dayId", "known", f"day profile {special.day_id} is not defined"
            )
