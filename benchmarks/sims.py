"""``hes bench sims``: import N SIM cards from one CSV (row report), then re-import it."""

from __future__ import annotations

import random
import time
import uuid
from typing import Annotated

import msgspec
import psycopg
import typer
from psycopg import sql
from rich.console import Console

from commands.sim_csv import TEMPLATE_COLUMNS
from config.settings import Settings, SettingsError
from domain.sim_rules import luhn_digit

console = Console(stderr=True)
STATUSES = ("IN_STOCK", "ACTIVE", "ACTIVE", "ACTIVE", "SUSPENDED")


class SimBenchFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What one run measured."""

    rows: int
    events: int
    import_seconds: float
    rows_per_second: float
    events_per_second: float
    reimport_seconds: float
    reimport_rows_per_second: float


def sim_csv(rows: int, seed: int = 14) -> str:
    """A SIM import file of ``rows`` distinct, valid cards in mixed statuses."""
    rng = random.Random(seed)
    lines = [",".join(TEMPLATE_COLUMNS)]
    for n in range(rows):
        body = f"8944{n:014d}"
        status = STATUSES[n % len(STATUSES)]
        lines.append(
            f"B-{n},{body}{luhn_digit(body)},23415{n:010d},4477{n:08d},"
            f"Provider{n % 7},{status},127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255},"
            f"iot.example,{rng.randrange(1, 500)},2025-01-{1 + n % 28:02d}"
        )
    return "\n".join(lines) + "\n"


def run_sim_bench(settings: Settings, rows: int, batch_size: int) -> SimBenchFigures:
    """Import ``rows`` SIM cards into a schema of their own, twice; the schema is dropped."""
    # loaded when the benchmark runs, not when the command line starts
    from bootstrap.applications import sim_inventory
    from bootstrap.migrate import migrate_database
    from commands.context import SYSTEM, CommandContext
    from commands.sim_import import import_sims

    assert settings.database.url is not None
    s = settings.replace(db_schema=f"simbench_{uuid.uuid4().hex[:8]}")
    migrate_database(s)
    data = sim_csv(rows).encode()
    inventory = sim_inventory(s.database)
    ctx = CommandContext(actor=SYSTEM)
    try:
        started = time.perf_counter()
        first = import_sims(inventory, data, ctx, batch_size=batch_size)
        import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = import_sims(inventory, data, ctx, batch_size=batch_size)
        reimport_seconds = time.perf_counter() - started
        events = inventory.recorder.max_notification_id() or 0
    finally:
        inventory.close()
        with psycopg.connect(s.database.url or "", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(s.database.schema))
            )
    if first.created != rows or first.rejected or again.unchanged != rows:
        raise RuntimeError(f"unexpected reports: {first} / {again}")
    return SimBenchFigures(
        rows=rows,
        events=events,
        import_seconds=round(import_seconds, 3),
        rows_per_second=round(rows / import_seconds),
        events_per_second=round(events / import_seconds),
        reimport_seconds=round(reimport_seconds, 3),
        reimport_rows_per_second=round(rows / reimport_seconds),
    )


def bench_sims_command(
    rows: Annotated[int, typer.Option(min=1, help="SIM cards in the imported CSV.")] = 10_000,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per saved batch.")] = 500,
) -> None:
    """Bulk SIM import (parse, validate, event store) and idempotent re-import; JSON last."""
    from bootstrap.runtime import servers

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        figures = run_sim_bench(resolved.settings, rows, batch_size)
    console.print(
        f"imported {figures.rows} SIM cards ({figures.events} events) in "
        f"{figures.import_seconds} s: {figures.rows_per_second} rows/s; re-import (all "
        f"unchanged) {figures.reimport_rows_per_second} rows/s"
    )
    print(msgspec.json.encode(figures).decode())
