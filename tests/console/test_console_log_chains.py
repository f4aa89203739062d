"""The console's log, chains and chat views in a real browser against ``chainloom serve``, with the fake Ollama
(tests/fakes/llm.py) as the task and chat model: the live tail (an event posted through the API appears,
newest first; opened in full; filtered by type; a request's activity), a chain drawn, run and its steps
watched, and a streamed chat turn in the playground. Screenshots ``log``, ``chains``, ``chat`` (docs/console/ when
CHAINLOOM_TEST_SCREENSHOTS=docs/console).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from chainloom.infra.settings import Settings
from tests.api.helpers import call
from tests.api.test_chat_chains import _models
from tests.console.conftest import Console, OpenConsole
from tests.fakes.llm import FakeOllama

# The models the service asks for (task, chat and embedding), as its default settings name them.
MODELS = SimpleNamespace(**{name: Settings.model_fields[name].default for name in ("task_model", "chat_model", "embed_model")})
REPLY = ["Bon", "jour", " Ada", "!"]  # streamed as these chunks; "Bonjour Ada!" when not streamed

GREETING = {
    "id": "greeting",
    "description": "Greets, then notes it was polite",
    "tasks": [
        {
            "id": "greet",
            "handler": "raw_string",
            "prompt_template": "Say hello to {{.input}}",
            "transition": {"branches": [{"operator": "contains", "when": "Bonjour", "goto": "polite"}, {"operator": "default", "goto": "end"}]},
        },
        {"id": "polite", "handler": "noop", "transition": {"branches": [{"operator": "default", "goto": "end"}]}},
    ],
}


async def _post(shown: Console, event_type: str) -> dict:
    body = {"event_type": event_type, "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o-1", "version": 1,
            "data": {"total": 42}}  # fmt: skip
    status, event = await call(shown.api, "POST", "/events", body)
    assert status == 201, event
    return event


async def _types(shown: Console) -> list[str]:
    return await shown.page.locator("#log-rows tr").evaluate_all("rows => rows.map(r => r.dataset.type)")


async def _ready(console: OpenConsole, fake: FakeOllama) -> Console:
    """A service whose task and chat models are the fake, routable."""
    shown = await console(reconcile_interval=0.1)
    fake.reply = REPLY
    await _models(shown.api, MODELS, fake)
    return shown


async def _streaming(shown: Console) -> None:
    """The seeded chat model declared able to stream (it is not by default: its reply would come as one piece),
    once the backend's state says so."""
    status, models = await call(shown.api, "GET", "/models")
    declared = next(m for m in models if m["model"] == MODELS.chat_model)
    body = {k: declared[k] for k in ("model", "contextLength", "canChat", "canEmbed", "canPrompt")} | {"canStream": True}
    assert (await call(shown.api, "PUT", f"/models/{declared['id']}", body))[0] == 200
    for _ in range(100):
        status, states = await call(shown.api, "GET", "/state")
        if any(p.get("canStream") for s in states for p in s.get("pulledModels") or [] if p["name"] == MODELS.chat_model):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the chat model never became able to stream: {states}")


