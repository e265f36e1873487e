"""GraphQL SIM inventory: queries over the sim_cards read model, mutations on the SimInventory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, TypeAlias

import anyio.to_thread
import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.graphql.types import (
    CommandError,
    FieldProblem,
    Meter,
    PageInfo,
    ValidationError,
    error_value,
)
from commands.context import CommandContext
from commands.policy import may_read_meter
from commands.sims import SimInventory, SimOutcome
from domain.errors import DomainError
from domain.sim_card import SimCard as SimAggregate
from domain.sim_rules import SimSpec
from domain.sim_rules import SimStatus as DomainSimStatus
from projections.sims_queries import InvalidSimCursor, SimFilter, SimRow, encode_cursor

ContextInfo = Info[RequestContext, None]

SimStatus = strawberry.enum(
    DomainSimStatus,
    description="Lifecycle of a SIM card: IN_STOCK → ACTIVE ↔ SUSPENDED → TERMINATED (final).",
)


@strawberry.type(description="A SIM card of the inventory and the meter it sits in, if any.")
class SimCard:
    iccid: str = strawberry.field(description="ICCID (19-20 digits, Luhn-checked): the card's id.")
    sim_number: str | None = strawberry.field(
        description="The operator's own label for the card (not unique)."
    )
    imsi: str | None
    msisdn: str | None
    provider: str
    status: SimStatus  # type: ignore[valid-type]
    ip_address: str | None
    apn: str | None
    data_limit: int | None = strawberry.field(description="Monthly data limit in MB.")
    activation_date: date | None
    meter_serial: str | None = strawberry.field(description="Serial of the meter it sits in.")
    added_at: datetime
    updated_at: datetime
    version: int

    @strawberry.field(description="The meter the card sits in (null when none or not visible).")
    async def meter(self, info: ContextInfo) -> Meter | None:
        if self.meter_serial is None:
            return None
        row = await info.context.container.meters.by_serial(self.meter_serial)
        if row is None or not may_read_meter(info.context.actor(), row.customer_account):
            return None
        return Meter.from_row(row)

    @classmethod
    def from_row(cls, row: SimRow) -> SimCard:
        """GraphQL view of a read-model row."""
        return cls(
            iccid=row.iccid,
            sim_number=row.sim_number,
            imsi=row.imsi,
            msisdn=row.msisdn,
            provider=row.provider,
            status=row.status,
            ip_address=row.ip_address,
            apn=row.apn,
            data_limit=row.data_limit_mb,
            activation_date=row.activation_date,
            meter_serial=row.meter_serial,
            added_at=row.added_at,
            updated_at=row.updated_at,
            version=row.version,
        )

    @classmethod
    def from_aggregate(cls, card: SimAggregate) -> SimCard:
        """GraphQL view of the card as the command left it."""
        return cls(
            iccid=card.iccid,
            sim_number=card.spec.sim_number,
            imsi=card.spec.imsi,
            msisdn=card.spec.msisdn,
            provider=card.provider,
            status=card.status,
            ip_address=card.ip_address,
            apn=card.apn,
            data_limit=card.data_limit_mb,
            activation_date=card.activation_date,
            meter_serial=card.meter_serial,
            added_at=card.created_on,
            updated_at=card.modified_on,
            version=card.version,
        )


@strawberry.type
class SimCardEdge:
    cursor: str
    node: SimCard


@strawberry.type
class SimCardConnection:
    edges: list[SimCardEdge]
    page_info: PageInfo


@strawberry.type(description="How many cards one provider has in one status.")
class SimCardCount:
    provider: str
    status: SimStatus  # type: ignore[valid-type]
    count: int


@strawberry.input(description="Which SIM cards to list (all given conditions must hold).")
class SimCardFilterInput:
    provider: str | None = None
    status: SimStatus | None = None  # type: ignore[valid-type]
    installed: bool | None = strawberry.field(
        default=None, description="True: only cards in a meter; false: only cards in none."
    )


@strawberry.input(description="A SIM card entering the stock.")
class SimCardInput:
    iccid: str
    provider: str
    sim_number: str | None = None
    imsi: str | None = None
    msisdn: str | None = None
    apn: str | None = None
    ip_address: str | None = None
    data_limit: int | None = strawberry.field(default=None, description="MB per month, >= 0.")
    activation_date: date | None = None


SimCardOrError: TypeAlias = SimCard | CommandError
SimCardResult = Annotated[SimCardOrError, strawberry.union("SimCardResult")]


def _bad_request(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


@strawberry.type
class SimQuery:
    @strawberry.field(
        description="SIM cards matching the filter, ordered by ICCID, `first` at a time (max 500)."
    )
    async def sim_cards(
        self,
        info: ContextInfo,
        filter: SimCardFilterInput | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> SimCardConnection:
        if not 1 <= first <= 500:
            raise _bad_request(f"first: must be between 1 and 500, got {first}")
        f = filter or SimCardFilterInput()
        try:
            page = await info.context.container.sim_queries.page(
                SimFilter(provider=f.provider, status=f.status, installed=f.installed),
                first,
                after,
            )
        except InvalidSimCursor as exc:
            raise _bad_request(str(exc)) from None
        return SimCardConnection(
            edges=[
                SimCardEdge(cursor=encode_cursor(r.iccid), node=SimCard.from_row(r))
                for r in page.items
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(description="One SIM card by ICCID, or null.")
    async def sim_card(self, info: ContextInfo, iccid: str) -> SimCard | None:
        row = await info.context.container.sim_queries.by_iccid(iccid.replace(" ", ""))
        return None if row is None else SimCard.from_row(row)

    @strawberry.field(description="The SIM card installed in the meter with this serial, or null.")
    async def meter_sim(self, info: ContextInfo, serial: str) -> SimCard | None:
        row = await info.context.container.sim_queries.by_meter(serial)
        return None if row is None else SimCard.from_row(row)

    @strawberry.field(description="How many SIM cards each provider has in each status.")
    async def sim_card_counts(self, info: ContextInfo) -> list[SimCardCount]:
        counts = await info.context.container.sim_queries.counts()
        return [SimCardCount(provider=c.provider, status=c.status, count=c.count) for c in counts]


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[SimInventory, CommandContext], SimOutcome],
) -> SimCardOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
        return ValidationError(message=str(exc), code="VALIDATION", fields=[problem])
    inventory = context.container.sims
    try:
        outcome = await anyio.to_thread.run_sync(lambda: command(inventory, ctx))
    except DomainError as exc:
        return error_value(exc)
    if outcome.notification_id is not None and wait:
        seconds = context.container.settings.api.projection_wait_seconds
        await context.container.sim_queries.wait_for(outcome.notification_id, seconds)
    return SimCard.from_aggregate(outcome.sim)


@strawberry.type
class SimMutation:
    @strawberry.mutation(description="Add a SIM card to the stock (status IN_STOCK).")
    async def add_sim_card(
        self,
        info: ContextInfo,
        input: SimCardInput,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        spec = SimSpec(
            iccid=input.iccid,
            provider=input.provider,
            sim_number=input.sim_number,
            imsi=input.imsi,
            msisdn=input.msisdn,
            apn=input.apn,
            ip_address=input.ip_address,
            data_limit_mb=input.data_limit,
            activation_date=input.activation_date,
        )
        return await _run(info, idempotency_key, wait, lambda s, c: s.add_sim(spec, c))

    @strawberry.mutation(
        description="Change a card's provider, APN, IP address or data limit (null keeps one)."
    )
    async def update_sim_card(
        self,
        info: ContextInfo,
        iccid: str,
        provider: str | None = None,
        apn: str | None = None,
        ip_address: str | None = None,
        data_limit: int | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda s, c: s.update_sim(
                iccid,
                c,
                provider=provider,
                apn=apn,
                ip_address=ip_address,
                data_limit_mb=data_limit,
            ),
        )

    @strawberry.mutation(description="Put a card in stock into service (activation date: today).")
    async def activate_sim_card(
        self,
        info: ContextInfo,
        iccid: str,
        activation_date: date | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(
            info, idempotency_key, wait, lambda s, c: s.activate_sim(iccid, activation_date, c)
        )

    @strawberry.mutation(description="Pause an active card's service.")
    async def suspend_sim_card(
        self,
        info: ContextInfo,
        iccid: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(info, idempotency_key, wait, lambda s, c: s.suspend_sim(iccid, reason, c))

    @strawberry.mutation(description="Bring a suspended card back into service.")
    async def resume_sim_card(
        self,
        info: ContextInfo,
        iccid: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(info, idempotency_key, wait, lambda s, c: s.resume_sim(iccid, c))

    @strawberry.mutation(
        description="End a card's service for good (admin; refused while it sits in a meter)."
    )
    async def terminate_sim_card(
        self,
        info: ContextInfo,
        iccid: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(
            info, idempotency_key, wait, lambda s, c: s.terminate_sim(iccid, reason, c)
        )

    @strawberry.mutation(
        description="Put an active card into a meter in service: one SIM per meter, one meter "
        "per SIM (installing does not activate: activate the card first)."
    )
    async def install_sim(
        self,
        info: ContextInfo,
        meter_serial: str,
        iccid: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        registry = info.context.container.registry
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda s, c: s.install_sim(registry, meter_serial, iccid, c),
        )

    @strawberry.mutation(description="Take the card out of a meter (it keeps its status).")
    async def remove_sim(
        self,
        info: ContextInfo,
        meter_serial: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> SimCardResult:
        return await _run(
            info, idempotency_key, wait, lambda s, c: s.remove_sim(meter_serial, reason, c)
        )
