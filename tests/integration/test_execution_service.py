"""ExecutionService (commands/execution.py) with the real provider clients against the fake providers.

The observed state comes from a stand-in of the ``RuntimeStates`` read model (a list of
``BackendState`` that a test changes), so routing, spreading and fail-over are tested here without
the reconciler; tests/api/test_execute.py drives the same through the service and its reconciler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chainloom.commands.execution import TASK_INSTRUCTION, Defaults, ExecutionService
from chainloom.domain.errors import BadRequest, Unavailable, Unprocessable, UpstreamRefused
from chainloom.domain.routing import NoModelMatched, NotReady
from chainloom.domain.runtime import BackendState, PulledModel
from chainloom.infra.providers import open_clients
from chainloom.infra.providers.base import ChatOptions, Message
from chainloom.infra.settings import Settings
from tests.fakes.llm import FakeOllama, FakeOpenAI

MODEL = "phi3:3.8b"
EMBEDDER = "nomic-embed-text:latest"
DEFAULTS = Defaults(MODEL, "ollama", MODEL, "ollama", EMBEDDER, "ollama")
ALL = PulledModel(MODEL, MODEL, context_length=2048, can_chat=True, can_prompt=True, can_stream=True)
EMBEDS = PulledModel(EMBEDDER, EMBEDDER, context_length=2048, can_embed=True)


class States:
    """Stand-in of the state read model: the same list until a test sets another (as the cached query)."""

    def __init__(self) -> None:
        self.current: list[BackendState] = []

    async def states(self) -> list[BackendState]:
        return self.current


class Keys(dict):
    async def api_key(self, provider_type: str) -> str | None:
        return self.get(provider_type)


def backend(backend_id: str, kind: str, url: str, *models: PulledModel, error: str = "") -> BackendState:
    names = tuple(m.name for m in models)
    return BackendState(backend_id, f"{backend_id}-name", kind, url, names, tuple(models), error)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[ExecutionService, States, Keys]]:
    states, keys = States(), Keys()
    clients = open_clients(Settings(provider_timeout=10, provider_connect_timeout=2))
    try:
        yield ExecutionService(states, keys, clients, DEFAULTS, retry_after=7, cool_down=60), states, keys
    finally:
        await clients.close()


async def ollama_with(*names: str) -> FakeOllama:
    fake = FakeOllama()
    await fake.start()
    for name in names:
        fake.add_model(name)
    return fake


def calls(fake, path: str) -> list[dict]:
    return [body for method, p, body in fake.requests if p == path]


async def test_prompt_and_embed_on_ollama(setup):
    service, states, _ = setup
    async with FakeOllama() as ollama:
        ollama.add_model(MODEL)
        ollama.add_model(EMBEDDER)
        ollama.reply = " the answer \n"
        ollama.embedding = [0.5, -1.0]
        states.current = [backend("o1", "ollama", ollama.url, ALL, EMBEDS)]
        assert await service.prompt("2+2?") == " the answer \n"  # untrimmed
        [generate] = calls(ollama, "/api/generate")
        assert generate["model"] == MODEL and generate["prompt"] == "2+2?" and generate["system"] == TASK_INSTRUCTION
        assert generate["options"]["temperature"] == 0.1
        assert await service.embed("hello") == [0.5, -1.0]
        # a model named with another tag matches by its normalised name
        assert await service.prompt("again", model_name="phi3:mini") == " the answer \n"
    with pytest.raises(BadRequest, match="prompt is empty serverops: empty request body"):
        await service.prompt("")
    with pytest.raises(Unprocessable, match="text is empty"):
        await service.embed("")


async def test_requests_spread_over_every_backend_holding_the_model(setup):
    service, states, _ = setup
    async with FakeOllama() as one, FakeOllama() as two:
        for fake, text in ((one, "one"), (two, "two")):
            fake.add_model(MODEL)
            fake.reply = text
        states.current = [backend("o1", "ollama", one.url, ALL), backend("o2", "ollama", two.url, ALL)]
        answers = [await service.prompt("hi") for _ in range(6)]
        assert sorted(answers) == ["one"] * 3 + ["two"] * 3
        assert len(calls(one, "/api/generate")) == len(calls(two, "/api/generate")) == 3


async def test_an_unavailable_backend_is_replaced_by_the_next(setup):
    service, states, _ = setup
    async with FakeOllama() as broken, FakeOllama() as working:
        for fake in (broken, working):
            fake.add_model(MODEL)
        broken.fail_with = 500
        working.reply = "served"
        states.current = [backend("o1", "ollama", broken.url, ALL), backend("o2", "ollama", working.url, ALL)]
        assert [await service.prompt("hi") for _ in range(4)] == ["served"] * 4
        # it failed once, then was tried last (and not at all, since the other answered)
        assert len(calls(broken, "/api/generate")) == 1
        assert len(calls(working, "/api/generate")) == 4


async def test_all_backends_failing_is_503_and_a_refusal_is_502(setup):
    service, states, _ = setup
    async with FakeOllama() as one, FakeOllama() as two:
        for fake in (one, two):
            fake.add_model(MODEL)
            fake.fail_with = 503
        states.current = [backend("o1", "ollama", one.url, ALL), backend("o2", "ollama", two.url, ALL)]
        with pytest.raises(Unavailable) as raised:
            await service.prompt("hi")
        message = raised.value.message
        assert message.startswith("failed to execute prompt: every backend able to serve it failed")
        assert "o1-name" in message and "o2-name" in message and raised.value.retry_after == 1
        one.fail_with = two.fail_with = 400  # answered, but refused: no fail-over
        before = len(one.requests) + len(two.requests)
        with pytest.raises(UpstreamRefused, match="refused"):
            await service.prompt("hi")
        assert len(one.requests) + len(two.requests) == before + 1
    # nothing listening at all: unavailable too
    states.current = [backend("gone", "ollama", "http://127.0.0.1:9", ALL)]
    with pytest.raises(Unavailable, match="gone-name"):
        await service.prompt("hi")


async def test_no_match_and_not_ready(setup):
    service, states, _ = setup
    with pytest.raises(NoModelMatched, match="^failed to execute prompt: no model matched the requirements"):
        await service.prompt("hi")
    with pytest.raises(NoModelMatched, match="^embedding failed: no model matched"):
        await service.embed("hi")
    states.current = [backend("o1", "ollama", "http://127.0.0.1:9", ALL, error="connection refused")]
    with pytest.raises(NotReady, match="o1-name \\(ollama\\) is in error: connection refused") as raised:
        await service.prompt("hi")
    assert raised.value.retry_after == 7
    with pytest.raises(NoModelMatched):  # the backend in error is of another type
        await service.prompt("hi", provider_type="vllm")


async def test_the_catalogue_is_rebuilt_only_when_the_state_changes(setup):
    service, states, _ = setup
    async with FakeOllama() as ollama:
        ollama.add_model(MODEL)
        states.current = [backend("o1", "ollama", ollama.url, ALL)]
        await service.prompt("hi")
        built = service._candidates
        await service.prompt("hi")
        assert service._candidates is built
        states.current = list(states.current)  # the read model moved: a new result
        await service.prompt("hi")
        assert service._candidates is not built and service._candidates == built


async def test_chat_on_vllm_and_openai(setup):
    service, states, keys = setup
    async with FakeOpenAI(api_key=None, models=["Qwen/Qwen2-7B"]) as vllm, FakeOpenAI(api_key="sk-test") as openai:
        vllm.reply = "from vllm"
        openai.reply = "from openai"
        qwen = PulledModel("qwen-id", "Qwen/Qwen2-7B", context_length=8192, can_chat=True)
        gpt = PulledModel("gpt-4o-mini:latest", "gpt-4o-mini", context_length=128000, can_chat=True)
        states.current = [backend("v1", "vllm", vllm.root, qwen), backend("openai", "openai", openai.url, gpt)]
        messages = [Message("system", "be brief"), Message("user", "hi")]
        result = await service.chat(messages, ChatOptions(max_tokens=10), model_names=["qwen2-7b"], provider_types=["vllm"])
        assert result.message.content == "from vllm"
        keys["openai"] = "sk-test"
        result = await service.chat(messages, model_names=["gpt-4o-mini:latest"], provider_types=["openai"])
        assert result.message.content == "from openai"
        # the minimum context rules out the vLLM model
        with pytest.raises(NoModelMatched, match="required context length: 10000"):
            await service.chat(messages, model_names=["qwen2-7b"], provider_types=["vllm"], min_context=10000)
        keys["openai"] = "sk-wrong"
        with pytest.raises(UpstreamRefused) as raised:
            await service.chat(messages, model_names=["gpt-4o-mini"], provider_types=["openai"])
        assert "sk-wrong" not in raised.value.message
    with pytest.raises(BadRequest):
        await service.chat([])


async def test_chat_stream_fails_over_before_the_first_piece(setup):
    service, states, _ = setup
    async with FakeOpenAI(api_key=None, models=[MODEL]) as broken, FakeOpenAI(api_key=None, models=[MODEL]) as working:
        broken.fail_with = 500
        working.reply = ["Hel", "lo", "!"]
        states.current = [backend("v1", "vllm", broken.root, ALL), backend("v2", "vllm", working.root, ALL)]
        for _ in range(2):
            pieces = [p async for p in service.chat_stream([Message("user", "hi")], provider_types=["vllm"])]
            assert pieces == ["Hel", "lo", "!"]
        assert service.spreader.in_flight == {}
        broken.fail_with = None
        broken.stream_error = "engine died"  # after the first piece: the stream ends with an error
        service.spreader.succeeded("v1")
        got: list[str] = []
        with pytest.raises(UpstreamRefused, match="v1-name"):
            for _ in range(2):  # one of two requests goes to v1 first
                got = []
                async for piece in service.chat_stream([Message("user", "hi")], provider_types=["vllm"]):
                    got.append(piece)
        assert got and service.spreader.in_flight == {}
