"""Pure tariff rules: tier boundaries, time-of-use across DST, rounding, 2 % rule, overrides."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import Collector
from domain.pricing import (
    DEFAULT_TIERS,
    LoadTier,
    Override,
    TariffSpec,
    TimeOfUsePeriod,
    check_tiers,
    effective_price,
    moved_enough,
    price_for,
    quantize,
    surcharge_for,
    tou_multiplier,
)

AMS = "Europe/Amsterdam"
NOON = datetime(2024, 6, 5, 10, tzinfo=UTC)
BASE = Decimal("0.2000")
EVERY_DAY = frozenset(range(1, 8))
MORNING_PEAK = TimeOfUsePeriod(
    days=EVERY_DAY, start=time(7), end=time(9), multiplier=Decimal("1.5")
)


def rules(**changes: object) -> set[tuple[str, str]]:
    """The (field, rule) pairs a tariff spec with these changes breaks."""
    fields: dict[str, object] = {
        "region": "North",
        "currency": "EUR",
        "base_price": BASE,
        "timezone": AMS,
    }
    fields.update(changes)
    errors = Collector()
    TariffSpec(**fields).check(errors)  # type: ignore[arg-type]
    return {(e.field, e.rule) for e in errors.errors}


# -- tiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "surcharge"),
    [
        (0.0, 0),
        (59.99, 0),
        (60.0, 10),
        (79.99, 10),
        (80.0, 20),
        (89.99, 20),
        (90.0, 35),
        (100.0, 35),
        (140.0, 35),
    ],
)
def test_default_tiers_apply_from_their_threshold_inclusive(load: float, surcharge: int) -> None:
    assert surcharge_for(DEFAULT_TIERS, load) == Decimal(surcharge)
    expected = quantize(BASE * (100 + surcharge) / 100)
    assert price_for(BASE, DEFAULT_TIERS, load, NOON, (), AMS) == expected


def test_tiers_are_applied_in_threshold_order_whatever_their_listing() -> None:
    shuffled = (DEFAULT_TIERS[2], DEFAULT_TIERS[0], DEFAULT_TIERS[1])
    assert surcharge_for(shuffled, 85.0) == Decimal(20)


def test_no_tiers_means_the_base_price() -> None:
    assert price_for(BASE, (), 99.0, NOON, (), AMS) == BASE


@pytest.mark.parametrize(
    ("tiers", "field", "rule"),
    [
        (
            (LoadTier(threshold_pct=0.0, surcharge_pct=Decimal(1)),),
            "tiers[0].thresholdPct",
            "range",
        ),
        (
            (LoadTier(threshold_pct=100.0, surcharge_pct=Decimal(1)),),
            "tiers[0].thresholdPct",
            "range",
        ),
        (
            (LoadTier(threshold_pct=float("nan"), surcharge_pct=Decimal(1)),),
            "tiers[0].thresholdPct",
            "range",
        ),
        (
            (
                LoadTier(threshold_pct=70.0, surcharge_pct=Decimal(1)),
                LoadTier(threshold_pct=70.0, surcharge_pct=Decimal(2)),
            ),
            "tiers[1].thresholdPct",
            "increasing",
        ),
        (
            (
                LoadTier(threshold_pct=70.0, surcharge_pct=Decimal(1)),
                LoadTier(threshold_pct=60.0, surcharge_pct=Decimal(2)),
            ),
            "tiers[1].thresholdPct",
            "increasing",
        ),
        (
            (LoadTier(threshold_pct=50.0, surcharge_pct=Decimal(-1)),),
            "tiers[0].surchargePct",
            "non-negative",
        ),
        (
            (
                LoadTier(threshold_pct=50.0, surcharge_pct=Decimal(20)),
                LoadTier(threshold_pct=60.0, surcharge_pct=Decimal(10)),
            ),
            "tiers[1].surchargePct",
            "non-decreasing",
        ),
    ],
)
def test_tier_rules_name_their_field(tiers: tuple[LoadTier, ...], field: str, rule: str) -> None:
    errors = Collector()
    check_tiers(errors, tiers)
    assert (field, rule) in {(e.field, e.rule) for e in errors.errors}


def test_default_tiers_are_valid() -> None:
    errors = Collector()
    check_tiers(errors, DEFAULT_TIERS)
    assert errors.errors == []


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"currency": "eur"}, "currency", "iso4217"),
        ({"currency": "EURO"}, "currency", "iso4217"),
        ({"currency": "EU\n"}, "currency", "iso4217"),
        ({"base_price": Decimal(0)}, "basePrice", "positive"),
        ({"base_price": Decimal("-0.1")}, "basePrice", "positive"),
        ({"base_price": Decimal("NaN")}, "basePrice", "positive"),
        ({"base_price": Decimal("0.00001")}, "basePrice", "precision"),
        ({"timezone": "Mars/Olympus"}, "timezone", "known"),
        ({"timezone": "../etc"}, "timezone", "known"),
        ({"region": " "}, "region", "length"),
        ({"min_change_pct": Decimal(-1)}, "minChangePct", "range"),
        ({"min_change_pct": Decimal(100)}, "minChangePct", "range"),
        (
            {
                "tou": (
                    TimeOfUsePeriod(
                        days=frozenset({8}), start=time(7), end=time(9), multiplier=Decimal(1)
                    ),
                )
            },
            "tou[0].days",
            "weekday",
        ),
        (
            {
                "tou": (
                    TimeOfUsePeriod(
                        days=EVERY_DAY, start=time(7), end=time(7), multiplier=Decimal(1)
                    ),
                )
            },
            "tou[0].end",
            "empty",
        ),
        (
            {
                "tou": (
                    TimeOfUsePeriod(
                        days=EVERY_DAY, start=time(7), end=time(9), multiplier=Decimal(0)
                    ),
                )
            },
            "tou[0].multiplier",
            "positive",
        ),
    ],
)
def test_spec_rules_name_their_field(changes: dict[str, object], field: str, rule: str) -> None:
    assert (field, rule) in rules(**changes)


def test_a_valid_spec_breaks_no_rule() -> None:
    assert rules(tou=(MORNING_PEAK,)) == set()


# -- time of use -----------------------------------------------------------------------


def test_tou_multiplies_inside_the_local_window_only() -> None:
    summer_7am_local = datetime(2024, 6, 5, 5, tzinfo=UTC)  # CEST = UTC+2
    assert tou_multiplier((MORNING_PEAK,), summer_7am_local, AMS) == Decimal("1.5")
    assert tou_multiplier((MORNING_PEAK,), summer_7am_local - timedelta(seconds=1), AMS) == 1
    assert tou_multiplier((MORNING_PEAK,), summer_7am_local + timedelta(hours=2), AMS) == 1
    assert price_for(BASE, (), 0.0, summer_7am_local, (MORNING_PEAK,), AMS) == Decimal("0.3000")


def test_tou_follows_local_time_across_the_spring_dst_change() -> None:
    # 2024-03-31: Amsterdam moves from UTC+1 to UTC+2 at 01:00 UTC.
    saturday_0530 = datetime(2024, 3, 30, 5, 30, tzinfo=UTC)  # 06:30 CET: before the peak
    sunday_0530 = datetime(2024, 3, 31, 5, 30, tzinfo=UTC)  # 07:30 CEST: inside the peak
    sunday_0700 = datetime(2024, 3, 31, 7, 0, tzinfo=UTC)  # 09:00 CEST: peak over

    assert tou_multiplier((MORNING_PEAK,), saturday_0530, AMS) == 1
    assert tou_multiplier((MORNING_PEAK,), sunday_0530, AMS) == Decimal("1.5")
    assert tou_multiplier((MORNING_PEAK,), sunday_0700, AMS) == 1


def test_tou_follows_local_time_across_the_autumn_dst_change() -> None:
    # 2024-10-27: Amsterdam moves back from UTC+2 to UTC+1 at 01:00 UTC.
    saturday_0630 = datetime(2024, 10, 26, 6, 30, tzinfo=UTC)  # 08:30 CEST: inside
    sunday_0630 = datetime(2024, 10, 27, 6, 30, tzinfo=UTC)  # 07:30 CET: inside
    sunday_0800 = datetime(2024, 10, 27, 8, 0, tzinfo=UTC)  # 09:00 CET: over

    assert tou_multiplier((MORNING_PEAK,), saturday_0630, AMS) == Decimal("1.5")
    assert tou_multiplier((MORNING_PEAK,), sunday_0630, AMS) == Decimal("1.5")
    assert tou_multiplier((MORNING_PEAK,), sunday_0800, AMS) == 1


def test_overnight_period_belongs_to_the_day_it_starts() -> None:
    friday_night = TimeOfUsePeriod(
        days=frozenset({5}), start=time(22), end=time(6), multiplier=Decimal("0.8")
    )

    def local(day: int, hour: int) -> datetime:
        return datetime(2024, 6, day, hour - 2, tzinfo=UTC)  # June: CEST = UTC+2

    assert tou_multiplier((friday_night,), local(7, 23), AMS) == Decimal("0.8")  # Fri 23:00
    assert tou_multiplier((friday_night,), local(8, 5), AMS) == Decimal("0.8")  # Sat 05:00
    assert tou_multiplier((friday_night,), local(8, 6), AMS) == 1  # Sat 06:00
    assert tou_multiplier((friday_night,), local(8, 23), AMS) == 1  # Sat 23:00
    assert tou_multiplier((friday_night,), local(7, 5), AMS) == 1  # Fri 05:00 (Thu night)


def test_weekday_filter_and_first_matching_period_wins() -> None:
    weekdays = TimeOfUsePeriod(
        days=frozenset(range(1, 6)), start=time(7), end=time(9), multiplier=Decimal(2)
    )
    wednesday = datetime(2024, 6, 5, 6, tzinfo=UTC)  # 08:00 CEST
    sunday = datetime(2024, 6, 9, 6, tzinfo=UTC)

    assert tou_multiplier((weekdays, MORNING_PEAK), wednesday, AMS) == 2
    assert tou_multiplier((MORNING_PEAK, weekdays), wednesday, AMS) == Decimal("1.5")
    assert tou_multiplier((weekdays,), sunday, AMS) == 1


def test_tou_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        tou_multiplier((MORNING_PEAK,), datetime(2024, 6, 5, 7), AMS)


# -- rounding --------------------------------------------------------------------------


def test_prices_round_half_up_to_four_places() -> None:
    assert quantize(Decimal("0.12345")) == Decimal("0.1235")
    assert quantize(Decimal("0.12344999")) == Decimal("0.1234")
    # 0.1111 x 1.1 = 0.12221 -> 0.1222; x 1.35 = 0.149985 -> 0.1500
    assert price_for(Decimal("0.1111"), DEFAULT_TIERS, 60.0, NOON, (), AMS) == Decimal("0.1222")
    assert price_for(Decimal("0.1111"), DEFAULT_TIERS, 95.0, NOON, (), AMS) == Decimal("0.1500")
    assert price_for(BASE, (), 0.0, NOON, (), AMS).as_tuple().exponent == -4


# -- the minimum-change rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "moved"),
    [
        ("1.0000", "1.0200", True),  # exactly +2 %
        ("1.0000", "0.9800", True),  # exactly -2 %
        ("1.0000", "1.0199", False),
        ("1.0000", "0.9801", False),
        ("1.0000", "1.0000", False),
        ("0.2000", "0.2200", True),
        ("0.2000", "0.1800", True),
    ],
)
def test_two_percent_rule_both_directions(old: str, new: str, moved: bool) -> None:
    assert moved_enough(Decimal(old), Decimal(new)) is moved


def test_no_previous_price_always_moves_and_the_threshold_is_configurable() -> None:
    assert moved_enough(None, Decimal("0.2"))
    assert not moved_enough(Decimal(1), Decimal("1.04"), Decimal(5))
    assert moved_enough(Decimal(1), Decimal("1.05"), Decimal(5))
    assert moved_enough(Decimal(1), Decimal("1.0001"), Decimal(0))


# -- overrides -------------------------------------------------------------------------


def test_override_wins_until_it_expires() -> None:
    expiry = NOON + timedelta(hours=1)
    override = Override(price=Decimal("0.1"), reason="storm", author="ann", expires_at=expiry)

    assert effective_price(Decimal("0.3"), override, NOON) == Decimal("0.1")
    assert effective_price(Decimal("0.3"), override, expiry - timedelta(microseconds=1)) == Decimal(
        "0.1"
    )
    assert effective_price(Decimal("0.3"), override, expiry) == Decimal("0.3")
    assert effective_price(Decimal("0.3"), None, NOON) == Decimal("0.3")


# -- properties ------------------------------------------------------------------------

prices = st.decimals(min_value=Decimal("0.0100"), max_value=Decimal("10"), places=4)
loads = st.floats(min_value=0, max_value=150, allow_nan=False)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def valid_tiers(draw: st.DrawFn) -> tuple[LoadTier, ...]:
    """Any tier table the tariff rules accept."""
    thresholds = sorted(
        draw(st.sets(st.floats(min_value=0.5, max_value=99.5, allow_nan=False), max_size=6))
    )
    surcharges = sorted(
        draw(
            st.lists(
                st.decimals(min_value=0, max_value=500, places=2),
                min_size=len(thresholds),
                max_size=len(thresholds),
            )
        )
    )
    tiers = tuple(
        LoadTier(threshold_pct=t, surcharge_pct=s)
        for t, s in zip(thresholds, surcharges, strict=True)
    )
    errors = Collector()
    check_tiers(errors, tiers)
    assert errors.errors == []
    return tiers


@settings(deadline=None, max_examples=200)
@given(base=prices, tiers=valid_tiers(), a=loads, b=loads, at=instants)
def test_price_never_falls_as_load_rises(
    base: Decimal, tiers: tuple[LoadTier, ...], a: float, b: float, at: datetime
) -> None:
    low, high = sorted((a, b))
    assert price_for(base, tiers, low, at, (MORNING_PEAK,), AMS) <= price_for(
        base, tiers, high, at, (MORNING_PEAK,), AMS
    )


@settings(deadline=None, max_examples=200)
@given(
    old=prices,
    change_pct=st.decimals(min_value=Decimal("-1.9999"), max_value=Decimal("1.9999"), places=4),
)
def test_a_change_below_the_threshold_never_moves(old: Decimal, change_pct: Decimal) -> None:
    new = old * (100 + change_pct) / 100
    assert not moved_enough(old, new)


@settings(deadline=None, max_examples=200)
@given(
    load_price=prices,
    override_price=prices,
    now=instants,
    remaining=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400)),
)
def test_an_active_override_always_wins(
    load_price: Decimal, override_price: Decimal, now: datetime, remaining: timedelta
) -> None:
    override = Override(
        price=override_price, reason="ops", author="ann", expires_at=now + remaining
    )
    assert effective_price(load_price, override, now) == override_price
    assert effective_price(load_price, override, now + remaining) == load_price
