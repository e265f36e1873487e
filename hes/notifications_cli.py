"""``hes notifications``: run the notifier (alert and tariff events → webhooks and e-mail)."""

from __future__ import annotations

import typer
from rich.console import Console

from hes.settings import Settings, SettingsError

notifications_app = typer.Typer(
    help="Notifications: deliver alert and tariff events to subscribers.", no_args_is_help=True
)
console = Console(stderr=True)


@notifications_app.command("run")
def run() -> None:
    """Run the notifier in the foreground (``hes up`` runs it too; run one per deployment)."""
    from hes.notifier import run_notifier_forever

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    from hes.logs import configure

    configure(settings.log_level, settings.log_format)
    if settings.database_url is None or settings.nats_url is None:
        console.print(
            "[red]HES_DATABASE_URL and HES_NATS_URL must be set to run the notifier alone[/]"
        )
        raise typer.Exit(2)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)
    run_notifier_forever(settings)


@notifications_app.callback()
def _group() -> None:
    """Notifications: deliver alert and tariff events to subscribers."""
