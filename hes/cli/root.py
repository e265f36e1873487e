"""The ``hes`` command line: run, migrate, issue tokens, import meters, run workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.insights import bench_insights_command
from benchmarks.sims import bench_sims_command
from bootstrap.applications import checked_registry
from commands.context import SYSTEM, Actor, CommandContext, Role, Scope
from config.settings import Settings
from hes.cli.audit import audit_app
from hes.cli.customers import customers_app
from hes.cli.dlms import dlms_app
from hes.cli.dlms_bench import bench_dlms_command
from hes.cli.events import events_app
from hes.cli.firmware_bench import bench_firmware_command
from hes.cli.keys import keys_app
from hes.cli.notifications import notifications_app
from hes.cli.projections import skip_command, status_command
from hes.cli.terminal import attached, progress
from hes.cli.terminal import load_settings as _settings
from hes.cli.terminal import out as out_console

app = typer.Typer(
    help="HES — event-sourced Head-End System for smart meters.",
    no_args_is_help=True,
    add_completion=False,
)
import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)
projections_app = typer.Typer(help="Projection workers.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(projections_app, name="projections")
projections_app.command("status")(status_command)
projections_app.command("skip")(skip_command)
workers_app = typer.Typer(help="Reading workers.", no_args_is_help=True)
app.add_typer(workers_app, name="workers")
export_app = typer.Typer(help="Exports for MDM and billing.", no_args_is_help=True)
app.add_typer(export_app, name="export")
regions_app = typer.Typer(help="Regions: capacity for load percentages.", no_args_is_help=True)
app.add_typer(regions_app, name="regions")
bench_app = typer.Typer(help="Benchmarks (JSON figures on the last line).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(audit_app, name="audit")
app.add_typer(customers_app, name="customers")
app.add_typer(events_app, name="events")
app.add_typer(keys_app, name="keys")
app.add_typer(dlms_app, name="dlms")
bench_app.command("dlms")(bench_dlms_command)
bench_app.command("firmware")(bench_firmware_command)
bench_app.command("sims")(bench_sims_command)
bench_app.command("insights")(bench_insights_command)
app.add_typer(notifications_app, name="notifications")
schema_app = typer.Typer(help="Interface descriptions: the GraphQL SDL.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
console = Console(stderr=True)


def _logging(settings: Settings) -> None:
    from config.logs import configure

    configure(settings.logging.level, settings.logging.format)


@app.command()
def up() -> None:
    """Start PostgreSQL and NATS (embedded unless configured), migrate, and serve the API."""
    settings = _settings()
    # API and reading-worker processes share one metrics directory, so /metrics shows both.
    # It must be set before prometheus_client is imported.
    from bootstrap.metrics_dir import prepare_metrics_dir

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_metrics_dir(settings.runtime.data_dir))
    from bootstrap.notifier import interrupt
    from bootstrap.ports import PortInUse
    from bootstrap.runtime import up as run_up

    _logging(settings)
    # SIGTERM (docker stop, systemd) stops like Ctrl-C: children and servers stopped in order.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        code = run_up(settings, console)
    except PortInUse as exc:
        console.print(f"[red]✗ cannot start:[/] {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def migrate() -> None:
    """Apply database migrations and create the JetStream streams."""
    from bootstrap.migrate import migrate as run_migrate
    from bootstrap.runtime import servers

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
    from bootstrap.runtime import token_service

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
    from bootstrap.applications import sim_inventory
    from bootstrap.runtime import servers
    from commands.meter_csv import parse_meter_csv
    from commands.meter_import import import_meters as run_import

    settings = _settings()
    data = file.read_bytes()
    total = len(parse_meter_csv(data, default_region=region).rows)
    ctx = CommandContext(actor=Actor(subject=actor, roles=SYSTEM.roles))
    with servers(settings, console, need_nats=False) as resolved:
        registry, book = checked_registry(resolved.settings)
        sims = sim_inventory(resolved.settings.database)
        with progress("importing") as bar:
            task = bar.add_task("rows", total=total)
            report = run_import(
                registry,
                data,
                ctx,
                batch_size=settings.api.import_batch_size,
                default_region=region,
                progress=lambda n: bar.advance(task, n),
                sims=sims,
            )
        registry.close()
        sims.close()
        book.close()
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
            out_console().print(table)
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
    inject: Annotated[
        str | None,
        typer.Option(
            help="Labelled cases for the insights, e.g. theft=0.01,stuck=0.003,failing_phase=0.01"
            " (shares of meters; they start between the middle of --backfill and now)."
        ),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="With --inject: write the cases here (CSV).")
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
    behaviour: Annotated[
        str,
        typer.Option(
            help="--dlms: behave like other meters, presets joined by commas (e.g. "
            "no-counter,odd-unit,small-pdu) and settings (drop-at-block=40); see docs/dlms.md."
        ),
    ] = "idis",
) -> None:
    """Register a simulated fleet and send its readings every interval (JSON summary on stdout).

    With --dlms, serve simulated DLMS meters (HDLC or wrapper over TCP) instead.
    """
    from simulation.simulator import SimulatorError, parse_duration
    from simulation.simulator import simulate as run_simulate

    if dlms:
        from hes.cli.dlms_sim import simulate_dlms

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
            behaviour=behaviour,
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
    shares: dict[str, float] = {}
    for part in (inject or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        try:
            shares[name.strip().replace("-", "_")] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: name=share", param_hint="--inject") from None
    settings = _settings()
    try:
        asyncio.run(
            run_simulate(
                settings,
                meters=meters,
                interval_s=interval_s,
                via=via,
                url=url or f"http://{settings.runtime.host}:{settings.api.port}",
                seed=seed_n,
                duration_s=duration_s,
                batch_meters=batch_meters,
                concurrency=concurrency,
                console=console,
                backfill_s=backfill_s,
                inject=shares or None,
                labels=labels,
            )
        )
    except SimulatorError as exc:
        console.print(f"[red]simulate:[/] {exc}")
        raise typer.Exit(1) from None


@bench_app.command("ingest")
def bench_ingest(
    readings: Annotated[
        int, typer.Option(help="Readings of each sustained workload (quarter-hour, 10-second).")
    ] = 1_000_000,
    per_message: Annotated[int, typer.Option(help="Readings per JetStream message.")] = 96,
    processes: Annotated[int, typer.Option(help="Reading-worker processes.")] = 2,
    rate: Annotated[float, typer.Option(help="Fixed rate of the latency phase.")] = 6700.0,
    latency_seconds: Annotated[float, typer.Option(help="Length of the latency phase.")] = 30.0,
) -> None:
    """Publisher → JetStream → workers → PostgreSQL, two workloads and latency; JSON last."""
    from benchmarks.ingest import bench_ingest as run_bench
    from bootstrap.runtime import servers

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
    replicas: Annotated[int, typer.Option(help="API replicas of the second phase.")] = 2,
    processes: Annotated[int, typer.Option(help="Reading-worker processes.")] = 1,
) -> None:
    """POST /telemetry/batch to one, then several API replicas on one port; JSON figures last."""
    from benchmarks.ingest import bench_http as run_bench
    from bootstrap.runtime import servers

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
                replicas=(1, replicas) if replicas > 1 else (1,),
                processes=processes,
            )
        )
    print(msgspec.json.encode(figures).decode())


@bench_app.command("cluster")
def bench_cluster(
    seconds: Annotated[float, typer.Option(help="How long gateways post.")] = 45.0,
    workers: Annotated[int, typer.Option(help="Reading-worker processes.")] = 3,
    apis: Annotated[int, typer.Option(help="API replicas sharing one port.")] = 2,
    meters: Annotated[int, typer.Option(help="Registered meters.")] = 2000,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    items: Annotated[int, typer.Option(help="Gateway items (6 readings each) per request.")] = 500,
) -> None:
    """3 NATS servers, workers, API replicas; kill a server and a worker; count. JSON last."""
    from benchmarks.cluster import ClusterRig, run_cluster
    from bootstrap.runtime import servers

    settings = _settings()
    with servers(settings, console, need_nats=False) as resolved:
        rig = ClusterRig(resolved.settings, workers=workers, apis=apis, meters=meters)
        figures = asyncio.run(
            run_cluster(rig, console, seconds=seconds, concurrency=concurrency, items=items)
        )
    for phase in figures.phases:
        console.print(
            f"  {phase.name:>17}: {phase.stored_per_s:>9,.0f} readings/s stored, "
            f"{phase.acknowledged_per_s:>9,.0f}/s acknowledged ({phase.seconds:.0f} s)"
        )
    same = figures.acknowledged == figures.stored == figures.counted_by_status
    console.print(
        f"  acknowledged {figures.acknowledged:,}, stored {figures.stored:,}, counted "
        f"{figures.counted_by_status:,}/{figures.counted_by_windows:,}: "
        + ("[green]every reading once[/]" if same else "[red]MISMATCH[/]")
    )
    print(msgspec.json.encode(figures).decode())
    if not same:
        raise typer.Exit(1)


@export_app.command("intervals")
def export_intervals(
    day: Annotated[
        str | None, typer.Option("--date", help="UTC day YYYY-MM-DD (default yesterday).")
    ] = None,
    interval: Annotated[str, typer.Option(help="M15 or M30.")] = "M15",
) -> None:
    """Publish one day's interval consumption of every meter to hes.exports.intervals.<date>."""
    from datetime import UTC, date, datetime, timedelta

    from bootstrap.connections import command_pool, connect_nats
    from bootstrap.runtime import servers
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
        pool = command_pool(s.database)
        await pool.open()
        nc = await connect_nats(s.nats)
        try:
            report = await export_day(pool, nc, s.database.schema, s.nats.prefix, when, kind)
        finally:
            await nc.close()
            await pool.close()
        print(msgspec.json.encode(report).decode())

    with servers(settings, console) as resolved:
        asyncio.run(run(resolved.settings))


