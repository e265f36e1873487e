"""``hes events``: run the relay to HES_EVENTS, tail the stream, write the event schemas."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hes.cli.terminal import attached
from hes.cli.terminal import load_settings as _settings

events_app = typer.Typer(
    help="Domain events for MDM/billing: relay to HES_EVENTS, tail, schemas.",
    no_args_is_help=True,
)
console = Console(stderr=True)
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "docs" / "events" / "schemas"


def _iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a UTC offset, e.g. 2025-01-31T12:00:00Z")
    return parsed


@events_app.command("relay")
def relay() -> None:
    """Relay every domain event, in event-store order, to stream HES_EVENTS (foreground)."""
    from bootstrap.relay import run_relay_forever
    from config.logs import configure

    settings = _settings()
    configure(settings.logging.level, settings.logging.format)  # secrets scrubbed, as elsewhere
    run_relay_forever(attached(settings))


@events_app.command("tail")
def tail(
    from_seq: Annotated[
        int | None, typer.Option("--from-seq", min=1, help="Start at this stream sequence.")
    ] = None,
    from_time: Annotated[
        str | None, typer.Option("--from-time", help="Start at this time (ISO 8601 with offset).")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Only events relayed from now on.")] = False,
    filter_: Annotated[
        str, typer.Option("--filter", help="Subject filter below hes.events, e.g. meter.*")
    ] = ">",
    durable: Annotated[
        str | None,
        typer.Option(help="Durable consumer name: created if missing, acknowledged, resumable."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without an event.")
    ] = None,
) -> None:
    """Print HES_EVENTS CloudEvents as JSON lines (reference consumer; default: from the start)."""
    import nats

    from adapters.nats.event_tail import StartAt, tail_events
    from adapters.nats.subjects import event_filter

    if sum((from_seq is not None, from_time is not None, new)) > 1:
        raise typer.BadParameter("give at most one of --from-seq, --from-time, --new")
    start = StartAt(seq=from_seq, time=None if from_time is None else _iso(from_time), new_only=new)
    settings = _settings()
    try:
        subject = event_filter(settings.nats.prefix, filter_)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--filter") from None
    nats_url = attached(settings, database=False).nats.url or ""

    def write(line: bytes) -> None:
        sys.stdout.write(line.decode() + "\n")
        sys.stdout.flush()

    async def run() -> int:
        nc = await nats.connect(nats_url, connect_timeout=5)
        try:
            return await tail_events(
                nc,
                stream=settings.nats.stream("HES_EVENTS"),
                subject=subject,
                start=start,
                write=write,
                durable=durable,
                limit=limit,
                idle_timeout=idle_timeout,
            )
        finally:
            await nc.close()

    count = asyncio.run(run())
    console.print(f"{count} events")


@events_app.command("schemas")
def schemas(
    out: Annotated[
        Path, typer.Option(help="Directory to write the JSON Schemas to.")
    ] = SCHEMAS_DIR,
) -> None:
    """Write the JSON Schema of every event type (versioned file names) and of the envelope."""
    from adapters.nats.event_schemas import write_schemas

    for path in write_schemas(out):
        print(path)
