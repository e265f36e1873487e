"""``hes simulate --dlms``: run simulated DLMS meters until Ctrl-C or ``--duration``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from adapters.dlms.simulator import (
    Behaviour,
    BehaviourError,
    behaviour,
    simulated_keys,
    start_simulated_meters,
)
from adapters.dlms.simulator.keys import CSV_HEADER, serial_of
from adapters.dlms.simulator.state import StateError
from config.settings import Settings

DEFAULT_METERS = 10
DEFAULT_SEED = "hes-sim"


class DlmsSimulatorError(ValueError):
    """A bad option value; ``param`` names the option."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_push_to(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DlmsSimulatorError("--push-to", f"{text!r} is not HOST:PORT (port 1..65535)")
    return host, int(port)


def write_keys(path: Path, count: int, seed: str) -> None:
    """Write ``serial,lls_password,ek_hex,ak_hex,system_title_hex`` for meters 0..count-1."""
    rows = [CSV_HEADER] + [simulated_keys(serial_of(i), seed).csv_row() for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="ascii")


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _run(
    console: Console,
    *,
    meters: int,
    base_port: int,
    host: str,
    seed: str,
    state_dir: Path,
    push_to: tuple[str, int] | None,
    push_interval: float,
    push_ciphered: bool,
    duration_s: float | None,
    behaving: Behaviour,
) -> dict[str, object]:
    started = time.monotonic()
    fleet = await start_simulated_meters(
        meters,
        base_port,
        seed=seed,
        host=host,
        state_dir=state_dir,
        push_to=push_to,
        push_interval=push_interval,
        push_ciphered=push_ciphered,
        behaviour=behaving,
    )
    console.print(
        f"[green]{meters} simulated DLMS meters[/] on {host}:{base_port}-{base_port + meters - 1}"
        f" (HDLC or wrapper per connection), state in {state_dir}"
        + ("" if behaving == Behaviour() else ", behaving like other meters")
        + (f", pushing to {push_to[0]}:{push_to[1]}" if push_to else "")
        + ("" if duration_s else "; Ctrl-C stops")
    )
    interrupted = False
    try:
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task; shut down cleanly
        interrupted = True
    finally:
        pushes = fleet.pusher.sent if fleet.pusher else 0
        await fleet.close()
    return {
        "meters": meters,
        "host": host,
        "base_port": base_port,
        "state_dir": str(state_dir),
        "pushes_sent": pushes,
        "seconds": round(time.monotonic() - started, 1),
        "interrupted": interrupted,
    }


def run_dlms_simulator(
    console: Console,
    *,
    meters: int | None,
    base_port: int,
    seed: str | None,
    state_dir: Path,
    push_to: str | None,
    push_interval_s: float,
    push_ciphered: bool,
    write_keys_to: Path | None,
    duration_s: float | None,
    host: str = "127.0.0.1",
    behaviour_names: str = "idis",
) -> None:
    """Write the keys file if asked, then serve the meters; print a JSON summary on stdout."""
    count = DEFAULT_METERS if meters is None else meters
    try:
        behaving = behaviour(behaviour_names)
    except BehaviourError as exc:
        raise DlmsSimulatorError("--behaviour", str(exc)) from None
    if not 1 <= base_port <= 65535 - count + 1:
        raise DlmsSimulatorError(
            "--base-port", f"ports {base_port}..{base_port + count - 1} are not all valid"
        )
    target = parse_push_to(push_to) if push_to else None
    seed = seed or DEFAULT_SEED
    if write_keys_to is not None:
        write_keys(write_keys_to, count, seed)
        console.print(f"keys of {count} meters written to {write_keys_to}")
    _raise_file_limit(count + 256)
    summary: dict[str, object] = {}
    with contextlib.suppress(KeyboardInterrupt):
        summary = asyncio.run(
            _run(
                console,
                meters=count,
                base_port=base_port,
                host=host,
                seed=seed,
                state_dir=state_dir,
                push_to=target,
                push_interval=push_interval_s,
                push_ciphered=push_ciphered,
                duration_s=duration_s,
                behaving=behaving,
            )
        )
    print(json.dumps(summary or {"meters": count, "stopped": "interrupted"}))


def simulate_dlms(
    console: Console,
    settings: Callable[[], Settings],
    configure_logging: Callable[[Settings], None],
    *,
    meters: int | None,
    seed: str | None,
    duration: str | None,
    base_port: int,
    state_dir: Path | None,
    push_to: str | None,
    push_interval: str,
    push_ciphered: bool,
    write_keys: Path | None,
    behaviour: str = "idis",
) -> None:
    """The ``hes simulate --dlms`` command: check options, then run the fleet."""
    from simulation.simulator import parse_duration

    try:
        duration_s = None if duration is None else parse_duration(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--duration") from None
    try:
        push_interval_s = parse_duration(push_interval)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--push-interval") from None
    loaded = settings()
    configure_logging(loaded)
    if state_dir is None:
        state_dir = loaded.runtime.data_dir / "dlms-sim"
    try:
        run_dlms_simulator(
            console,
            meters=meters,
            base_port=base_port,
            seed=seed,
            state_dir=state_dir,
            push_to=push_to,
            push_interval_s=push_interval_s,
            push_ciphered=push_ciphered,
            write_keys_to=write_keys,
            duration_s=duration_s,
            behaviour_names=behaviour,
        )
    except DlmsSimulatorError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None
    except (OSError, StateError) as exc:
        console.print(f"[red]simulate --dlms:[/] {exc}")
        raise typer.Exit(1) from None
