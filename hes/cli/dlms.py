"""``hes dlms``: run the DLMS side, import meter keys, collect one meter now."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from commands.context import SYSTEM, Actor, CommandContext
from commands.meter_keys import MeterKeyService
from config.settings import Settings, SettingsError
from domain.collection import Task
from domain.errors import DomainError
from domain.meter import meter_id
from domain.meter_keys import MeterKeys

dlms_app = typer.Typer(
    help="DLMS/COSEM: collector, push listener and command executor; meter keys.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="Meters' DLMS secrets (admin).", no_args_is_help=True)
dlms_app.add_typer(keys_app, name="keys")
console = Console(stderr=True)
KEY_COLUMNS = ("serial", "lls_password", "ek_hex", "ak_hex", "system_title_hex")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    from config.logs import configure

    configure(settings.logging.level, settings.logging.format)


@dlms_app.command("run")
def run() -> None:
    """Run the collector and scheduler, push listener and command executor (foreground)."""
    from bootstrap.dlms_process import run_dlms
    from bootstrap.ports import PortInUse
    from hes.cli.terminal import attached

    settings = attached(_settings())
    _logging(settings)
    try:
        asyncio.run(run_dlms(settings))
    except PortInUse as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


class KeyImportLine(msgspec.Struct, frozen=True):
    """The outcome of one line of a key import (never the keys)."""

    line: int
    serial: str
    status: str  # "changed" | "unchanged" | "error"
    key_version: int | None = None
    changed: list[str] = []
    message: str = ""


@keys_app.command("import")
def import_keys(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    actor: Annotated[str, typer.Option(help="Actor recorded on the events.")] = "cli-key-import",
) -> None:
    """Set meters' LLS password, EK, AK and system title from a CSV (e.g. the simulator's
    ``--write-keys``): ``serial,lls_password,ek_hex,ak_hex,system_title_hex``. One JSON line
    per meter on stdout, then a summary; secrets are never printed."""
    from bootstrap.applications import meter_registry
    from bootstrap.dlms_keys import key_service
    from bootstrap.runtime import servers

    settings = _settings()
    rows = _key_rows(file.read_text(encoding="utf-8"))
    ctx = CommandContext(actor=Actor(subject=actor, roles=SYSTEM.roles))
    results: list[KeyImportLine] = []
    with servers(settings, console, need_nats=False) as resolved:
        registry = meter_registry(resolved.settings.database)
        service = key_service(resolved.settings, registry)
        try:
            for line, row in rows:
                results.append(_import_row(service, line, row, ctx))
        finally:
            registry.close()
    for result in results:
        print(msgspec.json.encode(result).decode())
    errors = sum(r.status == "error" for r in results)
    summary = {
        "rows": len(results),
        "changed": sum(r.status == "changed" for r in results),
        "unchanged": sum(r.status == "unchanged" for r in results),
        "errors": errors,
    }
    print(msgspec.json.encode(summary).decode())
    if errors:
        raise typer.Exit(1)


def _key_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("serial",) if c not in (reader.fieldnames or [])]
    if missing:
        console.print(f"[red]the CSV needs a header with at least: {', '.join(KEY_COLUMNS)}[/]")
        raise typer.Exit(2)
    return [(index + 2, row) for index, row in enumerate(reader)]


def _import_row(
    service: MeterKeyService, line: int, row: dict[str, str], ctx: CommandContext
) -> KeyImportLine:
    serial = (row.get("serial") or "").strip()

    def value(name: str) -> str | None:
        text = (row.get(name) or "").strip()
        return text or None

    try:
        keys = MeterKeys.parse(value("lls_password"), value("ek_hex"), value("ak_hex"))
        title_hex = value("system_title_hex")
        title = None
        if title_hex is not None:
            try:
                title = bytes.fromhex(title_hex)
            except ValueError:
                raise DomainError("system_title_hex: must be 16 hex digits") from None
        change = service.set_keys(meter_id(serial), keys, ctx, system_title=title)
    except DomainError as exc:
        return KeyImportLine(line=line, serial=serial, status="error", message=exc.message)
    return KeyImportLine(
        line=line,
        serial=serial,
        status="changed" if change.changed else "unchanged",
        key_version=change.key_version,
        changed=[k.value for k in change.changed],
    )


@dlms_app.command("collect")
def collect(
    serial: Annotated[str, typer.Argument(help="Serial number of a registered meter.")],
    task: Annotated[
        list[Task] | None, typer.Option("--task", help="Tasks to run (default: all).")
    ] = None,
) -> None:
    """Collect one meter now (registers, load profile gaps, event logs); JSON outcome."""
    from bootstrap.dlms_process import DlmsService
    from bootstrap.runtime import servers

    settings = _settings()
    _logging(settings)
    tasks = set(task or list(Task))

    async def once(s: Settings) -> dict[str, object]:
        service = DlmsService(s)
        await service.open()
        try:
            target = await service.store.target_by_serial(serial)
            if target is None:
                console.print(f"[red]no active meter with serial {serial!r}[/]")
                raise typer.Exit(1)
            outcome = await service.collector.collect(target, tasks)
            return {
                t.value: {
                    "status": o.status,
                    "error": o.error,
                    "problems": [msgspec.to_builtins(p) for p in o.problems],
                }
                for t, o in outcome.items()
            }
        finally:
            await service.close()

    from adapters.dlms.session import SessionError

    with servers(settings, console) as resolved:
        try:
            result = asyncio.run(once(resolved.settings))
        except SessionError as exc:
            console.print(f"[red]collection failed:[/] {exc.message}")
            raise typer.Exit(1) from None
    print(msgspec.json.encode(result).decode())
