"""Each page's main action against the running system, as its users do it in the browser."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Browser, FilePayload, Locator, expect

from adapters.dlms.simulator import SimulatedFleet
from commands.context import Role
from domain.alert import Severity
from tests.browser.console import as_role, screenshot
from tests.browser.data import (
    dlms_meter,
    open_customer,
    raise_alert,
    readings,
    register,
    tariff,
    unique,
)
from tests.browser.system import RunningSystem

pytestmark = pytest.mark.browser
LIVE = 20_000  # ms: a live update (subscription or the 5 s dashboard tick) arrives well before


async def test_dashboard_shows_the_fleet_and_follows_it_live(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("DASH")
    meter_serial = unique("DB")
    await register(system, meter_serial, region)
    await register(system, unique("DB"), region)  # never reports
    assert await readings(system, meter_serial, hours=1) > 0
    await tariff(system, region)
    session = await as_role(browser, system, Role.VIEWER)
    page = session.page
    await expect(page.locator(".dashboard[data-first-data=yes]")).to_be_visible()
    row = page.locator("table.regions tbody tr", has_text=region)
    # snapshots are shared for 2 s: the region shows at once or at the next 5 s push
    await expect(row).to_contain_text("EUR/kWh", timeout=LIVE)
    await expect(row).to_contain_text("meters")
    await expect(page.locator(".live-dot.live")).to_be_visible()
    critical = page.locator(".stat", has_text="critical")
    before = int(re.sub(r"\D", "", await critical.locator(".stat-value").inner_text()))
    await raise_alert(system, region, severity=Severity.CRITICAL)
    # pushed without a reload: the new-alerts feed and the open count
    await expect(page.locator("#dash-feed li", has_text=region)).to_be_visible(timeout=LIVE)
    await expect(critical.locator(".stat-value")).to_have_text(
        re.compile(rf"^{before + 1}\s*open"), timeout=LIVE
    )
    # times in the reader's zone, UTC on hover
    as_of = page.locator(".page-head time").first
    assert (await as_of.get_attribute("title") or "").endswith("UTC")
    await screenshot(page, "dashboard")
    session.assert_clean()
    await session.close()


async def test_a_registered_meter_appears_in_the_list(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("REG")
    serial = unique("NEW")
    session = await as_role(browser, system, Role.OPERATOR, subject="olga")
    page = session.page
    await page.get_by_role("link", name="Meters").click()
    await page.get_by_role("button", name="Register meter").click()
    dialog = page.get_by_role("dialog", name="Register a meter")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Serial number").fill(serial)
    await dialog.get_by_label("Manufacturer").fill("Iskraemeco")
    await dialog.get_by_label("Model").fill("AM550")
    await dialog.get_by_label("Firmware").fill("2.1.4")
    await dialog.get_by_label("Region").fill(region)
    await dialog.get_by_label("Area").fill("Zone A")
    await dialog.get_by_label("Host or IP address").fill("not a host!")
    await dialog.get_by_role("button", name="Register meter").click()
    # the server's field rule, shown at its field
    await expect(dialog.locator(".field.invalid")).to_contain_text("host")
    await dialog.get_by_label("Host or IP address").fill("127.0.0.9")
    await dialog.get_by_role("button", name="Register meter").click()
    await expect(dialog).to_be_hidden()
    table = page.locator("table.meter-table")
    await expect(table.locator("tbody tr", has_text=serial)).to_contain_text("registered")
    await expect(page.locator(".state.notice")).to_contain_text(f"Meter {serial} registered")
    # the region search finds it too, and it opens
    await page.goto(f"{system.base}/console#/meters?region={region}")
    await expect(table.locator("tbody tr")).to_have_count(1)
    await table.get_by_role("link", name=serial).click()
    await expect(page.locator("h1")).to_have_text(f"Meter {serial}")
    await expect(page.locator("#meter-facts")).to_contain_text("127.0.0.9:4059")
    await page.goto(f"{system.base}/console#/meters")
    await screenshot(page, "meters")
    session.assert_clean()
    await session.close()


async def test_meter_page_values_chart_and_a_confirmed_disconnect(
    browser: Browser, system: RunningSystem, dlms_meters: SimulatedFleet
) -> None:
    region = unique("DL")
    meter = await dlms_meter(system, dlms_meters, 0, region)
    admin = system.token(Role.ADMIN)
    serial = (
        await system.gql(admin, "query($id: ID!) { meter(id: $id) { serial } }", {"id": meter})
    )["meter"]["serial"]
    assert await readings(system, serial, hours=24) > 0
    session = await as_role(browser, system, Role.OPERATOR, subject="otto")
    page = session.page
    await page.goto(f"{system.base}/console#/meters/{meter}")
    await expect(page.locator("h1")).to_have_text(f"Meter {serial}")
    latest = page.locator("#meter-latest table")

    def quantity(name: str) -> Locator:
        return latest.locator("tr").filter(has=page.get_by_role("rowheader", name=name, exact=True))

    await expect(quantity("Voltage L1")).to_contain_text(" V")
    await expect(quantity("Energy import")).to_contain_text("kWh")
    chart = page.locator("#consumption-chart")
    await expect(chart.locator("canvas")).to_have_count(1)
    await expect(chart.locator("figcaption")).to_contain_text("Energy imported per 15 minutes")
    await page.get_by_role("button", name="7 days").click()
    await expect(chart.locator("figcaption")).to_contain_text("per 30 minutes")
    await expect(page.locator("#meter-dlms")).to_contain_text("not read back yet")

    await page.get_by_role("button", name="Disconnect…").click()
    dialog = page.get_by_role("dialog", name="Disconnect the supply?")
    await expect(dialog).to_contain_text(serial)
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    rows = page.locator("table.commands tbody tr")
    await expect(rows).to_have_count(0)  # cancelled: nothing sent
    await page.get_by_role("button", name="Disconnect…").click()
    await dialog.get_by_role("button", name="Disconnect").click()
    command = rows.filter(has_text="disconnect")
    await expect(command).to_have_count(1)
    await expect(command).to_have_attribute("data-status", "CONFIRMED", timeout=30_000)
    await expect(command).to_contain_text("relay disconnected")
    await expect(command).to_contain_text("otto")
    relay = page.locator("#meter-dlms [data-relay]")
    await expect(relay).to_have_attribute("data-relay", "false", timeout=LIVE)
    await expect(relay).to_contain_text("disconnected")
    assert dlms_meters.meter(0).state.relay_connected is False
    await screenshot(page, "meter", at="#meter-consumption")

    await page.get_by_role("button", name="Reconnect…").click()
    await (
        page.get_by_role("dialog", name="Reconnect the supply?")
        .get_by_role("button", name="Reconnect")
        .click()
    )
    await expect(rows.filter(has_text="reconnect")).to_have_attribute(
        "data-status", "CONFIRMED", timeout=30_000
    )
    await expect(relay).to_have_attribute("data-relay", "true", timeout=LIVE)
    session.assert_clean()
    await session.close()


async def test_alert_inbox_shows_arrivals_and_changes_live(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("AL")
    first = await raise_alert(system, region, severity=Severity.MEDIUM)
    inbox = f"{system.base}/console#/alerts?region={region}"
    olga = await as_role(browser, system, Role.OPERATOR, subject="olga")
    otto = await as_role(browser, system, Role.OPERATOR, subject="otto")
    for session in (olga, otto):
        await session.page.goto(inbox)
        await expect(session.page.locator(".alert-row")).to_have_count(1)
        await expect(session.page.locator(".live-dot.live")).to_be_visible()
    second = await raise_alert(system, region, severity=Severity.CRITICAL)
    for session in (olga, otto):  # arrives in both inboxes without a reload
        await expect(session.page.locator(f"#alert-{second}")).to_be_visible(timeout=LIVE)
    row = olga.page.locator(f"#alert-{first}")
    await row.get_by_role("button", name="Acknowledge").click()
    await expect(row).to_have_attribute("data-status", "ACKNOWLEDGED")
    # the other operator's inbox follows
    await expect(otto.page.locator(f"#alert-{first}")).to_have_attribute(
        "data-status", "ACKNOWLEDGED", timeout=LIVE
    )
    await otto.page.locator(f"#alert-{first}").get_by_role("button", name="Details").click()
    await expect(otto.page.locator(f"#alert-{first}")).to_contain_text("by olga")
    await screenshot(olga.page, "alerts")
    row2 = olga.page.locator(f"#alert-{second}")
    await row2.get_by_role("button", name="Resolve…").click()
    dialog = olga.page.get_by_role("dialog", name="Resolve alert")
    resolve = dialog.get_by_role("button", name="Resolve")
    await expect(resolve).to_be_disabled()  # a note is required
    await dialog.get_by_label("Resolution note (required)").fill("load shed by switching feeder 4")
    await resolve.click()
    await expect(row2).to_have_attribute("data-status", "RESOLVED")
    await expect(otto.page.locator(f"#alert-{second}")).to_have_attribute(
        "data-status", "RESOLVED", timeout=LIVE
    )
    # a viewer reads the inbox but is offered no action
    viewer = await as_role(browser, system, Role.VIEWER)
    await viewer.page.goto(inbox)
    await expect(viewer.page.locator(".alert-row")).to_have_count(1)  # the acknowledged one
    await expect(viewer.page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    await expect(viewer.page.get_by_role("button", name="Resolve…")).to_have_count(0)
    for session in (olga, otto, viewer):
        session.assert_clean()
        await session.close()


async def test_tariff_page_shows_prices_and_an_admin_override(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("TA")
    await tariff(system, region, base_price="0.2000")
    session = await as_role(browser, system, Role.ADMIN, subject="ada")
    page = session.page
    await page.goto(f"{system.base}/console#/tariffs?region={region}")
    row = page.locator("#tariff-regions tbody tr", has_text=region)
    await expect(row).to_contain_text("0.2000 EUR/kWh")
    panel = page.locator("#tariff-region")
    await expect(panel.locator("h2")).to_have_text(f"Tariff of {region}")
    await panel.get_by_label("Price (EUR/kWh)").fill("0.3500")
    await panel.get_by_label("Reason").fill("storm: peak shaving")
    await panel.get_by_role("button", name="Apply override").click()
    await expect(row).to_contain_text("0.3500 EUR/kWh", timeout=LIVE)
    await expect(panel).to_contain_text("Override 0.3500 EUR/kWh by ada")
    await expect(panel.locator("#tariff-chart canvas")).to_have_count(1, timeout=LIVE)
    await screenshot(page, "tariffs")
    # a viewer sees the prices, not the form
    viewer = await as_role(browser, system, Role.VIEWER)
    await viewer.page.goto(f"{system.base}/console#/tariffs?region={region}")
    await expect(viewer.page.locator("#tariff-region")).to_contain_text("0.3500")
    await expect(viewer.page.get_by_role("button", name="Apply override")).to_have_count(0)
    for s in (session, viewer):
        s.assert_clean()
        await s.close()


async def test_import_downloads_the_template_and_reports_every_row(
    browser: Browser, system: RunningSystem
) -> None:
    region = unique("IM")
    good = [unique("IMP"), unique("IMP")]
    header = (
        "meterNumber,concentratorId,meterType,brand,model,firmware,ipAddress,port,area,customer,"
        "simCard"
    )
    row = "{},DC-1,{} smart meter,Iskraemeco,AM550,2.1.4,{},{},Zone A,{},"
    lines = [
        header,
        row.format(good[0], "Single-phase", "127.0.0.21", 4059, ""),
        row.format(good[1], "Three-phase", "127.0.0.22", 4059, "ACC-I1"),
        row.format("BAD ROW", "Single-phase", "127.0.0.23", 99999, ""),
    ]
    await open_customer(system, "ACC-I1", region)
    session = await as_role(browser, system, Role.OPERATOR)
    page = session.page
    await page.goto(f"{system.base}/console#/imports")
    template = page.get_by_role("link", name="Download the meter template (CSV)")
    async with page.expect_download() as download_info:
        await template.click()
    download = await download_info.value
    assert (await download.path()).read_text().startswith("meterNumber,")
    csv: FilePayload = {
        "name": "meters.csv",
        "mimeType": "text/csv",
        "buffer": "\n".join(lines).encode(),
    }
    await page.get_by_label("CSV file").set_input_files(files=[csv])
    await page.get_by_label("Region for rows without one").fill(region)
    await page.get_by_role("button", name="Import").click()
    report = page.locator("#import-report")
    await expect(report).to_contain_text("meters.csv")

    def stat(name: str) -> Locator:
        label = page.locator(".stat-label", has_text=re.compile(f"^{name}$"))
        return report.locator(".stat").filter(has=label).locator(".stat-value")

    await expect(stat("Registered")).to_have_text("2 meters")
    await expect(stat("Rejected")).to_have_text("1 rows")
    await expect(stat("Rows")).to_have_text("3 rows")
    errors = report.locator("table.import-errors tbody tr")
    await expect(errors.first).to_contain_text("4")  # physical line of the bad row
    await expect(report.locator("table.import-errors")).to_contain_text("port")
    await screenshot(page, "imports", at="#import-upload")
    listed = await system.gql(
        system.token(Role.VIEWER),
        "query($r: String!) { meters(filter: {region: $r}) { edges { node { serial } } } }",
        {"r": region},
    )
    assert sorted(e["node"]["serial"] for e in listed["meters"]["edges"]) == sorted(good)
    session.assert_clean()
    await session.close()


async def test_audit_page_shows_the_last_verification_history_and_past_state(
    browser: Browser, system: RunningSystem
) -> None:
    serial = unique("AUD")
    meter = await register(system, serial, unique("AR"), customer=unique("ACC-"))
    system.hes("audit", "verify", timeout=120)
    session = await as_role(browser, system, Role.AUDITOR, subject="iris")
    page = session.page
    await page.get_by_role("link", name="Audit").click()
    verdict = page.locator("#audit-verify")
    await expect(verdict).to_contain_text("intact")
    await expect(verdict.locator("tbody tr", has_text="meters")).to_contain_text("events")
    await page.get_by_label("Meter serial, tariff region").fill(serial)
    await page.get_by_role("button", name="Show history").click()
    history = page.locator("#audit-history")
    await expect(history).to_contain_text("Registered")
    await expect(history).to_contain_text("CustomerAssigned")
    await expect(history).to_contain_text(meter)
    state = page.locator("#audit-state")
    await expect(state).to_contain_text(serial)
    await expect(state).to_contain_text("version 2")
    await screenshot(page, "audit")
    session.assert_clean()
    await session.close()


async def test_graphiql_and_the_openapi_viewer_load_nothing_from_outside(
    browser: Browser, system: RunningSystem
) -> None:
    session = await as_role(browser, system, Role.VIEWER)
    page = session.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{system.base}/graphql")
    await expect(page.locator(".graphiql-container")).to_be_visible()
    await page.goto(f"{system.base}/schema")
    await expect(page.locator(".swagger-ui")).to_be_visible()
    await expect(page.locator(".swagger-ui")).to_contain_text("HES")
    outside = [u for u in requested if not u.startswith((system.base, "data:", "blob:"))]
    assert outside == [] and len(requested) > 5, requested
    async with httpx.AsyncClient(base_url=system.base) as client:
        page_html = (await client.get("/console")).text
    assert "http" not in page_html.replace(system.base, ""), page_html
    session.assert_clean()
    await session.close()
