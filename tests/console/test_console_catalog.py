"""The console's catalog and status views in a real browser: Backends, Groups and Status.

A backend created in the console pointing at a FakeOllama, put into a group with two declared models (one
the server holds, one it must pull): its observed state arrives in the Backends view without a reload, the
missing model's download shows live, and it ends pulled; then the group's assignments are removed and the
backend deleted, all by clicking. The Status view lists the projections with their lag, and a projection
faulted by a poison event (put into the log through the store, as in tests/integration/test_projection_faults.py)
shows its fault with Retry and Skip; a skip asks first, and moves it on.
"""

from __future__ import annotations

import asyncio
import time

from playwright.async_api import Dialog, Page

from tests.api.helpers import call
from tests.console.conftest import Console, OpenConsole
from tests.fakes.llm import FakeOllama
from tests.integration.test_projection_faults import inject_poison


def answer_dialogs(page: Page, accept: list[bool]) -> list[str]:
    """Answer each confirm() with the next of ``accept`` (True when it runs out); the messages asked."""
    asked: list[str] = []

    async def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if accept.pop(0) if accept else True:
            await dialog.accept()
        else:
            await dialog.dismiss()

    page.on("dialog", answer)
    return asked


async def snapshot(shown: Console, name: str) -> None:
    """The view's screenshot from its top, without the notes of what the test just clicked."""
    await shown.page.evaluate("document.getElementById('toasts').replaceChildren(); window.scrollTo(0, 0)")
    await shown.screenshot(name)


