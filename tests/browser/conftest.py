"""Browser tests: one `hes up` and one headless Chromium for the whole package.

Chromium is Debian's package (/usr/bin/chromium, or ``HES_TEST_CHROMIUM``); Playwright only drives
it. Without a browser these tests are skipped with the reason, except on CI (``CI`` set) or
with ``HES_TEST_BROWSER=required`` (``.ci/run`` sets it after installing chromium): then they
fail, so a CI machine can never pass without running them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from adapters.dlms.simulator import SimulatedFleet, start_simulated_meters
from tests.browser.console import (
    CHROMIUM_ARGS,
    EXPECT_TIMEOUT_MS,
    browser_required,
    chromium_path,
)
from tests.browser.system import RunningSystem
from tests.integration.dlms_support import free_ports
from tests.services import Services


@pytest.fixture(scope="package")
def chromium() -> str:
    """The Chromium binary; skip (or fail on CI) when there is none."""
    path = chromium_path()
    if path is None:
        reason = (
            "no Chromium: install Debian's package (apt-get install -y chromium) or set "
            "HES_TEST_CHROMIUM to a Chromium binary"
        )
        if browser_required():
            pytest.fail(f"browser tests are required here (CI / HES_TEST_BROWSER): {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="package")
def system(
    chromium: str, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    """`hes up` on a free port with its own schema and streams, for every browser test."""
    running = RunningSystem(
        services.database_url, services.nats_url, tmp_path_factory.mktemp("console-system")
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="package")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Headless Chromium driven by Playwright."""
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="package")
async def dlms_meters() -> AsyncIterator[SimulatedFleet]:
    """Two simulated DLMS meters on 127.0.0.1 for the remote commands."""
    fleet = await start_simulated_meters(2, free_ports(2))
    try:
        yield fleet
    finally:
        await fleet.close()
