"""GraphQL tariff queries and admin mutations over the TariffBook and its read model."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, TypeAlias
from uuid import UUID

import anyio.to_thread
import msgspec
import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from adapters.nats.subjects import event_subject
from api.context import InvalidHeader, RequestContext
from api.graphql.types import CommandError, FieldProblem, ValidationError, error_value
from api.presenters import present_tariff
from commands.context import Actor, CommandContext, Role
from commands.tariffs import Outcome
from domain.errors import DomainError
from domain.pricing import DEFAULT_MIN_CHANGE_PCT, DEFAULT_TIERS, LoadTier, TariffSpec
from domain.pricing import TimeOfUsePeriod as DomainPeriod
from domain.tariff import tariff_id
from projections.meters_queries import MeterFilter
from projections.tariffs_queries import TariffPriceRow, TariffRow

ContextInfo = Info[RequestContext, None]
_STAFF = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR})


def _is_staff(actor: Actor) -> bool:
    return not actor.roles.isdisjoint(_STAFF)


def _staff(actor: Actor) -> None:
    if not _is_staff(actor):
        raise GraphQLError("your roles may not read tariffs", extensions={"code": "FORBIDDEN"})


@strawberry.type(description="Surcharge from a load threshold (inclusive) up to the next tier.")
class TariffTier:
    threshold_pct: float
    surcharge_pct: str = strawberry.field(description="Percent, as a decimal string.")


@strawberry.type(description="A local-time window on ISO weekdays (1 = Monday) scaling the price.")
class TimeOfUsePeriod:
    days: list[int]
    start: time
    end: time
    multiplier: str


@strawberry.type(description="An administrator's fixed price, in force until it expires.")
class TariffOverride:
    price: str
    reason: str | None = strawberry.field(
        description="Why the override was set (staff only: customers get null and FORBIDDEN)."
    )
    author: str | None = strawberry.field(
        description="Who set the override (staff only: customers get null and FORBIDDEN)."
    )
    expires_at: datetime
    active: bool


@strawberry.type(description="A region's tariff as the read model shows it; prices per kWh.")
class Tariff:
    region: str
    currency: str
    base_price: str
    tiers: list[TariffTier]
    tou: list[TimeOfUsePeriod]
    timezone: str
    min_change_pct: str
    load_price: str = strawberry.field(description="Price the last recorded load gives.")
    load_pct: float | None
    load_bucket: datetime | None
    load_tier: TariffTier | None = strawberry.field(
        description="The tier the last recorded load reaches (null: below every tier, base price)."
    )
    override: TariffOverride | None
    effective_price: str = strawberry.field(
        description="Price in force now: an active override, else the load price."
    )
    version: int
    updated_at: datetime

    @classmethod
    def from_row(cls, row: TariffRow, *, internal: bool = True) -> Tariff:
        """GraphQL view of a read-model row; without ``internal``, the customer view."""
        now = datetime.now(UTC)
        o = row.override
        reached = [
            t for t in row.tiers if row.load_pct is not None and row.load_pct >= t.threshold_pct
        ]
        top = max(reached, key=lambda t: t.threshold_pct, default=None)
        return cls(
            region=row.region,
            currency=row.currency,
            base_price=str(row.base_price),
            tiers=[
                TariffTier(threshold_pct=t.threshold_pct, surcharge_pct=str(t.surcharge_pct))
                for t in row.tiers
            ],
            tou=[
                TimeOfUsePeriod(
                    days=sorted(p.days), start=p.start, end=p.end, multiplier=str(p.multiplier)
                )
                for p in row.tou
            ],
            timezone=row.timezone,
            min_change_pct=str(row.min_change_pct),
            load_price=str(row.load_price),
            load_pct=row.load_pct,
            load_bucket=row.load_bucket,
            load_tier=None
            if top is None
            else TariffTier(threshold_pct=top.threshold_pct, surcharge_pct=str(top.surcharge_pct)),
            override=None
            if o is None
            else TariffOverride(
                price=str(o.price),
                reason=o.reason if internal else None,
                author=o.author if internal else None,
                expires_at=o.expires_at,
                active=o.active(now),
            ),
            effective_price=str(row.effective_price(now)),
            version=row.version,
            updated_at=row.updated_at,
        )


@strawberry.type(description="One recorded price of a region.")
class TariffPrice:
    region: str
    at: datetime
    price: str
    kind: str = strawberry.field(
        description="load, override, base, tiers, override-cleared or override-expired."
    )
    load_pct: float | None
    position: str = strawberry.field(
        description="Event-store notification id of the event that recorded it (as text)."
    )

    @classmethod
    def from_row(cls, row: TariffPriceRow) -> TariffPrice:
        """GraphQL view of a price-history row."""
        return cls(
            region=row.region,
            at=row.at,
            price=str(row.price),
            kind=row.kind,
            load_pct=row.load_pct,
            position=str(row.position),
        )


@strawberry.input
class TariffTierInput:
    threshold_pct: float
    surcharge_pct: str


@strawberry.input
class TimeOfUsePeriodInput:
    days: list[int]
    start: time
    end: time
    multiplier: str


@strawberry.input
class CreateTariffInput:
    region: str
    currency: str
    base_price: str
    timezone: str
    tiers: list[TariffTierInput] | None = None
    tou: list[TimeOfUsePeriodInput] | None = None
    min_change_pct: str | None = None


class _BadDecimals(Exception):
    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("invalid decimals")
        self.problems = problems


class _Decimals:
    """Parses decimal strings, collecting every field that is not a number."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def parse(self, field: str, text: str) -> Decimal:
        """The decimal in ``text``; records a problem (and returns 0) when it is not one."""
        try:
            return Decimal(text.strip())
        except InvalidOperation:
            self.problems.append(
                FieldProblem(field=field, rule="decimal", message=f"{field} must be a number")
            )
            return Decimal(0)

    def raise_if_any(self) -> None:
        """Raise ``_BadDecimals`` when any parse failed."""
        if self.problems:
            raise _BadDecimals(self.problems)


