"""Routing (domain/routing.py): normalisation, the candidate catalogue, filters, reports, spreading, fail-over order."""

from __future__ import annotations

import pytest

from chainloom.domain.errors import Unavailable, Unprocessable
from chainloom.domain.routing import (
    NoModelMatched,
    NotReady,
    Requirement,
    Spreader,
    catalogue,
    normalize,
    qualifying,
    route,
)
from chainloom.domain.runtime import BackendState, PulledModel


def pulled(name: str, context: int = 2048, **caps: bool) -> PulledModel:
    caps = caps or {"can_prompt": True, "can_chat": True}
    return PulledModel(name=name, model=name, context_length=context, **caps)


def state(backend_id: str, kind: str = "ollama", *models: PulledModel, declared=None, error: str = "") -> BackendState:
    names = tuple(declared) if declared is not None else tuple(m.name for m in models)
    return BackendState(backend_id, f"{backend_id}-name", kind, f"http://{backend_id}", names, tuple(models), error)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("phi3:3.8b", "phi3"),
        ("phi3:mini", "phi3"),
        ("PHI3", "phi3"),
        ("nomic-embed-text:latest", "nomicembedtext"),
        ("Llama-3.1_8B Instruct", "llama318binstruct"),
        ("TheBloke/Mistral-7B-AWQ", "mistral7b"),
        ("org/sub/model", "sub"),  # the segment after the first "/"
        ("model-GPTQ-4bit:latest", "model"),
        ("fp16model", "model"),
        ("gpt-4o", "gpt4o"),
        ("a:b:c", "a:b"),  # cut from the last ":"
        ("smollm2:135m", "smollm2"),
        ("", ""),
    ],
)
def test_normalisation(name, expected):
    assert normalize(name) == expected


def test_catalogue_has_one_candidate_per_pulled_model_of_backends_without_error():
    states = [
        state("o1", "ollama", pulled("phi3:3.8b"), pulled("nomic-embed-text:latest", can_embed=True)),
        state("bad", "ollama", pulled("phi3:3.8b"), error="connection refused"),
        state("v1", "vllm", pulled("Qwen/Qwen2-7B")),
        state("openai", "openai", PulledModel(name="gpt-4o:latest", model="gpt-4o", context_length=128000, can_chat=True)),
        state("gemini", "gemini", pulled("models/gemini-1.5-flash")),
    ]
    found = catalogue(states)
    assert [(c.id, c.model, c.backend_id) for c in found] == [
        ("ollama:phi3:3.8b", "phi3:3.8b", "o1"),
        ("ollama:nomic-embed-text:latest", "nomic-embed-text:latest", "o1"),
        ("vllm:Qwen/Qwen2-7B", "Qwen/Qwen2-7B", "v1"),
        ("openai-gpt-4o", "gpt-4o", "openai"),  # the upstream name, not the declared id
        ("gemini-models/gemini-1.5-flash", "gemini-1.5-flash", "gemini"),  # shown without "models/"
    ]
    first = found[0]
    assert (first.base_url, first.backend_type, first.context_length, first.can_prompt, first.can_embed) == (
        "http://o1", "ollama", 2048, True, False
    )


def test_filters_by_type_name_capability_and_context():
    candidates = catalogue(
        [
            state("o1", "ollama", pulled("phi3:mini", context=4096), pulled("embedder:latest", can_embed=True)),
            state("v1", "vllm", pulled("phi3:3.8b", context=1024)),
        ]
    )

    def ids(requirement):
        return [(c.backend_id, c.model) for c in qualifying(candidates, requirement)]

    # the tag is ignored: phi3:3.8b matches a loaded phi3:mini
    assert ids(Requirement("prompt", ("ollama",), ("phi3:3.8b",))) == [("o1", "phi3:mini")]
    assert ids(Requirement("prompt", ("ollama", "vllm"), ("PHI-3",))) == [("o1", "phi3:mini"), ("v1", "phi3:3.8b")]
    assert ids(Requirement("prompt", ("vllm",), ("phi3:3.8b",), min_context=2048)) == []
    assert ids(Requirement("prompt", ("ollama",), ("phi3:3.8b",), min_context=4096)) == [("o1", "phi3:mini")]
    assert ids(Requirement("embed", ("ollama",), ("phi3:3.8b",))) == []
    assert ids(Requirement("embed", ("ollama",), ("embedder",))) == [("o1", "embedder:latest")]
    assert ids(Requirement("prompt", (), ("phi3",))) == []  # the provider list is a hard filter
    # no names: everything fitting; names: in the order asked for
    assert ids(Requirement("chat", ("ollama", "vllm"))) == [("o1", "phi3:mini"), ("v1", "phi3:3.8b")]
    assert ids(Requirement("embed", ("ollama",), ("embedder", "phi3"))) == [("o1", "embedder:latest")]
    with pytest.raises(ValueError):
        Requirement("dance", ("ollama",))


def test_every_backend_holding_a_model_is_kept():
    candidates = catalogue([state(f"o{i}", "ollama", pulled("phi3:3.8b")) for i in range(3)])
    chosen = qualifying(candidates, Requirement("prompt", ("ollama",), ("phi3:3.8b", "phi3")))
    assert [c.backend_id for c in chosen] == ["o0", "o1", "o2"]  # one each, though two names match


