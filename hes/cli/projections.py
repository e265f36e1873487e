"""``hes projections status`` and ``hes projections skip``: see and unstick projections.

What an operator does about a poison event is in docs/operations.md.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any

import msgspec
import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bootstrap.connections import connect_nats
from bootstrap.embedded import run_sync
from config.settings import Settings, SettingsError
from projections.feed_status import BY_NAME, FeedStatus, SkipRefused

console = Console(stderr=True)
out = Console()
STATUS_LAG_CAP = 1_000_000
"""``hes projections status`` counts a lag up to this many events."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


@contextmanager
def _database(settings: Settings) -> Iterator[tuple[Settings, psycopg.Connection[Any]]]:
    from bootstrap.runtime import servers

    with servers(settings, console, need_nats=False) as resolved:
        url = resolved.settings.database.url
        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            yield resolved.settings, conn


def _notifier(settings: Settings, states: list[dict[str, Any]]) -> FeedStatus | None:
    """The notifier's status; its position and lag only when NATS is configured."""
    from processes.notifier import NOTIFIER, consumer_progress
    from projections.feed_status import reported

    progress = None
    if settings.nats.url is not None:

        async def read() -> tuple[int, int] | None:
            nc = await connect_nats(settings.nats, connect_timeout=5)
            try:
                return await consumer_progress(nc.jetstream(), settings.nats)
            finally:
                await nc.close()

        try:
            progress = run_sync(read)
        except Exception as exc:
            console.print(f"[yellow]notifier lag unknown: NATS: {exc}[/]")
    if progress is None and not any(r["name"] == NOTIFIER for r in states):
        return None
    position, lag = progress if progress is not None else (0, -1)
    return reported(states, NOTIFIER, position, lag)


def status_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every projection's and relay's position, lag and state; exit 1 when one is stalled."""
    from projections.feed_status import statuses

    with _database(_settings()) as (settings, conn):
        found, states = statuses(conn, settings.database.schema, STATUS_LAG_CAP)
    notifier = _notifier(settings, states)
    if notifier is not None:
        found.append(notifier)
    stalled = [f for f in found if f.stalled]
    if json_output:
        rows = [msgspec.to_builtins(f) | {"stalled": f.stalled} for f in found]
        print(msgspec.json.encode(rows).decode())
    else:
        table = Table("projection", "log", "state", "position", "lag", "since", "stalled at")
        for f in found:
            state = "[red]stalled[/]" if f.stalled else f.state
            lag = "?" if f.lag < 0 else (f"≥{f.lag:,}" if f.lag >= STATUS_LAG_CAP else f"{f.lag:,}")
            where = ""
            if f.stalled and f.stall is not None:
                where = f"{f.stall.describe()} ({f.failures} failures)"
            since = f.since.isoformat(timespec="seconds") if f.since else ""
            table.add_row(f.name, f.log, state, str(f.position), lag, since, where)
        out.print(table)
        for f in stalled:
            out.print(
                f"[red]{f.name} is stalled[/]: fix and redeploy, or "
                f"`hes projections skip {f.name} --position "
                f"{f.stall.position if f.stall else 'N'} --reason ...` (docs/operations.md)"
            )
    raise typer.Exit(1 if stalled else 0)


def skip_command(
    name: Annotated[str, typer.Argument(help="Projection, relay or notifier (see status).")],
    position: Annotated[int, typer.Option(min=1, help="Position of the event to skip.")],
    reason: Annotated[str, typer.Option(help="Why (recorded for auditors).")],
    actor: Annotated[
        str | None, typer.Option(help="Who skips (recorded); default cli:<login name>.")
    ] = None,
) -> None:
    """Move a stalled projection past the one event it cannot apply, recorded as an audit event.

    Only the event the projection applies next can be skipped; the event stays in its log.
    """
    from bootstrap.applications import operations_log
    from commands.context import SYSTEM, Actor, CommandContext
    from domain.errors import DomainError
    from processes.notifier import NOTIFIER
    from projections.feed_status import check_next, move_past

    if name not in BY_NAME and name != NOTIFIER:
        known = ", ".join([*BY_NAME, NOTIFIER])
        raise typer.BadParameter(f"one of {known}", param_hint="NAME")
    who = actor or f"cli:{getpass.getuser()}"
    ctx = CommandContext(actor=Actor(subject=who, roles=SYSTEM.roles))
    with _database(_settings()) as (settings, conn):
        log = operations_log(settings.database)
        try:
            schema = settings.database.schema
            if name == NOTIFIER:
                where = "HES_EVENTS"
                event_id, topic = _notifier_stall(conn, schema, position)
                act: Callable[[], object] = partial(_skip_message, conn, schema, position)
            else:
                feed = BY_NAME[name]
                where = feed.log
                upcoming = check_next(conn, schema, feed, position)
                event_id, topic = upcoming.event_id, upcoming.topic
                act = partial(move_past, conn, schema, feed, position)
            # The record first: a crash between the two leaves a skip recorded but not done
            # (run the command again), never one done without a record.
            log.record_skip(
                name, position, log=where, event_id=event_id, topic=topic, reason=reason, ctx=ctx
            )
            act()
        except (SkipRefused, DomainError) as exc:
            console.print(f"[red]skip refused:[/] {exc}")
            raise typer.Exit(1) from None
        finally:
            log.close()
    out.print(
        f"{name} skips position {position} (event {event_id}, {topic}); recorded by {who} "
        f"in the operations log (`hes audit history {name}`); it resumes at its next restart "
        "(within 30 s)"
    )


def _skip_message(conn: psycopg.Connection[Any], schema: str, position: int) -> None:
    """Tell the notifier to acknowledge the HES_EVENTS message at ``position`` untaken."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.notifier_skips (stream_seq) VALUES (%s) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema)),
        (position,),
    )


def _notifier_stall(conn: psycopg.Connection[Any], schema: str, position: int) -> tuple[Any, str]:
    """The notifier's stall, which must be at ``position`` (its HES_EVENTS sequence)."""
    row = conn.execute(
        sql.SQL(
            "SELECT state, failed_position, failed_event, failed_topic FROM {}.projection_status "
            "WHERE name = 'notifier'"
        ).format(sql.Identifier(schema))
    ).fetchone()
    if row is None or row[0] != "stalled" or row[1] != position:
        at = f"at HES_EVENTS sequence {row[1]}" if row and row[0] == "stalled" else "not stalled"
        raise SkipRefused(f"the notifier is {at}; only the message it is stuck at can be skipped")
    return row[2], str(row[3] or "")
