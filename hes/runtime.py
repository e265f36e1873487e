"""Starts the whole system in one process group: servers, migrations, workers, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from rich.console import Console

from api.app import create_app
from api.auth import TokenService, jwks_from, load_or_create_secret
from hes.container import Container
from hes.dlms_process import DlmsWorkers
from hes.embedded import start_nats, start_postgres
from hes.migrate import migrate
from hes.notifier import SupervisedNotifier
from hes.reading_process import WorkerProcess
from hes.relay import RELAYED_APPLICATIONS, relays
from hes.settings import Settings
from hes.workers import SupervisedProjection, alerts_projection, tariffs_projection

log = logging.getLogger(__name__)


@dataclass
class Servers:
    """Resolved settings plus whatever embedded servers were started for them."""

    settings: Settings
    stoppers: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        """Stop embedded servers, newest first."""
        for server in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                server.stop()


@contextlib.contextmanager
def servers(settings: Settings, console: Console, *, need_nats: bool = True) -> Iterator[Servers]:
    """Resolve PostgreSQL and NATS: the configured ones, or embedded ones under ``data_dir``."""
    result = Servers(settings)
    try:
        database_url = settings.database_url
        nats_url = settings.nats_url
        if database_url is None:
            with console.status("Starting embedded PostgreSQL…"):
                pg = start_postgres(settings.data_dir)
            result.stoppers.append(pg)
            database_url = pg.url
            console.print(f"[green]✓[/] PostgreSQL (embedded) at {database_url}")
        else:
            console.print(f"[green]✓[/] PostgreSQL at {_redact(database_url)}")
        if nats_url is None and need_nats:
            with console.status("Starting embedded NATS JetStream…"):
                nats_server = start_nats(settings.data_dir)
            result.stoppers.append(nats_server)
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
    secret = settings.jwt_secret or load_or_create_secret(settings.data_dir)
    return TokenService(
        secret,
        settings.jwt_issuer,
        settings.jwt_audience,
        jwks=jwks_from(settings.jwt_jwks_url, settings.jwt_jwks_file),
        roles_claim=settings.jwt_roles_claim,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def up(settings: Settings, console: Console) -> None:
    """Run everything until Ctrl-C."""
    with servers(settings, console) as resolved:
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
        readings = WorkerProcess(s)
        event_relays = relays(s)
        notifier = SupervisedNotifier(s)
        dlms = DlmsWorkers(s)
        if s.run_workers:
            projection.start()
            tariffs.start()
            alerts.start()
            readings.start()
            for relay in event_relays:
                relay.start()
            notifier.start()
            console.print("[green]✓[/] projections meters_view, tariffs_view, alerts_view running")
            console.print(
                f"[green]✓[/] event relays {', '.join(RELAYED_APPLICATIONS)} → HES_EVENTS running"
            )
            console.print(
                f"[green]✓[/] reading workers running ({s.reading_partitions} partitions)"
            )
            console.print("[green]✓[/] notifier running (alert and tariff events → subscribers)")
            dlms.start(console)
        else:
            console.print("[yellow]•[/] workers not run here (HES_RUN_WORKERS=false)")
        tokens = token_service(s)
        app = create_app(Container(s), tokens)
        base = f"http://{s.host}:{s.port}"
        redis = _redact(s.redis_url) if s.redis_url else "not configured (in-process stores)"
        console.print(
            f"\n[bold]HES is up[/]\n"
            f"  API        {base}\n"
            f"  GraphQL    {base}/graphql  (GraphiQL in a browser)\n"
            f"  OpenAPI    {base}/schema\n"
            f"  Health     {base}/health/ready\n"
            f"  Redis      {redis}\n"
            f"  Token      hes token --role admin\n"
        )
        try:
            # log_config=None: uvicorn's loggers go through the JSON handler set up by the CLI
            uvicorn.run(
                app, host=s.host, port=s.port, log_level=s.log_level.lower(), log_config=None
            )
        finally:
            if s.run_workers:
                dlms.stop()
            notifier.stop()
            for relay in event_relays:
                relay.stop()
            readings.stop()
            tariffs.stop()
            alerts.stop()
            projection.stop()


def _redact(url: str) -> str:
    """URL without its password, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
