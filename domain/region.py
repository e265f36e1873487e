"""The Region aggregate: a region's capacity, the 100 % of its load percentage, as events."""

from __future__ import annotations

import math
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import Collector
from domain.idempotency import RemembersCommands
from domain.meta import EventMeta
from domain.values import check_region

REGION_NAMESPACE = uuid5(NAMESPACE_URL, "urn:hes:region")
MAX_CAPACITY_KW = 1e9
"""1 TW: more than any grid region; a larger figure is a typo or a unit mix-up."""


def region_id(region: str) -> UUID:
    """Deterministic aggregate id of a region (trimmed; case kept, as meters' regions are)."""
    return uuid5(REGION_NAMESPACE, region.strip())


def check_capacity_kw(errors: Collector, kw: float, field: str = "kw") -> None:
    """Record a broken rule unless ``kw`` is a finite capacity above 0 and at most 1 TW."""
    if isinstance(kw, bool) or not isinstance(kw, int | float):
        errors.add(field, "number", f"{field} must be a number of kW")
    elif not math.isfinite(kw):
        errors.add(field, "finite", f"{field} must be a finite number of kW")
    elif kw <= 0:
        errors.add(field, "positive", f"{field} must be above 0 kW")
    elif kw > MAX_CAPACITY_KW:
        errors.add(field, "maximum", f"{field} must be at most {MAX_CAPACITY_KW:.0f} kW (1 TW)")


class Region(Aggregate, RemembersCommands):
    """A region's configured capacity; the tariff engine prices energy by load / capacity."""

    class Created(Aggregate.Created):
        """A region was configured for the first time."""

        region: str
        meta: EventMeta

    class CapacitySet(Aggregate.Event):
        """The region's capacity (W) changed; ``previous_w`` is null on the first setting."""

        region: str
        capacity_w: float
        previous_w: float | None
        meta: EventMeta

        def apply(self, aggregate: Any) -> None:
            """Adopt the new capacity."""
            aggregate.capacity_w = self.capacity_w
            aggregate.remember(self.meta)

    @staticmethod
    def create_id(region: str) -> UUID:
        """Derive the aggregate id from the region name, so each region has one aggregate."""
        return region_id(region)

    @classmethod
    def create(cls, region: str, meta: EventMeta) -> Region:
        """A new region after checking its name."""
        errors = Collector()
        check_region(errors, region)
        errors.raise_if_any()
        return cls(region=region.strip(), meta=meta)

    @event(Created)
    def __init__(self, region: str, meta: EventMeta) -> None:
        self.region = region
        self.capacity_w: float | None = None
        self.commands: dict[str, str | None] = {}
        self.remember(meta)

    @property
    def capacity_kw(self) -> float | None:
        """The capacity in kW, or None before the first setting."""
        return None if self.capacity_w is None else self.capacity_w / 1000

    def set_capacity(self, kw: float, meta: EventMeta) -> bool:
        """Set the capacity in kW (recorded in W); False when it already is that."""
        errors = Collector()
        check_capacity_kw(errors, kw)
        errors.raise_if_any()
        capacity_w = float(kw) * 1000
        if capacity_w == self.capacity_w:
            return False
        self.trigger_event(
            self.CapacitySet,
            region=self.region,
            capacity_w=capacity_w,
            previous_w=self.capacity_w,
            meta=meta,
        )
        return True
