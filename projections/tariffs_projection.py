"""Projects Tariff events into the tariffs read model and its price history, and Region
capacities into ``region_capacity``."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.pricing import HUNDRED, quantize, surcharge_for
from domain.region import Region
from domain.tariff import Tariff
from projections.tariffs_view import TariffsView, history


class TariffsProjection(Projection[TariffsView]):
    """Keeps one row per region's tariff and one history row per price it recorded."""

    name = "tariffs_view"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Tariff.Created,
            Tariff.BasePriceChanged,
            Tariff.TiersChanged,
            Tariff.LoadPriceChanged,
            Tariff.OverrideApplied,
            Tariff.OverrideCleared,
            Tariff.OverrideExpired,
            Region.CapacitySet,
        )
    )

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Ignore events this view does not show, but record that they were seen."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Tariff.Created, tracking: Tracking) -> None:
        self.view.created(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            {
                "region": e.region.strip(),
                "currency": e.currency,
                "base_price": e.base_price,
                "tiers": tuple(e.tiers),
                "tou": tuple(e.tou),
                "timezone": e.timezone,
                "min_change_pct": e.min_change_pct,
                "load_price": quantize(
                    e.base_price * (HUNDRED + surcharge_for(e.tiers, 0.0)) / HUNDRED
                ),
            },
            tracking,
        )

    @process_event.register
    def _(self, e: Tariff.BasePriceChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.timestamp, "base", tracking, e.price),
            base_price=e.base_price,
            load_price=e.price,
        )

    @process_event.register
    def _(self, e: Tariff.TiersChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.timestamp, "tiers", tracking, e.price),
            tiers=tuple(e.tiers),
            load_price=e.price,
        )

    @process_event.register
    def _(self, e: Tariff.LoadPriceChanged, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.bucket, "load", tracking, e.price, e.load_pct),
            load_price=e.price,
            load_pct=e.load_pct,
            load_bucket=e.bucket,
        )

    @process_event.register
    def _(self, e: Tariff.OverrideApplied, tracking: Tracking) -> None:
        override = {
            "price": str(e.price),
            "reason": e.reason,
            "author": e.author,
            "expires_at": e.expires_at.isoformat(),
        }
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.timestamp, "override", tracking, e.price),
            override=override,
        )

    @process_event.register
    def _(self, e: Tariff.OverrideCleared, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.timestamp, "override-cleared", tracking, None),
            override=None,
        )

    @process_event.register
    def _(self, e: Tariff.OverrideExpired, tracking: Tracking) -> None:
        self.view.changed(
            e.originator_id,
            e.originator_version,
            e.timestamp,
            tracking,
            history(e.originator_id, e.expired_at, "override-expired", tracking, None),
            override=None,
        )

    @process_event.register
    def _(self, e: Region.CapacitySet, tracking: Tracking) -> None:
        self.view.capacity_set(e.region, e.capacity_w, e.timestamp, tracking)
