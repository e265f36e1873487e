"""Bulk SIM import: parse a CSV, add good rows in batches, report every bad one."""

from __future__ import annotations

import msgspec

from commands.context import CommandContext
from commands.policy import authorize
from commands.sim_csv import SimRowError, parse_sim_csv
from commands.sims import SimInventory


class SimImportReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Outcome of one import: counts, and one entry per rejected row and field."""

    rows: int
    created: int
    unchanged: int
    rejected: int
    errors: list[SimRowError]
    last_position: int | None
    """Event-store position of the last card recorded (for read-your-writes)."""


def import_sims(
    inventory: SimInventory, data: bytes | str, ctx: CommandContext, *, batch_size: int = 500
) -> SimImportReport:
    """Import a SIM CSV: good rows are added (identical re-imports change nothing)."""
    authorize(ctx.actor, "importSims")
    parsed = parse_sim_csv(data)
    errors = list(parsed.errors)
    created = unchanged = 0
    last: int | None = None
    for start in range(0, len(parsed.rows), batch_size):
        batch = parsed.rows[start : start + batch_size]
        results, position = inventory.import_sims([r.row for r in batch], ctx)
        last = position or last
        for row, result in zip(batch, results, strict=True):
            if result.status == "created":
                created += 1
            elif result.status == "unchanged":
                unchanged += 1
            else:
                errors.append(SimRowError(row.line, "iccid", result.message, result.iccid))
    errors.sort(key=lambda e: (e.line, e.field))
    return SimImportReport(
        rows=len(parsed.rows) + len({e.line for e in parsed.errors if e.line > 1}),
        created=created,
        unchanged=unchanged,
        rejected=len({e.line for e in errors if e.line > 1}),
        errors=errors,
        last_position=last,
    )
