"""The Tariff aggregate: one region's price per kWh, as immutable events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Collector, Conflict
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.pricing import (
    LoadTier,
    Override,
    TariffSpec,
    TimeOfUsePeriod,
    check_author,
    check_load,
    check_price,
    check_reason,
    check_tiers,
    effective_price,
    moved_enough,
    price_for,
    quantize,
    surcharge_for,
)

TARIFF_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:tariff")


def tariff_id(region: str) -> UUID:
    """Deterministic aggregate id of the tariff of this region (case-insensitive)."""
    return uuid5(TARIFF_NAMESPACE, region.strip().upper())


class Tariff(Aggregate, RemembersCommands):
    """A region's tariff: base price, load tiers, time-of-use and administrator overrides."""

    class Created(Aggregate.Created):
        """A region's tariff came into force."""

        region: str
        currency: str
        base_price: Decimal
        tiers: tuple[LoadTier, ...]
        tou: tuple[TimeOfUsePeriod, ...]
        timezone: str
        min_change_pct: Decimal
        meta: EventMeta

    class BasePriceChanged(Aggregate.Event):
        """The base price changed; ``price`` is the load-based price it gives from now on."""

        base_price: Decimal
        previous: Decimal
        price: Decimal
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Set the new base and the load-based price it implies."""
            aggregate.base_price = self.base_price
            aggregate.load_price = self.price
            aggregate.remember(self.meta)

    class TiersChanged(Aggregate.Event):
        """The load tiers changed; ``price`` is the load-based price they give from now on."""

        tiers: tuple[LoadTier, ...]
        previous: tuple[LoadTier, ...]
        price: Decimal
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Set the new tiers and the load-based price they imply."""
            aggregate.tiers = self.tiers
            aggregate.load_price = self.price
            aggregate.remember(self.meta)

    class LoadPriceChanged(Aggregate.Event):
        """The regional load of a window moved the price by at least the minimum change."""

        load_pct: float
        bucket: datetime
        price: Decimal
        previous: Decimal
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new load-based price."""
            aggregate.load_price = self.price
            aggregate.load_pct = self.load_pct
            aggregate.bucket = self.bucket
            aggregate.remember(self.meta)

    class OverrideApplied(Aggregate.Event):
        """An administrator fixed the price until ``expires_at``."""

        price: Decimal
        reason: str
        author: str
        expires_at: datetime
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Install the override (replacing any earlier one)."""
            aggregate.override = Override(
                price=self.price, reason=self.reason, author=self.author, expires_at=self.expires_at
            )
            aggregate.remember(self.meta)

    class OverrideCleared(Aggregate.Event):
        """An administrator removed the override before it expired."""

        reason: str
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Drop the override."""
            aggregate.override = None
            aggregate.remember(self.meta)

    class OverrideExpired(Aggregate.Event):
        """The system noticed that the override had reached its expiry."""

        expired_at: datetime
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Drop the override."""
            aggregate.override = None
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(region: str) -> UUID:
        """Derive the aggregate id from the region, so each region has one tariff."""
        return tariff_id(region)

    @classmethod
    def create(cls, spec: TariffSpec, meta: EventMeta) -> Tariff:
        """Create a region's tariff after checking every field rule."""
        errors = Collector()
        spec.check(errors)
        errors.raise_if_any()
        return cls(
            region=spec.region.strip(),
            currency=spec.currency,
            base_price=spec.base_price,
            tiers=tuple(spec.tiers),
            tou=tuple(spec.tou),
            timezone=spec.timezone,
            min_change_pct=spec.min_change_pct,
            meta=meta,
        )

    @event(Created)
    def __init__(
        self,
        region: str,
        currency: str,
        base_price: Decimal,
        tiers: tuple[LoadTier, ...],
        tou: tuple[TimeOfUsePeriod, ...],
        timezone: str,
        min_change_pct: Decimal,
        meta: EventMeta,
    ) -> None:
        self.region = region
        self.currency = currency
        self.base_price = base_price
        self.tiers = tiers
        self.tou = tou
        self.timezone = timezone
        self.min_change_pct = min_change_pct
        # Before the first load window: the price at no load, without time-of-use.
        self.load_price = _idle_price(base_price, tiers)
        self.load_pct: float | None = None
        self.bucket: datetime | None = None
        self.override: Override | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    # -- queries -----------------------------------------------------------------------

    def current_price(self, now: datetime) -> Decimal:
        """The price in force at ``now``: an active override, else the load-based price."""
        return effective_price(self.load_price, self.override, now)

    def _reprice(self, base_price: Decimal, tiers: Sequence[LoadTier]) -> Decimal:
        if self.load_pct is None or self.bucket is None:
            return _idle_price(base_price, tiers)
        return price_for(base_price, tiers, self.load_pct, self.bucket, self.tou, self.timezone)

    # -- commands ----------------------------------------------------------------------

    def change_base_price(self, base_price: Decimal, meta: EventMeta) -> bool:
        """Change the base price and reprice at the last load; False when it is unchanged."""
        errors = Collector()
        check_price(errors, "basePrice", base_price)
        errors.raise_if_any()
        if base_price == self.base_price:
            return False
        self.trigger_event(
            self.BasePriceChanged,
            base_price=base_price,
            previous=self.base_price,
            price=self._reprice(base_price, self.tiers),
            meta=meta,
        )
        return True

    def change_tiers(self, tiers: Sequence[LoadTier], meta: EventMeta) -> bool:
        """Replace the load tiers and reprice at the last load; False when they are unchanged."""
        errors = Collector()
        check_tiers(errors, tiers)
        errors.raise_if_any()
        new = tuple(tiers)
        if new == self.tiers:
            return False
        self.trigger_event(
            self.TiersChanged,
            tiers=new,
            previous=self.tiers,
            price=self._reprice(self.base_price, new),
            meta=meta,
        )
        return True

    def apply_load(self, load_pct: float, bucket: datetime, meta: EventMeta) -> bool:
        """Price the window's load; record it only when the price moves by the minimum change.

        Returns False (recording nothing) when the move is too small or the window is older
        than the last recorded one.
        """
        errors = Collector()
        check_load(errors, load_pct)
        if bucket.tzinfo is None:
            errors.add("bucket", "aware", "bucket must carry a time zone")
        errors.raise_if_any()
        if self.bucket is not None and bucket < self.bucket:
            return False
        price = price_for(self.base_price, self.tiers, load_pct, bucket, self.tou, self.timezone)
        if not moved_enough(self.load_price, price, self.min_change_pct):
            return False
        self.trigger_event(
            self.LoadPriceChanged,
            load_pct=load_pct,
            bucket=bucket,
            price=price,
            previous=self.load_price,
            meta=meta,
        )
        return True

    def apply_override(
        self,
        price: Decimal,
        reason: str,
        author: str,
        expires_at: datetime,
        now: datetime,
        meta: EventMeta,
    ) -> None:
        """Fix the price until ``expires_at``, replacing any earlier override."""
        errors = Collector()
        check_price(errors, "price", price)
        check_reason(errors, reason)
        check_author(errors, author)
        if expires_at.tzinfo is None:
            errors.add("expiresAt", "aware", "expiry must carry a time zone")
        elif expires_at <= now:
            errors.add("expiresAt", "future", "expiry must be in the future")
        errors.raise_if_any()
        self.trigger_event(
            self.OverrideApplied,
            price=quantize(price),
            reason=reason,
            author=author,
            expires_at=expires_at,
            meta=meta,
        )

    def clear_override(self, reason: str, meta: EventMeta) -> None:
        """Remove the override, returning to the load-based price."""
        if self.override is None:
            raise Conflict(f"tariff of {self.region} has no override to clear")
        errors = Collector()
        check_reason(errors, reason)
        errors.raise_if_any()
        self.trigger_event(self.OverrideCleared, reason=reason, meta=meta)

    def expire_override(self, now: datetime, meta: EventMeta) -> bool:
        """Record that the override has expired by ``now``; False when there is none to expire."""
        if self.override is None or self.override.active(now):
            return False
        self.trigger_event(self.OverrideExpired, expired_at=self.override.expires_at, meta=meta)
        return True


def _idle_price(base_price: Decimal, tiers: Sequence[LoadTier]) -> Decimal:
    return quantize(base_price * (100 + surcharge_for(tiers, 0.0)) / 100)
