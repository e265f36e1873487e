"""What every ``hes`` command shares on the terminal: consoles, settings, progress bars."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bootstrap.attach import NotRunning, attach
from config.settings import Settings, SettingsError

err = Console(stderr=True)
"""Messages, progress and banners (stderr), so that stdout carries only the result."""

PIPED_WIDTH = 10_000
"""Line width of results written to a pipe or file: wide enough that no table is cut."""


def out() -> Console:
    """A console for results on stdout; not cut at 80 columns when stdout is not a terminal."""
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


def load_settings() -> Settings:
    """Settings from ``HES_*``; a bad value ends the command with exit code 2."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def attached(settings: Settings, *, database: bool = True, nats: bool = True) -> Settings:
    """Settings with the URLs of the configured servers, else of a running ``hes up``'s."""
    try:
        return attach(settings, database=database, nats=nats)
    except NotRunning as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def progress(label: str, *, console: Console = err) -> Progress:
    """A progress bar (count, elapsed, remaining) on stderr; drawn once at the end when piped."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
