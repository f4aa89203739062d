"""The OpenAI-compatible chat endpoints (/openai/{chainID}/v1/chat/completions, /v1/chat/completions), on SQLite
and PostgreSQL: stored chains run on a fake Ollama the reconciler observes (as in test_execute.py), answered
plain and streamed, and the official ``openai`` SDK end to end.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.api.helpers import assert_error, call, create_backend, create_group, declare_model
from tests.fakes.llm import FakeOllama

MODEL = "chatter:1b"  # declared with canChat and canStream (the seeded default chat model cannot stream)
HI = [{"role": "user", "content": "Say hello"}]
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "The weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def settings(settings):
    """Reconcile often, so a grouped backend shows in /state within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


def _next(goto: str) -> dict:
    return {"branches": [{"operator": "default", "goto": goto}]}


def chat_chain(chain_id: str = "chat", after: dict | None = None) -> dict:
    """model_execution (the client's tools passed on) → convert_to_openai_chat_response, or → ``after``."""
    tasks = [
        {"id": "answer", "handler": "model_execution", "system_instruction": "Be brief.",
         "execute_config": {"model": MODEL, "providers": ["ollama"], "pass_clients_tools": True},
         "transition": _next(after["id"] if after else "reply")},
        after or {"id": "reply", "handler": "convert_to_openai_chat_response", "transition": _next("end")},
    ]
    return {"id": chain_id, "tasks": tasks}


async def _store(client, chain: dict) -> None:
    status, body = await call(client, "POST", "/taskchains", chain)
    assert status == 201, body


async def _events(client, path: str, body: dict) -> tuple[int, str, list]:
    """(status, content type, the SSE data values in order: JSON decoded, "[DONE]" as is)."""
    async with client.post(path, json=body) as response:
        raw = (await response.read()).decode()
        if not response.content_type.startswith("text/event-stream"):
            return response.status, response.content_type, [json.loads(raw)]
        assert response.headers["Cache-Control"] == "no-cache"
        frames = [frame for frame in raw.split("\n\n") if frame]
        assert all(frame.startswith("data: ") for frame in frames), raw
        data = [frame[6:] for frame in frames]
        return response.status, response.content_type, [d if d == "[DONE]" else json.loads(d) for d in data]


def _last_chat(fake: FakeOllama) -> dict:
    """The body of the fake's last chat call (the reconciler's looks come in between)."""
    return next(body for _, path, body in reversed(fake.requests) if path == "/api/chat")


async def _chat_backend(client, fake: FakeOllama, *, default_chat_model: str = "") -> None:
    """The fake in a group serving MODEL (and in the internal chat group, for the default chat model), observed."""
    fake.add_model(MODEL)
    await declare_model(client, MODEL, context=4096, canChat=True, canStream=True)
    group = await create_group(client, "chat-group")
    await call(client, "POST", f"/model-affinity/{group['id']}/models/{MODEL}")
    backend = await create_backend(client, "ollama-chat", fake.url)
    await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    wanted = {MODEL}
    if default_chat_model:
        fake.add_model(default_chat_model)
        await call(client, "POST", f"/backend-affinity/internal_chat_group/backends/{backend['id']}")
        wanted.add(default_chat_model)
    for _ in range(300):
        status, states = await call(client, "GET", "/state")
        state = next((s for s in states if s["id"] == backend["id"]), {})
        # Held and known to chat (the default chat model's capabilities come with the seeded catalog).
        if state and not state.get("error") and wanted <= {p["name"] for p in state["pulledModels"] if p.get("canChat")}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/state never showed the fake holding {wanted}: {state}")


