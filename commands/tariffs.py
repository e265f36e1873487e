"""Tariff commands: load a region's Tariff, act, save; idempotent and actor-stamped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper
from eventsourcing.utils import get_topic

from commands.codec import MsgspecMapper
from commands.concurrency import Save, last_position, save_with_retry
from commands.context import SYSTEM, CommandContext
from commands.policy import authorize
from domain.errors import Collector, Conflict, NotFound
from domain.meta import EventMeta
from domain.pricing import LoadTier, TariffSpec
from domain.region import Region, check_capacity_kw, region_id
from domain.tariff import Tariff, tariff_id
from domain.values import check_region

PAGE = 500


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command did: the tariff as it now is and where its last event sits."""

    tariff: Tariff
    notification_id: int | None
    """Position of the last recorded event; ``None`` when nothing new was recorded."""
    replayed: bool = False
    """True when an idempotency key matched an earlier, identical command."""
    changed: bool = True
    """False when the command was valid but changed nothing (e.g. a price move below 2 %)."""


class RegionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a region command did: the region as it now is and where its last event sits."""

    region: Region
    notification_id: int | None
    replayed: bool = False
    changed: bool = True


class TariffBook(Application[UUID]):
    """The write side of regional pricing: tariffs and the regions' capacities."""

    name = "tariffs"

    def construct_mapper(self) -> Mapper[UUID]:
        """Encode events with msgspec instead of the library's JSON transcoder."""
        return MsgspecMapper()

    # -- queries on the write model (used by commands, never by clients) -------------

    def get(self, region: str) -> Tariff:
        """Load the region's tariff; ``ValidationFailed`` for a malformed region name."""
        _require_region(region)
        try:
            tariff: Tariff = self.repository.get(tariff_id(region))
        except AggregateNotFoundError:
            raise NotFound(f"no tariff for region {region!r}") from None
        return tariff

    def tariff_ids(self) -> list[UUID]:
        """Ids of every tariff, in creation order (scans the log for creation events)."""
        topic = get_topic(Tariff.Created)
        ids: list[UUID] = []
        start: int | None = None
        while True:
            page = self.recorder.select_notifications(
                start, PAGE, topics=[topic], inclusive_of_start=start is None
            )
            ids.extend(_uuid(n.originator_id) for n in page)
            if len(page) < PAGE:
                return ids
            start = page[-1].id

    # -- commands ------------------------------------------------------------------

    def create_tariff(self, spec: TariffSpec, ctx: CommandContext) -> Outcome:
        """Create a region's tariff; the region must not have one yet."""
        authorize(ctx.actor, "createTariff")
        meta = ctx.meta("createTariff", spec)
        errors = Collector()
        spec.check(errors)
        errors.raise_if_any()
        try:
            existing = self.get(spec.region)
        except NotFound:
            tariff = Tariff.create(spec, meta)
            try:
                recordings = self.save(tariff)
            except IntegrityError:
                existing = self.get(spec.region)
            else:
                return Outcome(tariff=tariff, notification_id=last_position(recordings))
        if existing.seen(meta):
            return Outcome(tariff=existing, notification_id=None, replayed=True)
        raise Conflict(f"region {spec.region!r} already has a tariff ({existing.id})")

    def change_base_price(self, region: str, base_price: Decimal, ctx: CommandContext) -> Outcome:
        """Change the region's base price per kWh."""
        authorize(ctx.actor, "changeTariffBasePrice")
        meta = ctx.meta("changeTariffBasePrice", region, base_price)
        return self._update(region, meta, lambda t: t.change_base_price(base_price, meta))

    def change_tiers(self, region: str, tiers: Sequence[LoadTier], ctx: CommandContext) -> Outcome:
        """Replace the region's load tiers."""
        authorize(ctx.actor, "changeTariffTiers")
        meta = ctx.meta("changeTariffTiers", region, list(tiers))
        return self._update(region, meta, lambda t: t.change_tiers(tiers, meta))

    def apply_load(
        self, region: str, load_pct: float, bucket: datetime, ctx: CommandContext
    ) -> Outcome:
        """Price a window's regional load; ``changed`` says whether a new price was recorded."""
        authorize(ctx.actor, "applyTariffLoad")
        meta = ctx.meta("applyTariffLoad", region, load_pct, bucket)
        return self._update(region, meta, lambda t: t.apply_load(load_pct, bucket, meta))

    def apply_override(
        self,
        region: str,
        price: Decimal,
        reason: str,
        expires_at: datetime,
        ctx: CommandContext,
        now: datetime | None = None,
    ) -> Outcome:
        """Fix the region's price until ``expires_at``; the caller is recorded as its author."""
        authorize(ctx.actor, "applyTariffOverride")
        meta = ctx.meta("applyTariffOverride", region, price, reason, expires_at)
        at = now or datetime.now(UTC)
        author = ctx.actor.subject
        return self._update(
            region, meta, lambda t: t.apply_override(price, reason, author, expires_at, at, meta)
        )

    def clear_override(self, region: str, reason: str, ctx: CommandContext) -> Outcome:
        """Remove the region's override, returning to the load-based price."""
        authorize(ctx.actor, "clearTariffOverride")
        meta = ctx.meta("clearTariffOverride", region, reason)
        return self._update(region, meta, lambda t: t.clear_override(reason, meta))

    def expire_overrides(self, now: datetime, ctx: CommandContext | None = None) -> list[Outcome]:
        """Record the expiry of every override past its end at ``now``; one outcome per expiry."""
        context = ctx or CommandContext(actor=SYSTEM)
        authorize(context.actor, "expireTariffOverrides")
        outcomes: list[Outcome] = []
        for id_ in self.tariff_ids():
            tariff: Tariff = self.repository.get(id_)
            if tariff.override is None or tariff.override.active(now):
                continue
            meta = context.meta("expireTariffOverrides", tariff.region, now)
            # by id: a region recorded before today's name rule must still expire
            outcome = self._update(tariff.region, meta, _expire(now, meta), id_=id_)
            if outcome.changed:
                outcomes.append(outcome)
        return outcomes

    def set_region_capacity(self, region: str, kw: float, ctx: CommandContext) -> RegionOutcome:
        """Set a region's capacity in kW, the 100 % of its load percentage (and so its price)."""
        authorize(ctx.actor, "setRegionCapacity")
        meta = ctx.meta("setRegionCapacity", region, kw)
        errors = Collector()
        check_region(errors, region)
        check_capacity_kw(errors, kw)
        errors.raise_if_any()

        def attempt() -> RegionOutcome | Save[RegionOutcome]:
            try:
                found: Region = self.repository.get(region_id(region))
            except AggregateNotFoundError:
                found = Region.create(region, meta)
            else:
                if found.seen(meta):
                    return RegionOutcome(region=found, notification_id=None, replayed=True)
            if not found.set_capacity(kw, meta):
                return RegionOutcome(region=found, notification_id=None, changed=False)
            return Save(
                (found,), lambda r: RegionOutcome(region=found, notification_id=last_position(r))
            )

        return save_with_retry(
            self, attempt, f"capacity of region {region} is changing too fast; try again"
        )

    # -- plumbing --------------------------------------------------------------------

    def _update(
        self,
        region: str,
        meta: EventMeta,
        action: Callable[[Tariff], object],
        id_: UUID | None = None,
    ) -> Outcome:

        def attempt() -> Outcome | Save[Outcome]:
            tariff = self.get(region) if id_ is None else self.repository.get(id_)
            if tariff.seen(meta):
                return Outcome(tariff=tariff, notification_id=None, replayed=True)
            if action(tariff) is False:
                return Outcome(tariff=tariff, notification_id=None, changed=False)
            return Save(
                (tariff,), lambda r: Outcome(tariff=tariff, notification_id=last_position(r))
            )

        return save_with_retry(self, attempt, f"tariff of {region} is changing too fast; try again")


def _require_region(region: str) -> None:
    errors = Collector()
    check_region(errors, region)
    errors.raise_if_any()


def _expire(now: datetime, meta: EventMeta) -> Callable[[Tariff], bool]:
    return lambda tariff: tariff.expire_override(now, meta)


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
