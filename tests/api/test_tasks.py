"""POST /tasks and GET /tasks/runs/{id}, on SQLite and PostgreSQL (the engine itself: tests/integration).

A run is recorded on the log without waiting for the read models, so the run lookup and the event
index are polled until they show it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.helpers import assert_error, call
from tests.fakes.llm import FakeOllama


@pytest.fixture
def settings(settings):
    """Reconcile often, so a grouped backend is routable within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


def task(task_id: str, handler: str, goto: str = "end", **fields: Any) -> dict:
    return {"id": task_id, "handler": handler, "transition": {"branches": [{"operator": "default", "goto": goto}]}, **fields}


CHAIN = {
    "id": "kv",
    "debug": True,
    "tasks": [
        task("parse", "parse_key_value", goto="say", prompt_template="{{.input}}; extra=yes"),
        task("say", "noop", prompt_template="a is {{.parse.a}}"),
    ],
}


async def _until(client, path: str, check, params: dict | None = None) -> Any:
    body: Any = None
    for _ in range(200):
        status, body = await call(client, "GET", path, params=params)
        if status == 200 and check(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never showed what was wanted: {body}")


async def test_a_run_answers_and_is_recorded(client):
    status, answer = await call(client, "POST", "/tasks", {"input": "a=1", "inputType": "String", "chain": CHAIN, "unknown": 1})
    assert status == 200, answer
    assert (answer["output"], answer["outputType"]) == ("a is 1", "string")
    assert [(u["taskID"], u["outputType"], u["output"]) for u in answer["state"]] == [
        ("parse", "json", '{"a":1,"extra":"yes"}'),
        ("say", "string", '"a is 1"'),
    ]
    run_id = answer["id"]
    run = await _until(client, f"/tasks/runs/{run_id}", lambda r: r["status"] == "finished")
    assert (run["chainId"], run["inputType"], run["stepLimit"]) == ("kv", "string", 1000)
    assert (run["output"], run["outputType"]) == ("a is 1", "string")
    assert run["state"] == answer["state"]
    assert run["stepOutputs"][0]["value"] == {"a": 1, "extra": "yes"}
    assert run["startedAt"] <= run["finishedAt"]
    params = {"event_type": "task_run.step_recorded", "aggregate_type": "task_run", "aggregate_id": run_id}
    steps = await _until(client, "/events/aggregate", lambda e: len(e) == 2, params)
    assert {e["data"]["step"]["taskID"] for e in steps} == {"parse", "say"}
    for event_type in ("task_run.started", "task_run.finished"):
        events = await _until(client, "/events/aggregate", lambda e: len(e) == 1, params | {"event_type": event_type})
        assert events[0]["event_source"] == "chainloom"


async def test_a_failing_chain_is_422_and_its_partial_run_is_kept(client):
    failing = {"id": "f", "tasks": [task("ok", "noop", goto="boom"), task("boom", "raise_error", retry_on_failure=1)]}
    async with client.post("/tasks", json={"input": "nope", "inputType": "string", "chain": failing}) as response:
        body = await response.json()
        run_id = response.headers["X-Task-Run-Id"]
    assert_error(response.status, body, 422, "task boom failed after 1 retries: task boom: nope")
    run = await _until(client, f"/tasks/runs/{run_id}", lambda r: r["status"] == "failed")
    assert run["error"] == body["error"]["message"]
    assert [u["taskID"] for u in run["state"]] == ["ok", "boom", "boom"]
    status, missing = await call(client, "GET", "/tasks/runs/no-such-run")
    assert_error(status, missing, 404)


async def test_refusals(client):
    for body, expected, fragment in [
        ({"input": "x", "inputType": "string"}, 400, "chain has no tasks serverops: bad request"),
        ({"input": "x", "inputType": "string", "chain": {"tasks": []}}, 400, "chain has no tasks"),
        ({"input": "x", "inputType": "string", "chain": {"tasks": [{"handler": "noop"}]}}, 400, "task ID cannot be empty"),
        ({"input": "x", "inputType": "string", "chain": {"tasks": [{"id": "end"}]}}, 400, "task ID cannot be 'end'"),
        ({"input": "x", "inputType": "text", "chain": CHAIN}, 422, "unknown data type: text"),
        ({"input": "x", "chain": CHAIN}, 422, "unknown data type: "),
        ({"input": {"messages": 1}, "inputType": "chat_history", "chain": CHAIN}, 422, "failed to convert to ChatHistory"),
        ({"input": "x", "inputType": "string", "chain": {"tasks": [{"id": "t", "retry_on_failure": "2"}]}}, 422, "retry_on_failure"),
        ("{not json", 422, "invalid JSON"),
    ]:
        status, answer = await call(client, "POST", "/tasks", body)
        assert_error(status, answer, expected, fragment)


async def test_an_llm_task_is_served_by_a_grouped_backend(client, settings):
    async with FakeOllama() as ollama:
        ollama.add_model(settings.task_model)
        ollama.reply = "  Bonjour  "
        status, backend = await call(client, "POST", "/backends", {"name": "o", "baseUrl": ollama.url, "type": "ollama"})
        assert status == 201, backend
        status, _ = await call(client, "POST", f"/backend-affinity/internal_tasks_group/backends/{backend['id']}")
        assert status == 201
        chain = {"id": "hello", "tasks": [task("greet", "raw_string", prompt_template="Say hello in French to {{.input}}")]}
        answer: Any = None
        for _ in range(300):  # until the reconciler has observed the backend
            status, answer = await call(client, "POST", "/tasks", {"input": "Ada", "inputType": "string", "chain": chain})
            if status == 200:
                break
            assert status == 422 and "no model matched" in answer["error"]["message"], answer  # not observed yet
            await asyncio.sleep(0.05)
        assert status == 200, answer
        assert (answer["output"], answer["outputType"]) == ("Bonjour", "string")
        generate = [body for _, path, body in ollama.requests if path == "/api/generate"]
        assert generate[-1]["prompt"] == "Say hello in French to Ada"


async def test_the_operations_are_described(client):
    status, document = await call(client, "GET", "/openapi.json")
    assert status == 200
    assert {"200", "400", "422"} <= set(document["paths"]["/tasks"]["post"]["responses"])
    assert "200" in document["paths"]["/tasks/runs/{id}"]["get"]["responses"]


async def test_a_tool_calling_loop_runs_the_model_s_calls_through_a_remote_hook(client, settings):
    """The whole loop with real parts: a model (the fake Ollama, grouped) asks for a hook's tool, the
    engine calls the hook service over HTTP, feeds its answer back, and the model answers in text."""
    from tests.api.test_hooks import HookService
    from tests.integration.test_task_engine import ScriptedOllama

    hook = HookService()
    await hook.server.start_server()
    try:
        status, _ = await call(client, "POST", "/hooks/remote", {"name": "echo", "endpointUrl": hook.url, "timeoutMs": 5000})
        assert status == 201
        async with ScriptedOllama() as ollama:
            ollama.add_model(settings.chat_model)
            ollama.script = ["", "The hook said hello."]
            ollama.tool_script = [[{"name": "echo.echo", "arguments": {"input": "hello"}}], None]
            status, backend = await call(client, "POST", "/backends", {"name": "o", "baseUrl": ollama.url, "type": "ollama"})
            assert status == 201, backend
            status, _ = await call(client, "POST", f"/backend-affinity/internal_chat_group/backends/{backend['id']}")
            assert status == 201
            agent = {
                "id": "agent",
                "handler": "model_execution",
                "execute_config": {"hooks": ["echo"]},
                "transition": {"branches": [{"operator": "equals", "when": "tool-call", "goto": "tools"}, {"operator": "default", "goto": "reply"}]},
            }
            chain = {"id": "agent", "tasks": [agent, task("tools", "execute_tool_calls", goto="agent"), task("reply", "convert_to_openai_chat_response")]}
            history = {"messages": [{"role": "user", "content": "Say hello through the hook."}]}
            for _ in range(300):  # until the reconciler has observed the backend
                status, answer = await call(client, "POST", "/tasks", {"input": history, "inputType": "chat_history", "chain": chain})
                if status == 200 or "no model matched" not in answer["error"]["message"]:
                    break
                await asyncio.sleep(0.05)
            assert status == 200, answer
            assert [u["transition"] for u in answer["state"]] == ["tool-call", "tools_executed", "executed", "converted"]
            assert answer["output"]["choices"][0]["message"]["content"] == "The hook said hello."
            assert hook.seen[-1]["body"] == {"input": "hello"}  # the prefix stripped, the arguments flat
            chats = [body for _, path, body in ollama.requests if path == "/api/chat"]
            assert chats[1]["messages"][-1]["role"] == "tool" and "hello" in chats[1]["messages"][-1]["content"]
    finally:
        await hook.server.close()
