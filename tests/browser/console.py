"""Driving the console in Debian's Chromium: launch rules, signing in, accessibility scans,
screenshots, and the page errors every test checks for."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page

from commands.context import Role
from tests.browser.system import RunningSystem

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
SERIOUS = {"serious", "critical"}
# Generous: these tests check behaviour, not speed, and CI machines may be busy.
ACTION_TIMEOUT_MS = 45_000
BOOT_TIMEOUT_MS = 60_000
EXPECT_TIMEOUT_MS = 15_000


def chromium_path() -> str | None:
    """``HES_TEST_CHROMIUM``, else Debian's /usr/bin/chromium, else ``chromium`` on PATH."""
    for candidate in (os.environ.get("HES_TEST_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def browser_required() -> bool:
    """On CI (``CI`` set) or with ``HES_TEST_BROWSER=required``, a missing browser fails."""
    return bool(os.environ.get("CI")) or os.environ.get("HES_TEST_BROWSER") == "required"


def screenshot_dir() -> Path | None:
    """Where screenshots go: ``HES_TEST_SCREENSHOT_DIR`` (``make screenshots``: docs/console)."""
    value = os.environ.get("HES_TEST_SCREENSHOT_DIR", "").strip()
    return (ROOT / value) if value else None


@dataclass
class Session:
    """A signed-in browser tab and what went wrong in it (checked at the end of each test)."""

    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)

    async def close(self) -> None:
        """Close the tab's context."""
        await self.context.close()

    def assert_clean(self) -> None:
        """No script error, refused resource or failed request happened in the tab."""
        assert self.problems == [], self.problems


async def open_console(
    browser: Browser,
    system: RunningSystem,
    *,
    theme: str = "light",
    viewport: dict[str, int] | None = None,
) -> Session:
    """A new tab (own storage) on the console's sign-in page."""
    context = await browser.new_context(
        viewport=viewport or DESKTOP,  # type: ignore[arg-type]
        color_scheme=theme,  # type: ignore[arg-type]
        timezone_id="Europe/Amsterdam",
        locale="en-GB",
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = await context.new_page()
    session = Session(context, page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            session.problems.append(f"console error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: session.problems.append(f"page error: {error}"))

    def on_failed(request: Any) -> None:
        # ERR_ABORTED: the tab navigated away while a request was in flight (not a fault)
        if not request.url.startswith("ws") and "ERR_ABORTED" not in (request.failure or ""):
            session.problems.append(f"request failed: {request.url} {request.failure}")

    page.on("requestfailed", on_failed)
    await page.goto(f"{system.base}/console")
    try:  # the console booted: its sign-in form or (with a kept credential) its header
        await page.locator("#credential, header.top").first.wait_for(timeout=BOOT_TIMEOUT_MS)
    except Exception as exc:
        html = await page.content()
        raise AssertionError(f"console did not start: {session.problems}\n{html[:2000]}") from exc
    return session


async def sign_in(
    browser: Browser,
    system: RunningSystem,
    credential: str,
    *,
    theme: str = "light",
    viewport: dict[str, int] | None = None,
) -> Session:
    """A tab signed in with ``credential`` (token or API key), navigation shown."""
    session = await open_console(browser, system, theme=theme, viewport=viewport)
    await session.page.fill("#credential", credential)
    await session.page.get_by_role("button", name="Sign in").click()
    await session.page.locator("header.top").wait_for()
    await session.page.locator("main h1").wait_for()  # the landing page is shown
    return session


async def as_role(
    browser: Browser,
    system: RunningSystem,
    role: Role,
    *,
    customer: str | None = None,
    subject: str | None = None,
    theme: str = "light",
    viewport: dict[str, int] | None = None,
) -> Session:
    """A tab signed in with a token of ``role``."""
    token = system.token(role, subject=subject, customer=customer)
    return await sign_in(browser, system, token, theme=theme, viewport=viewport)


async def nav_names(page: Page) -> list[str]:
    """The pages the navigation offers, in order."""
    return [t.strip() for t in await page.locator("nav#nav a").all_inner_texts()]


async def axe_violations(page: Page, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the page as it is now."""
    await page.evaluate(AXE.read_text(encoding="utf-8"))  # devtools evaluation: not subject to CSP
    result: dict[str, Any] = await page.evaluate(
        """async (exclude) => {
            const context = exclude.length ? { exclude: exclude.map((s) => [s]) } : document;
            return await axe.run(context, { resultTypes: ["violations"] });
        }""",
        exclude or [],
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


async def screenshot(page: Page, name: str, *, at: str | None = None) -> Path | None:
    """Save a PNG of the viewport as ``<HES_TEST_SCREENSHOT_DIR>/<name>.png`` when that is set:
    from the top of the page, or with the element ``at`` just below the header."""
    folder = screenshot_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.evaluate(
        """(at) => {
            const el = at && document.querySelector(at);
            const header = document.querySelector("header.top");
            const offset = header ? header.getBoundingClientRect().height + 8 : 0;
            window.scrollTo(0, el ? el.getBoundingClientRect().top + window.scrollY - offset : 0);
        }""",
        at,
    )
    await page.mouse.move(0, 0)  # no hover state in the picture
    await page.screenshot(path=str(path), animations="disabled", caret="hide")
    return path
