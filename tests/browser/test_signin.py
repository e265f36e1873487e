"""Signing in to the console as each role: what the navigation and the pages offer, where the
credential is kept, and refusals."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from commands.context import Role
from tests.browser.console import as_role, nav_names, open_console, screenshot, sign_in
from tests.browser.data import register, tariff, unique
from tests.browser.system import RunningSystem

pytestmark = pytest.mark.browser

EXPECTED_PAGES = {
    Role.ADMIN: ["Dashboard", "Meters", "Alerts", "Tariffs", "Imports", "Audit"],
    Role.OPERATOR: ["Dashboard", "Meters", "Alerts", "Tariffs", "Imports"],
    Role.VIEWER: ["Dashboard", "Meters", "Alerts", "Tariffs"],
    Role.AUDITOR: ["Dashboard", "Meters", "Alerts", "Tariffs", "Audit"],
    Role.CUSTOMER: ["My meters", "Alerts", "My tariff"],
}
COMMANDS = ["Read now…", "Disconnect…", "Reconnect…", "Sync clock…"]


@pytest.mark.parametrize("role", list(EXPECTED_PAGES), ids=lambda r: r.value)
async def test_each_role_signs_in_and_is_offered_only_its_pages_and_commands(
    browser: Browser, system: RunningSystem, role: Role
) -> None:
    account = unique("ACC-")
    meter = await register(system, unique("SG"), unique("R"), customer=account)
    customer = account if role is Role.CUSTOMER else None
    session = await as_role(browser, system, role, customer=customer, subject=f"{role.value}-ann")
    page = session.page
    assert await nav_names(page) == EXPECTED_PAGES[role]
    await expect(page.locator(".who .subject")).to_have_text(f"{role.value}-ann")
    await expect(page.locator(".who .role")).to_have_text(role.value)
    # the first page it may open is where it lands
    first = EXPECTED_PAGES[role][0]
    await expect(page.locator("h1")).to_have_text(first)
    register_button = page.get_by_role("button", name="Register meter")
    await page.goto(f"{system.base}/console#/meters")
    await page.locator("table.meter-table, .state.empty").first.wait_for()
    await expect(register_button).to_have_count(1 if role in (Role.ADMIN, Role.OPERATOR) else 0)
    await page.goto(f"{system.base}/console#/meters/{meter}")
    await expect(page.locator("h1")).to_contain_text("Meter SG")
    for name in COMMANDS:
        wanted = 1 if role in (Role.ADMIN, Role.OPERATOR) else 0
        await expect(page.get_by_role("button", name=name)).to_have_count(wanted)
    if role is Role.CUSTOMER:
        # only their own meter; no DLMS, no history, but consumption and billing intervals
        await expect(page.locator("#meter-dlms")).to_have_count(0)
        await expect(page.locator("#meter-history")).to_have_count(0)
        await expect(page.locator("#meter-intervals")).to_have_count(1)
    if role is Role.ADMIN:
        await expect(page.locator("#meter-history ol")).to_contain_text("Registered")
        await expect(page.locator("#meter-history ol")).to_contain_text("by admin-b")
    session.assert_clean()
    await session.close()


async def test_a_customer_lists_only_their_own_meters_and_their_tariff(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("CR")
    mine, theirs = unique("MINE"), unique("THEIRS")
    account = unique("ACC-")
    await register(system, mine, region, customer=account)
    other = await register(system, theirs, region, customer=unique("ACC-"))
    await tariff(system, region, base_price="0.3100")
    session = await as_role(browser, system, Role.CUSTOMER, customer=account)
    page = session.page
    await expect(page.locator("h1")).to_have_text("My meters")
    await expect(page.locator("table.meter-table tbody tr")).to_have_count(1)
    await expect(page.locator("table.meter-table tbody")).to_contain_text(mine)
    # another customer's meter, even by its address, is not found
    await page.goto(f"{system.base}/console#/meters/{other}")
    await expect(page.locator("h1")).to_have_text("Meter not found")
    # the tariff of their region, live, without the staff-only price history
    await page.get_by_role("link", name="My tariff").click()
    await expect(page.locator(f"#tariff-{region}")).to_contain_text("0.3100 EUR/kWh")
    await expect(page.get_by_text("Price history")).to_have_count(0)
    await expect(page.locator(".state.error")).to_have_count(0)
    session.assert_clean()
    await session.close()


async def test_the_credential_lives_in_the_tab_only_and_sign_out_forgets_it(
    browser: Browser, system: RunningSystem
) -> None:
    session = await as_role(browser, system, Role.VIEWER)
    page = session.page
    token = system.token(Role.VIEWER)
    stored = await page.evaluate("Object.keys(window.sessionStorage)")
    assert stored == ["hes.console.credential"]
    assert await page.evaluate("Object.keys(window.localStorage)") in ([], ["hes.console.theme"])
    await page.reload()  # same tab: still signed in
    await expect(page.locator("header.top")).to_be_visible()
    # a new tab of another browser session starts signed out
    other = await open_console(browser, system)
    await expect(other.page.get_by_label("Token or API key")).to_be_visible()
    await other.close()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("Token or API key")).to_be_visible()
    assert await page.evaluate("window.sessionStorage.length") == 0
    assert token not in await page.content()
    session.assert_clean()
    await session.close()


async def test_bad_credentials_and_role_less_keys_are_refused_with_the_reason(
    browser: Browser, system: RunningSystem
) -> None:
    session = await open_console(browser, system)
    page = session.page
    await screenshot(page, "signin")
    await page.fill("#credential", "not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("token")
    await page.fill("#credential", system.ingest_token())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("no role the console can use")
    assert await page.evaluate("window.sessionStorage.length") == 0
    # the refused calls are answers (401/403 handled), not script errors
    session.problems = [p for p in session.problems if "401" not in p and "403" not in p]
    session.assert_clean()
    await session.close()


async def test_an_api_key_signs_in_with_the_roles_it_carries(
    browser: Browser, system: RunningSystem
) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=system.base) as client:
        made = await client.post(
            "/api/v1/api-keys",
            json={"name": unique("console-key-"), "scopes": [], "roles": ["viewer"]},
            headers={"Authorization": f"Bearer {system.token(Role.ADMIN)}"},
        )
    assert made.status_code == 201, made.text
    session = await sign_in(browser, system, made.json()["key"])
    assert await nav_names(session.page) == EXPECTED_PAGES[Role.VIEWER]
    await expect(session.page.locator(".who .subject")).to_contain_text("apikey:")
    session.assert_clean()
    await session.close()