async def test_the_live_log_and_a_chain_run_watched(console: OpenConsole) -> None:
    async with FakeOllama() as fake:
        shown = await _ready(console, fake)
        page = shown.page
        assert (await call(shown.api, "POST", "/taskchains", GREETING))[0] == 201

        # The tail: live, newest first, an event opened in full.
        await shown.open("log")
        await page.wait_for_selector("#log-status.ok")
        placed = await _post(shown, "order.placed")
        await page.wait_for_selector(f"#log-rows tr[data-key='{placed['nid']}']")
        invoiced = await _post(shown, "invoice.sent")
        await page.wait_for_selector(f"#log-rows tr[data-key='{invoiced['nid']}']")
        assert (await _types(shown))[:2] == ["invoice.sent", "order.placed"]
        await page.click(f"#log-rows tr[data-key='{placed['nid']}']")
        shown_event = json.loads(await page.text_content("#log-event pre.json") or "")
        assert (shown_event["id"], shown_event["nid"], shown_event["data"]) == (placed["id"], placed["nid"], {"total": 42})

        # Filtered by type (a prefix): the invoice, between two orders on the log, is not shown.
        await page.fill("#log-type", "order.")
        await page.click("#log-apply")
        shipped = await _post(shown, "order.shipped")
        await page.wait_for_selector(f"#log-rows tr[data-key='{shipped['nid']}']")
        types = await _types(shown)
        assert "order.placed" in types and all(t.startswith("order.") for t in types), types
        assert "type=order." in page.url
        # Paused and resumed: the tail goes on from the last event it showed (Last-Event-ID).
        await page.click("#log-pause")
        await page.wait_for_selector("#log-status.warn")
        cancelled = await _post(shown, "order.cancelled")
        await page.click("#log-pause")
        await page.wait_for_selector(f"#log-rows tr[data-key='{cancelled['nid']}']")
        assert (await _types(shown))[:2] == ["order.cancelled", "order.shipped"]
        keys = await page.locator("#log-rows tr").evaluate_all("rows => rows.map(r => r.dataset.key)")
        assert len(keys) == len(set(keys)), keys  # resumed, not replayed: no event twice

        # A chain: drawn (a box per task, an arrow per branch labelled with its condition), run, steps watched.
        await shown.open("chains", "id=greeting")
        await page.wait_for_selector("#chains-list tr[data-key='greeting']")
        assert await page.locator("#chain-graph g.task").evaluate_all("g => g.map(n => n.dataset.task)") == ["greet", "polite"]
        arrows = await page.locator("#chain-graph path.edge").evaluate_all("p => p.map(e => [e.dataset.from, e.dataset.to])")
        assert sorted(arrows) == [["greet", "end"], ["greet", "polite"], ["polite", "end"]]
        assert "contains Bonjour" in await page.locator("#chain-graph .edge-label").all_text_contents()
        await page.fill("#chain-input", "Ada")
        await page.click("#chain-run")
        await page.wait_for_selector("#chain-steps")
        steps = await page.locator("#chain-steps tbody tr").evaluate_all("rows => rows.map(r => r.cells[1].textContent)")
        assert steps == ["greet", "polite"]
        assert json.loads(await page.text_content("#chain-result pre.json") or "") == "Bonjour Ada!"
        await page.wait_for_selector("#chain-live-steps li[data-task='polite']")  # from the log's task-run events
        assert await page.locator("#chain-graph g.task.visited").count() == 2
        await shown.screenshot("chains")

        # The run's events in the log, and its request's activity: the run and its steps.
        await page.click("#chain-run-log")
        await page.wait_for_selector("#log-rows tr[data-type='task_run.started']")
        await page.click("#log-rows tr[data-type='task_run.started']")
        await page.click("#log-request")
        await page.wait_for_selector("#log-request-activity")
        activity = await page.text_content("#log-request-activity") or ""
        assert "run" in activity and "task_chain" in activity and "Chain steps" in activity and "polite" in activity

        # The picture: the whole tail, the run's start opened with its request's activity.
        await shown.open("log")
        await page.click("#log-rows tr[data-type='task_run.started']")
        await page.click("#log-request")
        await page.wait_for_selector("#log-request-activity")
        await shown.screenshot("log")


async def test_a_streamed_chat_turn_in_the_playground(console: OpenConsole) -> None:
    async with FakeOllama() as fake:
        shown = await _ready(console, fake)
        page = shown.page
        await _streaming(shown)
        # The chain's safety and knowledge ratings get a number (low: no objection, no search); the chat step
        # the streamed reply.
        fake.answer = lambda prompt: "1" if "Rate from 0 to 10" in prompt else None
        await shown.open("chat")
        assert await page.input_value("#chat-chain") == "chat_chain"
        await page.click("#chat-new")
        await page.wait_for_selector("#chat-message:not([disabled])")
        chat_id = page.url.rsplit("chat=", 1)[1]
        await page.fill("#chat-message", "Hello there!")
        await page.press("#chat-message", "Enter")
        await page.wait_for_selector("#chat-steps")  # the reply frame came: the turn's steps
        await page.wait_for_selector(".chat-message.assistant:not(.pending)")
        bubbles: Any = await page.locator("#chat-history .chat-message").evaluate_all(
            "nodes => nodes.map(n => [n.dataset.role, n.querySelector('.chat-text').textContent])"
        )
        assert bubbles[-2:] == [["user", "Hello there!"], ["assistant", "Bonjour Ada!"]]
        assert (await page.text_content("#chat-usage") or "").startswith(f"streamed in {len(REPLY)} pieces")
        status, history = await call(shown.api, "GET", f"/chats/{chat_id}")
        assert status == 200 and [(m["role"], m["content"]) for m in history][-2:] == [("user", "Hello there!"), ("assistant", "Bonjour Ada!")]
        await shown.screenshot("chat")