def _invalid(problems: list[FieldProblem]) -> ValidationError:
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
    return ValidationError(message=f"invalid input: {summary}", code="VALIDATION", fields=problems)


def _spec(input: CreateTariffInput) -> TariffSpec:
    d = _Decimals()
    tiers = (
        DEFAULT_TIERS
        if input.tiers is None
        else tuple(
            LoadTier(
                threshold_pct=t.threshold_pct,
                surcharge_pct=d.parse(f"tiers[{i}].surchargePct", t.surcharge_pct),
            )
            for i, t in enumerate(input.tiers)
        )
    )
    tou = tuple(
        DomainPeriod(
            days=frozenset(p.days),
            start=p.start,
            end=p.end,
            multiplier=d.parse(f"tou[{i}].multiplier", p.multiplier),
        )
        for i, p in enumerate(input.tou or [])
    )
    spec = TariffSpec(
        region=input.region,
        currency=input.currency,
        base_price=d.parse("basePrice", input.base_price),
        timezone=input.timezone,
        tiers=tiers,
        tou=tou,
        min_change_pct=DEFAULT_MIN_CHANGE_PCT
        if input.min_change_pct is None
        else d.parse("minChangePct", input.min_change_pct),
    )
    d.raise_if_any()
    return spec


TariffOrError: TypeAlias = Tariff | CommandError
TariffResult = Annotated[TariffOrError, strawberry.union("TariffResult")]


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[CommandContext], Outcome],
) -> TariffOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        return _invalid([FieldProblem(field="idempotencyKey", rule="format", message=str(exc))])
    try:
        outcome = await anyio.to_thread.run_sync(command, ctx)
    except DomainError as exc:
        return error_value(exc)
    container = context.container
    wait_seconds = container.settings.api.projection_wait_seconds if wait else 0.0
    row = await present_tariff(outcome, container.tariff_queries, wait_seconds)
    if outcome.notification_id is not None:
        await container.prices.put(row)
    return Tariff.from_row(row)


