"""Adopt meters' free-text customer accounts as customer records (once, after the upgrade)."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import sql

from commands.context import CommandContext
from commands.customers import CustomerBook, NewCustomer, check_new
from commands.policy import authorize
from domain.customer import CustomerProfile
from domain.errors import NotFound, ValidationFailed
from domain.personal_data import PersonalData

PLACEHOLDER_ADDRESS = "unknown"


class AdoptionReport(msgspec.Struct, frozen=True, kw_only=True):
    """Accounts found on meters, those adopted now and those refused (with the reason)."""

    found: int
    adopted: list[str]
    existing: int
    refused: dict[str, str]


def meters_accounts(book: CustomerBook) -> dict[str, str]:
    """Account → area of every account on a meter in service (the first meter's area)."""
    datastore: Any = book.recorder.datastore  # type: ignore[attr-defined]
    query = sql.SQL(
        "SELECT DISTINCT ON (customer_account) customer_account, area FROM {}.meters "
        "WHERE customer_account IS NOT NULL AND status <> 'DECOMMISSIONED' "
        "ORDER BY customer_account, serial"
    ).format(sql.Identifier(datastore.schema))
    with datastore.transaction(commit=False) as curs:
        curs.execute(query)
        return {row["customer_account"]: row["area"] for row in curs.fetchall()}


def adopt_accounts(book: CustomerBook, ctx: CommandContext) -> AdoptionReport:
    """Create an active customer with placeholder personal data for every unknown account."""
    authorize(ctx.actor, "adoptCustomers")
    found = meters_accounts(book)
    rows: list[NewCustomer] = []
    refused: dict[str, str] = {}
    existing = 0
    for account, area in sorted(found.items()):
        new = NewCustomer(
            account=account,
            personal=PersonalData(name=f"Adopted account {account}", address=PLACEHOLDER_ADDRESS),
            profile=CustomerProfile(area=area),
        )
        try:
            check_new(new)
        except ValidationFailed as exc:
            refused[account] = exc.message
            continue
        try:
            book.get(account)
        except NotFound:
            rows.append(new)
        else:
            existing += 1
    results, _ = book.import_customers(rows, ctx)
    refused.update({r.account: r.message for r in results if r.status == "conflict"})
    return AdoptionReport(
        found=len(found),
        adopted=[r.account for r in results if r.status == "created"],
        existing=existing,
        refused=refused,
    )