def test_no_match_is_reported():
    states = [state("o1", "ollama", pulled("phi3:3.8b"))]
    with pytest.raises(NoModelMatched) as raised:
        route(states, catalogue(states), Requirement("embed", ("ollama",), ("nomic-embed-text:latest",)), 10)
    message = raised.value.message
    assert isinstance(raised.value, Unprocessable)
    assert message.startswith("no model matched the requirements")
    for fragment in ("provider types: ollama", "model names: nomic-embed-text:latest", "canEmbed",
                     "required context length: 0", "ollama:phi3:3.8b on o1-name (ollama): context 2048"):
        assert fragment in message, message
    with pytest.raises(NoModelMatched, match="no models found in runtime state for provider types vllm"):
        route(states, catalogue(states), Requirement("prompt", ("vllm",), ("phi3",)), 10)
    with pytest.raises(NoModelMatched, match="available models: none"):
        route([], (), Requirement("prompt", ("ollama",), ("phi3",)), 10)


def test_a_backend_in_error_or_still_pulling_is_not_ready():
    broken = [state("o1", "ollama", declared=["phi3:3.8b"], error="connection refused")]
    with pytest.raises(NotReady) as raised:
        route(broken, catalogue(broken), Requirement("prompt", ("ollama",), ("phi3:3.8b",)), 10)
    assert isinstance(raised.value, Unavailable) and raised.value.retry_after == 10
    assert "backend o1-name (ollama) is in error: connection refused" in raised.value.message
    # in error, but it would not serve that model anyway (nor a backend of another type): no model matched
    with pytest.raises(NoModelMatched):
        route(broken, (), Requirement("prompt", ("ollama",), ("llama3",)), 10)
    with pytest.raises(NoModelMatched):
        route(broken, (), Requirement("prompt", ("vllm",), ("phi3:3.8b",)), 10)
    # declared for a healthy backend that has not pulled it yet
    pulling = [state("o1", "ollama", pulled("other:1b"), declared=["other:1b", "phi3:3.8b"])]
    with pytest.raises(NotReady, match="has not pulled phi3:3.8b yet"):
        route(pulling, catalogue(pulling), Requirement("prompt", ("ollama",), ("phi3:3.8b",)), 10)
    # OpenAI's models are its whole catalogue, not downloads: one not declared is not routable
    catalogue_only = [state("openai", "openai", PulledModel("gpt-4o", "gpt-4o", can_chat=True), declared=["gpt-4o", "o1"])]
    with pytest.raises(NoModelMatched):
        route(catalogue_only, catalogue(catalogue_only), Requirement("chat", ("openai",), ("o1",)), 10)
    # a cloud backend whose catalogue is unknown (say its key is missing) may serve any name
    keyless = [state("openai", "openai", declared=[], error="API key not configured")]
    with pytest.raises(NotReady, match="API key not configured"):
        route(keyless, (), Requirement("chat", ("openai",), ("gpt-4o",)), 10)


def test_requests_spread_in_turn_at_concurrency_one():
    candidates = catalogue([state(f"o{i}", "ollama", pulled("phi3:3.8b")) for i in range(3)])
    spreader = Spreader()
    firsts = [spreader.order(candidates, now=0)[0].backend_id for _ in range(6)]
    assert sorted(firsts) == ["o0", "o0", "o1", "o1", "o2", "o2"]
    assert firsts[:3] != firsts[1:4]  # not the same backend twice in a row


def test_fewest_in_flight_first_and_the_order_is_the_fail_over_order():
    candidates = catalogue([state(f"o{i}", "ollama", pulled("phi3:3.8b")) for i in range(3)])
    spreader = Spreader()
    spreader.started("o0")
    spreader.started("o0")
    spreader.started("o1")
    for _ in range(3):
        order = [c.backend_id for c in spreader.order(candidates, now=0)]
        assert order == ["o2", "o1", "o0"]  # every backend, the busiest last
    spreader.finished("o0")
    spreader.finished("o0")
    spreader.finished("o1")
    assert spreader.in_flight == {}


def test_a_backend_that_just_failed_is_tried_last_until_it_cools_down():
    candidates = catalogue([state(f"o{i}", "ollama", pulled("phi3:3.8b")) for i in range(2)])
    spreader = Spreader(cool_down=5)
    spreader.failed("o0", now=100)
    for _ in range(4):
        assert [c.backend_id for c in spreader.order(candidates, now=101)] == ["o1", "o0"]
    assert {spreader.order(candidates, now=106)[0].backend_id for _ in range(4)} == {"o0", "o1"}
    spreader.failed("o1", now=200)
    spreader.succeeded("o1")
    assert {spreader.order(candidates, now=201)[0].backend_id for _ in range(4)} == {"o0", "o1"}
    spreader.failed("o1", now=300)
    spreader.forget(["o0"])  # o1 left the catalogue: what was known of it goes
    assert {spreader.order(candidates, now=301)[0].backend_id for _ in range(4)} == {"o0", "o1"}
