"""The console's browser tests: Debian's Chromium driven by Playwright against the real ``chainloom serve``.

Playwright's own browser download is not reachable here, so it launches ``/usr/bin/chromium`` (Debian's
``chromium`` package; ``scripts/test`` installs it). Without it these tests are skipped, unless
``CHAINLOOM_TEST_REQUIRE_BROWSER=1`` (set by ``scripts/test``), when they fail instead.

``console`` starts a service (SQLite, two worker processes, as ``chainloom serve`` runs by default on this
machine's two cores) and opens its ``/console`` in a fresh browser context; a test gets the page and an API
client of the same service to set things up or check what the page did. Every script error the page raises
fails the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from chainloom.infra.settings import Settings
from tests.conftest import make_settings
from tests.integration.serve_process import ServiceClient, start_client

CHROMIUM = Path(os.environ.get("CHAINLOOM_TEST_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("CHAINLOOM_TEST_REQUIRE_BROWSER") == "1"
# As root in a container, without a sandbox and without the calls home this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
# Where ``screenshot`` saves: the test's own directory, unless CHAINLOOM_TEST_SCREENSHOTS names one (the
# README's pictures: ``CHAINLOOM_TEST_SCREENSHOTS=docs/console scripts/test tests/console``).
SCREENSHOTS = os.environ.get("CHAINLOOM_TEST_SCREENSHOTS", "")
# How long a page may take to show what the service already did: a ceiling for a hung page, not a speed check
# (bench/bench_console.py measures; the full test run gives this pass the cores the others leave).
SHOWN_WITHIN_MS = 15000


@dataclass
class Console:
    page: Page
    api: ServiceClient  # the same service, for setting up and checking through the API
    base: str
    shots: Path
    settings: Settings  # the service's
    errors: list[str] = field(default_factory=list)

    async def open(self, view: str = "", query: str = "") -> None:
        """Go to ``/console#/<view>?<query>`` and wait until the view (or the sign-in it needs first) has rendered."""
        await self.page.goto(f"{self.base}/console#/{view}{'?' + query if query else ''}")
        await self.page.wait_for_selector(f"main[data-view='{view or 'backends'}'], main[data-view='sign-in']")

    async def screenshot(self, name: str) -> None:
        """Save the page as ``<name>.png`` (in ``docs/console`` the README shows them)."""
        self.shots.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=False)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (Debian's chromium package; scripts/test installs it)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


OpenConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
async def console(browser: Browser, tmp_path: Path) -> AsyncIterator[OpenConsole]:
    """``await console(**settings)``: a service on those settings (over SQLite in the test's directory) and
    its console in a new browser context (its own cookies), at 1280×800."""
    opened: list[Console] = []

    async def open_console(**overrides) -> Console:
        settings = make_settings("sqlite", tmp_path / f"data{len(opened)}", **overrides)
        client = await start_client(settings, workers=2, log_path=tmp_path / f"serve{len(opened)}.log")
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(SHOWN_WITHIN_MS)
        shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "shots"
        shown = Console(page, client, client.service.base, shots, settings)
        page.on("pageerror", lambda error: shown.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: shown.errors.append(f"console {message.type}: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None,
        )
        opened.append(shown)
        return shown

    try:
        yield open_console
    finally:
        for shown in opened:
            await shown.page.context.close()
            await shown.api.close()
    for shown in opened:
        assert not shown.errors, shown.errors
