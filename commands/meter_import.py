"""Bulk meter import: parse a CSV, register good rows in batches, report every bad one."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from commands.context import CommandContext
from commands.meter_csv import RowError, parse_meter_csv
from commands.meters import MeterRegistry
from commands.policy import authorize
from commands.sim_links import SimLinks
from commands.sims import SimInventory


class ImportReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Outcome of one import: counts, and one entry per rejected row and field."""

    rows: int
    created: int
    unchanged: int
    rejected: int
    errors: list[RowError]
    last_position: int | None
    """Event-store position of the last meter created (for read-your-writes)."""
    sims_installed: int = 0
    """Rows whose ``simCard`` is the ICCID of an inventory SIM now installed in the meter."""
    sim_errors: list[RowError] = []
    """Rows whose meter is registered but whose inventory SIM could not be installed."""
    sims_position: int | None = None
    """Event-store position (SIM log) of the last installation recorded."""


def import_meters(
    registry: MeterRegistry,
    data: bytes | str,
    ctx: CommandContext,
    *,
    batch_size: int = 500,
    default_region: str | None = None,
    progress: Callable[[int], None] | None = None,
    sims: SimInventory | None = None,
) -> ImportReport:
    """Import a meter CSV: good rows are registered (identical re-imports change nothing).

    With ``sims``, a row whose ``simCard`` is the ICCID of a card in the inventory installs that
    card in the meter (``commands.sim_links``); any other ``simCard`` stays free text.
    """
    authorize(ctx.actor, "importMeters")
    parsed = parse_meter_csv(data, default_region=default_region)
    errors = list(parsed.errors)
    created = unchanged = 0
    last: int | None = None
    links = SimLinks(sims, registry, ctx) if sims is not None else None
    for start in range(0, len(parsed.rows), batch_size):
        batch = parsed.rows[start : start + batch_size]
        results, position = registry.import_meters([(r.spec, r.customer) for r in batch], ctx)
        last = position or last
        for row, result in zip(batch, results, strict=True):
            if links is not None and result.status != "conflict":
                links.install(row.line, row.spec.serial, row.spec.sim_card)
            if result.status == "created":
                created += 1
            elif result.status == "unchanged":
                unchanged += 1
            else:
                errors.append(
                    RowError(
                        line=row.line,
                        field="meterNumber",
                        reason=result.message,
                        serial=row.spec.serial,
                    )
                )
        if progress is not None:
            progress(len(batch))
    errors.sort(key=lambda e: (e.line, e.field))
    rejected_lines = {e.line for e in errors if e.line > 1}
    return ImportReport(
        rows=len(parsed.rows) + len({e.line for e in parsed.errors if e.line > 1}),
        created=created,
        unchanged=unchanged,
        rejected=len(rejected_lines),
        errors=errors,
        last_position=last,
        sims_installed=0 if links is None else links.installed,
        sim_errors=[] if links is None else links.errors,
        sims_position=None if links is None else links.position,
    )
