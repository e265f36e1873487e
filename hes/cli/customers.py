"""``hes customers``: adopt meters' free-text accounts, import a CSV, time a bulk import."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from bootstrap.applications import checked_registry
from commands.context import SYSTEM, Actor, CommandContext
from commands.customers import CustomerBook
from commands.meters import MeterRegistry
from config.settings import Settings, SettingsError

customers_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
console = Console(stderr=True)


@contextmanager
def _applications(
    need_settings: Settings | None = None,
) -> Iterator[tuple[MeterRegistry, CustomerBook]]:
    from bootstrap.runtime import servers

    try:
        settings = need_settings or Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        registry, book = checked_registry(resolved.settings)
        try:
            yield registry, book
        finally:
            registry.close()
            book.close()


def _ctx(actor: str) -> CommandContext:
    return CommandContext(actor=Actor(subject=actor, roles=SYSTEM.roles))


@customers_app.command("adopt")
def adopt(
    actor: Annotated[str, typer.Option(help="Actor recorded on the events.")] = "cli-adopt",
) -> None:
    """Create a customer (placeholder personal data) for every account found on meters."""
    from commands.customer_adopt import adopt_accounts

    with _applications() as (_registry, book):
        report = adopt_accounts(book, _ctx(actor))
    print(msgspec.json.encode(report).decode())
    console.print(
        f"accounts on meters {report.found}: adopted {len(report.adopted)}, "
        f"already customers {report.existing}, refused {len(report.refused)}"
    )
    if report.refused:
        raise typer.Exit(1)


@customers_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    actor: Annotated[str, typer.Option(help="Actor recorded on the events.")] = "cli-import",
) -> None:
    """Import customers from a CSV file (template: GET /api/v1/templates/customers)."""
    from commands.customer_import import import_customers

    with _applications() as (registry, book):
        report = import_customers(book, registry, file.read_bytes(), _ctx(actor))
    print(msgspec.json.encode(report).decode())
    if report.rejected:
        raise typer.Exit(1)


@customers_app.command("bench-import")
def bench_import(
    count: Annotated[int, typer.Option(help="Customers in the generated CSV.")] = 10_000,
    batch: Annotated[int, typer.Option(help="Customers saved per transaction.")] = 500,
) -> None:
    """Generate a CSV of new customers, import it, import it again; print the rates."""
    from commands.customer_import import import_customers

    run = f"B{int(time.time())}"
    lines = [
        "customerName,accountNumber,address,phoneNumber,email,area,meterAssigned,"
        "customerType,tariffPlan,connectionDate"
    ]
    lines += [
        f"Bench Person {i},{run}-{i:06d},{i} Bench Street,+1 555 {i % 10000:04d},"
        f"p{i}@example.org,Area {i % 20},,residential,standard,2024-01-01"
        for i in range(count)
    ]
    data = ("\r\n".join(lines) + "\r\n").encode()
    with _applications() as (registry, book):
        for label in ("import", "re-import"):
            started = time.perf_counter()
            report = import_customers(book, registry, data, _ctx("bench"), batch_size=batch)
            seconds = time.perf_counter() - started
            print(
                f"{label}: {report.rows} rows, created {report.created}, unchanged "
                f"{report.unchanged}, rejected {report.rejected} in {seconds:.2f} s "
                f"= {report.rows / seconds:.0f} customers/s"
            )
