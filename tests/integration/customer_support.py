"""Helpers of the customer tests: contexts, new accounts, a customer book over the test store."""

from __future__ import annotations

import contextlib
import uuid
from datetime import date

from adapters.customer_keys import customer_master_key
from bootstrap import applications
from commands.context import Actor, CommandContext, Role
from commands.customers import CustomerBook, NewCustomer
from config.settings import Settings
from domain.customer import CustomerProfile, CustomerType
from domain.errors import Conflict, NotFound
from domain.personal_data import PersonalData


def ctx(subject: str = "ann", *roles: Role, key: str | None = None) -> CommandContext:
    """A command context of ``subject`` holding ``roles`` (operator by default)."""
    actor = Actor(subject=subject, roles=frozenset(roles or (Role.OPERATOR,)))
    return CommandContext(actor=actor, idempotency_key=key)


def new_account(prefix: str = "ACC") -> str:
    """An account number no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_customer(account: str, area: str = "North", tag: str = "") -> NewCustomer:
    """A customer with personal values unique to ``account`` (so a dump search is exact)."""
    token = tag or uuid.uuid4().hex[:8]
    return NewCustomer(
        account=account,
        personal=PersonalData(
            name=f"Zelda Q{token}",
            address=f"{token} Quarry Lane\nSpringfield",
            phone=f"+44 7700 {int(token, 16) % 900000 + 100000}",
            email=f"zelda.{token}@example.org",
        ),
        profile=CustomerProfile(
            area=area,
            customer_type=CustomerType.RESIDENTIAL,
            tariff_plan="standard",
            connection_date=date(2024, 5, 6),
        ),
    )


def customer_book(settings: Settings) -> CustomerBook:
    """A CustomerBook over the test store with the test run's master key."""
    key = customer_master_key(settings.customers.master_key, settings.runtime.data_dir)
    return applications.customer_book(settings.database, key)


def ensure_customers(settings: Settings, *accounts: str) -> None:
    """Open an active customer for each of ``accounts`` that does not exist yet."""
    book = customer_book(settings)
    try:
        for account in accounts:
            try:
                book.get(account)
            except NotFound:
                # Conflict: another test opened it meanwhile; it exists, which is all we need.
                with contextlib.suppress(Conflict):
                    book.create_customer(new_customer(account), ctx("test-setup"))
    finally:
        book.close()
