"""Bulk customer import: parse a CSV, open good rows in batches, assign meters, report the rest."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from commands.context import CommandContext
from commands.customer_csv import CustomerRowError, ParsedCustomer, parse_customer_csv
from commands.customers import CustomerBook
from commands.meters import MeterRegistry
from commands.policy import authorize
from domain.errors import DomainError, NotFound
from domain.meter import meter_id


class CustomerImportReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Outcome of one import: counts, and one entry per rejected row and field."""

    rows: int
    created: int
    unchanged: int
    rejected: int
    meters_assigned: int
    errors: list[CustomerRowError]
    last_position: int | None
    """Event-store position of the last customer created (for read-your-writes)."""


def import_customers(
    book: CustomerBook,
    registry: MeterRegistry,
    data: bytes | str,
    ctx: CommandContext,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> CustomerImportReport:
    """Import a customer CSV; identical re-imports change nothing; meters are assigned."""
    authorize(ctx.actor, "importCustomers")
    parsed = parse_customer_csv(data)
    errors = list(parsed.errors)
    created = unchanged = assigned = 0
    last: int | None = None
    for start in range(0, len(parsed.rows), batch_size):
        batch = parsed.rows[start : start + batch_size]
        results, position = book.import_customers([r.customer for r in batch], ctx)
        last = position or last
        for row, result in zip(batch, results, strict=True):
            if result.status == "conflict":
                errors.append(
                    CustomerRowError(row.line, "accountNumber", result.message, result.account)
                )
                continue
            if result.status == "created":
                created += 1
            else:
                unchanged += 1
            problem = _assign(registry, row, ctx)
            if problem is None:
                assigned += row.meter is not None
            else:
                errors.append(problem)
        if progress is not None:
            progress(len(batch))
    errors.sort(key=lambda e: (e.line, e.field))
    rejected_lines = {e.line for e in errors if e.line > 1}
    return CustomerImportReport(
        rows=len(parsed.rows) + len({e.line for e in parsed.errors if e.line > 1}),
        created=created,
        unchanged=unchanged,
        rejected=len(rejected_lines),
        meters_assigned=assigned,
        errors=errors,
        last_position=last,
    )


def _assign(
    registry: MeterRegistry, row: ParsedCustomer, ctx: CommandContext
) -> CustomerRowError | None:
    """Assign the row's meter to its customer (nothing when it already is); the problem if not."""
    if row.meter is None:
        return None
    account = row.customer.account
    try:
        meter = registry.get(meter_id(row.meter))
    except NotFound:
        return CustomerRowError(row.line, "meterAssigned", f"no meter {row.meter}", account)
    try:
        if meter.customer_account != account:
            registry.assign_customer(meter.id, account, ctx)
    except DomainError as exc:
        return CustomerRowError(row.line, "meterAssigned", exc.message, account)
    return None
