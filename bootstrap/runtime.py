"""Starts the whole system in one process group: servers, migrations, workers, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from rich.console import Console

from api.app import create_app
from api.auth import TokenService, jwks_from, load_or_create_secret
from api.health import PartHealth
from bootstrap.container import Container
from bootstrap.dlms_process import DlmsWorkers
from bootstrap.embedded import start_nats, start_postgres
from bootstrap.insights import SupervisedInsights
from bootstrap.migrate import migrate
from bootstrap.notifier import SupervisedNotifier
from bootstrap.ports import listening_socket
from bootstrap.reading_process import ChildState, WorkerProcess
from bootstrap.relay import RELAYED_APPLICATIONS, relays
from bootstrap.server_watch import WatchedServer
from bootstrap.workers import (
    SupervisedProjection,
    alerts_projection,
    customers_projection,
    fleet_projection,
    sims_projection,
    tariffs_projection,
)
from config.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Servers:
    """Resolved settings plus whatever embedded servers were started for them."""

    settings: Settings
    stoppers: list[Any] = field(default_factory=list)
    watched: list[WatchedServer] = field(default_factory=list)
    """The embedded servers under watch (``hes up``), restarted when they die."""

    def stop(self) -> None:
        """Stop embedded servers, newest first."""
        for server in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                server.stop()


@contextlib.contextmanager
def servers(
    settings: Settings,
    console: Console,
    *,
    need_nats: bool = True,
    on_fatal: Callable[[str], None] | None = None,
) -> Iterator[Servers]:
    """Resolve PostgreSQL and NATS: the configured ones, or embedded ones under ``data_dir``.

    With ``on_fatal``, embedded servers are watched: restarted when they die, ``on_fatal``
    called when one cannot come back.
    """
    result = Servers(settings)

    def keep(name: str, title: str, server: Any, restart: Callable[[], Any]) -> None:
        if on_fatal is None:
            result.stoppers.append(server)
            return
        watched = WatchedServer(name, title, server, restart, on_fatal)
        watched.start()
        result.stoppers.append(watched)
        result.watched.append(watched)

    try:
        database_url = settings.database.url
        nats_url = settings.nats.url
        if database_url is None:
            with console.status("Starting embedded PostgreSQL…"):
                pg = start_postgres(settings.runtime.data_dir)
            keep(
                "embedded_postgres",
                "PostgreSQL",
                pg,
                lambda: start_postgres(settings.runtime.data_dir),
            )
            database_url = pg.url
            console.print(f"[green]✓[/] PostgreSQL (embedded) at {database_url}")
        else:
            console.print(f"[green]✓[/] PostgreSQL at {_redact(database_url)}")
        if nats_url is None and need_nats:
            with console.status("Starting embedded NATS JetStream…"):
                nats_server = start_nats(settings.runtime.data_dir)
            keep(
                "embedded_nats", "NATS", nats_server, lambda: start_nats(settings.runtime.data_dir)
            )
            nats_url = nats_server.url
            console.print(f"[green]✓[/] NATS JetStream (embedded) at {nats_url}")
        elif nats_url is not None:
            console.print(f"[green]✓[/] NATS at {_redact(nats_url)}")
        result.settings = settings.with_urls(database_url, nats_url)
        yield result
    finally:
        result.stop()


def token_service(settings: Settings) -> TokenService:
    """The JWT service, with the secret from settings or the data directory."""
    secret = settings.auth.jwt_secret or load_or_create_secret(settings.runtime.data_dir)
    return TokenService(
        secret,
        settings.auth.jwt_issuer,
        settings.auth.jwt_audience,
        jwks=jwks_from(settings.auth.jwt_jwks_url, settings.auth.jwt_jwks_file),
        roles_claim=settings.auth.jwt_roles_claim,
        leeway_seconds=settings.auth.jwt_leeway_seconds,
    )


CHILD_START_SECONDS = 60.0
"""How long the banner waits for a child process to say it works."""


def _child_line(child: WorkerProcess, what: str) -> str:
    state = child.wait_started(CHILD_START_SECONDS)
    if state is ChildState.RUNNING and not child.crash_looping:
        return f"[green]✓[/] {what} running (pid {child.pid})"
    return f"[red]✗[/] {what} NOT running: {child.summary()} (see the log; /health/ready says 503)"


class _Stopper:
    """Stops the HTTP server from another thread (a watched server that cannot come back)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self.server: uvicorn.Server | None = None
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self._console.print(f"[red]✗ {reason}; stopping[/]")
        if self.server is not None:
            self.server.should_exit = True


