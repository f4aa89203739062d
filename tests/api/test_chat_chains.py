"""The seeded chat chains (commands/chat_chains.py) and /chains, on SQLite and PostgreSQL — one service
start and one restart (the suite's time is short).

``chat_chain`` as stored is run through POST /tasks against the fake Ollama (tests/fakes/llm.py) acting
as the default task, chat and embedding models: each command, the safety refusal, and the knowledge
search finding an uploaded file indexed as a worker indexes it. Seeding: exactly the two chains in a
fresh system, editable, not seeded again over an edit but again once deleted — by two services starting
together on one store, once. /chains CRUD with the older platform's answers and errors.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from typing import Any

import pytest

from chainloom.commands.chat_chains import CHAT_CHAIN, OPENAI_CHAT_CHAIN, chat_chain, openai_chat_chain
from chainloom.commands.local_hooks import HELP_TEXT
from tests.api.helpers import assert_error, call
from tests.api.test_files import create
from tests.api.test_index_search import index, lease
from tests.conftest import TEST_SECRETS_KEY
from tests.fakes.llm import FakeOllama, document_answer
from tests.integration.serve_process import log_events

# The fake's embeddings are bags of words: the question (rewritten as its keywords) is near this document.
DOCUMENT = b"Savanna zebras: stripes colour black white."
QUESTION = "What colour are the stripes of savanna zebras, black or white?"
UNSAFE = "How do I poison my neighbour?"


@pytest.fixture
def settings(settings):
    """Reconcile often, so the fake's models are routable within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


def models_answer(prompt: str) -> str:
    """The task and chat model: the chain's ratings by what the message says, the search's prompts as the
    document models answer them, "hello" to a chat."""
    if prompt.startswith("Rate from 0 to 10 how unsafe"):
        return "9" if "poison" in prompt else "1"
    if prompt.startswith("Rate from 0 to 10 how much answering"):
        return "8" if "zebras" in prompt else "Two."
    return document_answer(prompt)


async def _models(client: Any, settings: Any, fake: FakeOllama) -> None:
    """The fake in the three internal groups (task, chat, embedding models), once /state shows them usable."""
    for name in {settings.task_model, settings.chat_model, settings.embed_model}:
        fake.add_model(name)
    status, backend = await call(client, "POST", "/backends", {"name": "fake", "baseUrl": fake.url, "type": "ollama"})
    assert status == 201, backend
    for group in ("internal_tasks_group", "internal_chat_group", "internal_embed_group"):
        assert (await call(client, "POST", f"/backend-affinity/{group}/backends/{backend['id']}"))[0] == 201
    for _ in range(200):
        status, states = await call(client, "GET", "/state")
        pulled = {p["name"]: p for s in states if s["id"] == backend["id"] for p in s.get("pulledModels") or []}
        task, chat, embed = (pulled.get(n) or {} for n in (settings.task_model, settings.chat_model, settings.embed_model))
        if task.get("canPrompt") and chat.get("canChat") and embed.get("canEmbed"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fake's models never became routable: {states}")


async def _say(client: Any, chain: dict, text: str) -> tuple[int, Any]:
    history = {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                            {"role": "user", "content": text}]}
    return await call(client, "POST", "/tasks", {"input": history, "inputType": "chat_history", "chain": chain})


def _steps(answer: dict) -> list[str]:
    return [unit["taskID"] for unit in answer["state"]]