@strawberry.type
class TariffQuery:
    @strawberry.field(
        description="Every region's tariff, ordered by region (staff only).",
    )
    async def tariffs(self, info: ContextInfo) -> list[Tariff]:
        _staff(info.context.actor())
        return [Tariff.from_row(r) for r in await info.context.container.tariff_queries.all()]

    @strawberry.field(
        description="A region's tariff; a customer sees only the region of one of their meters.",
    )
    async def current_tariff(self, info: ContextInfo, region: str) -> Tariff | None:
        actor = info.context.actor()
        row = await info.context.container.prices.current(region)
        if row is None or not await _may_see(info, actor, row.region):
            return None  # a customer cannot even learn another region's price
        return Tariff.from_row(row, internal=_is_staff(actor))

    @strawberry.field(
        description="Prices a region recorded in [from, to), oldest first, at most 10,000 (staff).",
    )
    async def tariff_history(
        self,
        info: ContextInfo,
        region: str,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> list[TariffPrice]:
        _staff(info.context.actor())
        if from_.tzinfo is None or to.tzinfo is None:
            raise GraphQLError(
                "from/to: give timestamps with a UTC offset",
                extensions={"code": "BAD_USER_INPUT"},
            )
        rows = await info.context.container.tariff_queries.history(region, from_, to)
        return [TariffPrice.from_row(r) for r in rows]


async def _may_see(info: ContextInfo, actor: Actor, region: str) -> bool:
    """Staff see every region; a customer only the regions of their own meters."""
    if _is_staff(actor):
        return True
    if Role.CUSTOMER not in actor.roles or actor.customer_account is None:
        return False
    page = await info.context.container.meters.page(
        MeterFilter(region=region, customer_account=actor.customer_account), 1, None
    )
    return bool(page.items)


class _TariffEventHead(msgspec.Struct):
    subject: UUID
    aggregateversion: int


@strawberry.type
class TariffSubscription:
    @strawberry.subscription(
        description="A region's tariff each time it changes (price, override, tiers); "
        "a customer only for the region of one of their meters, checked again before each "
        "change (FORBIDDEN and the end of the stream once they have none there).",
    )
    async def tariff_changed(self, info: ContextInfo, region: str) -> AsyncGenerator[Tariff, None]:
        actor = info.context.actor()
        if not await _may_see(info, actor, region.strip()):
            raise GraphQLError(
                "tariffChanged: you may only follow the region of your own meters",
                extensions={"code": "FORBIDDEN"},
            )
        container = info.context.container
        nc = container.nats
        if nc is None:
            raise GraphQLError("live tariffs are unavailable: not connected to NATS")
        wanted = tariff_id(region)
        sub = await nc.subscribe(event_subject(container.settings.nats.prefix, "tariff", "*"))
        try:
            async for msg in sub.messages:
                try:
                    head = _head_decoder.decode(msg.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if head.subject != wanted:
                    continue
                if not await _may_see(info, actor, region.strip()):
                    raise GraphQLError(
                        f"tariffChanged: you no longer have a meter in region {region!r}",
                        extensions={"code": "FORBIDDEN"},
                    )
                row = await container.tariff_queries.wait_for_version(
                    wanted, head.aggregateversion, 5.0
                )
                if row is not None:
                    yield Tariff.from_row(row, internal=_is_staff(actor))
        finally:
            await sub.unsubscribe()


_head_decoder = msgspec.json.Decoder(_TariffEventHead)


@strawberry.type
class TariffMutation:
    @strawberry.mutation(description="Create a region's tariff (admin).")
    async def create_tariff(
        self,
        info: ContextInfo,
        input: CreateTariffInput,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> TariffResult:
        try:
            spec = _spec(input)
        except _BadDecimals as exc:
            return _invalid(exc.problems)
        book = info.context.container.tariffs
        return await _run(info, idempotency_key, wait, lambda c: book.create_tariff(spec, c))

    @strawberry.mutation(
        description="Fix a region's price until it expires (admin).",
    )
    async def apply_tariff_override(
        self,
        info: ContextInfo,
        region: str,
        price: str,
        reason: str,
        expires_at: datetime,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> TariffResult:
        d = _Decimals()
        amount = d.parse("price", price)
        if d.problems:
            return _invalid(d.problems)
        book = info.context.container.tariffs
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda c: book.apply_override(region, amount, reason, expires_at, c),
        )

    @strawberry.mutation(description="Remove a region's override (admin).")
    async def clear_tariff_override(
        self,
        info: ContextInfo,
        region: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> TariffResult:
        book = info.context.container.tariffs
        return await _run(
            info, idempotency_key, wait, lambda c: book.clear_override(region, reason, c)
        )
