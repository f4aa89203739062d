"""The backends' observed state: the reconciler looks at every grouped backend (a fake Ollama or vLLM here),
records what changes on the log (``backend_state.*``), and /state, /backends and /backends/{id} show it.

The reconciler runs every 0.2 s here (``CHAINLOOM_RECONCILE_INTERVAL``); waits poll with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.api.helpers import call, create_backend, create_group, declare_model
from tests.fakes.llm import FakeOllama, FakeOpenAI

DEADLINE = 15.0


@pytest.fixture
def settings(settings, request):
    """A reconciler cycle every 0.2 s; more overrides by indirect parametrization."""
    return settings.model_copy(update={"reconcile_interval": 0.2, **getattr(request, "param", {})})


async def until(probe: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` past the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"waited {deadline:g} s for {what}")
        await asyncio.sleep(0.05)


async def state_of(client, backend_id: str) -> dict | None:
    status, states = await call(client, "GET", "/state")
    assert status == 200, states
    return next((s for s in states if s["id"] == backend_id), None)


async def events(client, event_type: str, backend_id: str) -> list[dict]:
    status, found = await call(client, "GET", f"/events/type?event_type={event_type}")
    assert status == 200, found
    return [e for e in found if e["aggregate_id"] == backend_id]


async def polls_pass(fake, count: int = 3) -> None:
    """Let ``count`` more reconciler looks reach the fake (each cycle lists the backend's models once)."""
    seen = len(fake.requests)
    await until(lambda: _async(len(fake.requests) >= seen + count), f"{count} more polls of the fake")


async def _async(value: Any) -> Any:
    return value


async def grouped(client, name: str, url: str, kind: str, models: list[str], **caps) -> tuple[str, str]:
    """A backend in a group of its own that declares ``models`` (assigned first, so the reconciler's first
    look already sees them): (backend id, group id)."""
    backend = await create_backend(client, name, url, kind)
    group = await create_group(client, f"{name}-group")
    for model in models:
        status, existing = await call(client, "GET", "/models")
        if not any(m["model"] == model for m in existing):
            await declare_model(client, model, 1024, **(caps or {"canChat": True, "canPrompt": True}))
        status, body = await call(client, "POST", f"/model-affinity/{group['id']}/models/{model}")
        assert status in (200, 201), body
    status, body = await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    assert status == 201, body
    return backend["id"], group["id"]


async def test_a_grouped_ollama_backend_shows_its_models_errors_and_recovery(client):
    async with FakeOllama() as ollama:
        ollama.add_model("smollm2:135m", size=123)
        ollama.add_model("extra:1b", size=456)
        backend_id, _ = await grouped(client, "ollama-a", ollama.url, "ollama", ["smollm2:135m"])

        state = await until(lambda: state_of(client, backend_id), "the backend in /state")
        assert state["name"] == "ollama-a" and "error" not in state, state
        assert state["models"] == ["smollm2:135m"]
        assert state["backend"]["baseUrl"] == ollama.url and state["backend"]["type"] == "ollama"
        pulled = {p["name"]: p for p in state["pulledModels"]}
        assert set(pulled) == {"smollm2:135m", "extra:1b"}
        declared = pulled["smollm2:135m"]
        assert declared["size"] == 123 and declared["contextLength"] == 1024
        assert declared["canChat"] and declared["canPrompt"] and not declared["canEmbed"]
        assert declared["details"]["family"] == "llama" and declared["details"]["families"] == ["llama"]
        assert declared["modifiedAt"] == "2026-01-01T00:00:00Z" and declared["digest"]
        assert pulled["extra:1b"]["contextLength"] == 0 and not pulled["extra:1b"]["canChat"]

        status, details = await call(client, "GET", f"/backends/{backend_id}")
        assert status == 200
        assert details["models"] == state["models"] and details["pulledModels"] == state["pulledModels"]
        assert "error" not in details and details["createdAt"] != "0001-01-01T00:00:00Z"
        status, listed = await call(client, "GET", "/backends")
        [summary] = [b for b in listed if b["id"] == backend_id]
        assert summary["pulledModels"] == state["pulledModels"] and summary["models"] == state["models"]

        # The upstream fails: the error shows, the declared models stay, nothing is held.
        ollama.fail_with = 500
        state = await until(
            lambda: _with_error(state_of(client, backend_id)), "the error in /state"
        )
        assert "fake failure" in state["error"] and "(500)" in state["error"]
        assert state["models"] == ["smollm2:135m"] and state["pulledModels"] == []
        status, details = await call(client, "GET", f"/backends/{backend_id}")
        assert details["error"] == state["error"] and details["pulledModels"] == []
        await polls_pass(ollama)

        # It recovers: the error clears.
        ollama.fail_with = None
        state = await until(lambda: _without_error(state_of(client, backend_id)), "the error to clear")
        assert {p["name"] for p in state["pulledModels"]} == {"smollm2:135m", "extra:1b"}
        await polls_pass(ollama)

        # One event per change, however many polls.
        assert len(await events(client, "backend_state.models_changed", backend_id)) == 1
        [raised] = await events(client, "backend_state.error_raised", backend_id)
        [cleared] = await events(client, "backend_state.error_cleared", backend_id)
        assert raised["version"] < cleared["version"]
        assert raised["metadata"]["actor"] == "reconciler" and raised["aggregate_type"] == "backend_state"
        assert set(raised["data"]) == {"backendId", "models", "pulledModels", "error"}
        assert raised["data"]["backendId"] == backend_id and "fake failure" in raised["data"]["error"]
        assert cleared["data"]["error"] == "" and len(cleared["data"]["pulledModels"]) == 2

        # A model appears on the server: the change is recorded once.
        ollama.add_model("another:2b", size=7)
        await until(
            lambda: _pulled(state_of(client, backend_id), "another:2b"), "the new model in pulledModels"
        )
        await polls_pass(ollama)
        assert len(await events(client, "backend_state.models_changed", backend_id)) == 2


async def _with_error(state: Awaitable[dict | None]) -> dict | None:
    found = await state
    return found if found and found.get("error") else None


async def _without_error(state: Awaitable[dict | None]) -> dict | None:
    found = await state
    return found if found and "error" not in found else None


async def _pulled(state: Awaitable[dict | None], name: str) -> dict | None:
    found = await state
    return found if found and any(p["name"] == name for p in found["pulledModels"]) else None


async def test_backends_outside_groups_are_never_contacted_and_leaving_drops_them(client):
    async with FakeOllama() as ollama, FakeOllama() as lonely:
        ollama.add_model("smollm2:135m")
        await create_backend(client, "lonely", lonely.url, "ollama")
        backend_id, group_id = await grouped(client, "ollama-b", ollama.url, "ollama", ["smollm2:135m"])
        await until(lambda: state_of(client, backend_id), "the backend in /state")

        status, body = await call(client, "DELETE", f"/backend-affinity/{group_id}/backends/{backend_id}")
        assert status == 200, body
        await until(lambda: _gone(client, backend_id), "the backend to leave /state")
        await until(lambda: events(client, "backend_state.dropped", backend_id), "the dropped event")
        status, details = await call(client, "GET", f"/backends/{backend_id}")
        assert details["models"] == [] and details["pulledModels"] == [] and "error" not in details
        await polls_pass_elsewhere(client)
        assert len(await events(client, "backend_state.dropped", backend_id)) == 1
        assert lonely.requests == []  # in no group: never contacted

        # Back in a group: observed again; deleted: dropped again.
        status, body = await call(client, "POST", f"/backend-affinity/{group_id}/backends/{backend_id}")
        assert status == 201, body
        await until(lambda: state_of(client, backend_id), "the backend back in /state")
        status, body = await call(client, "DELETE", f"/backends/{backend_id}")
        assert status == 200, body
        assert await state_of(client, backend_id) is None  # at once: /state shows grouped backends only
        await until(
            lambda: _count(events(client, "backend_state.dropped", backend_id), 2), "the second dropped event"
        )


async def _gone(client, backend_id: str) -> bool:
    return await state_of(client, backend_id) is None


async def _count(found: Awaitable[list], count: int) -> bool:
    return len(await found) == count


async def polls_pass_elsewhere(client) -> None:
    """Let a few cycles pass (a backend in another group is polled each cycle)."""
    async with FakeOllama() as witness:
        witness_id, group_id = await grouped(client, "witness", witness.url, "ollama", [])
        await polls_pass(witness)
        await call(client, "DELETE", f"/backends/{witness_id}")


async def test_vllm_serves_one_model_which_must_be_declared(client):
    async with FakeOpenAI(api_key=None, models=["served-model-7b"]) as served, FakeOpenAI(
        api_key=None, models=["surprise-model"]
    ) as stray:
        good_id, _ = await grouped(client, "vllm-good", served.root, "vllm", ["served-model-7b"])
        bad_id, _ = await grouped(client, "vllm-bad", stray.root, "vllm", ["served-model-7b"])

        good = await until(lambda: state_of(client, good_id), "the vLLM backend in /state")
        assert good["models"] == ["served-model-7b"] and "error" not in good
        [entry] = good["pulledModels"]
        assert entry["name"] == entry["model"] == "served-model-7b"
        assert entry["contextLength"] == 1024 and entry["canChat"] and entry["modifiedAt"] != "0001-01-01T00:00:00Z"

        bad = await until(lambda: state_of(client, bad_id), "the second vLLM backend in /state")
        assert bad["models"] == ["surprise-model"]
        assert bad["error"] == "backend has model surprise-model, yet it's not declared in the configuration"
        [entry] = bad["pulledModels"]
        assert entry["model"] == "surprise-model" and entry["name"] == "" and entry["size"] == 0

        served.fail_with = 503
        failing = await until(lambda: _with_error(state_of(client, good_id)), "the vLLM error")
        assert failing["models"] == [] and failing["pulledModels"] == []


async def test_undeclared_models_are_kept_by_default(client):
    async with FakeOllama() as ollama:
        ollama.add_model("smollm2:135m")
        ollama.add_model("mine:7b")
        backend_id, _ = await grouped(client, "ollama-keep", ollama.url, "ollama", ["smollm2:135m"])
        await until(lambda: state_of(client, backend_id), "the backend in /state")
        await polls_pass(ollama)
        assert [r for r in ollama.requests if r[0] == "DELETE"] == []
        assert set(ollama.models) == {"smollm2:135m", "mine:7b"}


@pytest.mark.parametrize("settings", [{"prune_undeclared_models": True}], indirect=True)
async def test_pruning_deletes_undeclared_models_when_enabled(client):
    async with FakeOllama() as ollama:
        ollama.add_model("smollm2:135m")
        ollama.add_model("llama3:latest")  # declared as "llama3": the implicit tag is the same model
        ollama.add_model("mine:7b")
        backend_id, _ = await grouped(client, "ollama-prune", ollama.url, "ollama", ["smollm2:135m", "llama3"])
        state = await until(
            lambda: _only(state_of(client, backend_id), {"smollm2:135m", "llama3:latest"}), "the pruned state"
        )
        assert sorted(state["models"]) == ["llama3", "smollm2:135m"]
        deleted = [body for method, path, body in ollama.requests if method == "DELETE"]
        assert [body.get("model") or body.get("name") for body in deleted] == ["mine:7b"]
        assert set(ollama.models) == {"smollm2:135m", "llama3:latest"}
        llama = next(p for p in state["pulledModels"] if p["name"] == "llama3:latest")
        assert llama["canChat"] and llama["contextLength"] == 1024  # its declaration, despite the tag


async def _only(state: Awaitable[dict | None], names: set[str]) -> dict | None:
    found = await state
    return found if found and {p["name"] for p in found["pulledModels"]} == names else None


async def test_state_is_empty_without_grouped_backends_and_described(client):
    status, states = await call(client, "GET", "/state")
    assert status == 200 and states == []
    status, document = await call(client, "GET", "/openapi.json")
    answer = document["paths"]["/state"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["items"]["$ref"].endswith("/BackendRuntimeState")
    schemas = document["components"]["schemas"]
    assert set(schemas["BackendRuntimeState"]["required"]) == {"id", "name", "models", "pulledModels", "backend"}
    assert "error" in schemas["BackendWithStatus"]["properties"] and "error" not in schemas["BackendWithStatus"]["required"]
    assert schemas["ModelPullStatus"]["properties"]["modifiedAt"]["format"] == "date-time"
