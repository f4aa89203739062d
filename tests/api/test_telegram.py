"""/telegram-frontends and the bot runtime on SQLite and PostgreSQL, through real HTTP, against a fake Bot API
(tests/fakes/telegram.py) and a fake LLM: CRUD with every message of the notes (§11), the token sealed (never in
an event in clear) and masked on every read, status/heartbeat/lastError kept, and conversations answered
exactly once — across a restart in the middle of a batch — with failed replies retried a bounded number of times.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.infra.singleton import singleton_lock
from tests.api.helpers import assert_error, call
from tests.fakes.llm import FakeOllama
from tests.fakes.telegram import FakeTelegram

TOKEN_1 = "123456:AAH-first-bot-token_secret"
TOKEN_2 = "654321:AAH-second-bot-token_secret"
TOKEN_3 = "777777:AAH-third-bot-token_secret"
MASK = "***-***"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def settings(keyed_settings: Settings, telegram: FakeTelegram) -> Settings:
    return keyed_settings.model_copy(
        update={
            "telegram_api_base": telegram.url,
            "telegram_poll_interval": 0.05,
            "job_max_failures": 2,
            "reconcile_interval": 0.1,
        }
    )


async def eventually(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what}: still {value!r}"
        await asyncio.sleep(0.02)


def all_events(settings: Settings) -> list[dict]:
    log = EventLog(settings.event_store_env())
    try:
        return log.read(0, 100_000)
    finally:
        log.close()


async def frontend(client, frontend_id: str) -> dict:
    status, body = await call(client, "GET", f"/telegram-frontends/{frontend_id}")
    assert status == 200, body
    return body


async def crud_masking_and_status(client, telegram: FakeTelegram) -> None:
    """CRUD with every message of the notes, masking, and the status the runtime keeps (a bot Telegram refuses,
    one it knows); leaves two frontends polling."""
    path = "/telegram-frontends"
    assert_error(*await call(client, "POST", path, {"description": "no token"}), 422, "invalid Telegram frontend data: bot token is required")
    assert await call(client, "GET", path) == (200, [])

    status, first = await call(client, "POST", path, {"description": "first", "botToken": TOKEN_1, "lastOffset": 5})
    assert status == 201, first
    assert first["botToken"] == TOKEN_1  # the answer echoes what the caller sent; reads mask it
    assert (first["userId"], first["chatChain"], first["description"], first["lastOffset"]) == ("anonymous", "chat_chain", "first", 5)
    assert first["syncInterval"] == 0 and first["createdAt"] == first["updatedAt"]
    assert_error(*await call(client, "POST", path, {"botToken": TOKEN_1}), 409, "unique constraint violation")
    status, second = await call(client, "POST", path, {"botToken": TOKEN_2, "chatChain": "other_chain"})
    assert status == 201, second

    got = await frontend(client, first["id"])
    assert got["botToken"] == MASK and {k: v for k, v in got.items() if k not in ("botToken", "status", "lastError", "lastHeartbeat")} == {
        k: v for k, v in first.items() if k not in ("botToken", "status", "lastError", "lastHeartbeat")
    }
    status, listed = await call(client, "GET", path)
    assert status == 200 and [f["id"] for f in listed] == [second["id"], first["id"]]  # newest first
    assert {f["botToken"] for f in listed} == {MASK}
    status, mine = await call(client, "GET", f"{path}/users/anonymous")
    assert status == 200 and [f["id"] for f in mine] == [second["id"], first["id"]] and mine[0]["botToken"] == MASK
    assert await call(client, "GET", f"{path}/users/nobody") == (200, [])
    assert_error(*await call(client, "GET", f"{path}/no-such-id"), 404, "not found")

    # PUT: the whole entity, the path's id wins, omitted fields reset.
    entity = {"id": "ignored", "userId": "someone", "botToken": TOKEN_1, "lastOffset": 9, "status": "made up"}
    assert_error(*await call(client, "PUT", f"{path}/{first['id']}", {**entity, "userId": ""}), 422, "user ID is required")
    assert_error(*await call(client, "PUT", f"{path}/{first['id']}", {**entity, "botToken": ""}), 422, "bot token is required")
    assert_error(*await call(client, "PUT", f"{path}/no-such-id", entity), 404, "not found")
    assert_error(*await call(client, "PUT", f"{path}/{first['id']}", {**entity, "botToken": TOKEN_2}), 409, "unique constraint violation")
    status, updated = await call(client, "PUT", f"{path}/{first['id']}", entity)
    assert status == 200, updated
    assert (updated["id"], updated["userId"], updated["botToken"], updated["lastOffset"]) == (first["id"], "someone", TOKEN_1, 9)
    assert (updated["description"], updated["chatChain"]) == ("", "chat_chain") and updated["status"] != "made up"
    assert (await frontend(client, first["id"]))["botToken"] == MASK
    assert [f["id"] for f in (await call(client, "GET", f"{path}/users/someone"))[1]] == [first["id"]]

    # The runtime keeps status, heartbeat and error: a token Telegram refuses, and one it knows.
    failing = await eventually(lambda: frontend(client, second["id"]), lambda f: f["status"] == "error", "the refused bot's status")
    assert "401 Unauthorized" in failing["lastError"] and failing["lastHeartbeat"] is None
    telegram.add_bot(TOKEN_1)
    active = await eventually(lambda: frontend(client, first["id"]), lambda f: f["status"] == "active", "the known bot's status")
    assert active["lastHeartbeat"] is not None and active["lastOffset"] == 9

    assert await call(client, "DELETE", f"{path}/{second['id']}") == (200, "Telegram frontend deleted")
    assert_error(*await call(client, "DELETE", f"{path}/{second['id']}"), 404, "not found")
    assert_error(*await call(client, "GET", f"{path}/{second['id']}"), 404, "not found")
    status, again = await call(client, "POST", path, {"botToken": TOKEN_2})  # a deleted frontend's token is free
    assert status == 201, again


def _rating_or_echo(prompt: str) -> str:
    """The task model rates every message harmless and needing no documents; the chat model answers it back."""
    return "0" if "Rate from 0 to 10" in prompt else f"You said: {prompt}"


async def _serve_default_models(client, ollama: FakeOllama, model: str) -> None:
    """The fake in the internal chat and task groups (the seeded chat_chain's models), observed by the reconciler."""
    ollama.add_model(model)
    status, backend = await call(client, "POST", "/backends", {"name": "fake", "baseUrl": ollama.url, "type": "ollama"})
    assert status == 201, backend
    for group in ("internal_chat_group", "internal_tasks_group"):
        assert (await call(client, "POST", f"/backend-affinity/{group}/backends/{backend['id']}"))[0] in (200, 201)

    async def models() -> set[str]:
        states = (await call(client, "GET", "/state"))[1]
        return {m["name"] for s in states if s["id"] == backend["id"] for m in s["pulledModels"]}

    await eventually(models, lambda held: model in held, "the fake's models in /state")


async def _jobs(client, state: str) -> list[dict]:
    return [job for job in (await call(client, "GET", f"/jobs/{state}"))[1] if job["taskType"] == "telegram-message"]


async def test_frontends_and_conversations_answered_exactly_once_across_a_restart(service_for, settings, telegram):
    """One service polls but cannot answer (the test holds the worker's lock) and stops after the batch is
    recorded; the next, on the same store, answers every message exactly once, and retries a refused reply a
    bounded number of times."""
    telegram.add_bot(TOKEN_3)
    worker_lock = singleton_lock(settings, "telegram-worker")
    assert worker_lock.acquire()  # the first service polls, but cannot answer: it stops between the two
    async with FakeOllama() as ollama:
        ollama.answer = _rating_or_echo
        async with service_for(settings) as client:
            await crud_masking_and_status(client, telegram)
            await _serve_default_models(client, ollama, settings.chat_model)
            status, created = await call(client, "POST", "/telegram-frontends", {"botToken": TOKEN_3})
            assert status == 201, created
            first = [
                telegram.user_says(TOKEN_3, chat_id=7, user_id=42, text="hello there", username="alice"),
                telegram.user_says(TOKEN_3, chat_id=8, user_id=43, text="good morning"),
                telegram.other_update(TOKEN_3),
                telegram.user_says(TOKEN_3, chat_id=7, user_id=42, text="how are you"),
            ]
            polled = await eventually(
                lambda: frontend(client, created["id"]), lambda f: f["lastOffset"] == first[-1] + 1, "the batch recorded"
            )
            assert polled["status"] == "active" and polled["lastHeartbeat"]
            pending = await _jobs(client, "pending")
            assert len(pending) == 3 and telegram.sent == []
            envelope = json.loads(base64.b64decode(pending[-1]["payload"]))  # the oldest: the first message
            assert (envelope["Frontend"], envelope["ChainID"], envelope["UserID"], envelope["SubjectID"]) == (
                created["id"], "chat_chain", "42", "742"
            )
            assert "BotToken" not in envelope and envelope["Update"]["update_id"] == first[0]
        worker_lock.release()

        async with service_for(settings) as client:  # the same store: the recorded batch is answered once
            await eventually(lambda: asyncio.sleep(0, len(telegram.sent)), lambda n: n >= 3, "the batch's replies")
            telegram.user_says(TOKEN_3, chat_id=8, user_id=43, text="bye now")
            await eventually(lambda: asyncio.sleep(0, len(telegram.sent)), lambda n: n >= 4, "the last reply")
            polls = telegram.calls["getUpdates"]
            await eventually(lambda: asyncio.sleep(0, telegram.calls["getUpdates"]), lambda n: n >= polls + 3, "more polls")
            assert sorted((chat, text) for _, chat, text in telegram.sent) == [
                (7, "You said: hello there"), (7, "You said: how are you"),
                (8, "You said: bye now"), (8, "You said: good morning"),
            ]  # fmt: skip
            assert telegram.sent_to(7) == ["You said: hello there", "You said: how are you"]  # in order
            assert {token for token, _, _ in telegram.sent} == {TOKEN_3}
            await eventually(lambda: _jobs(client, "in-progress"), lambda jobs: jobs == [], "the last job done")
            assert await _jobs(client, "pending") == []
            status, user = await call(client, "GET", "/users/42")
            assert status == 200 and user["email"] == "42@telegram.contnox.com", user
            status, history = await call(client, "GET", "/chats/742")
            assert status == 200 and [m["content"] for m in history if m["role"] == "user"] == ["hello there", "how are you"]

            # A reply Telegram refuses: retried (the chain's answer sent again, not asked again), then parked.
            telegram.refused_chats.add(9)
            telegram.user_says(TOKEN_3, chat_id=9, user_id=44, text="anyone there")
            [parked] = await eventually(lambda: _jobs(client, "parked"), lambda jobs: len(jobs) == 1, "the parked job")
            assert parked["retryCount"] == settings.job_max_failures
            assert parked["lastError"] == "sendMessage: 400 Bad Request: chat not found"
            failed = await frontend(client, created["id"])
            assert failed["lastError"] == parked["lastError"] and failed["status"] == "active"
            asked = [
                body
                for _, path, body in ollama.requests
                if body and {"role": "user", "content": "anyone there"} in body.get("messages", [])
            ]
            assert len(asked) == 1 and telegram.sent_to(9) == []

    stored = json.dumps(all_events(settings))  # every token sealed on the log, digested in the index
    assert "telegram_frontend.created" in stored and "telegram_frontend.polled" in stored
    assert "telegram_reply.prepared" in stored and "job.enqueued" in stored
    assert not any(token in stored for token in (TOKEN_1, TOKEN_2, TOKEN_3, "AAH-"))
