"""``hes audit``: a meter's history and past states, and verifying the event store's chains."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from hes.settings import Settings, SettingsError

if TYPE_CHECKING:
    import psycopg

    from commands.meters import MeterRegistry

audit_app = typer.Typer(
    help="Audit: a meter's history, its state at a past moment, and tamper checks.",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()

IdArg = Annotated[str, typer.Argument(help="Meter serial number or aggregate id (UUID).")]
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
def _registry() -> Iterator[MeterRegistry]:
    """The meter registry over the configured (or embedded) event store, closed afterwards."""
    from commands.meters import MeterRegistry
    from hes.runtime import servers

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        registry = MeterRegistry(env=resolved.settings.eventsourcing_env())
        try:
            yield registry
        finally:
            registry.close()


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
    """Every recorded event of a meter: time, actor, correlation id and payload."""
    from commands.audit import history, resolve_id
    from domain.errors import DomainError

    with _registry() as registry:
        try:
            entries = history(registry, resolve_id(aggregate), from_, to, first)
        except DomainError as exc:
            raise _fail(exc) from None
    if json_output:
        print(msgspec.json.encode(entries).decode())
        return
    table = Table("pos", "ver", "time (UTC)", "event", "actor", "correlation id", "payload")
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
    """A meter's state at a moment (--at ISO) or a version (--version N)."""
    from api.presenters import row_from_aggregate
    from commands.audit import resolve_id, state_at
    from domain.errors import DomainError

    if (at is None) == (version is None):
        console.print("[red]give exactly one of --at or --version[/]")
        raise typer.Exit(2)
    with _registry() as registry:
        try:
            meter = state_at(registry, resolve_id(aggregate), at=at, version=version)
        except DomainError as exc:
            raise _fail(exc) from None
    state = msgspec.to_builtins(row_from_aggregate(meter))
    del state["last_seen"]  # a read-model column, not part of the aggregate's state
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

    from hes.runtime import servers

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        url = resolved.settings.database_url
        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            yield conn, resolved.settings.db_schema


def _anchor(value: str) -> tuple[int, bytes]:
    position, sep, digest = value.partition(":")
    try:
        if not sep:
            raise ValueError
        parsed = (int(position), bytes.fromhex(digest))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give POSITION:HEXDIGEST") from None
    if len(parsed[1]) != 32:
        raise typer.BadParameter(f"{value!r}: the digest is 64 hex characters")
    return parsed


@audit_app.command("verify")
def verify_command(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            help="A checkpoint kept outside the database, POSITION:HEXDIGEST (repeatable)."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Recompute every event's hash chain and every checkpoint; exit 1 on tampering."""
    from commands.audit_verify import verify

    anchors = dict(_anchor(a) for a in anchor or [])
    with _database() as (conn, schema):
        report = verify(conn, schema, anchors)
    if json_output:
        print(msgspec.json.encode(report).decode())
    else:
        style = "[green]intact[/]" if report.intact else "[red]TAMPERED[/]"
        out.print(
            f"{style}: {report.events} events of {report.aggregates} aggregates, "
            f"{report.checkpoints} checkpoints (up to position {report.checkpointed_position}; "
            f"{report.unanchored_events} events after it), "
            f"{report.seconds:.2f}s, {report.events_per_second:,.0f} events/s"
        )
        if report.findings:
            table = Table("kind", "aggregate", "version", "checkpoint", "detail")
            for f in report.findings:
                table.add_row(
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
    """Record a checkpoint over all events so far; print it for an auditor to keep."""
    from commands.audit_verify import create_checkpoint

    with _database() as (conn, schema):
        checkpoint = create_checkpoint(conn, schema)
    if json_output:
        print(msgspec.json.encode(checkpoint).decode())
    elif checkpoint is None:
        out.print("no new events since the last checkpoint")
    else:
        out.print(
            f"checkpoint {checkpoint.position}:{checkpoint.digest} "
            f"({checkpoint.events} new events, {checkpoint.created_at.isoformat()})"
        )