async def _runs_of_the_chat_chain(client: Any, settings: Any) -> None:
    """Each command, the safety refusal, the knowledge search finding an uploaded and indexed file."""
    status, chain = await call(client, "GET", f"/chains/{CHAT_CHAIN}")
    assert status == 200 and chain == chat_chain().to_json()
    async with FakeOllama() as fake:
        fake.use_document_models()
        fake.answer = models_answer
        await _models(client, settings, fake)
        file = await create(client, DOCUMENT, "zebras.txt")
        job = await lease(client)
        assert job["entityId"] == file["id"]
        await index(client, job, [DOCUMENT.decode()])

        # Commands: answered by the built-in hooks, no model asked.
        asked = _model_calls(fake)
        for text, reply in [("/echo  Hello, echo!", "Hello, echo!"), ("/help", HELP_TEXT), ("/echo", "Usage: /echo <text>")]:
            status, answer = await _say(client, chain, text)
            assert status == 200, answer
            assert answer["outputType"] == "chat_history" and _steps(answer) == ["commands", text.split()[0][1:]]
            *before, last = answer["output"]["messages"]
            assert [m["content"] for m in before][-1] == text and (last["role"], last["content"]) == ("assistant", reply)
        assert all(c in HELP_TEXT for c in ("/echo", "/help", "/search"))
        assert _model_calls(fake) == asked
        status, answer = await _say(client, chain, "/search savanna zebras stripes colour black white")
        assert status == 200 and _steps(answer) == ["commands", "search_command"]
        found = answer["output"]["messages"][-1]["content"]
        assert re.fullmatch(r'Documents found for "savanna zebras stripes colour black white":\n1\. zebras\.txt \(distance 0\.\d+\)', found), found
        status, answer = await _say(client, chain, "/search sourdough bread")
        assert answer["output"]["messages"][-1]["content"] == 'No documents found for "sourdough bread".'

        # Rated unsafe: the run fails with the refusal.
        status, answer = await _say(client, chain, UNSAFE)
        assert_error(status, answer, 422, "task reject failed after 0 retries: task reject: request rejected: the message was rated unsafe (9/10)")

        # Needs the documents: the best file's content goes to the chat model as search results.
        status, answer = await _say(client, chain, QUESTION)
        assert status == 200, answer
        assert _steps(answer) == ["commands", "message", "safety", "knowledge_need", "knowledge", "answer"]
        history = answer["output"]
        assert [(m["role"], m.get("content", "")[:17]) for m in history["messages"]] == [
            ("system", "You are a helpful"), ("user", "Hi!"), ("assistant", "Hello."), ("user", QUESTION[:17]),
            ("system", "Search results fr"), ("assistant", "hello"),
        ]
        assert history["messages"][4]["content"].endswith("(document zebras.txt):\n\n" + DOCUMENT.decode())
        assert "/echo" in history["messages"][0]["content"] and "contenox" in history["messages"][0]["content"]
        sent = next(body for _, path, body in reversed(fake.requests) if path == "/api/chat")
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user", "system"]
        assert history["inputTokens"] > 0 and history["outputTokens"] > 0  # the model step's counts

        # Small talk: no search, and a rating that is no number is no objection.
        status, answer = await _say(client, chain, "Hello there, how are you?")
        assert status == 200, answer
        assert _steps(answer) == ["commands", "message", "safety", "knowledge_need", "context", "answer"]
        assert answer["state"][3]["error"]["error"].startswith("task knowledge_need: invalid number format")
        assert [m["role"] for m in answer["output"]["messages"]] == ["system", "user", "assistant", "user", "assistant"]

        # The other seeded chain: an OpenAI chat request on the request's model, answered as a chat completion.
        request = {"model": settings.chat_model, "messages": [{"role": "user", "content": "Hi!"}]}
        status, completion = await call(client, "POST", f"/openai/{OPENAI_CHAT_CHAIN}/v1/chat/completions", request)
        assert status == 200 and completion["choices"][0]["message"] == {"role": "assistant", "content": "hello"}, completion


def _chain_events(settings: Any) -> list[tuple[str, str]]:
    return [(e["aggregate_id"], e["event_type"]) for e in log_events(settings) if e["aggregate_type"] == "taskchain"]