async def test_bad_requests_missing_chains_failures_and_unusable_results(client):
    path = "/openai/nowhere/v1/chat/completions"
    status, body = await call(client, "POST", path, {"model": "m", "messages": HI})
    assert_error(status, body, 404, "failed to load task chain 'nowhere': failed to get task chain: libdb: not found")
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    for request, fragment in [({"messages": parts}, "messages.0.content"), ({}, "messages"),
                              ({"messages": HI, "temperature": "hot"}, "temperature"), ("{nope", "invalid JSON")]:
        status, body = await call(client, "POST", path, request)
        assert_error(status, body, 422, fragment)
    # no LLM needed: a chain that fails, and one whose result is no chat completion
    await _store(client, {"id": "refuse", "tasks": [
        {"id": "no", "handler": "raise_error", "prompt_template": "not today", "transition": _next("end")}]})
    await _store(client, {"id": "echo", "tasks": [{"id": "same", "handler": "noop", "transition": _next("end")}]})
    expected = "chain execution failed: task no failed after 0 retries: task no: not today"
    request = {"messages": HI, "unknown": {"ignored": True}}
    status, body = await call(client, "POST", "/openai/refuse/v1/chat/completions", request)
    assert_error(status, body, 422, expected)
    # streaming: a failure before the first chunk is an ordinary JSON error
    status, content_type, (body,) = await _events(client, "/openai/refuse/v1/chat/completions", {**request, "stream": True})
    assert content_type == "application/json"
    assert_error(status, body, 422, expected)
    status, body = await call(client, "POST", "/openai/echo/v1/chat/completions", request)
    assert_error(status, body, 422, "invalid result type from chain: openai_chat")


