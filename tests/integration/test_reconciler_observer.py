"""The reconciler's per-type rules (``projections.reconciler.Observer``) against the fake providers: what it
records of Ollama, vLLM, OpenAI and Gemini backends, what it queues, what it remembers. No store: the
observer only talks to upstreams (the API test ``tests/api/test_runtime_state.py`` covers the loop)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from chainloom.infra.providers import open_clients
from chainloom.projections.reconciler import CATALOGUE_TTL, Observer, tagged
from chainloom.queries.runtime import DeclaredModel, GroupedBackend
from tests.conftest import make_settings
from tests.fakes.llm import FakeGemini, FakeOllama, FakeOpenAI


class Keys:
    def __init__(self, **keys: str) -> None:
        self.keys = keys

    async def api_key(self, provider_type: str) -> str | None:
        return self.keys.get(provider_type)


class Downloads:
    def __init__(self) -> None:
        self.queued: list[tuple[str, str, list[str]]] = []

    async def queue_missing(self, backend_id: str, base_url: str, models: Sequence[str]) -> None:
        self.queued.append((backend_id, base_url, list(models)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def declared(name: str, **caps: bool) -> DeclaredModel:
    caps = {"can_chat": True, "can_prompt": True} | caps
    return DeclaredModel(
        id=name, name=name, context_length=4096, updated_at=1_700_000_000_000_000_000,
        **{c: caps.get(c, False) for c in ("can_chat", "can_embed", "can_prompt", "can_stream")},
    )


def backend(kind: str, url: str, *models: str, backend_id: str = "b-1") -> GroupedBackend:
    return GroupedBackend(backend_id, f"{kind}-backend", kind, url, tuple(declared(m) for m in models))


@pytest.fixture
async def clients(tmp_path):
    clients = open_clients(make_settings("sqlite", tmp_path))
    yield clients
    await clients.close()


def test_implicit_latest_tag():
    assert tagged("llama3") == "llama3:latest" and tagged("llama3:8b") == "llama3:8b"
    assert tagged("registry:5000/library/llama3") == "registry:5000/library/llama3:latest"


async def test_ollama_queues_what_is_missing_and_keeps_what_is_undeclared(clients):
    downloads = Downloads()
    observer = Observer(clients, None, downloads)
    async with FakeOllama() as ollama:
        ollama.add_model("phi3:latest", size=10)
        ollama.add_model("mine:7b", size=20)
        seen = await observer.observe(backend("ollama", ollama.url, "phi3", "smollm2:135m", "nomic-embed-text:latest"))
        assert seen.error == "" and seen.models == ("nomic-embed-text:latest", "phi3", "smollm2:135m")
        [(backend_id, url, missing)] = downloads.queued
        assert (backend_id, url, sorted(missing)) == ("b-1", ollama.url, ["nomic-embed-text:latest", "smollm2:135m"])
        pulled = {p["name"]: p for p in seen.pulled_models}
        assert pulled["phi3:latest"]["contextLength"] == 4096 and pulled["phi3:latest"]["canChat"]
        assert pulled["mine:7b"]["contextLength"] == 0 and pulled["mine:7b"]["size"] == 20
        assert not [r for r in ollama.requests if r[0] == "DELETE"]

        ollama.fail_with = 500
        failing = await observer.observe(backend("ollama", ollama.url, "phi3"))
        assert failing.models == ("phi3",) and failing.pulled_models == () and "(500)" in failing.error


async def test_ollama_with_a_bad_or_dead_url(clients):
    observer = Observer(clients, None, None)
    bad = await observer.observe(backend("ollama", "not a url", "phi3"))
    assert bad.error.startswith("Invalid URL: ") and bad.models == ("phi3",)
    async with FakeOllama() as gone:
        url = gone.url
    dead = await observer.observe(backend("ollama", url, "phi3"))
    assert "cannot connect" in dead.error and dead.models == ("phi3",) and dead.pulled_models == ()


async def test_openai_needs_its_key_and_lists_once_a_day(clients):
    clock = Clock()
    keys = Keys()
    observer = Observer(clients, keys, None, clock=clock)
    async with FakeOpenAI(api_key="sk-test", models=["gpt-4o-mini", "text-embedding-3-small"]) as openai:
        target = backend("openai", openai.url, "gpt-4o-mini:latest", "gpt-5-nonexistent")
        missing = await observer.observe(target)
        assert missing.error == "API key not configured" and missing.models == () and openai.requests == []

        keys.keys["openai"] = "sk-test"
        seen = await observer.observe(target)
        assert seen.error == "" and seen.models == ("gpt-4o-mini", "text-embedding-3-small")
        [entry] = seen.pulled_models
        assert entry["name"] == "gpt-4o-mini:latest" and entry["model"] == "gpt-4o-mini" and entry["contextLength"] == 4096
        assert len(openai.requests) == 1
        assert await observer.observe(target) == seen and len(openai.requests) == 1  # remembered
        clock.now += CATALOGUE_TTL
        await observer.observe(target)
        assert len(openai.requests) == 2  # a day later: listed again

        keys.keys["openai"] = "sk-other"  # another key: listed again (and refused by the fake)
        refused = await observer.observe(target)
        assert "(401)" in refused.error and "sk-other" not in refused.error and len(openai.requests) == 3

        keys.keys["openai"] = "sk-test"
        none = await observer.observe(backend("openai", openai.url, "gpt-5-nonexistent", backend_id="b-2"))
        assert none.error.startswith("None of the declared models are available in the OpenAI API: declared [gpt-5-nonexistent]")
        assert none.pulled_models == ()


async def test_gemini_takes_the_upstream_catalogue(clients):
    observer = Observer(clients, Keys(gemini="g-test"), None)
    async with FakeGemini(api_key="g-test") as gemini:
        seen = await observer.observe(backend("gemini", gemini.url, "ignored-declaration"))
        assert seen.error == "" and seen.models == ("models/gemini-1.5-flash", "models/text-embedding-004")
        flash, embedder = seen.pulled_models
        assert flash["name"] == flash["model"] == "models/gemini-1.5-flash"
        assert flash["contextLength"] == 1048576 and flash["canChat"] and flash["canStream"] and not flash["canEmbed"]
        assert embedder["canEmbed"] and not embedder["canChat"]


async def test_an_unknown_type_is_an_error(clients):
    seen = await Observer(clients, None, None).observe(backend("llamafile", "http://x:1", "m"))
    assert seen.error == "Unsupported backend type: llamafile" and seen.models == ()


class Runtime:
    """Stand-ins for the read model and the commands the loop uses."""

    def __init__(self, backends: tuple[GroupedBackend, ...], tracked: frozenset[str] = frozenset()) -> None:
        self.backends = backends
        self.tracked_ids = tracked
        self.recorded: list[tuple[str, str]] = []
        self.dropped: list[str] = []
        self.fail_next = 0

    async def grouped_backends(self) -> tuple[GroupedBackend, ...]:
        return self.backends

    async def tracked(self) -> frozenset[str]:
        return self.tracked_ids

    async def record(self, backend_id, observed, ctx) -> str | None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("the store is away")
        self.recorded.append((backend_id, observed.error))
        return "models_changed"

    async def drop(self, backend_id, ctx) -> bool:
        self.dropped.append(backend_id)
        return True


async def _inline(function, *args):
    return function(*args)


async def test_one_slow_backend_does_not_hold_up_the_others(clients):
    import asyncio

    from chainloom.projections.reconciler import Reconciler

    async with FakeOllama() as quick, FakeOllama() as slow:
        slow.delay = 5.0
        runtime = Runtime((backend("ollama", quick.url, backend_id="quick"), backend("ollama", slow.url, backend_id="slow")),
                          tracked=frozenset({"quick", "gone"}))
        reconciler = Reconciler(runtime, runtime, Observer(clients, None, None), _inline, interval=60, backend_deadline=0.5)
        cycle = asyncio.create_task(reconciler.cycle())
        while not runtime.recorded:
            await asyncio.sleep(0.01)
        assert runtime.recorded == [("quick", "")]  # recorded while the slow one is still being waited for
        await cycle
        assert runtime.recorded[1][0] == "slow" and "no answer within 0.5 s" in runtime.recorded[1][1]
        assert runtime.dropped == ["gone"]


async def test_a_cycle_failing_on_the_store_is_tried_again(clients, caplog):
    import asyncio

    from chainloom.projections.reconciler import Reconciler

    async with FakeOllama() as ollama:
        runtime = Runtime((backend("ollama", ollama.url, backend_id="b"),))
        runtime.fail_next = 2
        reconciler = Reconciler(runtime, runtime, Observer(clients, None, None), _inline, interval=60, check_every=0.05)
        reconciler.start()
        try:
            while not runtime.recorded:
                await asyncio.sleep(0.01)
        finally:
            await reconciler.stop()
        assert runtime.recorded == [("b", "")]
        assert "the cycle failed" in caplog.text
