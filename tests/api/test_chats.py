"""Chat sessions (/chats), on SQLite and PostgreSQL: sessions, instructions and turns with their messages and
errors, a streamed turn, a turn's messages as one decision on the log — and a conversation through the seeded
``chat_chain`` against the fake Ollama: the commands, the knowledge search finding an uploaded file, the safety
refusal, a streamed answer, and ``models`` routing the model step. With security on: a caller lists its own
chats and reads any.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from chainloom.commands.local_hooks import HELP_TEXT
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import bearer, identity_settings, register
from tests.api.test_chat_chains import DOCUMENT, QUESTION, UNSAFE, _models, models_answer
from tests.api.test_files import create
from tests.api.test_index_search import index, lease
from tests.conftest import make_settings
from tests.fakes.llm import FakeOllama
from tests.integration.serve_process import log_events


@pytest.fixture
def settings(settings):
    """Reconcile often, so the fake's models are routable within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


async def _chat(client: Any) -> str:
    status, body = await call(client, "POST", "/chats")
    assert status == 201 and set(body) == {"id"}, body
    return body["id"]


async def _say(client: Any, chat_id: str, message: str, **extra: Any) -> tuple[int, Any]:
    return await call(client, "POST", f"/chats/{chat_id}/chat", {"message": message, **extra})


async def _streamed(client: Any, chat_id: str, body: dict, headers: dict | None = None) -> tuple[str, list[tuple[str, Any]]]:
    """(content type, the (event, decoded data) frames) of a streamed turn."""
    async with client.post(f"/chats/{chat_id}/chat", json=body, headers=headers or {}) as response:
        assert response.status == 200
        raw = (await response.read()).decode()
    frames = []
    for frame in filter(None, raw.split("\n\n")):
        event, data = frame.split("\n")
        frames.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return response.content_type, frames


def _prompts(fake: FakeOllama) -> int:
    """How many prompts and chats the fake was asked."""
    return sum(1 for _, path, _ in fake.requests if path in ("/api/generate", "/api/chat"))


def _steps(answer: dict) -> list[str]:
    return [unit["taskID"] for unit in answer["state"]]


async def test_sessions_and_a_conversation_through_the_chat_chain(client, settings):
    """One service for both parts (the suite's time budget)."""
    await _sessions_instructions_and_turns_with_their_messages_and_errors(client, settings)
    await _a_conversation_through_the_chat_chain(client, settings)


async def _sessions_instructions_and_turns_with_their_messages_and_errors(client: Any, settings: Any) -> None:
    first = await _chat(client)
    status, body = await call(client, "POST", "/chats", {"subject": "ignored", "unknown": 1})
    assert status == 201
    second = body["id"]
    status, chats = await call(client, "GET", "/chats")
    assert status == 200 and [c["id"] for c in chats] == [second, first]  # the caller's, newest first
    assert all(c["backendId"] == "" and c["startedAt"].endswith("Z") for c in chats)
    assert await call(client, "GET", "/chats/nobody-started-this") == (200, [])
    for path, request, expected, fragment in [
        ("/chats", "[1]", 422, "JSON object"),
        ("/chats/nowhere/chat", {"message": "hi"}, 409, "chat nowhere does not exist"),
        (f"/chats/{first}/chat", {"message": ""}, 422, "message is required"),
        (f"/chats/{first}/chat", {"message": 5}, 422, "message"),
        ("/chats/nowhere/instruction", {"instruction": "Be brief."}, 409, "chat nowhere does not exist"),
        (f"/chats/{first}/instruction", {}, 422, "instruction is required"),
    ]:
        assert_error(*await call(client, "POST", path, request), expected, fragment)

    assert await call(client, "POST", f"/chats/{first}/instruction", {"instruction": "Be brief."}) == (
        200, {"resp": "instruction added"}
    )  # fmt: skip
    # The seeded chat_chain answers a command without a model: no tokens.
    status, answer = await _say(client, first, "/echo Hello, echo!")
    assert status == 200, answer
    assert (answer["response"], answer["inputTokenCount"], answer["outputTokenCount"]) == ("Hello, echo!", 0, 0)
    assert _steps(answer) == ["commands", "echo"] and set(answer["state"][0]) >= {"taskHandler", "duration", "error"}
    # Streamed (asked by Accept): nothing streams in a command, so the one frame is the answer.
    content_type, frames = await _streamed(client, first, {"message": "/help"}, {"Accept": "text/event-stream"})
    assert content_type == "text/event-stream"
    assert [(event, data["response"]) for event, data in frames] == [("reply", HELP_TEXT)]

    status, history = await call(client, "GET", f"/chats/{first}")
    assert status == 200
    assert [(m["role"], m["content"], m["isUser"], m["isLatest"]) for m in history] == [
        ("system", "Be brief.", False, False), ("user", "/echo Hello, echo!", True, False),
        ("assistant", "Hello, echo!", False, False), ("user", "/help", True, False), ("assistant", HELP_TEXT, False, True),
    ]  # fmt: skip
    for message in history:  # the reference's ids: SHA-1 of chat id + content + role + the time in seconds
        seconds = message["sentAt"][:19] + "Z"
        expected = hashlib.sha1((first + message["content"] + message["role"] + seconds).encode()).hexdigest()
        assert message["id"] == expected
    assert await call(client, "GET", f"/chats/{second}") == (200, [])

    # A chat's history is its events; a turn's messages are written together, under the turn's request.
    events = [e for e in log_events(settings) if e["aggregate_type"] == "chat" and e["aggregate_id"] == first]
    assert [e["event_type"] for e in events] == ["chat.started"] + ["chat.message_added"] * 5
    assert events[1]["data"] == {"messageId": history[0]["id"], "role": "system", "content": "Be brief.",
                                 "sentAt": history[0]["sentAt"]}
    turns = [e["metadata"]["request_id"] for e in events[2:]]
    assert turns[0] == turns[1] != turns[2] == turns[3]


