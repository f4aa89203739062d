"""The provider adapters (infra/providers) against the fake providers (tests/fakes/llm.py), over real HTTP.

Each adapter: list, chat (plain, streamed, with tool calls), prompt, embed, Ollama's pull and delete, and
the failures as the router sees them: unreachable, 5xx and too slow → ProviderUnavailable (fail over);
4xx, empty answers, bad finish reasons → ProviderRefused (``length`` → TokenLimit). No API key ever shows
in an error or a log line.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from chainloom.infra.providers import Clients, open_clients
from chainloom.infra.providers.base import (
    ChatOptions,
    Endpoint,
    Message,
    ProviderClient,
    ProviderRefused,
    ProviderUnavailable,
    TokenLimit,
    ToolCall,
    Unsupported,
)
from chainloom.infra.settings import Settings
from tests.fakes.llm import FakeGemini, FakeOllama, FakeOpenAI

HI = [Message("user", "hi there")]
TOOLS = ChatOptions(tools=[{"type": "function", "function": {"name": "weather", "description": "the weather",
                                                             "parameters": {"type": "object", "properties": {}}}}])
SECRET = "sk-secret-0123456789"


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    clients = open_clients(Settings(provider_connect_timeout=1, provider_timeout=0.5, provider_list_timeout=0.5))
    yield clients
    await clients.close()


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as fake:
        fake.add_model("phi3:3.8b", size=2000)
        yield fake


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
async def vllm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=None, models=["meta-llama/Llama-3-8B"]) as fake:
        yield fake


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key="g-test") as fake:
        yield fake


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Ollama


async def test_ollama_lists_what_it_holds(clients: Clients, ollama: FakeOllama):
    (model,) = await clients.client(Endpoint("ollama", ollama.url)).list_models()
    assert (model.name, model.model, model.size) == ("phi3:3.8b", "phi3:3.8b", 2000)
    assert model.digest and model.modified_at.startswith("2026-")
    assert model.details["parameterSize"] == "3.8B" and model.details["quantizationLevel"] == "Q4_0"
    assert model.details["families"] == ["llama"]


async def test_ollama_chat_prompt_embed(clients: Clients, ollama: FakeOllama):
    client = clients.client(Endpoint("ollama", ollama.url + "/"))
    ollama.reply = "hello"
    result = await client.chat("phi3:3.8b", [Message("system", "be brief"), *HI], ChatOptions(temperature=0.2, max_tokens=9))
    assert result.message == Message("assistant", "hello")
    assert result.finish_reason == "stop" and result.prompt_tokens == 4 and result.completion_tokens == 1
    method, path, body = ollama.requests[-1]
    assert (method, path) == ("POST", "/api/chat")
    assert body == {"model": "phi3:3.8b", "stream": False, "think": False,
                    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
                    "options": {"temperature": 0.2, "num_predict": 9}}

    assert await client.prompt("phi3:3.8b", "be brief", "say hi") == "hello"
    assert ollama.requests[-1][1:] == ("/api/generate", {"model": "phi3:3.8b", "prompt": "say hi", "system": "be brief",
                                                          "stream": False, "think": False})

    ollama.embedding = [0.5, 0.25]
    assert await client.embed("phi3:3.8b", "text") == [0.5, 0.25]
    assert ollama.requests[-1][1:] == ("/api/embeddings", {"model": "phi3:3.8b", "prompt": "text"})


async def test_ollama_streams_chat(clients: Clients, ollama: FakeOllama):
    ollama.reply = ["he", "", "llo", " you"]
    client = clients.client(Endpoint("ollama", ollama.url))
    assert await collect(client.chat_stream("phi3:3.8b", HI)) == ["he", "llo", " you"]
    assert ollama.requests[-1][2]["stream"] is True


async def test_ollama_tool_calls_come_back_as_json_text(clients: Clients, ollama: FakeOllama):
    ollama.tool_calls = [{"name": "weather", "arguments": {"city": "Paris", "days": 2}}]
    client = clients.client(Endpoint("ollama", ollama.url))
    result = await client.chat("phi3:3.8b", HI, TOOLS)
    (call,) = result.message.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == ("", "weather", {"city": "Paris", "days": 2})
    assert ollama.requests[-1][2]["tools"] == list(TOOLS.tools)
    # the call goes back in the history as Ollama takes it: arguments as an object
    history = [*HI, result.message, Message("tool", "sunny", tool_call_id="")]
    await client.chat("phi3:3.8b", history)
    sent = ollama.requests[-1][2]["messages"][1]
    assert sent["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Paris", "days": 2}}}]


async def test_ollama_pulls_with_progress_and_deletes(clients: Clients, ollama: FakeOllama):
    ollama.pullable["nomic-embed-text:latest"] = 900
    client = clients.client(Endpoint("ollama", ollama.url))
    progress = [p async for p in client.pull("nomic-embed-text:latest")]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    steps = [p for p in progress if p.digest]
    assert [p.completed for p in steps] == [300, 600, 900] and {p.total for p in steps} == {900}
    assert ollama.requests[-1][2] == {"model": "nomic-embed-text:latest", "name": "nomic-embed-text:latest", "stream": True}
    assert "nomic-embed-text:latest" in {m.name for m in await client.list_models()}

    await client.delete("nomic-embed-text:latest")
    assert ollama.requests[-1][:2] == ("DELETE", "/api/delete")
    assert "nomic-embed-text:latest" not in ollama.models
    with pytest.raises(ProviderRefused, match=r"not found \(404\)"):
        await client.delete("nomic-embed-text:latest")


async def test_ollama_pull_of_an_unknown_model_fails(clients: Clients, ollama: FakeOllama):
    client = clients.client(Endpoint("ollama", ollama.url))
    with pytest.raises(ProviderRefused, match="pull of 'nope:1b' failed: pull model manifest: file does not exist"):
        async for _ in client.pull("nope:1b"):
            pass


async def test_ollama_refusals(clients: Clients, ollama: FakeOllama):
    client = clients.client(Endpoint("ollama", ollama.url))
    with pytest.raises(ProviderRefused) as refused:
        await client.chat("llama3:8b", HI)
    assert str(refused.value) == f'ollama {ollama.url}: model "llama3:8b" not found, try pulling it first (404)'
    assert not isinstance(refused.value, TokenLimit)

    ollama.done_reason = "length"
    with pytest.raises(TokenLimit, match="token limit"):
        await client.chat("phi3:3.8b", HI)
    with pytest.raises(TokenLimit):
        await client.prompt("phi3:3.8b", "", "hi")
    ollama.reply = ["partial"]
    stream = client.chat_stream("phi3:3.8b", HI)
    assert await stream.__anext__() == "partial"
    with pytest.raises(TokenLimit):
        await stream.__anext__()

    ollama.done_reason = "load"
    with pytest.raises(ProviderRefused, match="done_reason load"):
        await client.chat("phi3:3.8b", HI)

    ollama.done_reason = "stop"
    ollama.reply = ""
    with pytest.raises(ProviderRefused, match="empty content"):
        await client.chat("phi3:3.8b", HI)
    with pytest.raises(ProviderRefused, match="empty content"):
        await collect(client.chat_stream("phi3:3.8b", HI))
    with pytest.raises(ProviderRefused, match="empty content"):
        await client.prompt("phi3:3.8b", "", "hi")


# -- OpenAI


async def test_openai_list_chat_prompt_embed(clients: Clients, openai: FakeOpenAI):
    client = clients.client(Endpoint("openai", openai.url, api_key="sk-test"))
    assert [m.name for m in await client.list_models()] == ["gpt-4o-mini", "text-embedding-3-small"]

    openai.reply = "hello"
    result = await client.chat("gpt-4o-mini", HI, ChatOptions(temperature=0.1, top_p=0.9, seed=7))
    assert result.message == Message("assistant", "hello") and result.finish_reason == "stop"
    assert result.prompt_tokens == 2 and result.completion_tokens == 1
    assert openai.requests[-1] == ("POST", "/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}],
        "temperature": 0.1, "top_p": 0.9, "seed": 7})

    assert await client.prompt("gpt-4o-mini", "be brief", "say hi") == "hello"
    assert openai.requests[-1][2]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}]
    assert "max_tokens" not in openai.requests[-1][2]

    assert await client.embed("text-embedding-3-small", "text") == [0.1, 0.2, 0.3]
    assert openai.requests[-1][1:] == ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "text",
                                                          "encoding_format": "float"})


async def test_openai_streams_and_calls_tools(clients: Clients, openai: FakeOpenAI):
    client = clients.client(Endpoint("openai", openai.url, api_key="sk-test"))
    openai.reply = ["Hel", "lo", "!"]
    assert await collect(client.chat_stream("gpt-4o-mini", HI)) == ["Hel", "lo", "!"]
    assert openai.requests[-1][2]["stream"] is True

    openai.tool_calls = [{"name": "weather", "arguments": {"city": "Paris"}}]
    result = await client.chat("gpt-4o-mini", HI, TOOLS)
    assert result.finish_reason == "tool_calls"
    assert result.message.tool_calls == (ToolCall("call_0", "weather", '{"city": "Paris"}'),)
    await client.chat("gpt-4o-mini", [*HI, result.message, Message("tool", "sunny", tool_call_id="call_0")])
    sent = openai.requests[-1][2]["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_0"}


async def test_openai_refusals(clients: Clients, openai: FakeOpenAI):
    client = clients.client(Endpoint("openai", openai.url, api_key="sk-test"))
    with pytest.raises(ProviderRefused, match=r"The model `gpt-9` does not exist.*\[invalid_request_error/model_not_found\] \(404\)"):
        await client.chat("gpt-9", HI)
    openai.finish_reason = "length"
    with pytest.raises(TokenLimit, match="finish_reason length"):
        await client.chat("gpt-4o-mini", HI)
    with pytest.raises(TokenLimit):
        await collect(client.chat_stream("gpt-4o-mini", HI))
    openai.finish_reason = "content_filter"
    with pytest.raises(ProviderRefused, match="content filtered"):
        await client.prompt("gpt-4o-mini", "", "hi")
    openai.finish_reason = "stop"
    openai.reply = ""
    with pytest.raises(ProviderRefused, match="empty content"):
        await client.chat("gpt-4o-mini", HI)


async def test_openai_rate_limit_and_server_errors_fail_over(clients: Clients, openai: FakeOpenAI):
    client = clients.client(Endpoint("openai", openai.url, api_key="sk-test"))
    for status in (500, 503, 429):
        openai.fail_with = status
        with pytest.raises(ProviderUnavailable, match=rf"fake failure \[.*\] \({status}\)"):
            await client.chat("gpt-4o-mini", HI)
    openai.fail_with = 500
    with pytest.raises(ProviderUnavailable):
        await collect(client.chat_stream("gpt-4o-mini", HI))
    with pytest.raises(ProviderUnavailable):
        await client.list_models()


async def test_a_wrong_key_is_refused_and_never_shown(clients: Clients, openai: FakeOpenAI, gemini: FakeGemini,
                                                      caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    errors: list[Exception] = []
    openai_client = clients.client(Endpoint("openai", openai.url, api_key=SECRET))
    gemini_client = clients.client(Endpoint("gemini", gemini.url, api_key=SECRET))
    for call in (
        lambda: openai_client.chat("gpt-4o-mini", HI),
        lambda: openai_client.list_models(),
        lambda: openai_client.embed("text-embedding-3-small", "x"),
        lambda: collect(openai_client.chat_stream("gpt-4o-mini", HI)),
        lambda: gemini_client.chat("gemini-1.5-flash", HI),
        lambda: gemini_client.list_models(),
        lambda: collect(gemini_client.chat_stream("gemini-1.5-flash", HI)),
    ):
        with pytest.raises(ProviderRefused) as refused:
            await call()
        errors.append(refused.value)
    assert "Incorrect API key provided: ***" in str(errors[0]) and "(401)" in str(errors[0])
    assert "API key not valid" in str(errors[4]) and "(400)" in str(errors[4])
    # unreachable, with the key set
    dead = clients.client(Endpoint("openai", f"http://127.0.0.1:{free_port()}/v1", api_key=SECRET))
    with pytest.raises(ProviderUnavailable) as unavailable:
        await dead.chat("gpt-4o-mini", HI)
    errors.append(unavailable.value)
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in repr(error.args)
        assert "Authorization" not in str(error) and "Bearer" not in str(error)
    assert SECRET not in repr(Endpoint("openai", openai.url, api_key=SECRET))
    assert caplog.records and SECRET not in caplog.text


# -- vLLM


async def test_vllm_is_openai_without_v1_key_or_embeddings(clients: Clients, vllm: FakeOpenAI):
    for base in (vllm.root, vllm.root + "/", vllm.url):  # /v1 is added unless given
        client = clients.client(Endpoint("vllm", base))
        (model,) = await client.list_models()
        assert model.name == "meta-llama/Llama-3-8B"
    assert await client.chat("meta-llama/Llama-3-8B", HI) == await client.chat("meta-llama/Llama-3-8B", HI)
    assert await client.prompt("meta-llama/Llama-3-8B", "sys", "hi") == "hello"
    assert vllm.requests[-1][2]["max_tokens"] == 2048
    await client.prompt("meta-llama/Llama-3-8B", "sys", "hi", ChatOptions(max_tokens=100))
    assert vllm.requests[-1][2]["max_tokens"] == 100
    assert {path for _, path, _ in vllm.requests} == {"/v1/models", "/v1/chat/completions"}

    with pytest.raises(Unsupported):
        await client.embed("meta-llama/Llama-3-8B", "x")
    with pytest.raises(Unsupported):
        async for _ in client.pull("meta-llama/Llama-3-8B"):
            pass
    with pytest.raises(Unsupported):
        await client.delete("meta-llama/Llama-3-8B")


async def test_vllm_stream_error_and_finish_reasons(clients: Clients, vllm: FakeOpenAI):
    client = clients.client(Endpoint("vllm", vllm.root))
    vllm.reply = ["a", "b", "c"]
    assert await collect(client.chat_stream("meta-llama/Llama-3-8B", HI)) == ["a", "b", "c"]
    vllm.stream_error = "out of KV cache"
    stream = client.chat_stream("meta-llama/Llama-3-8B", HI)
    assert await stream.__anext__() == "a"
    with pytest.raises(ProviderRefused, match="failed while streaming: out of KV cache"):
        await stream.__anext__()
    vllm.finish_reason = "abort"
    with pytest.raises(ProviderRefused, match="finish_reason abort"):
        await client.chat("meta-llama/Llama-3-8B", HI)


# -- Gemini


async def test_gemini_lists_its_catalogue_with_capabilities(clients: Clients, gemini: FakeGemini):
    models = {m.name: m for m in await clients.client(Endpoint("gemini", gemini.url, api_key="g-test")).list_models()}
    flash, embedder = models["models/gemini-1.5-flash"], models["models/text-embedding-004"]
    assert flash.model == "models/gemini-1.5-flash" and flash.context_length == 1048576
    assert (flash.can_chat, flash.can_prompt, flash.can_stream, flash.can_embed) == (True, True, True, False)
    assert (embedder.can_chat, embedder.can_embed, embedder.context_length) == (False, True, 2048)


async def test_gemini_chat_maps_roles_and_system(clients: Clients, gemini: FakeGemini):
    client = clients.client(Endpoint("gemini", gemini.url, api_key="g-test"))
    history = [Message("system", "be brief"), Message("user", "hi"), Message("assistant", "yes?"),
               Message("system", "ignored"), Message("user", "more")]
    for name in ("gemini-1.5-flash", "models/gemini-1.5-flash"):
        result = await client.chat(name, history, ChatOptions(temperature=0.3, max_tokens=50))
        assert result.message == Message("assistant", "hello") and result.finish_reason == "stop"
        assert gemini.requests[-1] == ("POST", "/v1beta/models/gemini-1.5-flash:generateContent", {
            "system_instruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "yes?"}]},
                         {"role": "user", "parts": [{"text": "more"}]}],
            "generationConfig": {"temperature": 0.3, "maxOutputTokens": 50}})
    assert await client.prompt("gemini-1.5-flash", "", "hi") == "hello"
    assert "system_instruction" not in gemini.requests[-1][2] and gemini.requests[-1][2]["generationConfig"] == {}

    gemini.reply = ["Hel", "lo"]
    assert await collect(client.chat_stream("gemini-1.5-flash", HI)) == ["Hel", "lo"]
    assert gemini.requests[-1][1] == "/v1beta/models/gemini-1.5-flash:streamGenerateContent"

    assert await client.embed("models/text-embedding-004", "x") == [0.1, 0.2, 0.3]
    assert gemini.requests[-1][1:] == ("/v1beta/models/text-embedding-004:embedContent",
                                       {"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}})

    gemini.tool_calls = [{"name": "weather", "arguments": {"city": "Paris"}}]
    (call,) = (await client.chat("gemini-1.5-flash", HI, TOOLS)).message.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("weather", {"city": "Paris"})
    assert gemini.requests[-1][2]["tools"] == [{"functionDeclarations": [
        {"name": "weather", "description": "the weather", "parameters": {"type": "object", "properties": {}}}]}]


async def test_gemini_refusals(clients: Clients, gemini: FakeGemini):
    client = clients.client(Endpoint("gemini", gemini.url, api_key="g-test"))
    with pytest.raises(ProviderRefused, match=r"models/gemini-9 is not found.*\[NOT_FOUND\] \(404\)"):
        await client.chat("gemini-9", HI)
    gemini.finish_reason = "MAX_TOKENS"
    with pytest.raises(TokenLimit):
        await client.chat("gemini-1.5-flash", HI)
    with pytest.raises(TokenLimit):
        await collect(client.chat_stream("gemini-1.5-flash", HI))
    gemini.finish_reason = "SAFETY"
    with pytest.raises(ProviderRefused, match="finishReason SAFETY"):
        await client.prompt("gemini-1.5-flash", "", "hi")
    gemini.finish_reason, gemini.block_reason = "STOP", "OTHER"
    with pytest.raises(ProviderRefused, match="blockReason OTHER"):
        await collect(client.chat_stream("gemini-1.5-flash", HI))
    gemini.block_reason = None
    gemini.fail_with = 503
    with pytest.raises(ProviderUnavailable, match=r"\(503\)"):
        await client.chat("gemini-1.5-flash", HI)
    with pytest.raises(Unsupported):
        await client.delete("gemini-1.5-flash")


# -- every adapter: unreachable, 5xx, slow


@pytest.mark.parametrize("kind", ["ollama", "openai", "vllm", "gemini"])
async def test_unreachable_failing_and_slow_backends_are_unavailable(clients: Clients, kind: str):
    fake = FakeOllama() if kind == "ollama" else FakeGemini() if kind == "gemini" else FakeOpenAI(api_key=None)
    async with fake:
        model = {"ollama": "phi3:3.8b", "gemini": "gemini-1.5-flash"}.get(kind, "gpt-4o-mini")
        if isinstance(fake, FakeOllama):
            fake.add_model(model)
        url = fake.root if isinstance(fake, FakeOpenAI) and kind == "vllm" else fake.url
        client: ProviderClient = clients.client(Endpoint(kind, url, api_key="g-test" if kind == "gemini" else ""))
        assert await client.chat(model, HI)

        fake.fail_with = 500
        for call in (lambda: client.chat(model, HI), lambda: client.list_models(),
                     lambda: collect(client.chat_stream(model, HI)), lambda: client.prompt(model, "", "hi")):
            with pytest.raises(ProviderUnavailable, match=r"\(500\)"):
                await call()

        fake.fail_with, fake.delay = None, 2.0  # beyond the tests' 0.5 s
        with pytest.raises(ProviderUnavailable, match=r"no answer within 0.5 s"):
            await client.chat(model, HI)
        with pytest.raises(ProviderUnavailable, match=r"no answer within 0.5 s"):
            await collect(client.chat_stream(model, HI))
        fake.delay = 0.0

    dead = clients.client(Endpoint(kind, f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ProviderUnavailable, match=rf"^{kind} http://127.0.0.1:\d+: cannot connect"):
        await dead.chat(model, HI)
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        await dead.list_models()


async def test_redirects_are_not_followed(clients: Clients, openai: FakeOpenAI):
    """A redirect could carry the key elsewhere: it is reported, not followed."""

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(location=openai.url + "/chat/completions?key=x")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", moved)
    async with TestServer(app, host="127.0.0.1") as server:
        client = clients.client(Endpoint("openai", str(server.make_url("/v1")), api_key=SECRET))
        with pytest.raises(ProviderRefused) as refused:
            await client.chat("gpt-4o-mini", HI)
    assert str(refused.value).endswith(f"redirects to {openai.url}/chat/completions (307); set the backend's URL to it")
    assert openai.requests == []


# -- the client registry


async def test_clients_are_made_once_per_endpoint(clients: Clients, ollama: FakeOllama):
    endpoint = Endpoint("ollama", ollama.url)
    assert clients.client(endpoint) is clients.client(Endpoint("ollama", ollama.url))
    assert clients.client(endpoint)._session is clients.client(Endpoint("gemini", ollama.url))._session  # type: ignore[attr-defined]
    assert clients.client(Endpoint("OpenAI", ollama.url, api_key="a")) is not clients.client(Endpoint("OpenAI", ollama.url, api_key="b"))
    with pytest.raises(Unsupported, match="unsupported backend type: llamafile"):
        clients.client(Endpoint("llamafile", ollama.url))
    assert await clients.client(endpoint).list_models()
    await clients.close()
    # usable again after a close (a new session)
    assert await clients.client(endpoint).list_models()
