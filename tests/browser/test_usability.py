"""Accessibility (axe-core: no serious or critical violation on any page, in both themes), phone
width, keyboard use with visible focus, and times with their UTC original."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect

from adapters.dlms.simulator import SimulatedFleet
from commands.context import Role
from domain.alert import Severity
from tests.browser.console import PHONE, as_role, axe_violations, open_console, screenshot
from tests.browser.data import dlms_meter, raise_alert, readings, tariff, unique
from tests.browser.system import RunningSystem

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class Fixtures:
    """What the pages show while they are scanned."""

    region: str
    meter: str
    serial: str
    alert: str


@pytest.fixture(scope="module")
async def shown(system: RunningSystem, dlms_meters: SimulatedFleet) -> AsyncIterator[Fixtures]:
    region = unique("AX")
    meter = await dlms_meter(system, dlms_meters, 1, region)
    serial = (
        await system.gql(
            system.token(Role.ADMIN), "query($id: ID!) { meter(id: $id) { serial } }", {"id": meter}
        )
    )["meter"]["serial"]
    await readings(system, serial, hours=24)
    await tariff(system, region)
    alert = await raise_alert(system, region, severity=Severity.HIGH, meter=meter)
    system.hes("audit", "verify", timeout=120)
    yield Fixtures(region, meter, serial, alert)


def views(f: Fixtures) -> dict[str, str]:
    """Every view of the console with content, by name."""
    return {
        "dashboard": "#/dashboard",
        "meters": "#/meters",
        "meter": f"#/meters/{f.meter}",
        "alerts": f"#/alerts?region={f.region}&focus={f.alert}",
        "tariffs": f"#/tariffs?region={f.region}",
        "imports": "#/imports",
        "audit": f"#/audit?id={f.serial}",
    }


async def settle(page: Page) -> None:
    """Wait until no loading indicator is left on the page."""
    await expect(page.locator(".state.loading")).to_have_count(0, timeout=15_000)
    await expect(page.locator("main h1")).to_be_visible()


@pytest.mark.parametrize("theme", ["light", "dark"])
async def test_no_serious_accessibility_violation_on_any_page(
    browser: Browser, system: RunningSystem, shown: Fixtures, theme: str
) -> None:
    signin = await open_console(browser, system, theme=theme)
    assert await axe_violations(signin.page) == [], "sign-in page"
    await signin.close()
    session = await as_role(browser, system, Role.ADMIN, theme=theme)
    page = session.page
    assert await page.evaluate("document.documentElement.dataset.theme") == theme
    found = {}
    for name, fragment in views(shown).items():
        await page.goto(f"{system.base}/console{fragment}")
        await settle(page)
        if name == "alerts":
            await (
                page.locator(f"#alert-{shown.alert}").get_by_role("button", name="Details").click()
            )
        if name == "meter":
            await page.locator("#consumption-chart details summary").click()  # the data table
        violations = await axe_violations(page)
        if violations:
            found[name] = violations
        if theme == "dark" and name in ("dashboard", "meter"):
            await screenshot(page, f"{name}-dark")
    # dialogs: registering a meter, confirming a command
    await page.goto(f"{system.base}/console#/meters")
    await page.get_by_role("button", name="Register meter").click()
    found_dialog = await axe_violations(page)
    if found_dialog:
        found["register dialog"] = found_dialog
    await page.keyboard.press("Escape")
    await page.goto(f"{system.base}/console#/meters/{shown.meter}")
    await settle(page)
    await page.get_by_role("button", name="Disconnect…").click()
    confirm = await axe_violations(page)
    if confirm:
        found["confirm dialog"] = confirm
    await page.get_by_role("button", name="Cancel").click()
    assert found == {}
    session.assert_clean()
    await session.close()


async def test_every_page_fits_a_phone_and_the_menu_opens(
    browser: Browser, system: RunningSystem, shown: Fixtures
) -> None:
    session = await as_role(browser, system, Role.OPERATOR, viewport=PHONE)
    page = session.page
    nav = page.locator("nav#nav")
    await expect(nav).to_be_hidden()
    menu = page.get_by_role("button", name="Menu")
    await menu.click()
    await expect(menu).to_have_attribute("aria-expanded", "true")
    await nav.get_by_role("link", name="Alerts").click()
    await expect(nav).to_be_hidden()  # closes after choosing
    await expect(page.locator("main h1")).to_have_text("Alerts")
    overflow = {}
    for name, fragment in views(shown).items():
        if name == "audit":
            continue  # operators have no audit page
        await page.goto(f"{system.base}/console{fragment}")
        await settle(page)
        width = await page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            overflow[name] = width
        if name == "dashboard":
            await screenshot(page, "dashboard-phone")
    assert overflow == {}, f"pages wider than {PHONE['width']} px: {overflow}"
    session.assert_clean()
    await session.close()


async def test_keyboard_reaches_everything_with_visible_focus(
    browser: Browser, system: RunningSystem, shown: Fixtures
) -> None:
    session = await as_role(browser, system, Role.OPERATOR)
    page = session.page
    await page.goto(f"{system.base}/console#/meters")
    await settle(page)
    await page.locator("body").click(position={"x": 5, "y": 300})
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    reached = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            """() => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {text: el.innerText || el.getAttribute('aria-label') || el.id,
                        outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
            }"""
        )
        reached.append(focused["text"].strip())
        assert focused["outline"] != "none" and focused["width"] >= 2, focused
    for name in ("Dashboard", "Meters", "Alerts", "Tariffs", "Imports", "Sign out"):
        assert name in reached, reached
    # a dialog takes the focus, Escape closes it, the focus returns
    opener = page.get_by_role("button", name="Register meter")
    await opener.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Register a meter")
    await expect(dialog).to_be_visible()
    assert await dialog.evaluate("d => d.contains(document.activeElement)")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()
    session.assert_clean()
    await session.close()


async def test_times_are_local_with_utc_on_hover_and_numbers_carry_units(
    browser: Browser, system: RunningSystem, shown: Fixtures
) -> None:
    session = await as_role(browser, system, Role.OPERATOR)
    page = session.page
    await page.goto(f"{system.base}/console#/meters/{shown.meter}")
    await settle(page)
    await expect(page.locator("#meter-latest tbody tr").first).to_be_visible()
    times = page.locator("main time")
    assert await times.count() > 3
    for i in range(await times.count()):
        title = await times.nth(i).get_attribute("title") or ""
        assert title.endswith("UTC") or "UTC" in title, title
    # the browser's zone is Europe/Amsterdam: the text differs from the UTC title
    first = times.first
    assert (await first.inner_text()) not in (await first.get_attribute("title") or "")
    numbers = page.locator("main .num")
    assert await numbers.count() > 3
    for i in range(await numbers.count()):
        number = numbers.nth(i)
        assert (await number.locator(".unit").text_content() or "").strip(), await number.evaluate(
            "n => n.parentElement.parentElement.outerHTML"
        )
    session.assert_clean()
    await session.close()
