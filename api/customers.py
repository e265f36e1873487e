"""Customers as callers see them: narrowed to their own record, contact hidden by role."""

from __future__ import annotations

from datetime import date, datetime

import anyio.to_thread
import msgspec

from commands.context import Actor
from commands.customers import CustomerBook, Outcome
from commands.policy import may_read_contact
from domain.customer import CustomerStatus, CustomerType
from projections.customers_queries import CustomerQueries, CustomerRow


class CustomerView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A customer account; ``phone`` and ``email`` are null for roles that may not see them."""

    account_number: str
    name: str
    address: str
    phone: str | None
    email: str | None
    area: str
    customer_type: CustomerType
    tariff_plan: str
    connection_date: date | None
    status: CustomerStatus
    erased: bool
    meters: list[str]
    """Serial numbers of the meters assigned to the account."""
    updated_at: datetime


def customer_view(row: CustomerRow, actor: Actor) -> CustomerView:
    """The row as ``actor`` may see it (contact fields nulled unless allowed)."""
    contact = may_read_contact(actor, row.account)
    return CustomerView(
        account_number=row.account,
        name=row.name,
        address=row.address,
        phone=row.phone if contact else None,
        email=row.email if contact else None,
        area=row.area,
        customer_type=row.customer_type,
        tariff_plan=row.tariff_plan,
        connection_date=row.connection_date,
        status=row.status,
        erased=row.erased,
        meters=row.meters,
        updated_at=row.updated_at,
    )


async def present_customer(
    outcome: Outcome, book: CustomerBook, queries: CustomerQueries, wait_seconds: float
) -> CustomerRow:
    """The customer after a command: from the read model once it caught up, else the aggregate."""
    customer = outcome.customer
    if outcome.notification_id is not None and wait_seconds > 0:
        await queries.wait_for(outcome.notification_id, wait_seconds)
    row = await queries.by_account(customer.account)
    if row is not None and row.updated_at >= customer.modified_on:
        return row
    personal = await anyio.to_thread.run_sync(book.personal, customer)
    return CustomerRow(
        id=customer.id,
        account=customer.account,
        name=personal.name,
        address=personal.address,
        phone=personal.phone,
        email=personal.email,
        area=customer.profile.area,
        customer_type=customer.profile.customer_type,
        tariff_plan=customer.profile.tariff_plan,
        connection_date=customer.profile.connection_date,
        status=customer.status,
        erased=customer.erased,
        meters=[] if row is None else row.meters,
        created_at=customer.created_on,
        updated_at=customer.modified_on,
    )
