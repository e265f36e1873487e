"""Pure tariff rules: load tiers, time-of-use periods, the minimum-change rule and overrides."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, time
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from domain.errors import Collector
from domain.text import check_text
from domain.values import check_region

PRICE_QUANTUM = Decimal("0.0001")
"""Prices per kWh are kept to four decimal places of the currency."""
DEFAULT_MIN_CHANGE_PCT = Decimal(2)
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z")
HUNDRED = Decimal(100)
MAX_REASON = 500
MAX_PRICE = Decimal(1_000_000)
"""Highest price per kWh accepted (any currency): far above any real tariff, and small enough
that every product of prices, surcharges and multipliers stays exact to four places."""
MAX_SURCHARGE_PCT = Decimal(1000)
MAX_MULTIPLIER = Decimal(100)
MAX_AUTHOR_CHARS = 200


class LoadTier(msgspec.Struct, frozen=True, kw_only=True):
    """A surcharge that applies from ``threshold_pct`` load (inclusive) up to the next tier."""

    threshold_pct: float
    surcharge_pct: Decimal


DEFAULT_TIERS: tuple[LoadTier, ...] = (
    LoadTier(threshold_pct=60.0, surcharge_pct=Decimal(10)),
    LoadTier(threshold_pct=80.0, surcharge_pct=Decimal(20)),
    LoadTier(threshold_pct=90.0, surcharge_pct=Decimal(35)),
)
"""Below 60 % base; [60, 80) +10 %; [80, 90) +20 %; 90 % and above +35 %."""


class TimeOfUsePeriod(msgspec.Struct, frozen=True, kw_only=True):
    """A local-time window on some ISO weekdays (1 = Monday) that multiplies the price.

    ``start`` is inclusive and ``end`` exclusive; an ``end`` at or before ``start`` runs past
    midnight into the next day, and ``days`` name the day on which the window starts.
    """

    days: frozenset[int]
    start: time
    end: time
    multiplier: Decimal

    def covers(self, local: datetime) -> bool:
        """True when the local wall-clock time ``local`` falls inside this period."""
        clock = local.time().replace(tzinfo=None)
        weekday = local.isoweekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= clock < self.end
        if clock >= self.start:
            return weekday in self.days
        previous_day = 7 if weekday == 1 else weekday - 1
        return clock < self.end and previous_day in self.days

    def check(self, errors: Collector, prefix: str) -> None:
        """Record every rule this period breaks."""
        if not self.days or not self.days <= set(range(1, 8)):
            errors.add(f"{prefix}.days", "weekday", "days must be ISO weekdays 1..7, at least one")
        if self.start == self.end:
            errors.add(f"{prefix}.end", "empty", "a period must not start and end at the same time")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            errors.add(f"{prefix}.start", "local", "start and end are local times without zone")
        if not self.multiplier.is_finite() or self.multiplier <= 0:
            errors.add(f"{prefix}.multiplier", "positive", "multiplier must be greater than 0")
        elif self.multiplier > MAX_MULTIPLIER:
            errors.add(
                f"{prefix}.multiplier", "range", f"multiplier must be at most {MAX_MULTIPLIER}"
            )


class Override(msgspec.Struct, frozen=True, kw_only=True):
    """An administrator's fixed price that beats the load-based price until it expires."""

    price: Decimal
    reason: str
    author: str
    expires_at: datetime

    def active(self, now: datetime) -> bool:
        """True while the override has not reached its expiry."""
        return now < self.expires_at


class TariffSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What an administrator states when creating a region's tariff."""

    region: str
    currency: str
    base_price: Decimal
    timezone: str
    tiers: tuple[LoadTier, ...] = DEFAULT_TIERS
    tou: tuple[TimeOfUsePeriod, ...] = ()
    min_change_pct: Decimal = DEFAULT_MIN_CHANGE_PCT

    def check(self, errors: Collector) -> None:
        """Record every rule this spec breaks."""
        check_region(errors, self.region)
        check_currency(errors, self.currency)
        check_price(errors, "basePrice", self.base_price)
        check_timezone(errors, self.timezone)
        check_tiers(errors, self.tiers)
        check_tou(errors, self.tou)
        if not self.min_change_pct.is_finite() or not 0 <= self.min_change_pct < HUNDRED:
            errors.add("minChangePct", "range", "minimum change must be in [0, 100) percent")


# -- field rules -------------------------------------------------------------------------


def check_price(errors: Collector, field: str, price: Decimal) -> None:
    """Record a broken rule unless ``price`` is a finite positive amount up to ``MAX_PRICE``."""
    if not price.is_finite() or price <= 0:
        errors.add(field, "positive", f"{field} must be greater than 0")
    elif price > MAX_PRICE:
        errors.add(field, "range", f"{field} must be at most {MAX_PRICE} per kWh")
    elif quantize(price) <= 0:
        errors.add(field, "precision", f"{field} rounds to 0 at {PRICE_QUANTUM} per kWh")


