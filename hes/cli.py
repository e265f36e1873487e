"""The ``hes`` command line: run, migrate, issue tokens, import meters, run workers."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from commands.context import SYSTEM, Actor, CommandContext, Role, Scope
from hes.audit_cli import audit_app
from hes.dlms_bench_cli import bench_dlms_command
from hes.dlms_cli import dlms_app
from hes.events_cli import events_app
from hes.keys_cli import keys_app
from hes.notifications_cli import notifications_app
from hes.settings import Settings, SettingsError

app = typer.Typer(
    help="HES — event-sourced Head-End System for smart meters.",
    no_args_is_help=True,
    add_completion=False,
)
import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)
projections_app = typer.Typer(help="Projection workers.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(projections_app, name="projections")
workers_app = typer.Typer(help="Reading workers.", no_args_is_help=True)
app.add_typer(workers_app, name="workers")
export_app = typer.Typer(help="Exports for MDM and billing.", no_args_is_help=True)
app.add_typer(export_app, name="export")
regions_app = typer.Typer(help="Regions: capacity for load percentages.", no_args_is_help=True)
app.add_typer(regions_app, name="regions")
bench_app = typer.Typer(help="Benchmarks (JSON figures on the last line).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(audit_app, name="audit")
app.add_typer(events_app, name="events")
app.add_typer(keys_app, name="keys")
app.add_typer(dlms_app, name="dlms")
bench_app.command("dlms")(bench_dlms_command)
app.add_typer(notifications_app, name="notifications")
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    from hes.logs import configure

    configure(settings.log_level, settings.log_format)


@app.command()
def up() -> None:
    """Start PostgreSQL and NATS (embedded unless configured), migrate, and serve the API."""
    settings = _settings()
    # API and reading-worker processes share one metrics directory, so /metrics shows both.
    # It must be set before prometheus_client is imported, and emptied of a previous run's files.
    metrics_dir = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from hes.runtime import up as run_up

    _logging(settings)
    run_up(settings, console)


@app.command()
def migrate() -> None:
    """Apply database migrations and create the JetStream streams."""
    from hes.migrate import migrate as run_migrate
    from hes.runtime import servers

    settings = _settings()
    _logging(settings)
    with servers(settings, console) as resolved:
        report = asyncio.run(run_migrate(resolved.settings))
    console.print(
        f"schema {report.schema}: applied {report.applied or 'nothing new'}; "
        f"streams {', '.join(report.streams)}"
    )


@app.command()
def token(
    role: Annotated[list[Role], typer.Option("--role", help="Role(s) to grant.")] = [],  # noqa: B006
    scope: Annotated[
        list[Scope], typer.Option("--scope", help="Machine scope(s), e.g. ingest for gateways.")
    ] = [],  # noqa: B006
    subject: Annotated[str, typer.Option(help="Who the token names (recorded as actor).")] = "",
    customer: Annotated[str | None, typer.Option(help="Customer account (customer role).")] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 12 * 3600,
) -> None:
    """Print a signed bearer token for a local setup."""
    from hes.runtime import token_service

    if not role and not scope:
        console.print("[red]give at least one --role or --scope[/]")
        raise typer.Exit(2)
    if Role.CUSTOMER in role and not customer:
        console.print("[red]--customer is required with --role customer[/]")
        raise typer.Exit(2)
    tokens = token_service(_settings())
    name = subject or "local-" + "-".join(sorted([*(r.value for r in role), *scope]))
    print(tokens.issue(name, role, scopes=scope, customer_account=customer, ttl_seconds=ttl))


@import_app.command("meters")
def import_meters(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    region: Annotated[str | None, typer.Option(help="Region for rows without one.")] = None,
    actor: Annotated[str, typer.Option(help="Actor recorded on the events.")] = "cli-import",
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import meters from a CSV file (template: GET /api/v1/templates/meters)."""
    from commands.meter_csv import parse_meter_csv
    from commands.meter_import import import_meters as run_import
    from commands.meters import MeterRegistry
    from hes.runtime import servers

    settings = _settings()
    data = file.read_bytes()
    total = len(parse_meter_csv(data, default_region=region).rows)
    ctx = CommandContext(actor=Actor(subject=actor, roles=SYSTEM.roles))
    with servers(settings, console, need_nats=False) as resolved:
        registry = MeterRegistry(env=resolved.settings.eventsourcing_env())
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("rows", total=total)
            report = run_import(
                registry,
                data,
                ctx,
                batch_size=settings.import_batch_size,
                default_region=region,
                progress=lambda n: bar.advance(task, n),
            )
        registry.close()
    if json_output:
        print(msgspec.json.encode(report).decode())
    else:
        console.print(
            f"rows {report.rows}: created {report.created}, "
            f"unchanged {report.unchanged}, rejected {report.rejected}"
        )
        if report.errors:
            table = Table("line", "field", "reason")
            for e in report.errors:
                table.add_row(str(e.line), e.field, e.reason)
            console.print(table)
    raise typer.Exit(1 if report.errors else 0)