@workers_app.command("run")
def workers_run() -> None:
    """Run the reading workers (READINGS → time-series read models) in the foreground."""
    from bootstrap.reading_process import run_reading_workers

    settings = attached(_settings())
    _logging(settings)
    asyncio.run(run_reading_workers(settings))


@regions_app.command("capacity")
def region_capacity(
    region: Annotated[str, typer.Argument(help="Region name as registered on meters.")],
    kw: Annotated[float | None, typer.Argument(help="Capacity in kW; omit to show.")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Actor recorded on the event; default cli:<login name>.")
    ] = None,
) -> None:
    """Show or set a region's capacity, the 100 % of its load percentage.

    Setting records a ``Region.CapacitySet`` event (command ``setRegionCapacity``, admin); the
    ``tariffs_view`` projection writes it to the ``region_capacity`` table the readers use.
    """
    import getpass

    import psycopg
    from psycopg import sql

    from bootstrap.applications import tariff_book
    from bootstrap.runtime import servers
    from domain.errors import Collector, DomainError, ValidationFailed
    from domain.region import check_capacity_kw

    settings = _settings()
    if kw is not None:
        errors = Collector()
        check_capacity_kw(errors, kw)
        try:
            errors.raise_if_any()
        except ValidationFailed as exc:
            console.print(f"[red]{exc.message}[/]")
            raise typer.Exit(2) from None
    with servers(settings, console, need_nats=False) as resolved:
        assert resolved.settings.database.url
        if kw is not None:
            ctx = CommandContext(
                actor=Actor(subject=actor or f"cli:{getpass.getuser()}", roles=SYSTEM.roles)
            )
            book = tariff_book(resolved.settings.database)
            try:
                outcome = book.set_region_capacity(region, kw, ctx)
            except DomainError as exc:
                console.print(f"[red]{exc.message}[/]")
                raise typer.Exit(2) from None
            finally:
                book.close()
            print(f"{outcome.region.region}: {(outcome.region.capacity_kw or 0):g} kW")
            if outcome.notification_id is None:
                console.print("unchanged: the region already has this capacity")
            else:
                console.print(
                    f"recorded (tariffs event {outcome.notification_id}); the tariffs_view "
                    "projection (hes up, hes projections run) applies it to region_capacity"
                )
            return
        table = sql.Identifier(settings.database.schema, "region_capacity")
        with psycopg.connect(resolved.settings.database.url, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL("SELECT capacity_w FROM {} WHERE region = %s").format(table), (region,)
            ).fetchone()
    if row is None:
        print(f"{region}: default {settings.readings.default_region_capacity_kw:g} kW")
    else:
        print(f"{region}: {row[0] / 1000:g} kW")


