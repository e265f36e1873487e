"""REST endpoints of customer accounts: queries, commands, CSV template and import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, JSONBody, MultipartBody, QueryParameter

from api.context import RequestContext
from api.customers import CustomerView, customer_view, present_customer
from api.rest.commands import IdempotencyKey, Wait
from api.rest.imports import MAX_IMPORT_BYTES
from commands.context import CommandContext, Role
from commands.customer_csv import template_csv
from commands.customer_import import CustomerImportReport, import_customers
from commands.customer_links import close_customer, erase_customer
from commands.customers import NewCustomer, Outcome
from commands.policy import may_read_customer
from domain.customer import CustomerProfile, CustomerStatus, CustomerType
from domain.errors import NotFound
from domain.personal_data import PersonalData
from projections.customers_queries import AreaCount, CustomerFilter
from projections.meters_queries import InvalidCursor


class ContactBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A customer's personal contact data and area."""

    name: str
    address: str
    area: str
    phone: str = ""
    email: str = ""

    def personal(self) -> PersonalData:
        """The personal fields of the body."""
        return PersonalData(
            name=self.name, address=self.address, phone=self.phone, email=self.email
        )


class CreateCustomerBody(ContactBody, frozen=True, kw_only=True, rename="camel"):
    """A new customer account."""

    account_number: str
    customer_type: CustomerType = CustomerType.RESIDENTIAL
    tariff_plan: str = "standard"
    connection_date: date | None = None


class PlanBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The customer's type and tariff plan."""

    customer_type: CustomerType
    tariff_plan: str


class CloseBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Why the account closes, and whether its meters are unassigned with it."""

    reason: str
    unassign_meters: bool = False


class CustomerReasonBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Why the operator does this."""

    reason: str


