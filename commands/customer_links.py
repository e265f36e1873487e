"""Commands spanning customers and meters: closing or erasing an account that has meters."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql

from commands.context import CommandContext
from commands.customers import CustomerBook, Outcome
from commands.meters import MeterRegistry
from commands.policy import authorize
from domain.errors import Conflict

SHOWN_SERIALS = 5


def assigned_meters(book: CustomerBook, account: str) -> list[tuple[UUID, str]]:
    """(id, serial) of the meters in service assigned to ``account``, per the meters read model."""
    datastore: Any = book.recorder.datastore  # type: ignore[attr-defined]
    query = sql.SQL(
        "SELECT id, serial FROM {}.meters WHERE customer_account = %s "
        "AND status <> 'DECOMMISSIONED' ORDER BY serial"
    ).format(sql.Identifier(datastore.schema))
    with datastore.transaction(commit=False) as curs:
        curs.execute(query, (account,))
        return [(row["id"], row["serial"]) for row in curs.fetchall()]


def close_customer(
    book: CustomerBook,
    registry: MeterRegistry,
    account: str,
    reason: str,
    unassign_meters: bool,
    ctx: CommandContext,
) -> Outcome:
    """Close the account; refused while meters are assigned unless ``unassign_meters``."""
    authorize(ctx.actor, "closeCustomer")
    book.get(account)  # NotFound before anything else
    meters = assigned_meters(book, account)
    if meters and not unassign_meters:
        raise Conflict(_has_meters(account, meters) + "; unassign them or pass unassignMeters")
    for id_, _serial in meters:
        registry.unassign_customer(id_, f"customer account {account} closed: {reason}", ctx)
    return book.close_account(account, reason, len(meters), ctx)


def erase_customer(book: CustomerBook, account: str, reason: str, ctx: CommandContext) -> Outcome:
    """Erase the customer's personal data; refused while meters are still assigned."""
    authorize(ctx.actor, "eraseCustomer")
    book.get(account)
    meters = assigned_meters(book, account)
    if meters:
        raise Conflict(_has_meters(account, meters) + "; close the account with them first")
    return book.erase_account(account, reason, ctx)


def _has_meters(account: str, meters: list[tuple[UUID, str]]) -> str:
    shown = ", ".join(serial for _id, serial in meters[:SHOWN_SERIALS])
    more = "" if len(meters) <= SHOWN_SERIALS else f" and {len(meters) - SHOWN_SERIALS} more"
    return f"customer {account} has {len(meters)} meters assigned ({shown}{more})"