def check_currency(errors: Collector, currency: str) -> None:
    """Record a broken rule unless ``currency`` looks like an ISO-4217 code."""
    if not CURRENCY_RE.match(currency):
        errors.add("currency", "iso4217", "currency must be 3 upper-case letters (ISO 4217)")


def check_timezone(errors: Collector, name: str) -> None:
    """Record a broken rule unless ``name`` is a known IANA time zone."""
    if not known_timezone(name):
        errors.add("timezone", "known", f"unknown time zone {name!r}")


def check_tiers(errors: Collector, tiers: Sequence[LoadTier], prefix: str = "tiers") -> None:
    """Record broken rules: thresholds rise strictly in (0, 100), surcharges >= 0 never fall."""
    previous = 0.0
    previous_surcharge = Decimal(0)
    for i, tier in enumerate(tiers):
        where = f"{prefix}[{i}]"
        t = tier.threshold_pct
        if not math.isfinite(t) or not 0 < t < 100:
            errors.add(f"{where}.thresholdPct", "range", "threshold must be between 0 and 100")
        elif t <= previous:
            errors.add(
                f"{where}.thresholdPct", "increasing", "thresholds must be strictly increasing"
            )
        if math.isfinite(t):
            previous = max(previous, t)
        surcharge = tier.surcharge_pct
        if not surcharge.is_finite() or surcharge < 0:
            errors.add(f"{where}.surchargePct", "non-negative", "surcharge must be 0 or more")
        elif surcharge > MAX_SURCHARGE_PCT:
            errors.add(
                f"{where}.surchargePct", "range", f"surcharge must be at most {MAX_SURCHARGE_PCT} %"
            )
        elif surcharge < previous_surcharge:
            errors.add(
                f"{where}.surchargePct",
                "non-decreasing",
                "a higher load tier must not have a lower surcharge",
            )
        else:
            previous_surcharge = surcharge


def check_tou(errors: Collector, periods: Sequence[TimeOfUsePeriod], prefix: str = "tou") -> None:
    """Record every rule the time-of-use periods break."""
    for i, period in enumerate(periods):
        period.check(errors, f"{prefix}[{i}]")


def check_load(errors: Collector, load_pct: float) -> None:
    """Record a broken rule unless ``load_pct`` is a finite, non-negative percentage."""
    if not math.isfinite(load_pct) or load_pct < 0:
        errors.add("loadPct", "range", "load must be a finite percentage of 0 or more")


def check_reason(errors: Collector, reason: str) -> None:
    """Record a broken rule unless ``reason`` is free text of 1..500 characters."""
    check_text(errors, "reason", reason, max_chars=MAX_REASON, multiline=True)


def check_author(errors: Collector, author: str) -> None:
    """Record a broken rule unless ``author`` (the actor's subject) is one line of text."""
    check_text(errors, "author", author, max_chars=MAX_AUTHOR_CHARS)


# -- pricing -----------------------------------------------------------------------------


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def known_timezone(name: str) -> bool:
    """True when ``name`` is an IANA time zone this system can evaluate."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def quantize(amount: Decimal) -> Decimal:
    """Round an amount per kWh half-up to ``PRICE_QUANTUM``."""
    return amount.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)


def surcharge_for(tiers: Sequence[LoadTier], load_pct: float) -> Decimal:
    """Surcharge of the highest tier whose threshold the load reaches (0 below every tier)."""
    surcharge = Decimal(0)
    for tier in sorted(tiers, key=lambda t: t.threshold_pct):
        if load_pct >= tier.threshold_pct:
            surcharge = tier.surcharge_pct
    return surcharge


def tou_multiplier(tou: Sequence[TimeOfUsePeriod], at: datetime, tz: str) -> Decimal:
    """Multiplier of the first period covering ``at`` in local time of ``tz`` (1 when none)."""
    if at.tzinfo is None:
        raise ValueError("time-of-use needs an aware datetime")
    local = at.astimezone(_zone(tz))
    for period in tou:
        if period.covers(local):
            return period.multiplier
    return Decimal(1)


def price_for(
    base: Decimal,
    tiers: Sequence[LoadTier],
    load_pct: float,
    at: datetime,
    tou: Sequence[TimeOfUsePeriod],
    tz: str,
) -> Decimal:
    """Price per kWh at this load and instant: base x (1 + surcharge) x time-of-use, rounded."""
    factor = (HUNDRED + surcharge_for(tiers, load_pct)) / HUNDRED
    return quantize(base * factor * tou_multiplier(tou, at, tz))


def moved_enough(
    old: Decimal | None, new: Decimal, min_change_pct: Decimal = DEFAULT_MIN_CHANGE_PCT
) -> bool:
    """True when ``new`` differs from ``old`` by at least ``min_change_pct`` percent of ``old``."""
    if old is None:
        return True
    if old == new:
        return False
    if old == 0:
        return True
    return abs(new - old) * HUNDRED >= min_change_pct * abs(old)


def effective_price(load_price: Decimal, override: Override | None, now: datetime) -> Decimal:
    """The override's price while it is active, otherwise the load-based price."""
    if override is not None and override.active(now):
        return override.price
    return load_price