async def test_completions_plain_with_tools_with_the_stack_trace_and_streamed(client, settings):
    async with FakeOllama() as fake:
        fake.reply = ["Hel", "lo", " there"]
        await _chat_backend(client, fake, default_chat_model=settings.chat_model)
        await _store(client, chat_chain())
        path = "/openai/chat/v1/chat/completions"

        status, answer = await call(client, "POST", path, {"model": "my-model", "messages": HI})
        assert status == 200, answer
        assert answer["id"].startswith("chatcmpl-") and answer["object"] == "chat.completion"
        assert answer["model"] == "my-model"  # the request's, whatever model served it
        assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                                      "finish_reason": "stop"}]
        usage = answer["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert "stackTrace" not in answer
        sent = _last_chat(fake)
        assert sent["model"] == MODEL and sent["messages"][0] == {"role": "system", "content": "Be brief."}

        status, answer = await call(client, "POST", path, {"model": "m", "messages": HI}, params={"stackTrace": "true"})
        assert status == 200, answer
        assert [(s["taskID"], s["taskHandler"]) for s in answer["stackTrace"]] == [
            ("answer", "model_execution"), ("reply", "convert_to_openai_chat_response")]

        # streamed: every piece of the model's stream is a chunk of its own, then the final chunk and [DONE]
        status, content_type, events = await _events(client, path, {"model": "m", "messages": HI, "stream": True,
                                                                    "stream_options": {"include_usage": True}})
        assert (status, content_type) == (200, "text/event-stream")
        *chunks, usage_chunk, done = events
        assert done == "[DONE]"
        assert {(c["id"], c["object"], c["model"]) for c in chunks} == {(chunks[0]["id"], "chat.completion.chunk", "m")}
        assert [c["choices"][0]["delta"] for c in chunks] == [
            {"role": "assistant", "content": "Hel"}, {"content": "lo"}, {"content": " there"}, {}]
        assert [c["choices"][0].get("finish_reason") for c in chunks] == [None, None, None, "stop"]
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0

        # the client's tools reach the model; its tool calls come back (plain, and streamed as one delta)
        fake.tool_calls = [{"name": "weather", "arguments": {"city": "Paris"}}]
        request = {"model": "m", "messages": HI, "tools": TOOLS}
        status, answer = await call(client, "POST", path, request)
        assert status == 200, answer
        assert _last_chat(fake)["tools"] == TOOLS
        (choice,) = answer["choices"]
        assert choice["finish_reason"] == "tool_calls" and "content" not in choice["message"]
        (tool_call,) = choice["message"]["tool_calls"]
        assert tool_call["function"]["name"] == "weather"
        assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
        assert answer["usage"]["completion_tokens"] > 0  # estimated from the call
        status, _, events = await _events(client, path, {**request, "stream": True})
        assert status == 200 and events[-1] == "[DONE]"
        deltas = [e["choices"][0]["delta"] for e in events[:-1]]
        (streamed_call,) = deltas[0]["tool_calls"]
        assert streamed_call["id"].startswith("call_")  # Ollama gives none: the engine names each call
        assert deltas == [{"role": "assistant", "tool_calls": [{**tool_call, "index": 0, "id": streamed_call["id"]}]}, {}]
        assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
        fake.tool_calls = None

        # a failure after the first chunk: a last error event, no [DONE]
        failing = {"id": "fail", "handler": "raise_error", "prompt_template": "too late", "transition": _next("end")}
        await _store(client, chat_chain("late", after=failing))
        status, _, events = await _events(client, "/openai/late/v1/chat/completions", {"messages": HI, "stream": True})
        assert status == 200
        assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["Hel", "lo", " there"]
        assert events[-1]["error"]["message"] == "chain execution failed: task fail failed after 0 retries: task fail: too late"
        assert events[-1]["error"]["code"] == "unprocessable_entity"

        # /v1/chat/completions: the built-in chain on the request's model …
        status, answer = await call(client, "POST", "/v1/chat/completions", {"model": MODEL, "messages": HI})
        assert status == 200, answer
        assert answer["model"] == MODEL and answer["choices"][0]["message"]["content"] == "Hello there"
        # … or on the default chat model, which is not declared to stream: its reply comes as one chunk
        status, _, events = await _events(client, "/v1/chat/completions", {"messages": HI, "stream": True})
        assert status == 200, events
        assert _last_chat(fake)["model"] == settings.chat_model
        assert [e["choices"][0]["delta"] for e in events[:-1]] == [{"role": "assistant", "content": "Hello there"}, {}]
        assert events[-1] == "[DONE]"


async def test_the_openai_sdk_end_to_end(client):
    async with FakeOllama() as fake:
        fake.reply = ["Bon", "jour"]
        await _chat_backend(client, fake)
        await _store(client, chat_chain())
        sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/openai/chat/v1")), api_key="any", max_retries=0)
        async with sdk:
            answer = await sdk.chat.completions.create(model=MODEL, messages=HI)
            assert answer.choices[0].message.content == "Bonjour"
            assert answer.choices[0].finish_reason == "stop" and answer.usage is not None
            assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens > 0
            stream = await sdk.chat.completions.create(model=MODEL, messages=HI, stream=True)
            pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
            assert pieces == ["Bon", "jour", None]
            # a turn after a client-side tool call, as the SDK sends it
            call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
            turn = [*HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
            answer = await sdk.chat.completions.create(model=MODEL, messages=turn, tools=TOOLS)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == "Bonjour"
            assert _last_chat(fake)["messages"][-1]["content"] == "sunny"
            with pytest.raises(openai.NotFoundError, match="failed to load task chain 'gone'"):
                await sdk.with_options(base_url=str(client.make_url("/openai/gone/v1"))).chat.completions.create(
                    model=MODEL, messages=HI)
        built_in = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="any", max_retries=0)
        async with built_in:
            answer = await built_in.chat.completions.create(model=MODEL, messages=HI)
            assert answer.choices[0].message.content == "Bonjour"


async def test_the_default_chat_chain_is_the_configured_one(service_for, settings):
    async with service_for(settings.model_copy(update={"default_chat_chain": "mine"})) as client:
        status, body = await call(client, "POST", "/v1/chat/completions", {"messages": HI})
        assert_error(status, body, 404, "failed to load task chain 'mine'")
        await _store(client, {"id": "mine", "tasks": [{"id": "same", "handler": "noop", "transition": _next("end")}]})
        status, body = await call(client, "POST", "/v1/chat/completions", {"messages": HI})
        assert_error(status, body, 422, "invalid result type from chain: openai_chat")
