"""GraphQL customers: queries (own record for customers, contact by role) and commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, TypeAlias

import anyio.to_thread
import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from api.context import InvalidHeader, RequestContext
from api.customers import customer_view, present_customer
from api.graphql.types import CommandError, FieldProblem, PageInfo, ValidationError, error_value
from commands.context import CommandContext, Role
from commands.customer_links import close_customer, erase_customer
from commands.customers import NewCustomer, Outcome
from commands.policy import may_read_customer
from domain.customer import CustomerProfile
from domain.customer import CustomerStatus as DomainStatus
from domain.customer import CustomerType as DomainType
from domain.errors import DomainError
from domain.personal_data import PersonalData
from projections.customers_queries import CustomerFilter, CustomerRow, encode_cursor
from projections.meters_queries import InvalidCursor

ContextInfo = Info[RequestContext, None]
CustomerType = strawberry.enum(DomainType, name="CustomerType")
CustomerStatus = strawberry.enum(DomainStatus, name="CustomerStatus")


@strawberry.type(
    description="A customer account. Personal data shows as [erased] once erased; phone and "
    "email are null for roles that may not see them (docs/customers.md)."
)
class Customer:
    account_number: str
    name: str
    address: str
    phone: str | None
    email: str | None
    area: str
    customer_type: CustomerType  # type: ignore[valid-type]
    tariff_plan: str
    connection_date: date | None
    status: CustomerStatus  # type: ignore[valid-type]
    erased: bool
    meters: list[str] = strawberry.field(description="Serials of the meters assigned to it.")
    updated_at: datetime


@strawberry.type
class CustomerEdge:
    cursor: str
    node: Customer


@strawberry.type(description="A page of customers ordered by account number.")
class CustomerConnection:
    edges: list[CustomerEdge]
    page_info: PageInfo


@strawberry.type(description="How many customers an area has.")
class AreaCustomerCount:
    area: str
    customers: int
    active: int


@strawberry.input(description="All given conditions must hold.")
class CustomerFilterInput:
    area: str | None = None
    status: CustomerStatus | None = None  # type: ignore[valid-type]
    customer_type: CustomerType | None = None  # type: ignore[valid-type]


@strawberry.input(description="A customer's personal contact data (sealed in its events).")
class ContactInput:
    name: str
    address: str
    phone: str = ""
    email: str = ""


CustomerOrError: TypeAlias = Customer | CommandError
CustomerResult = Annotated[CustomerOrError, strawberry.union("CustomerResult")]


def _node(row: CustomerRow, info: ContextInfo) -> Customer:
    view = customer_view(row, info.context.actor())
    return Customer(
        account_number=view.account_number,
        name=view.name,
        address=view.address,
        phone=view.phone,
        email=view.email,
        area=view.area,
        customer_type=view.customer_type,
        tariff_plan=view.tariff_plan,
        connection_date=view.connection_date,
        status=view.status,
        erased=view.erased,
        meters=view.meters,
        updated_at=view.updated_at,
    )


@strawberry.type
class CustomerQuery:
    @strawberry.field(description="Customers by account number (customers: only their own).")
    async def customers(
        self,
        info: ContextInfo,
        filter: CustomerFilterInput | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> CustomerConnection:
        actor = info.context.actor()
        if not 1 <= first <= 500:
            raise GraphQLError(
                f"first: must be between 1 and 500, got {first}",
                extensions={"code": "BAD_USER_INPUT"},
            )
        f = filter or CustomerFilterInput()
        only_own = actor.roles == {Role.CUSTOMER}
        empty = CustomerConnection(
            edges=[], page_info=PageInfo(has_next_page=False, end_cursor=None)
        )
        if only_own and actor.customer_account is None:
            return empty
        query = CustomerFilter(
            area=f.area,
            status=f.status,
            customer_type=f.customer_type,
            account=actor.customer_account if only_own else None,
        )
        try:
            page = await info.context.container.customer_queries.page(query, first, after)
        except InvalidCursor as exc:
            raise GraphQLError(str(exc), extensions={"code": "BAD_USER_INPUT"}) from None
        return CustomerConnection(
            edges=[
                CustomerEdge(cursor=encode_cursor(r.account), node=_node(r, info))
                for r in page.items
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(description="One customer account (null when absent or not yours).")
    async def customer(self, info: ContextInfo, account_number: str) -> Customer | None:
        row = await info.context.container.customer_queries.by_account(account_number)
        if row is None or not may_read_customer(info.context.actor(), row.account):
            return None
        return _node(row, info)

    @strawberry.field(description="The customer a meter is assigned to (null when none).")
    async def meter_customer(self, info: ContextInfo, serial: str) -> Customer | None:
        row = await info.context.container.customer_queries.for_meter(serial)
        if row is None or not may_read_customer(info.context.actor(), row.account):
            return None
        return _node(row, info)

    @strawberry.field(description="Customers per area (all and active).")
    async def customer_counts_per_area(self, info: ContextInfo) -> list[AreaCustomerCount]:
        counts = await info.context.container.customer_queries.counts_per_area()
        return [
            AreaCustomerCount(area=c.area, customers=c.customers, active=c.active) for c in counts
        ]


async def _run(
    info: ContextInfo,
    idempotency_key: str | None,
    wait: bool,
    command: Callable[[CommandContext], Outcome],
) -> CustomerOrError:
    context = info.context
    try:
        ctx = context.command(idempotency_key)
    except InvalidHeader as exc:
        problem = FieldProblem(field="idempotencyKey", rule="format", message=str(exc))
        return ValidationError(
            message=f"invalid input: idempotencyKey: {exc}", code="VALIDATION", fields=[problem]
        )
    try:
        outcome = await anyio.to_thread.run_sync(command, ctx)
    except DomainError as exc:
        return error_value(exc)
    c = context.container
    seconds = c.settings.api.projection_wait_seconds if wait else 0.0
    return _node(await present_customer(outcome, c.customers, c.customer_queries, seconds), info)


@strawberry.type
class CustomerMutation:
    @strawberry.mutation(description="Open a customer account (its account number must be new).")
    async def create_customer(
        self,
        info: ContextInfo,
        account_number: str,
        contact: ContactInput,
        area: str,
        customer_type: CustomerType = DomainType.RESIDENTIAL,  # type: ignore[valid-type]
        tariff_plan: str = "standard",
        connection_date: date | None = None,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        new = NewCustomer(
            account=account_number,
            personal=_personal(contact),
            profile=CustomerProfile(
                area=area,
                customer_type=customer_type,
                tariff_plan=tariff_plan,
                connection_date=connection_date,
            ),
        )
        book = info.context.container.customers
        return await _run(info, idempotency_key, wait, lambda c: book.create_customer(new, c))

    @strawberry.mutation(description="Change a customer's name, address, phone, e-mail or area.")
    async def update_customer_contact(
        self,
        info: ContextInfo,
        account_number: str,
        contact: ContactInput,
        area: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        book = info.context.container.customers
        personal = _personal(contact)
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda c: book.update_contact(account_number, personal, area, c),
        )

    @strawberry.mutation(description="Change a customer's type or tariff plan.")
    async def change_customer_plan(
        self,
        info: ContextInfo,
        account_number: str,
        customer_type: CustomerType,  # type: ignore[valid-type]
        tariff_plan: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        book = info.context.container.customers
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda c: book.change_plan(account_number, customer_type, tariff_plan, c),
        )

    @strawberry.mutation(description="Suspend an active customer (no meters assigned meanwhile).")
    async def suspend_customer(
        self,
        info: ContextInfo,
        account_number: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        book = info.context.container.customers
        return await _run(
            info, idempotency_key, wait, lambda c: book.suspend_account(account_number, reason, c)
        )

    @strawberry.mutation(description="Make a suspended customer active again.")
    async def reactivate_customer(
        self,
        info: ContextInfo,
        account_number: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        book = info.context.container.customers
        return await _run(
            info, idempotency_key, wait, lambda c: book.reactivate_account(account_number, c)
        )

    @strawberry.mutation(
        description="Close a customer account; refused while meters are assigned unless "
        "unassignMeters is true (they are then unassigned first)."
    )
    async def close_customer(
        self,
        info: ContextInfo,
        account_number: str,
        reason: str,
        unassign_meters: bool = False,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        c_ = info.context.container
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda c: close_customer(
                c_.customers, c_.registry, account_number, reason, unassign_meters, c
            ),
        )

    @strawberry.mutation(
        description="Erase a customer's personal data for good (admin; reason recorded as "
        "Customer.Erased): its data key is destroyed, history stays intact."
    )
    async def erase_customer(
        self,
        info: ContextInfo,
        account_number: str,
        reason: str,
        idempotency_key: str | None = None,
        wait: bool = True,
    ) -> CustomerResult:
        book = info.context.container.customers
        return await _run(
            info,
            idempotency_key,
            wait,
            lambda c: erase_customer(book, account_number, reason, c),
        )


def _personal(contact: ContactInput) -> PersonalData:
    return PersonalData(
        name=contact.name, address=contact.address, phone=contact.phone, email=contact.email
    )