async def eventually(check, timeout: float = 10.0):
    """Poll ``check`` (async) until it returns something truthy (for API-side conditions, not the page's)."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
    return result


async def test_a_backend_created_grouped_and_removed_in_the_console(console: OpenConsole) -> None:
    async with FakeOllama() as ollama:
        ollama.add_model("llama3")
        ollama.pullable["phi3"] = 4_000_000_000
        ollama.pull_steps = 6
        ollama.pull_step_delay = 0.4  # a pull of a few seconds: its progress is seen on the way
        # A finished pull shows at the reconciler's next periodic look (not at once): look every second here.
        shown = await console(reconcile_interval=1.0)
        page = shown.page
        asked = answer_dialogs(page, [])

        # Backends: create one; it is in no group, so never contacted yet.
        await shown.open("backends")
        await page.wait_for_selector("#backends-list .empty")
        await page.fill("#backend-name", "local")
        await page.fill("#backend-url", ollama.url)
        await page.select_option("#backend-type", "ollama")
        await page.click("#backend-create")
        row = "#backends-table tr[data-name='local']"
        await page.wait_for_selector(f"{row} td.state >> text=in no group")
        assert await page.input_value("#backend-name") == ""
        status, backends = await call(shown.api, "GET", "/backends")
        assert status == 200
        assert [(b["name"], b["baseUrl"], b["type"]) for b in backends] == [("local", ollama.url, "ollama")]
        backend_id = backends[0]["id"]

        # Groups: create one, declare two models, assign the backend and both models.
        await shown.open("groups")
        await page.fill("#group-name", "team")
        await page.fill("#group-purpose", "chat")
        await page.click("#group-create")
        card = "section.group[data-name='team']"
        await page.wait_for_selector(card)
        for model in ("llama3", "phi3"):
            await page.fill("#model-name", model)
            await page.click("#model-declare")
            await page.wait_for_selector(f"#models-list tr[data-key='{model}']")
        await page.select_option(f"{card} [data-testid=backend-choice]", backend_id)
        await page.click(f"{card} [data-testid=assign-backend]")
        await page.wait_for_selector(f"{card} tr[data-key='{backend_id}']")
        for model in ("llama3", "phi3"):
            await page.select_option(f"{card} [data-testid=model-choice]", model)
            await page.click(f"{card} [data-testid=assign-model]")
            await page.wait_for_selector(f"{card} tr[data-key='{model}']")
        status, group = await call(shown.api, "GET", "/group-by-name/team")
        assert status == 200 and group["purposeType"] == "chat"
        group_id = group["id"]
        _, members = await call(shown.api, "GET", f"/backend-affinity/{group_id}/backends")
        assert [b["id"] for b in members] == [backend_id]
        await snapshot(shown, "groups")

        # Backends again: the reconciler's look arrives without a reload — llama3 held, phi3 pulled live.
        await shown.open("backends")
        await page.wait_for_selector(f"{row} td.state >> text=up")
        await page.wait_for_selector(f"{row} li[data-model='llama3'] .badge.ok")
        await page.wait_for_selector(f"{row} li[data-model='phi3'] progress")  # its download, live
        await page.wait_for_selector("#downloads-table tr[data-kind='pulling']")
        assert await page.text_content("#progress-stream") == "progress: live"
        await snapshot(shown, "backends")
        await page.wait_for_selector(f"{row} li[data-model='phi3'] .badge.ok", timeout=10_000)
        assert "phi3" in ollama.models
        await page.wait_for_selector("#downloads .empty")  # nothing left running or queued

        # The server starts failing; removing a model from the group makes the reconciler look at once.
        ollama.fail_with = 500
        await shown.open("groups")
        await page.click(f"{card} tr[data-key='phi3'] [data-testid=remove-model]")
        await page.wait_for_selector(f"{card} tr[data-key='phi3']", state="detached")
        await shown.open("backends")
        await page.wait_for_selector(f"{row} td.state .badge.bad")
        assert "500" in await page.text_content(f"{row} .backend-error")
        await page.wait_for_selector(f"{row} li[data-model='llama3'] .badge >> text=unknown")  # not seen, not missing
        ollama.fail_with = None

        # Groups: remove the backend from the group; then delete the group.
        await shown.open("groups")
        await page.click(f"{card} tr[data-key='{backend_id}'] [data-testid=remove-backend]")
        await page.wait_for_selector(f"{card} tr[data-key='{backend_id}']", state="detached")
        _, members = await call(shown.api, "GET", f"/backend-affinity/{group_id}/backends")
        _, models = await call(shown.api, "GET", f"/model-affinity/{group_id}/models")
        assert members == [] and [m["model"] for m in models] == ["llama3"]
        await page.click(f"{card} [data-testid=delete-group]")
        await page.wait_for_selector(card, state="detached")
        assert (await call(shown.api, "GET", "/group-by-name/team"))[0] == 404

        # Backends: in no group again; delete it (asked first).
        await shown.open("backends")
        await page.wait_for_selector(f"{row} td.state >> text=in no group")
        await page.click(f"{row} [data-testid=delete-backend]")
        await page.wait_for_selector("#backends-list .empty")
        assert (await call(shown.api, "GET", "/backends")) == (200, [])
        assert len(asked) == 2 and "team" in asked[0] and "local" in asked[1]


async def test_status_lists_projections_and_a_fault_is_skipped(console: OpenConsole) -> None:
    shown = await console()
    page = shown.page
    accept = [False, True]  # the first skip is called off at the question, the second goes ahead
    asked = answer_dialogs(page, accept)
    await shown.open("status")
    await page.wait_for_selector("#readiness .badge.ok")
    await page.wait_for_selector("#projections tr[data-key='catalog'] [data-testid=lag]")
    _, answer = await call(shown.api, "GET", "/projections")
    names = [p["name"] for p in answer["projections"]]
    assert await page.eval_on_selector_all("#projections tbody tr", "rows => rows.map(r => r.dataset.key)") == names
    assert "Not configured" in await page.text_content("#relay-state")

    # A poison event (through the store, as a bug could write it) stops the catalog projection.
    nid = await asyncio.to_thread(inject_poison, shown.settings)
    catalog = "#projections tr[data-key='catalog']"
    await page.wait_for_selector(f"{catalog} .fault >> text=group.created at {nid}")
    await page.wait_for_selector(f"{catalog} [data-testid=retry]")
    await page.wait_for_selector("#readiness .badge.bad")
    assert await page.text_content(f"{catalog} [data-testid=lag]") != "0"
    assert await page.locator("#projections [data-testid=skip]").count() == 1  # only the faulted one
    await snapshot(shown, "status")

    async def faulted():
        _, body = await call(shown.api, "GET", "/projections")
        return next(p for p in body["projections"] if p["name"] == "catalog")["fault"]

    await page.click(f"{catalog} [data-testid=retry]")  # the event fails again: faulted anew
    await page.wait_for_selector(".toast.ok >> text=catalog: retrying")
    await eventually(faulted)
    await page.click(f"{catalog} [data-testid=skip]")  # dismissed at the question: nothing done
    await page.click(f"{catalog} [data-testid=skip]")
    await page.wait_for_selector(".toast.ok >> text=catalog: event skipped")
    # Had the dismissed one gone ahead, this one would have found nothing to skip (409, an error note).
    assert await page.locator(".toast.error").count() == 0
    await page.wait_for_selector(f"{catalog} .badge.ok >> text=following")
    await page.wait_for_selector("#readiness .badge.ok")
    assert len(asked) == 2 and "catalog" in asked[0]
    assert not await faulted()
    _, log = await call(shown.api, "GET", "/log?type=projection.event_skipped")
    assert [e["event_type"] for e in log["events"]] == ["projection.event_skipped"]
