"""``hes notifications``: run the notifier (alert and tariff events → webhooks and e-mail)."""

from __future__ import annotations

import typer
from rich.console import Console

from hes.cli.terminal import attached, load_settings

notifications_app = typer.Typer(
    help="Notifications: deliver alert and tariff events to subscribers.", no_args_is_help=True
)
console = Console(stderr=True)


@notifications_app.command("run")
def run() -> None:
    """Run the notifier in the foreground (``hes up`` runs it too; run one per deployment)."""
    from bootstrap.notifier import run_notifier_forever
    from config.logs import configure

    settings = load_settings()
    configure(settings.logging.level, settings.logging.format)
    settings = attached(settings)
    if settings.runtime.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.runtime.metrics_port, addr=settings.runtime.host)
    run_notifier_forever(settings)


@notifications_app.callback()
def _group() -> None:
    """Notifications: deliver alert and tariff events to subscribers."""
