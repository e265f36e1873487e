"""``hes bench firmware``: the command line only; the benchmark loads when it runs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from config.settings import Settings, SettingsError
from domain.values import SecurityLevel, Transport

console = Console(stderr=True)


def bench_firmware_command(
    meters: Annotated[int, typer.Option(min=1, max=4000, help="Simulated meters.")] = 1000,
    image_kb: Annotated[
        int, typer.Option(min=1, max=16_000, help="Image size in kB (1,000 bytes).")
    ] = 200,
    block_size: Annotated[
        int, typer.Option(min=16, max=4096, help="The simulated meters' image block size.")
    ] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Meters upgraded at once.")] = 64,
    transport: Annotated[Transport, typer.Option(help="WRAPPER or HDLC.")] = Transport.WRAPPER,
    security: Annotated[
        SecurityLevel, typer.Option(help="NONE, LLS or HLS_GMAC (keys set for every meter).")
    ] = SecurityLevel.HLS_GMAC,
) -> None:
    """A firmware campaign over simulated meters and the bare TCP baseline; JSON figures last."""
    from benchmarks.firmware import bench_firmware
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
            bench_firmware(
                resolved.settings,
                meters=meters,
                image_bytes=image_kb * 1000,
                block_size=block_size,
                concurrency=concurrency,
                transport=transport,
                security=security,
            )
        )
    print(msgspec.json.encode(figures).decode())
