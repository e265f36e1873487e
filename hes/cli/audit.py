"""``hes audit``: any aggregate's history and past states, and verifying the event logs' chains."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from config.settings import Settings, SettingsError
from hes.cli.terminal import out as results_console

if TYPE_CHECKING:
    import psycopg

    from commands.audit import App

audit_app = typer.Typer(
    help="Audit: any aggregate's history, its state at a past moment, and tamper checks.",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = results_console()

IdArg = Annotated[
    str,
    typer.Argument(
        help="Aggregate id (UUID of a meter, tariff or alert), meter serial, tariff region or"
        " alert dedup key."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a UTC offset, e.g. 2025-01-31T12:00:00Z")
    return parsed


@contextmanager
def _applications() -> Iterator[tuple[App, ...]]:
    """Meters, tariffs and alerts over the configured (or embedded) event store, then closed."""
    from bootstrap.runtime import servers
    from commands.alerts import AlertDesk
    from commands.api_keys import ApiKeyRegistry
    from commands.customers import CustomerBook
    from commands.meters import MeterRegistry
    from commands.operations import OperationsLog
    from commands.sims import SimInventory
    from commands.tariffs import TariffBook

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        env = resolved.settings.database.eventsourcing_env()
        apps: list[App] = []
        try:
            kinds = (
                MeterRegistry,
                TariffBook,
                AlertDesk,
                ApiKeyRegistry,
                SimInventory,
                OperationsLog,
                CustomerBook,
            )
            for kind in kinds:
                apps.append(kind(env=env))
            yield tuple(apps)
        finally:
            for app in apps:
                app.close()


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]audit:[/] {exc}")
    return typer.Exit(1)


@audit_app.command("history")
def history_command(
    aggregate: IdArg,
    from_: Annotated[
        datetime | None,
        typer.Option("--from", parser=_iso, help="Only events at or after (ISO)."),
    ] = None,
    to: Annotated[
        datetime | None,
        typer.Option(parser=_iso, help="Only events before (ISO)."),
    ] = None,
    first: Annotated[int, typer.Option(min=1, max=5000, help="At most this many events.")] = 5000,
    json_output: JsonOpt = False,
) -> None:
    """Every recorded event of an aggregate: time, actor, correlation id and payload."""
    from commands.audit import history_of
    from domain.errors import DomainError

    with _applications() as apps:
        try:
            entries = history_of(apps, aggregate, from_, to, first)
        except DomainError as exc:
            raise _fail(exc) from None
    if json_output:
        print(msgspec.json.encode(entries).decode())
        return
    title = (
        f"{entries[0].aggregate_type} {entries[0].aggregate_id} ({entries[0].log} log)"
        if entries
        else None
    )
    table = Table(
        "pos", "ver", "time (UTC)", "event", "actor", "correlation id", "payload", title=title
    )
    for e in entries:
        table.add_row(
            "" if e.position is None else str(e.position),
            str(e.version),
            e.time.isoformat(timespec="seconds"),
            e.type,
            e.actor or "",
            e.correlation_id or "",
            msgspec.json.encode(e.payload).decode(),
        )
    out.print(table)


@audit_app.command("state-at")
def state_at_command(
    aggregate: IdArg,
    at: Annotated[
        datetime | None,
        typer.Option(parser=_iso, help="State after the last event at or before."),
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="State at this version.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """An aggregate's state at a moment (--at ISO) or a version (--version N)."""
    from api.presenters import row_from_aggregate
    from commands.audit import aggregate_at, locate, snapshot
    from domain.errors import DomainError
    from domain.meter import Meter

    if (at is None) == (version is None):
        console.print("[red]give exactly one of --at or --version[/]")
        raise typer.Exit(2)
    with _applications() as apps:
        try:
            app, id_ = locate(apps, aggregate)
            found = aggregate_at(app, id_, at=at, version=version)
        except DomainError as exc:
            raise _fail(exc) from None
    if isinstance(found, Meter):
        state = msgspec.to_builtins(row_from_aggregate(found))
        del state["last_seen"]  # a read-model column, not part of the aggregate's state
    else:
        state = msgspec.to_builtins(snapshot(app.name, found))
    if json_output:
        print(msgspec.json.encode(state).decode())
        return
    table = Table("field", "value")
    for field, value in _flat(state):
        table.add_row(field, "" if value is None else str(value))
    out.print(table)


def _flat(state: dict[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested structs as dotted rows (location.address), so a table cell never wraps JSON."""
    for key, value in state.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@contextmanager
def _database() -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """An autocommit connection to the configured (or embedded) database, and its schema."""
    import psycopg

    from bootstrap.runtime import servers

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        url = resolved.settings.database.url
        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn, resolved.settings.database.schema


def _anchor(value: str) -> tuple[tuple[str, int], bytes]:
    from commands.audit_verify import parse_anchor

    try:
        return parse_anchor(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from None


def _operator() -> str:
    """Who ran the command: the OS user (and host), as far as the system tells."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@audit_app.command("verify")
def verify_command(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            help="A checkpoint kept outside the database, LOG:POSITION:HEXDIGEST (repeatable;"
            " POSITION:HEXDIGEST is a meters checkpoint)."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Recompute every log's hash chains and checkpoints; exit 1 on tampering.

    The result is kept in the database (``audit_verifications``) for the console and the API.
    """
    from commands.audit_verify import record_verification, verify
    from hes.cli.terminal import progress

    anchors = dict(_anchor(a) for a in anchor or [])
    with _database() as (conn, schema), progress("verifying events") as bar:
        task = bar.add_task("verify", total=None)
        report = verify(
            conn,
            schema,
            anchors,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        record_verification(conn, schema, report, _operator(), len(anchors))
    if json_output:
        print(msgspec.json.encode(report).decode())
    else:
        style = "[green]intact[/]" if report.intact else "[red]TAMPERED[/]"
        out.print(
            f"{style}: {report.events} events of {report.aggregates} aggregates in "
            f"{len(report.logs)} logs, {report.checkpoints} checkpoints "
            f"({report.unanchored_events} events after the last of their log), "
            f"{report.seconds:.2f}s, {report.events_per_second:,.0f} events/s"
        )
        logs = Table("log", "", "aggregates", "events", "checkpoints", "up to", "after")
        for part in report.logs:
            logs.add_row(
                part.log,
                "ok" if part.intact else "[red]TAMPERED[/]",
                str(part.aggregates),
                str(part.events),
                str(part.checkpoints),
                str(part.checkpointed_position),
                str(part.unanchored_events),
            )
        out.print(logs)
        if report.findings:
            table = Table("log", "kind", "aggregate", "version", "checkpoint", "detail")
            for f in report.findings:
                table.add_row(
                    f.log,
                    f.kind,
                    "" if f.aggregate_id is None else str(f.aggregate_id),
                    "" if f.version is None else str(f.version),
                    "" if f.position is None else str(f.position),
                    f.detail,
                )
            out.print(table)
    if not report.intact:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint_command(json_output: JsonOpt = False) -> None:
    """Checkpoint every log with new events; print each for an auditor to keep."""
    from commands.audit_verify import create_checkpoint

    with _database() as (conn, schema):
        checkpoints = create_checkpoint(conn, schema)
    if json_output:
        print(msgspec.json.encode(checkpoints).decode())
        return
    if not checkpoints:
        out.print("no new events since the last checkpoints")
    for checkpoint in checkpoints:
        out.print(
            f"checkpoint {checkpoint.anchor()} "
            f"({checkpoint.events} new events, {checkpoint.created_at.isoformat()})",
            soft_wrap=True,  # one line per checkpoint, also in a log file: never fold the digest
        )
