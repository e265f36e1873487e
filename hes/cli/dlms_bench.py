"""``hes bench dlms``: the command line only; the benchmark loads when it runs.

(Importing the benchmark imports the metrics module, and ``hes up`` must set up multi-process
metrics before anything imports it.)
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from config.settings import Settings, SettingsError
from domain.values import SecurityLevel, Transport

console = Console(stderr=True)


def bench_dlms_command(
    meters: Annotated[
        int, typer.Option(min=1, help="Simulated meters for the register read.")
    ] = 1000,
    transport: Annotated[Transport, typer.Option(help="WRAPPER or HDLC.")] = Transport.WRAPPER,
    security: Annotated[
        SecurityLevel, typer.Option(help="NONE, LLS or HLS_GMAC (keys set for every meter).")
    ] = SecurityLevel.NONE,
    profile_meters: Annotated[int, typer.Option(min=1, help="Meters whose profile is read.")] = 100,
    pushes: Annotated[int, typer.Option(min=1, help="Push notifications to send.")] = 50_000,
    push_connections: Annotated[int, typer.Option(min=1, help="Pushing connections.")] = 16,
) -> None:
    """DLMS collection and push throughput against simulated meters; JSON figures last."""
    from benchmarks.dlms import bench_dlms
    from bootstrap.runtime import servers
    from config.logs import configure

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    configure("WARNING", settings.logging.format)
    with servers(settings, console) as resolved:
        figures = asyncio.run(
            bench_dlms(
                resolved.settings,
                meters=meters,
                transport=transport,
                security=security,
                profile_meters=min(profile_meters, meters),
                pushes=pushes,
                push_connections=push_connections,
            )
        )
    print(msgspec.json.encode(figures).decode())