async def _chains_served_under_chains(client: Any) -> None:
    """/chains with the older platform's answers: 400 for a chain without an id or tasks, the path's id wins."""
    mine = {"id": "mine", "tasks": [{"id": "only", "handler": "noop"}]}
    status, stored = await call(client, "POST", "/chains", mine)
    assert status == 201 and stored["tasks"][0]["transition"] == {"on_failure": "", "branches": None}
    assert await call(client, "GET", "/chains/mine") == (200, stored)
    status, replaced = await call(client, "PUT", "/chains/mine", {**mine, "id": "other", "description": "v2"})
    assert status == 200 and (replaced["id"], replaced["description"]) == ("mine", "v2")
    assert await call(client, "GET", "/taskchains/mine") == (200, replaced)  # one storage
    for method, path, body, expected, fragment in [
        ("POST", "/chains", {"tasks": mine["tasks"]}, 400, "invalid chain definition: chain ID is required"),
        ("POST", "/chains", {"id": "x", "tasks": []}, 400, "invalid chain definition: chain must have at least one task"),
        ("PUT", "/chains/mine", {"id": "mine"}, 400, "invalid chain definition: chain must have at least one task"),
        ("POST", "/chains", {"id": "x", "tasks": [{"id": "a", "handler": "llm"}]}, 422, "unknown handler 'llm'"),
        ("GET", "/chains/nowhere", None, 404, "not found"),
        ("PUT", "/chains/nowhere", mine, 404, "not found"),
        ("DELETE", "/chains/nowhere", None, 404, "not found"),
    ]:
        assert_error(*await call(client, method, path, body), expected, fragment)
    assert_error(*await call(client, "GET", "/chains", params={"limit": "0"}), 422, "limit must be positive")
    assert await call(client, "DELETE", "/chains/mine") == (200, {"status": "deleted"})
    assert_error(*await call(client, "DELETE", "/chains/mine"), 404, "not found")


async def test_the_seeded_chains_run_are_edited_and_seeded_once(service_for, settings):
    # (A secrets key given: two services in one process would race for the key file under one name.)
    settings = settings.model_copy(update={"secrets_key": TEST_SECRETS_KEY})
    async with service_for(settings) as client:
        status, chains = await call(client, "GET", "/chains")
        assert status == 200 and sorted(c["id"] for c in chains) == [CHAT_CHAIN, OPENAI_CHAT_CHAIN]  # exactly two
        await _runs_of_the_chat_chain(client, settings)
        await _chains_served_under_chains(client)
        edited = {**(await call(client, "GET", f"/chains/{CHAT_CHAIN}"))[1], "description": "mine"}
        assert (await call(client, "PUT", f"/chains/{CHAT_CHAIN}", edited))[0] == 200
        assert await call(client, "DELETE", f"/taskchains/{OPENAI_CHAT_CHAIN}") == (200, f"task chain {OPENAI_CHAT_CHAIN} deleted")

    # Two services starting together on the store: the edit stands, the deleted chain is stored again, once.
    async with AsyncExitStack() as services:
        clients = await asyncio.gather(*(services.enter_async_context(service_for(settings)) for _ in range(2)))
        for client in clients:
            status, chains = await call(client, "GET", "/chains")
            assert {c["id"]: c["description"] for c in chains} == {
                CHAT_CHAIN: "mine", OPENAI_CHAT_CHAIN: openai_chat_chain().description}
    assert [event for event in _chain_events(settings) if event[0] != "mine"] == [
        (OPENAI_CHAT_CHAIN, "taskchain.created"), (CHAT_CHAIN, "taskchain.created"), (CHAT_CHAIN, "taskchain.updated"),
        (OPENAI_CHAT_CHAIN, "taskchain.deleted"), (OPENAI_CHAT_CHAIN, "taskchain.recreated")]


def _model_calls(fake) -> int:
    """Requests that ask a model (the runtime's observer lists the models, /api/tags, on its own schedule)."""
    return sum(1 for method, _, _ in fake.requests if method == "POST")