@app.command()
def simulate(
    meters: Annotated[
        int | None, typer.Option(min=1, help="Simulated meters (default 5000; 10 with --dlms).")
    ] = None,
    interval: Annotated[str, typer.Option(help="Time between readings: 500ms, 10s, 2m…")] = "10s",
    via: Annotated[Literal["http", "nats"], typer.Option(help="Ingest transport.")] = "http",
    url: Annotated[
        str | None, typer.Option(help="API base URL (default: http://HES_HOST:HES_PORT).")
    ] = None,
    seed: Annotated[
        str | None,
        typer.Option(help="Same seed, same fleet and values (default 1; with --dlms: hes-sim)."),
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long, e.g. 60s (default: run until Ctrl-C).")
    ] = None,
    batch_meters: Annotated[int, typer.Option(min=1, help="Meters per request.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 8,
    backfill: Annotated[
        str | None,
        typer.Option(help="First send this much past time (e.g. 45m), as fast as accepted."),
    ] = None,
    dlms: Annotated[bool, typer.Option(help="Serve simulated DLMS meters instead.")] = False,
    base_port: Annotated[int, typer.Option(help="--dlms: meter i listens on this + i.")] = 4100,
    state_dir: Annotated[
        Path | None, typer.Option(help="--dlms: counters and relay state (HES_DATA_DIR/dlms-sim).")
    ] = None,
    push_to: Annotated[str | None, typer.Option(help="--dlms: push to HOST:PORT.")] = None,
    push_interval: Annotated[str, typer.Option(help="--dlms: time between pushes.")] = "900s",
    push_ciphered: Annotated[bool, typer.Option(help="--dlms: cipher pushes (HLS).")] = False,
    write_keys: Annotated[Path | None, typer.Option(help="--dlms: write keys CSV here.")] = None,
) -> None:
    """Register a simulated fleet and send its readings every interval (JSON summary on stdout).

    With --dlms, serve simulated DLMS meters (HDLC or wrapper over TCP) instead.
    """
    from hes.simulator import SimulatorError, parse_duration
    from hes.simulator import simulate as run_simulate

    if dlms:
        from hes.dlms_sim_cli import simulate_dlms

        simulate_dlms(
            console,
            _settings,
            _logging,
            meters=meters,
            seed=seed,
            duration=duration,
            base_port=base_port,
            state_dir=state_dir,
            push_to=push_to,
            push_interval=push_interval,
            push_ciphered=push_ciphered,
            write_keys=write_keys,
        )
        return
    meters = 5000 if meters is None else meters
    try:
        seed_n = 1 if seed is None else int(seed)
        if seed_n < 0:
            raise ValueError
    except ValueError:
        raise typer.BadParameter("must be a whole number >= 0", param_hint="--seed") from None

    try:
        interval_s = parse_duration(interval)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--interval") from None
    try:
        duration_s = None if duration is None else parse_duration(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--duration") from None
    try:
        backfill_s = 0.0 if backfill is None else parse_duration(backfill)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backfill") from None
    settings = _settings()
    try:
        asyncio.run(
            run_simulate(
                settings,
                meters=meters,
                interval_s=interval_s,
                via=via,
                url=url or f"http://{settings.host}:{settings.port}",
                seed=seed_n,
                duration_s=duration_s,
                batch_meters=batch_meters,
                concurrency=concurrency,
                console=console,
                backfill_s=backfill_s,
            )
        )
    except SimulatorError as exc:
        console.print(f"[red]simulate:[/] {exc}")
        raise typer.Exit(1) from None


@bench_app.command("ingest")
def bench_ingest(
    readings: Annotated[int, typer.Option(help="Readings for the sustained phase.")] = 1_000_000,
    per_message: Annotated[int, typer.Option(help="Readings per JetStream message.")] = 96,
    processes: Annotated[int, typer.Option(help="Reading-worker processes.")] = 2,
    rate: Annotated[float, typer.Option(help="Fixed rate of the latency phase.")] = 6700.0,
    latency_seconds: Annotated[float, typer.Option(help="Length of the latency phase.")] = 30.0,
) -> None:
    """Full path publisher → JetStream → workers → PostgreSQL; JSON figures on the last line."""
    from hes.bench import bench_ingest as run_bench
    from hes.runtime import servers

    settings = _settings()
    with servers(settings, console) as resolved:
        figures = asyncio.run(
            run_bench(
                resolved.settings,
                console,
                readings=readings,
                per_message=per_message,
                processes=processes,
                rate=rate,
                latency_seconds=latency_seconds,
            )
        )
    print(msgspec.json.encode(figures).decode())


@bench_app.command("http")
def bench_http(
    meters: Annotated[int, typer.Option(help="Registered meters the readings spread over.")] = 5000,
    seconds: Annotated[float, typer.Option(help="How long to post.")] = 20.0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    items: Annotated[int, typer.Option(help="Gateway items (6 readings each) per request.")] = 500,
) -> None:
    """POST /telemetry/batch end to end against a `hes up` child; JSON figures last."""
    from hes.bench import bench_http as run_bench
    from hes.runtime import servers

    settings = _settings()
    with servers(settings, console) as resolved:
        figures = asyncio.run(
            run_bench(
                resolved.settings,
                console,
                meters=meters,
                seconds=seconds,
                concurrency=concurrency,
                items_per_request=items,
            )
        )
    print(msgspec.json.encode(figures).decode())


@export_app.command("intervals")
def export_intervals(
    day: Annotated[
        str | None, typer.Option("--date", help="UTC day YYYY-MM-DD (default yesterday).")
    ] = None,
    interval: Annotated[str, typer.Option(help="M15 or M30.")] = "M15",
) -> None:
    """Publish one day's interval consumption of every meter to hes.exports.intervals.<date>."""
    from datetime import UTC, date, datetime, timedelta

    import nats
    from psycopg_pool import AsyncConnectionPool

    from hes.runtime import servers
    from projections.interval_export import export_day
    from projections.reading_queries import Interval

    settings = _settings()
    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date() - timedelta(days=1)
        kind = Interval(interval)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if kind is Interval.M1:
        console.print("[red]--interval must be M15 or M30[/]")
        raise typer.Exit(2)

    async def run(s: Settings) -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            s.database_url or "", open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        nc = await nats.connect(s.nats_url or "")
        try:
            report = await export_day(pool, nc, s.db_schema, s.nats_prefix, when, kind)
        finally:
            await nc.close()
            await pool.close()
        print(msgspec.json.encode(report).decode())

    with servers(settings, console) as resolved:
        asyncio.run(run(resolved.settings))


@workers_app.command("run")
def workers_run() -> None:
    """Run the reading workers (READINGS → time-series read models) in the foreground."""
    from hes.reading_process import run_reading_workers

    settings = _settings()
    _logging(settings)
    if settings.database_url is None or settings.nats_url is None:
        console.print("[red]HES_DATABASE_URL and HES_NATS_URL must be set to run workers alone[/]")
        raise typer.Exit(2)
    asyncio.run(run_reading_workers(settings))


@regions_app.command("capacity")
def region_capacity(
    region: Annotated[str, typer.Argument(help="Region name as registered on meters.")],
    kw: Annotated[float | None, typer.Argument(help="Capacity in kW; omit to show.")] = None,
) -> None:
    """Show or set a region's capacity, the 100 % of its load percentage."""
    import psycopg
    from psycopg import sql

    from hes.runtime import servers

    settings = _settings()
    if kw is not None and not kw > 0:
        console.print("[red]capacity must be a positive number of kW[/]")
        raise typer.Exit(2)
    with servers(settings, console, need_nats=False) as resolved:
        assert resolved.settings.database_url
        table = sql.Identifier(settings.db_schema, "region_capacity")
        with psycopg.connect(resolved.settings.database_url, autocommit=True) as conn:
            if kw is not None:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (region, capacity_w) VALUES (%s, %s) ON CONFLICT (region)"
                        " DO UPDATE SET capacity_w = EXCLUDED.capacity_w, updated_at = now()"
                    ).format(table),
                    (region, kw * 1000),
                )
            row = conn.execute(
                sql.SQL("SELECT capacity_w FROM {} WHERE region = %s").format(table), (region,)
            ).fetchone()
    if row is None:
        print(f"{region}: default {settings.default_region_capacity_kw:g} kW")
    else:
        print(f"{region}: {row[0] / 1000:g} kW")


@projections_app.command("run")
def projections_run() -> None:
    """Run the projection workers in the foreground (scale-out or separate process)."""
    from hes.workers import run_projection_forever

    settings = _settings()
    _logging(settings)
    if settings.database_url is None:
        console.print("[red]HES_DATABASE_URL must be set to run workers on their own[/]")
        raise typer.Exit(2)
    run_projection_forever(settings)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="Read model: meters_view or readings.")],
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch schema.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Rebuild a read model from its source into a scratch schema; exit 0 when equal to live."""
    from hes.runtime import servers
    from projections.rebuild import NAMES, rebuild, report_json, summary_table

    if name not in NAMES:
        raise typer.BadParameter(f"one of {', '.join(NAMES)}", param_hint="NAME")
    settings = _settings()
    with servers(settings, console, need_nats=name == "readings") as resolved:
        report = rebuild(resolved.settings, name, keep=keep)
    if json_output:
        print(report_json(report).decode())
    else:
        console.print(summary_table(report))
    raise typer.Exit(0 if report.equal else 1)


def main() -> None:
    """Entry point of the ``hes`` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
