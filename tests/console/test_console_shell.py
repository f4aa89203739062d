"""The console's shell: served by ``chainloom serve``, signing in and out with security on, open with it off."""

from __future__ import annotations

from playwright.async_api import Page

from tests.api.helpers import call
from tests.api.identity_helpers import FAST_HASHES, JWT_SECRET
from tests.console.conftest import OpenConsole


async def refused_then_signed_in(page: Page, field: str, wrong: str, right: str) -> None:
    """The sign-in form refuses ``wrong`` in ``field`` with its message, then takes ``right`` to the first view."""
    await page.wait_for_selector("form#sign-in")
    for value in (wrong, right):
        await page.fill(f"input[name={field}]", value)
        await page.click("form#sign-in button[type=submit]")
        if value == wrong:
            await page.wait_for_selector("#sign-in-error:not(:empty)")
    await page.wait_for_selector("main[data-view='backends']")


async def test_sign_in_and_out_with_security_on(console: OpenConsole) -> None:
    shown = await console(security_enabled=True, jwt_secret=JWT_SECRET, **FAST_HASHES)
    status, _ = await call(shown.api, "POST", "/register", {"email": "admin@admin.com", "password": "s3cret-pw"})
    assert status == 201
    page = shown.page
    await shown.open()  # asks for a sign-in before any view
    await page.fill("input[name=email]", "admin@admin.com")
    await refused_then_signed_in(page, "password", "wrong", "s3cret-pw")
    assert await page.text_content("#user") == "admin@admin.com"
    cookies = await page.context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "auth_token"] == [True]  # not readable by scripts
    assert "s3cret-pw" not in await page.content()

    await page.reload()  # the cookie keeps the session
    await page.wait_for_selector("main[data-view='backends']")
    await shown.screenshot("sign-in-done")
    await page.click("#sign-out")
    await page.wait_for_selector("form#sign-in")
    assert not [c for c in await page.context.cookies() if c["name"] == "auth_token" and c["value"]]
    await page.reload()
    await page.wait_for_selector("form#sign-in")


async def test_open_without_security_and_the_api_key_asked_when_set(console: OpenConsole) -> None:
    shown = await console()
    await shown.open("backends")
    assert await shown.page.text_content("#who") == "security off"
    keyed = await console(api_token="the-service-key")
    await keyed.open()
    await refused_then_signed_in(keyed.page, "key", "not-the-key", "the-service-key")
    assert "the-service-key" not in await keyed.page.content()