class CustomerPageView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A page of customers ordered by account number."""

    items: list[CustomerView]
    has_next_page: bool
    end_cursor: str | None


@dataclass
class CustomerImportForm:
    """The multipart form of an import: the CSV file in the part named ``data``."""

    data: UploadFile


async def _run(
    ctx: RequestContext, key: str | None, wait: bool, command: Callable[[CommandContext], Outcome]
) -> CustomerView:
    command_ctx = ctx.command(key)
    outcome = await anyio.to_thread.run_sync(command, command_ctx)
    c = ctx.container
    seconds = c.settings.api.projection_wait_seconds if wait else 0.0
    row = await present_customer(outcome, c.customers, c.customer_queries, seconds)
    return customer_view(row, command_ctx.actor)


class CustomerQueriesController(Controller):
    """Customer accounts as the read model shows them (customers see only their own)."""

    tags = ["customers"]

    @get("/api/v1/customers", summary="List customers")
    async def list_customers(
        self,
        ctx: NamedDependency[RequestContext],
        area: Annotated[str | None, QueryParameter(required=False)] = None,
        status: Annotated[CustomerStatus | None, QueryParameter(required=False)] = None,
        customer_type: Annotated[
            CustomerType | None, QueryParameter(name="customerType", required=False)
        ] = None,
        first: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        after: Annotated[str | None, QueryParameter(required=False)] = None,
    ) -> CustomerPageView:
        """Customers by account number, filtered by area, status and type, cursor-paged."""
        actor = ctx.actor()
        only_own = actor.roles == {Role.CUSTOMER}
        account = actor.customer_account if only_own else None
        if only_own and account is None:
            return CustomerPageView(items=[], has_next_page=False, end_cursor=None)
        filter_ = CustomerFilter(
            area=area, status=status, customer_type=customer_type, account=account
        )
        try:
            page = await ctx.container.customer_queries.page(filter_, first, after)
        except InvalidCursor as exc:  # a malformed parameter: 400, like any other
            raise ValidationException(
                str(exc), extra=[{"key": "after", "message": str(exc)}]
            ) from None
        return CustomerPageView(
            items=[customer_view(r, actor) for r in page.items],
            has_next_page=page.has_next_page,
            end_cursor=page.end_cursor,
        )

    @get("/api/v1/customers/{account:str}", summary="One customer")
    async def get_customer(
        self, ctx: NamedDependency[RequestContext], account: FromPath[str]
    ) -> CustomerView:
        """The customer account with its meters (404 also when the caller may not see it)."""
        actor = ctx.actor()
        row = await ctx.container.customer_queries.by_account(account)
        if row is None or not may_read_customer(actor, row.account):
            raise NotFound(f"no customer with account {account!r}")
        return customer_view(row, actor)

    @get("/api/v1/meters/{meter:str}/customer", summary="A meter's customer")
    async def meter_customer(
        self, ctx: NamedDependency[RequestContext], meter: FromPath[str]
    ) -> CustomerView:
        """The customer the meter is assigned to (404 when none, or not the caller's)."""
        actor = ctx.actor()
        row = await ctx.container.customer_queries.for_meter(meter)
        if row is None or not may_read_customer(actor, row.account):
            raise NotFound(f"meter {meter!r} has no customer you may see")
        return customer_view(row, actor)

    @get("/api/v1/customer-counts", summary="Customers per area")
    async def counts(self, ctx: NamedDependency[RequestContext]) -> list[AreaCount]:
        """How many customers (and active ones) each area has."""
        return await ctx.container.customer_queries.counts_per_area()


class CustomerCommands(Controller):
    """Customer account commands; each answers with the account's new state."""

    path = "/api/v1/commands/customers"
    tags = ["customer commands"]

    @post("/", status_code=201, summary="Create a customer")
    async def create(
        self,
        ctx: NamedDependency[RequestContext],
        data: JSONBody[CreateCustomerBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Open a customer account; its account number must be new."""
        new = NewCustomer(
            account=data.account_number,
            personal=data.personal(),
            profile=CustomerProfile(
                area=data.area,
                customer_type=data.customer_type,
                tariff_plan=data.tariff_plan,
                connection_date=data.connection_date,
            ),
        )
        book = ctx.container.customers
        return await _run(ctx, idempotency_key, wait, lambda c: book.create_customer(new, c))

    @post("/{account:str}/contact", status_code=200, summary="Update contact data and area")
    async def contact(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        data: JSONBody[ContactBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Change name, address, phone, e-mail or area."""
        book = ctx.container.customers
        personal = data.personal()
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: book.update_contact(account, personal, data.area, c),
        )

    @post("/{account:str}/plan", status_code=200, summary="Change type and tariff plan")
    async def plan(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        data: JSONBody[PlanBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Change the customer type or tariff plan."""
        book = ctx.container.customers
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: book.change_plan(account, data.customer_type, data.tariff_plan, c),
        )

    @post("/{account:str}/suspend", status_code=200, summary="Suspend a customer")
    async def suspend(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        data: JSONBody[CustomerReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Suspend an active account (no meter can be assigned to it meanwhile)."""
        book = ctx.container.customers
        return await _run(
            ctx, idempotency_key, wait, lambda c: book.suspend_account(account, data.reason, c)
        )

    @post("/{account:str}/reactivate", status_code=200, summary="Reactivate a customer")
    async def reactivate(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Make a suspended account active again."""
        book = ctx.container.customers
        return await _run(ctx, idempotency_key, wait, lambda c: book.reactivate_account(account, c))

    @post("/{account:str}/close", status_code=200, summary="Close a customer")
    async def close(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        data: JSONBody[CloseBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Close the account; refused (409, naming the meters) unless ``unassignMeters``."""
        c_ = ctx.container
        return await _run(
            ctx,
            idempotency_key,
            wait,
            lambda c: close_customer(
                c_.customers, c_.registry, account, data.reason, data.unassign_meters, c
            ),
        )

    @post("/{account:str}/erase", status_code=200, summary="Erase a customer's personal data")
    async def erase(
        self,
        ctx: NamedDependency[RequestContext],
        account: FromPath[str],
        data: JSONBody[CustomerReasonBody],
        idempotency_key: IdempotencyKey = None,
        wait: Wait = True,
    ) -> CustomerView:
        """Destroy the customer's data key (admin, reason recorded); history stays intact."""
        book = ctx.container.customers
        return await _run(
            ctx, idempotency_key, wait, lambda c: erase_customer(book, account, data.reason, c)
        )


class CustomerImports(Controller):
    """CSV import of customers, validated row by row."""

    tags = ["customer import"]

    @get("/api/v1/templates/customers", media_type="text/csv", summary="Customer import template")
    async def template(self) -> Response[str]:
        """The CSV template (header and one example row) that the import accepts."""
        return Response(
            template_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="customers-template.csv"'},
        )

    @post(
        "/api/v1/imports/customers",
        status_code=200,
        summary="Import customers from CSV",
        request_max_body_size=MAX_IMPORT_BYTES,
    )
    async def upload(
        self, ctx: NamedDependency[RequestContext], data: MultipartBody[CustomerImportForm]
    ) -> CustomerImportReport:
        """Open every valid row and assign its meter; report each bad row by line and field."""
        command_ctx = ctx.command(None)
        content = await data.data.read()
        c = ctx.container
        batch = c.settings.api.import_batch_size
        report = await anyio.to_thread.run_sync(
            lambda: import_customers(
                c.customers, c.registry, content, command_ctx, batch_size=batch
            )
        )
        if report.last_position is not None:
            await c.customer_queries.wait_for(
                report.last_position, c.settings.api.projection_wait_seconds
            )
        return report
