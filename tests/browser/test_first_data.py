"""The dashboard's time to first data with a simulated fleet reporting: printed and written to
build/console-first-data.json, not asserted (a figure, not a test; the 5,000-meter run is
``python -m tests.browser.first_data --meters 5000``)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.browser.first_data import (
    DEFAULT_OUT,
    fleet_reporting,
    measure,
    report,
    start_fleet,
    stop_fleet,
)
from tests.browser.system import RunningSystem

pytestmark = pytest.mark.browser
FLEET = 300


async def test_dashboard_time_to_first_data_is_measured(
    browser: Browser, system: RunningSystem
) -> None:
    fleet = start_fleet(system, FLEET)
    try:
        await fleet_reporting(system, FLEET, within=180)
        result = await measure(browser, system, runs=5)
    finally:
        summary = stop_fleet(fleet)
    result.update(meters=FLEET, simulator=summary, note="browser test suite, small fleet")
    report(result, DEFAULT_OUT)
    assert len(result["first_data_ms"]) == 5  # measured every time; the figure is not judged
    assert result["meters_online"] >= FLEET