@projections_app.command("run")
def projections_run() -> None:
    """Run the projection workers in the foreground (scale-out or separate process)."""
    from bootstrap.workers import run_projection_forever

    settings = attached(_settings(), nats=False)
    _logging(settings)
    run_projection_forever(settings)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="Read model: meters_view or readings.")],
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch schema.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Rebuild a read model from its source into a scratch schema; exit 0 when equal to live."""
    from bootstrap.runtime import servers
    from projections.rebuild import NAMES, rebuild, report_json, summary_table

    if name not in NAMES:
        raise typer.BadParameter(f"one of {', '.join(NAMES)}", param_hint="NAME")
    settings = _settings()
    unit = "events" if name == "meters_view" else "messages"
    with (
        servers(settings, console, need_nats=name == "readings") as resolved,
        progress(f"replaying {unit}") as bar,
    ):
        task = bar.add_task(name, total=None)
        s = resolved.settings
        report = rebuild(
            s.database,
            s.nats,
            s.readings,
            name,
            keep=keep,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if json_output:
        print(report_json(report).decode())
    else:
        out_console().print(summary_table(report))
    raise typer.Exit(0 if report.equal else 1)


@schema_app.command("graphql")
def schema_graphql(
    out: Annotated[
        Path | None, typer.Option(help="Write the SDL to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL); docs/schema.graphql is this output, checked by a test."""
    from api.graphql.schema import sdl

    if out is None:
        sys.stdout.write(sdl())
    else:
        out.write_text(sdl())
        console.print(f"wrote {out}")


@app.command()
def licences(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    pyproject: Annotated[
        Path | None, typer.Option(help="pyproject.toml holding the allow-list.")
    ] = None,
) -> None:
    """List every installed runtime dependency's licence; exit 1 if one is not allowed."""
    from hes.cli.licences import PYPROJECT, Policy, report

    source = pyproject or PYPROJECT
    if not source.is_file():
        console.print(f"[red]{source} not found: give --pyproject (the allow-list lives there)[/]")
        raise typer.Exit(2)
    rows = report(Policy.load(source))
    if json_output:
        print(msgspec.json.encode(rows).decode())
    else:
        table = Table("package", "version", "licence", "from", "allowed")
        for row in rows:
            verdict = "yes" if row.exception is None else f"exception: {row.exception}"
            table.add_row(
                row.name,
                row.version,
                row.expression or "?",
                row.source,
                verdict if row.allowed else "[red]NO[/]",
            )
        out_console().print(table)
    raise typer.Exit(0 if all(row.allowed for row in rows) else 1)


def main() -> None:
    """Entry point of the ``hes`` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