def up(settings: Settings, console: Console) -> int:
    """Run everything until Ctrl-C (or until an embedded server cannot come back); exit code.

    The HTTP port is bound first: when it is taken, nothing starts (``PortInUse``).
    """
    http = listening_socket(
        settings.runtime.host,
        settings.api.port,
        "the HTTP API",
        "HES_PORT",
        reuse_port=settings.api.reuse_port,
    )
    stopper = _Stopper(console)
    with servers(settings, console, on_fatal=stopper) as resolved:
        s = resolved.settings
        with console.status("Applying migrations…"):
            report = asyncio.run(migrate(s))
        console.print(
            f"[green]✓[/] schema {report.schema!r} migrated "
            f"({len(report.applied)} new migrations); streams {', '.join(report.streams)}"
        )
        projection = SupervisedProjection(s)
        tariffs = tariffs_projection(s)
        alerts = alerts_projection(s)
        sims = sims_projection(s)
        customers = customers_projection(s)
        fleet = fleet_projection(s)
        readings = WorkerProcess(s)
        event_relays = relays(s)
        notifier = SupervisedNotifier(s)
        insights = SupervisedInsights(s)
        dlms = DlmsWorkers(s)
        parts: list[PartHealth] = [*resolved.watched]
        if s.runtime.run_workers:
            projection.start()
            tariffs.start()
            alerts.start()
            sims.start()
            customers.start()
            fleet.start()
            readings.start()
            for relay in event_relays:
                relay.start()
            notifier.start()
            if insights.enabled:
                insights.start()
            dlms.start()
            parts += [readings, *dlms.parts]
            console.print(
                "[green]✓[/] projections meters_view, tariffs_view, alerts_view, sims_view, "
                "customers_view, fleet_view running"
            )
            console.print(
                f"[green]✓[/] event relays {', '.join(RELAYED_APPLICATIONS)} → HES_EVENTS running"
            )
            console.print("[green]✓[/] notifier running (alert and tariff events → subscribers)")
            if insights.enabled:
                every = s.insights.interval_seconds
                console.print(f"[green]✓[/] consumption insights every {every:.0f} s")
            console.print(
                _child_line(readings, f"reading workers ({s.readings.partitions} partitions)")
            )
            if s.runtime.run_dlms:
                console.print(_child_line(dlms.process, "DLMS collector and command executor"))
                ok, detail = dlms.push.health()
                mark = "[green]✓[/]" if ok else "[yellow]![/]"
                console.print(f"{mark} DLMS push listener: {detail}")
            else:
                console.print("[yellow]•[/] DLMS side not run here (HES_RUN_DLMS=false)")
        else:
            console.print("[yellow]•[/] workers not run here (HES_RUN_WORKERS=false)")
        tokens = token_service(s)
        app = create_app(Container(s), tokens, parts=parts)
        base = f"http://{s.runtime.host}:{s.api.port}"
        redis = (
            _redact(s.api.redis_url) if s.api.redis_url else "not configured (in-process stores)"
        )
        console.print(
            f"\n[bold]HES is up[/]\n"
            f"  Console    {base}/console\n"
            f"  API        {base}\n"
            f"  GraphQL    {base}/graphql  (GraphiQL in a browser)\n"
            f"  OpenAPI    {base}/schema\n"
            f"  Health     {base}/health/ready\n"
            f"  Redis      {redis}\n"
            f"  Token      hes token --role admin\n"
        )
        try:
            # log_config=None: uvicorn's loggers go through the JSON handler set up by the CLI
            config = uvicorn.Config(
                app,
                host=s.runtime.host,
                port=s.api.port,
                log_level=s.logging.level.lower(),
                log_config=None,
                proxy_headers=False,  # forwarded headers: only from HES_TRUSTED_PROXIES (api)
            )
            stopper.server = uvicorn.Server(config)
            if not stopper.reasons:
                stopper.server.run(sockets=[http])
        finally:
            http.close()
            if s.runtime.run_workers:
                dlms.stop()
                if insights.enabled:
                    insights.stop()
                notifier.stop()
                for relay in event_relays:
                    relay.stop()
                readings.stop()
                tariffs.stop()
                alerts.stop()
                sims.stop()
                customers.stop()
                fleet.stop()
                projection.stop()
    return 1 if stopper.reasons else 0


def _redact(url: str) -> str:
    """URL without its password, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