async def test_the_caller_lists_its_own_chats_and_reads_any(tmp_path, service_for):
    settings = identity_settings(make_settings("sqlite", tmp_path, security_enabled=True, reconciler=False, api_token="key"))
    async with service_for(settings) as client:
        admin = bearer((await register(client, "admin@admin.com"))["token"])
        key = {"X-API-Key": "key"}
        (status, mine), (status_theirs, theirs) = [await call(client, "POST", "/chats", headers=h) for h in (admin, key)]
        assert status == status_theirs == 201
        assert await call(client, "POST", f"/chats/{theirs['id']}/instruction", {"instruction": "Hi."}, headers=key) == (
            200, {"resp": "instruction added"}
        )  # fmt: skip
        for caller, chat in ((admin, mine), (key, theirs)):
            status, chats = await call(client, "GET", "/chats", headers=caller)
            assert status == 200 and [c["id"] for c in chats] == [chat["id"]]
        status, history = await call(client, "GET", f"/chats/{theirs['id']}", headers=admin)  # no ownership check
        assert [m["content"] for m in history] == ["Hi."]
        assert (await call(client, "GET", "/chats"))[0] == 401


async def _a_conversation_through_the_chat_chain(client: Any, settings: Any) -> None:
    async with FakeOllama() as fake:
        fake.use_document_models()
        fake.answer = models_answer
        await _models(client, settings, fake)
        file = await create(client, DOCUMENT, "zebras.txt")
        job = await lease(client)
        assert job["entityId"] == file["id"]
        await index(client, job, [DOCUMENT.decode()])
        chat = await _chat(client)

        # The commands: answered by the built-in hooks, no model asked (but the search's embedding model).
        asked = _prompts(fake)
        status, answer = await _say(client, chat, "/help")
        assert (status, answer["response"], _prompts(fake)) == (200, HELP_TEXT, asked)
        status, answer = await _say(client, chat, "/search savanna zebras stripes colour black white")
        assert status == 200 and answer["response"].startswith('Documents found for "savanna zebras stripes colour black white":\n1. zebras.txt')

        # Rated unsafe: refused, and nothing of the turn recorded.
        assert_error(*await _say(client, chat, UNSAFE), 422, "request rejected: the message was rated unsafe (9/10)")
        # Needs the documents: the uploaded file's content goes to the chat model as search results.
        status, answer = await _say(client, chat, QUESTION)
        assert status == 200, answer
        assert answer["response"] == "hello" and answer["inputTokenCount"] > 0 and answer["outputTokenCount"] > 0
        assert _steps(answer) == ["commands", "message", "safety", "knowledge_need", "knowledge", "answer"]
        sent = next(body for _, path, body in reversed(fake.requests) if path == "/api/chat")
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user", "assistant", "user", "system"]
        assert sent["messages"][-1]["content"].endswith(DOCUMENT.decode())

        # Streamed: the model step's reply as it arrives, then the answer.
        content_type, frames = await _streamed(client, chat, {"message": "Hello there!", "stream": True})
        assert content_type == "text/event-stream"
        assert frames[0] == ("piece", {"content": "hello"}) and frames[-1][0] == "reply"
        assert frames[-1][1]["response"] == "hello" and frames[-1][1]["outputTokenCount"] > 0
        # `models` routes the model step: a model no backend holds fails the turn (and records nothing).
        status, answer = await _say(client, chat, "Hello again!", models=["nobody-has-this:1b"], provider="ollama")
        assert status in (422, 503) and "nobody-has-this:1b" in answer["error"]["message"], answer

        status, history = await call(client, "GET", f"/chats/{chat}")
        assert [(m["role"], m["content"][:17]) for m in history] == [
            ("user", "/help"), ("assistant", HELP_TEXT[:17]), ("user", "/search savanna z"), ("assistant", "Documents found f"),
            ("user", QUESTION[:17]), ("system", "Search results fr"), ("assistant", "hello"),
            ("user", "Hello there!"), ("assistant", "hello"),
        ]  # fmt: skip
        assert [m["isLatest"] for m in history].index(True) == len(history) - 1
