"""The observed state of a backend (``domain.backend_state``): which event an observation makes, if any."""

from __future__ import annotations

import json

from chainloom.domain.backend_state import MAX_MODELS, Observation, ObservedBackend, decide
from chainloom.infra.envelope import EnvelopeMapper

HEALTHY = Observation.of(["phi3:3.8b"], [{"name": "phi3:3.8b", "model": "phi3:3.8b", "size": 5}])
FAILING = Observation.of(["phi3:3.8b"], [], "ollama http://o:11434: cannot connect")


def test_decisions():
    assert decide(None, HEALTHY) == "models_changed"
    assert decide(None, FAILING) == "error_raised"
    assert decide(HEALTHY, HEALTHY) is None
    assert decide(HEALTHY, FAILING) == "error_raised"
    assert decide(FAILING, FAILING) is None
    assert decide(FAILING, Observation.of(["phi3:3.8b"], [], "another error")) == "error_raised"
    assert decide(FAILING, HEALTHY) == "error_cleared"
    assert decide(HEALTHY, Observation.of(["phi3:3.8b"], [])) == "models_changed"
    assert decide(None, Observation()) == "models_changed"  # a healthy backend with nothing: still tracked


def test_observations_are_normalised():
    a = Observation.of(["b", "a", "a"], [{"name": "y"}, {"name": "x"}])
    b = Observation.of(["a", "b"], [{"name": "x"}, {"name": "y", "details": {}}])
    assert a == b and a.models == ("a", "b")
    entry = a.pulled_models[0]
    assert entry["modifiedAt"] == "0001-01-01T00:00:00Z" and entry["details"]["families"] is None
    odd = Observation.of(["a\x00b", "\ud800x"], [], "bad\x00")
    assert odd.models == ("?x", "ab") and odd.error == "bad"
    many = Observation.of([f"m{i:05}" for i in range(MAX_MODELS + 5)], [])
    assert len(many.models) == MAX_MODELS and "recorded" in many.error


def test_events_carry_the_whole_state_and_resume_from_the_last():
    mapper = EnvelopeMapper()
    state = ObservedBackend.resume("b-1", None)
    assert state.observe(HEALTHY) == "models_changed"
    assert state.observe(HEALTHY) is None
    [first] = state.collect_events()
    stored = mapper.to_stored_event(first, {})
    envelope = json.loads(stored.state)
    assert envelope["event_type"] == "backend_state.models_changed" and envelope["aggregate_type"] == "backend_state"
    assert set(envelope["data"]) == {"backendId", "models", "pulledModels", "error"}

    resumed = ObservedBackend.resume("b-1", mapper.to_domain_event(stored))
    assert resumed.version == 1 and resumed.observation == HEALTHY
    assert resumed.observe(HEALTHY) is None
    assert resumed.observe(FAILING) == "error_raised"
    assert resumed.drop() and not resumed.drop()
    events = resumed.collect_events()
    assert [e.originator_version for e in events] == [2, 3]
    dropped = ObservedBackend.resume("b-1", mapper.to_domain_event(mapper.to_stored_event(events[-1])))
    assert dropped.observation is None and dropped.observe(FAILING) == "error_raised"  # tracked again


def test_fifty_pulled_models_stay_small():
    entry = {
        "modifiedAt": "2024-05-20T10:15:30.123456789Z", "size": 4_709_611_008, "digest": "sha256:" + "a" * 64,
        "details": {"format": "gguf", "family": "llama", "families": ["llama"], "parameterSize": "7B",
                    "quantizationLevel": "Q4_K_M"},
    }
    state = ObservedBackend.resume("b-1", None)
    names = [f"model-{i}:7b" for i in range(50)]
    state.observe(Observation.of(names, [entry | {"name": n, "model": n} for n in names]))
    [event] = state.collect_events()
    assert len(EnvelopeMapper().to_stored_event(event, {}).state) < 32 * 1024
