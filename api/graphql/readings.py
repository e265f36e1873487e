"""GraphQL queries and the live subscription over the time-series read models."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from adapters.nats.subjects import live_subject
from api.context import RequestContext
from commands.context import Actor, Role
from commands.policy import may_read_meter
from domain.meter import meter_id
from domain.obis import BY_ID, QUANTITIES, Quantity, lookup
from domain.readings import MeterBatch, Quality, Source, decode_batch
from projections.reading_queries import (
    AggregateRow,
    Interval,
    InvalidReadingCursor,
    ReadingRow,
    encode_ts_cursor,
)

ContextInfo = Info[RequestContext, None]

IntervalEnum = strawberry.enum(Interval, name="Interval", description="Aggregation window.")
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def _forbidden(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "FORBIDDEN"})


def _quantity(code: str) -> Quantity:
    found = lookup(code)
    if found is None:
        raise _bad(f"quantity: {code!r} is not a known OBIS code or alias")
    return found


def _flags(quality: int) -> list[str]:
    return [f.name.lower() for f in Quality if f and quality & f and f.name] or ["valid"]


def _window(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise _bad("from/to: give timestamps with a UTC offset")
    if end <= start:
        raise _bad("to: must be after from")


@strawberry.type(description="A measurable quantity, named by OBIS code.")
class QuantityInfo:
    obis: str
    alias: str
    unit: str

    @classmethod
    def of(cls, q: Quantity) -> QuantityInfo:
        """GraphQL view of a catalogue quantity."""
        return cls(obis=q.obis, alias=q.alias, unit=q.unit)


@strawberry.type(description="One stored reading.")
class Reading:
    meter_id: strawberry.ID
    quantity: QuantityInfo
    ts: datetime
    value: float
    quality: list[str]
    source: str
    received_at: datetime | None


@strawberry.type
class ReadingEdge:
    cursor: str
    node: Reading


@strawberry.type
class ReadingPageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(description="Readings in time order.")
class ReadingConnection:
    edges: list[ReadingEdge]
    page_info: ReadingPageInfo


@strawberry.type(description="One aggregation window of one quantity of one meter.")
class Aggregate:
    quantity: QuantityInfo
    bucket: datetime
    count: int
    sum: float
    min: float
    max: float
    avg: float
    first_ts: datetime
    last_ts: datetime
    delta: float | None = strawberry.field(
        description="Register quantities: last minus first value in the window."
    )

    @classmethod
    def of(cls, row: AggregateRow) -> Aggregate:
        """GraphQL view of an aggregate row."""
        q = BY_ID[row.quantity]
        return cls(
            quantity=QuantityInfo.of(q),
            bucket=row.bucket,
            count=row.count,
            sum=row.sum,
            min=row.min,
            max=row.max,
            avg=row.avg,
            first_ts=row.first_ts,
            last_ts=row.last_ts,
            delta=row.delta if q.kind == "REGISTER" else None,
        )


@strawberry.type(description="A region's load in a 15-minute window.")
class RegionalLoad:
    region: str
    bucket: datetime
    meters: int
    power_kw: float
    capacity_kw: float
    load_pct: float


@strawberry.type(description="Fleet counters of one region.")
class RegionFleet:
    region: str
    meters_registered: int
    meters_reporting: int
    readings_per_minute: int = strawberry.field(
        description=(
            "Average readings per minute over the last complete 15-minute window "
            "(at 10:17: the window 10:00-10:15)."
        )
    )
    readings_last_minute: int = strawberry.field(
        deprecation_reason=(
            "Not the last minute: the same figure as readingsPerMinute (the average over the "
            "last complete 15-minute window). Removed in 0.3."
        )
    )
    completeness_pct: float


def _reading(row: ReadingRow) -> Reading:
    return Reading(
        meter_id=strawberry.ID(str(row.meter_id)),
        quantity=QuantityInfo.of(BY_ID[row.quantity]),
        ts=row.ts,
        value=row.value,
        quality=_flags(row.quality),
        source=Source(row.source).name.lower(),
        received_at=row.received_at,
    )


async def _readable_meter(info: ContextInfo, meter: str) -> UUID:
    """Resolve a meter id or serial the caller may read; not-found and forbidden look alike."""
    actor = info.context.actor()
    try:
        id_ = UUID(meter)
    except ValueError:
        id_ = meter_id(meter)
    row = await info.context.container.meters.by_id(id_)
    if row is None or not may_read_meter(actor, row.customer_account):
        raise GraphQLError(f"meter: no meter {meter!r}", extensions={"code": "NOT_FOUND"})
    return id_


async def _still_readable(info: ContextInfo, actor: Actor, id_: UUID) -> bool:
    """True while the caller may read the meter: by role, or (customers) as its owner now."""
    if may_read_meter(actor, None):
        return True  # staff read every meter: their access does not depend on the meter
    row = await info.context.container.meters.by_id(id_)
    return row is not None and may_read_meter(actor, row.customer_account)


def _staff(actor: Actor) -> None:
    if actor.roles.isdisjoint(_STAFF):
        raise _forbidden("needs role viewer, operator, admin or auditor")


@strawberry.type
class ReadingQuery:
    @strawberry.field(
        description="Readings of one quantity of a meter (id or serial), oldest first."
    )
    async def readings(
        self,
        info: ContextInfo,
        meter: str,
        quantity: str,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        first: int = 500,
        after: str | None = None,
    ) -> ReadingConnection:
        id_ = await _readable_meter(info, meter)
        q = _quantity(quantity)
        _window(from_, to)
        if not 1 <= first <= 5000:
            raise _bad(f"first: must be between 1 and 5000, got {first}")
        try:
            page = await info.context.container.readings.readings(
                id_, q.id, from_, to, first, after
            )
        except InvalidReadingCursor as exc:
            raise _bad(str(exc)) from None
        edges = [ReadingEdge(cursor=encode_ts_cursor(r.ts), node=_reading(r)) for r in page.items]
        return ReadingConnection(
            edges=edges,
            page_info=ReadingPageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        description="The newest stored reading of each quantity of a meter (id or serial), "
        "within the raw-reading retention."
    )
    async def latest_readings(self, info: ContextInfo, meter: str) -> list[Reading]:
        id_ = await _readable_meter(info, meter)
        settings = info.context.container.settings
        now = datetime.now(UTC)
        rows = await info.context.container.readings.latest(
            id_,
            [q.id for q in QUANTITIES],
            now - timedelta(days=settings.readings.retention_raw_days),
            now + timedelta(seconds=settings.readings.future_tolerance_seconds),
        )
        return [_reading(r) for r in rows if r.quantity in BY_ID]

    @strawberry.field(description="Per-meter aggregates (1, 15 or 30 minutes) in a time range.")
    async def aggregates(
        self,
        info: ContextInfo,
        meter: str,
        interval: IntervalEnum,  # type: ignore[valid-type]
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        quantity: str | None = None,
    ) -> list[Aggregate]:
        id_ = await _readable_meter(info, meter)
        _window(from_, to)
        q = _quantity(quantity).id if quantity is not None else None
        rows = await info.context.container.readings.aggregates(id_, interval, from_, to, q)
        return [Aggregate.of(r) for r in rows]

    @strawberry.field(description="A region's 15-minute load against its capacity.")
    async def regional_load(
        self,
        info: ContextInfo,
        region: str,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> list[RegionalLoad]:
        _staff(info.context.actor())
        _window(from_, to)
        rows = await info.context.container.readings.regional_load(region, from_, to)
        return [
            RegionalLoad(
                region=r.region,
                bucket=r.bucket,
                meters=r.meters,
                power_kw=r.power_w / 1000,
                capacity_kw=r.capacity_w / 1000,
                load_pct=r.load_pct,
            )
            for r in rows
        ]

    @strawberry.field(description="Per-region fleet counters: reporting meters, readings/minute.")
    async def fleet(self, info: ContextInfo) -> list[RegionFleet]:
        _staff(info.context.actor())
        rows = await info.context.container.readings.fleet(datetime.now(UTC))
        return [
            RegionFleet(
                region=r.region,
                meters_registered=r.meters_registered,
                meters_reporting=r.meters_reporting,
                readings_per_minute=r.readings_per_minute,
                readings_last_minute=r.readings_per_minute,
                completeness_pct=r.completeness_pct,
            )
            for r in rows
        ]


@strawberry.type
class ReadingSubscription:
    @strawberry.subscription(
        description="Readings as they arrive, for one meter or one region. Access is checked "
        "again before each batch: a customer whose meter moves to another account gets a "
        "FORBIDDEN error and the stream ends."
    )
    async def live_readings(
        self, info: ContextInfo, meter: str | None = None, region: str | None = None
    ) -> AsyncGenerator[Reading, None]:
        actor = info.context.actor()
        if (meter is None) == (region is None):
            raise _bad("liveReadings: give exactly one of meter or region")
        if meter is not None:
            wanted: UUID | None = await _readable_meter(info, meter)
        else:
            _staff(info.context.actor())
            wanted = None
        nc = info.context.container.nats
        if nc is None:
            raise GraphQLError("live readings are unavailable: not connected to NATS")
        settings = info.context.container.settings
        sub = await nc.subscribe(live_subject(settings.nats.prefix, wanted))
        try:
            async for msg in sub.messages:
                batch = _decode(msg.data)
                if batch is None or (region is not None and batch.region != region):
                    continue
                if wanted is not None and not await _still_readable(info, actor, wanted):
                    raise _forbidden(f"liveReadings: you may no longer read meter {meter!r}")
                for r in batch.readings:
                    q = BY_ID.get(r.quantity)
                    if q is None:
                        continue
                    yield Reading(
                        meter_id=strawberry.ID(str(batch.meter)),
                        quantity=QuantityInfo.of(q),
                        ts=r.ts,
                        value=r.value,
                        quality=_flags(r.quality),
                        source=Source(batch.source).name.lower(),
                        received_at=batch.received_at,
                    )
        finally:
            await sub.unsubscribe()


def _decode(data: bytes) -> MeterBatch | None:
    try:
        return decode_batch(data)
    except Exception:  # a malformed message is the worker's to dead-letter, not ours
        return None
