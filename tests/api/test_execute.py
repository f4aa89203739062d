"""/execute, /embed, /defaultmodel, /supported and the OpenAI-format model lists, on SQLite and PostgreSQL.

The end-to-end tests run the service with its reconciler against fake providers (tests/fakes/llm.py):
a backend is grouped, the reconciler observes it (``/state``), and requests are routed to it.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call, create_backend, create_group, declare_model
from tests.fakes.llm import FakeOllama, FakeOpenAI


async def test_default_model_is_the_embedding_model(client, settings):
    assert await call(client, "GET", "/defaultmodel") == (200, {"modelName": settings.embed_model})


async def test_supported_hooks_are_none_yet(client):
    assert await call(client, "GET", "/supported") == (200, [])


@pytest.mark.parametrize("path", ["/openai/v1/models", "/openai/any-chain/v1/models"])
async def test_declared_models_in_openai_format(client, path):
    status, models = await call(client, "GET", "/models")
    assert status == 200
    declared = await declare_model(client, "smollm2:135m")
    status, listing = await call(client, "GET", path)
    assert status == 200 and listing["object"] == "list"
    assert listing["data"][0] == {
        "id": "smollm2:135m",
        "object": "model",
        "created": parse_ns(declared["createdAt"]) // 1_000_000_000,
        "owned_by": "system",
    }
    assert [m["id"] for m in listing["data"]] == ["smollm2:135m"] + [m["model"] for m in models]
    status, page = await call(client, "GET", path, params={"limit": "1"})
    assert [m["id"] for m in page["data"]] == ["smollm2:135m"]
    status, rest = await call(client, "GET", path, params={"cursor": declared["createdAt"]})
    assert [m["id"] for m in rest["data"]] == [m["model"] for m in models]
    for params, expected in [({"limit": "1001"}, 400), ({"limit": "x"}, 422), ({"limit": "0"}, 422), ({"cursor": "y"}, 422)]:
        status, body = await call(client, "GET", path, params=params)
        assert_error(status, body, expected)
    await call(client, "DELETE", "/models/smollm2:135m")
    status, listing = await call(client, "GET", path)
    assert "smollm2:135m" not in [m["id"] for m in listing["data"]]


async def test_execute_without_a_prompt_is_400(client):
    for body in [{}, {"prompt": ""}, {"model_name": "phi3:3.8b"}, b"", "  "]:
        status, answer = await call(client, "POST", "/execute", body)
        assert_error(status, answer, 400, "prompt is empty serverops: empty request body")
    status, answer = await call(client, "POST", "/execute", {"prompt": 7})
    assert_error(status, answer, 422, "prompt")
    status, answer = await call(client, "POST", "/execute", "{not json")
    assert_error(status, answer, 422, "invalid JSON")


async def test_nothing_to_route_to_is_422_with_the_report(client, settings):
    status, answer = await call(client, "POST", "/execute", {"prompt": "hi"})
    assert_error(status, answer, 422, "failed to execute prompt: no model matched the requirements")
    assert f"model names: {settings.task_model}" in answer["error"]["message"]
    status, answer = await call(client, "POST", "/embed", {"text": "hi"})
    assert_error(status, answer, 422, "embedding failed: no model matched the requirements")
    for body in [{}, {"text": ""}]:
        status, answer = await call(client, "POST", "/embed", body)
        assert_error(status, answer, 422, "embedding failed: text is empty")


async def test_the_operations_are_described(client):
    status, document = await call(client, "GET", "/openapi.json")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {
        ("POST", "/execute"), ("POST", "/embed"), ("GET", "/defaultmodel"), ("GET", "/supported"),
        ("GET", "/openai/v1/models"), ("GET", "/openai/{chainID}/v1/models"),
    } <= operations
    execute = document["paths"]["/execute"]["post"]
    assert {"200", "400", "422", "502", "503"} <= set(execute["responses"])
    assert execute["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ExecuteBody")


# -- end to end: the reconciler observes fake backends, requests are routed to them -----------------

MODEL = "phi3:3.8b"


@pytest.fixture
def settings(settings):
    """Reconcile often, so a grouped backend shows in /state within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


async def _observed(client, backend_id: str, model: str | None = None, error: bool = False, can: str = "") -> dict:
    """Wait until /state shows the backend (holding ``model`` — with the capability ``can``, e.g. ``canEmbed``,
    which comes from the groups' declarations and so may show a look later than the model — or in error)."""
    state: dict = {}
    for _ in range(300):
        status, states = await call(client, "GET", "/state")
        assert status == 200, states
        state = next((s for s in states if s["id"] == backend_id), {})
        if state and (error and state.get("error") or not error and not state.get("error") and (
            model is None or any(p["name"] == model and (not can or p[can]) for p in state["pulledModels"]))):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"/state never showed {backend_id} as wanted: {state}")


