"""How long the dashboard takes to show its first data on a running system with a simulated fleet
sending readings: measured in Chromium from the start of a page load to the dashboard's first
snapshot on screen (the console marks it ``hes:dashboard:first-data``). Reported, not asserted.

    .venv/bin/python -m tests.browser.first_data --meters 5000      # the figure for the docs

starts `hes up` (own schema, local or embedded servers as the tests find them), runs
`hes simulate --meters N --interval 10s` against it, waits until every meter has reported,
then loads the dashboard ``--runs`` times in a signed-in tab. It prints one JSON line and
writes it to build/console-first-data.json (``--out``). The browser test suite runs the same
measurement with a small fleet (tests/browser/test_first_data.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, async_playwright

from commands.context import Role
from tests.browser.console import CHROMIUM_ARGS, as_role, chromium_path
from tests.browser.system import ROOT, RunningSystem

DEFAULT_OUT = ROOT / "build" / "console-first-data.json"
COUNTS = "{ dashboard { meters { active online } readings { thisWindow lastWindow } } }"


def start_fleet(system: RunningSystem, meters: int, interval: str = "10s") -> subprocess.Popen[str]:
    """`hes simulate` against the system until stopped (SIGINT)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hes.cli", "simulate", "--meters", str(meters), "--interval",
         interval, "--url", system.base],
        env=system.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def stop_fleet(fleet: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the simulator; its JSON summary."""
    fleet.send_signal(signal.SIGINT)
    out, _ = fleet.communicate(timeout=60)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return summary


async def fleet_reporting(system: RunningSystem, meters: int, within: float = 600.0) -> None:
    """Wait until the dashboard counts ``meters`` meters online."""
    token = system.token(Role.VIEWER)
    deadline = time.monotonic() + within
    while True:
        counts = (await system.gql(token, COUNTS))["dashboard"]
        if counts["meters"]["online"] >= meters and counts["readings"]["thisWindow"] > 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleet not reporting after {within:.0f} s: {counts}")
        await asyncio.sleep(1.0)


async def measure(browser: Browser, system: RunningSystem, runs: int = 5) -> dict[str, Any]:
    """Load the dashboard ``runs`` times (signed in); ms to first data per load."""
    session = await as_role(browser, system, Role.VIEWER)
    page = session.page
    times: list[float] = []
    shown: dict[str, Any] = {}
    try:
        for _ in range(runs):
            await page.reload(wait_until="commit")  # a new document: the console boots again
            try:
                await page.locator(".dashboard[data-first-data=yes]").wait_for(timeout=60_000)
            except Exception as exc:
                text = await page.locator("body").inner_text()
                raise AssertionError(f"no first data: {session.problems} {text!r}") from exc
            mark = await page.evaluate(
                "performance.getEntriesByName('hes:dashboard:first-data')[0].startTime"
            )
            times.append(round(float(mark), 1))
            shown = (await system.gql(system.token(Role.VIEWER), COUNTS))["dashboard"]
        session.assert_clean()
    finally:
        await session.close()
    return {
        "first_data_ms": times,
        "median_ms": round(statistics.median(times), 1),
        "max_ms": max(times),
        "meters_active": shown.get("meters", {}).get("active"),
        "meters_online": shown.get("meters", {}).get("online"),
        "readings_last_window": shown.get("readings", {}).get("lastWindow"),
        "readings_this_window": shown.get("readings", {}).get("thisWindow"),
    }


def report(result: dict[str, Any], out: Path) -> None:
    """Print the result as one JSON line and keep it in ``out``."""
    line = json.dumps(result)
    print(line, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n", encoding="utf-8")


async def _main(meters: int, runs: int, out: Path) -> None:
    from tests.services import discover

    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("no Chromium: apt-get install -y chromium (or set HES_TEST_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="hes-first-data-") as tmp:
        services = discover(Path(tmp) / "servers")
        system = RunningSystem(services.database_url, services.nats_url, Path(tmp) / "data")
        fleet = None
        try:
            system.start()
            started = time.monotonic()
            fleet = start_fleet(system, meters)
            await fleet_reporting(system, meters)
            warmup_s = round(time.monotonic() - started, 1)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=chromium, args=CHROMIUM_ARGS
                )
                result = await measure(browser, system, runs)
                await browser.close()
            result.update(meters=meters, fleet_ready_s=warmup_s, chromium=chromium)
            result["simulator"] = stop_fleet(fleet)
            fleet = None
            report(result, out)
        finally:
            if fleet is not None:
                stop_fleet(fleet)
            await asyncio.to_thread(system.stop)
            services.close()


def main() -> None:
    """Command line: --meters, --runs, --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    asyncio.run(_main(args.meters, args.runs, args.out))


if __name__ == "__main__":
    main()