async def _grouped_ollama(client, fake: FakeOllama, name: str, group: str = "internal_tasks_group") -> str:
    backend = await create_backend(client, name, fake.url)
    status, body = await call(client, "POST", f"/backend-affinity/{group}/backends/{backend['id']}")
    assert status == 201, body
    return backend["id"]


async def test_execute_and_embed_are_served_by_a_grouped_backend(client, settings):
    async with FakeOllama() as ollama:
        ollama.add_model(settings.task_model)
        ollama.add_model(settings.embed_model)
        ollama.reply = "four"
        ollama.embedding = [0.25, 0.5]
        backend_id = await _grouped_ollama(client, ollama, "ollama-1")
        await call(client, "POST", f"/backend-affinity/internal_embed_group/backends/{backend_id}")
        await _observed(client, backend_id, settings.task_model)
        await _observed(client, backend_id, settings.embed_model, can="canEmbed")
        status, answer = await call(client, "POST", "/execute", {"prompt": "2+2?"})
        assert status == 200, answer
        assert answer["response"] == "four" and len(answer["id"]) == 36
        assert await call(client, "POST", "/embed", {"text": "hello"}) == (200, {"vector": [0.25, 0.5]})
        # a model no group declares is not routable, though the backend holds it
        ollama.add_model("llama3:8b")
        status, answer = await call(client, "POST", "/execute", {"prompt": "hi", "model_name": "llama3:8b"})
        assert_error(status, answer, 422, "no model matched the requirements")


async def test_a_model_on_two_backends_is_spread_and_fails_over(client, settings):
    async with FakeOllama() as one, FakeOllama() as two:
        for fake, reply in ((one, "one"), (two, "two")):
            fake.add_model(settings.task_model)
            fake.reply = reply
        ids = [await _grouped_ollama(client, one, "ollama-1"), await _grouped_ollama(client, two, "ollama-2")]
        for backend_id in ids:
            await _observed(client, backend_id, settings.task_model)
        answers = []
        for _ in range(6):
            status, answer = await call(client, "POST", "/execute", {"prompt": "hi"})
            assert status == 200, answer
            answers.append(answer["response"])
        if isinstance(client, TestClient):  # one process: strictly in turn
            assert sorted(answers) == ["one"] * 3 + ["two"] * 3
        else:  # worker processes (CHAINLOOM_TEST_WORKERS) each take turns of their own
            assert set(answers) == {"one", "two"}
        one.fail_with = 500
        for _ in range(4):
            status, answer = await call(client, "POST", "/execute", {"prompt": "hi"})
            assert (status, answer["response"]) == (200, "two")
        two.fail_with = 500
        # failed just now, or already seen in error by the reconciler: 503 either way
        status, answer = await call(client, "POST", "/execute", {"prompt": "hi"})
        assert_error(status, answer, 503, "ollama-2")


async def test_all_failing_is_503_with_retry_after(client, settings):
    async with FakeOllama() as ollama:
        ollama.add_model(settings.task_model)
        backend_id = await _grouped_ollama(client, ollama, "ollama-1")
        await _observed(client, backend_id, settings.task_model)
        ollama.fail_with = 500  # failing from now on (the reconciler will soon see it in error too)
        async with client.post("/execute", json={"prompt": "hi"}) as response:
            assert response.status == 503 and int(response.headers["Retry-After"]) >= 1
            assert_error(response.status, await response.json(), 503, "ollama-1")


async def test_a_backend_in_error_is_503(client, settings):
    async with FakeOllama() as ollama:
        url = ollama.url
    backend = await create_backend(client, "gone", url)  # nothing listens there any more
    await call(client, "POST", f"/backend-affinity/internal_tasks_group/backends/{backend['id']}")
    await _observed(client, backend["id"], error=True)
    async with client.post("/execute", json={"prompt": "hi"}) as response:
        assert response.status == 503 and "Retry-After" in response.headers
        assert_error(response.status, await response.json(), 503, "backend gone (ollama) is in error")


async def test_vllm_serves_a_declared_model(client):
    async with FakeOpenAI(api_key=None, models=["smollm2:135m"]) as vllm:
        vllm.reply = "from vllm"
        group = await create_group(client, "vllm-group")
        await declare_model(client, "smollm2:135m", canPrompt=True, canChat=True)
        await call(client, "POST", f"/model-affinity/{group['id']}/models/smollm2:135m")
        backend = await create_backend(client, "vllm-1", vllm.root, kind="vllm")
        await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
        await _observed(client, backend["id"], "smollm2:135m")
        body = {"prompt": "hi", "model_name": "smollm2:135m", "model_provider": "vllm"}
        status, answer = await call(client, "POST", "/execute", body)
        assert (status, answer.get("response")) == (200, "from vllm"), answer
