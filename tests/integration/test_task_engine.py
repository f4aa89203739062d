"""The task engine (commands/tasks.py) with the real ExecutionService over the fake providers.

The observed state is a stand-in of the ``RuntimeStates`` read model; hooks a stand-in of the
``HookRunner`` (its HTTP side is tested in tests/api/test_hooks.py); the run's recording a stand-in of
the recorder (the log side is tested in tests/api/test_tasks.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from chainloom.commands.base import CommandContext
from chainloom.commands.execution import Defaults, ExecutionService
from chainloom.commands.tasks import TaskEngine, estimate_tokens
from chainloom.domain.errors import BadRequest, Unavailable, Unprocessable, UpstreamRefused
from chainloom.domain.hooks import HookFailed
from chainloom.domain.runtime import BackendState, PulledModel
from chainloom.domain.taskchains import ChainDefinition
from chainloom.domain.taskengine import ChainFailed
from chainloom.infra.providers import open_clients
from chainloom.infra.settings import Settings
from tests.fakes.llm import FakeOllama, FakeOpenAI
from tests.integration.test_execution_service import Keys, States

MODEL = "phi3:3.8b"
EMBEDDER = "nomic-embed-text:latest"
DEFAULTS = Defaults(MODEL, "ollama", MODEL, "ollama", EMBEDDER, "ollama")
CTX = CommandContext(actor="test")


def pulled(name: str, **caps: bool) -> PulledModel:
    return PulledModel(name, name, context_length=4096, **caps)


ALL = pulled(MODEL, can_chat=True, can_prompt=True, can_stream=True)
EMBEDS = pulled(EMBEDDER, can_embed=True)


class ScriptedOllama(FakeOllama):
    """Answers the scripted replies in turn (then ``reply``); ``tool_script``: the tool calls of each chat
    turn in turn (None: a text answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[str] = []
        self.tool_script: list[list[dict[str, Any]] | None] = []

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        if self.script:
            self.reply = self.script.pop(0)
        return await super()._generate(request)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.script:
            self.reply = self.script.pop(0)
        if self.tool_script:
            self.tool_calls = self.tool_script.pop(0)
        return await super()._chat(request)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def started(self, run_id, chain_id, input_type, step_limit, ctx) -> None:
        self.calls.append(("started", run_id, chain_id, input_type, step_limit))

    async def record(self, run_id, steps, end, ctx, start=None) -> None:
        if start is not None:  # a short run's start comes with its first record
            self.calls.append(("started", run_id, *start))
        self.calls.append(("record", run_id, [unit["taskID"] for unit, _ in steps], end))


class Hooks:
    """Stand-in of the HookRunner: one hook ``weather`` with a tool ``current``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.result: tuple[Any, str] = ({"summary": "light rain", "temp": 12.5}, "json")

    async def tools(self, hook_name: str) -> list[dict]:
        if hook_name != "weather":
            raise HookFailed(f"unknown hook: {hook_name}", hook=hook_name)
        return [{"type": "function", "function": {"name": "current", "description": "now", "parameters": {"type": "object"}}}]

    async def call(self, hook_name: str, tool_name: str, args: dict) -> tuple[Any, str]:
        self.calls.append((hook_name, tool_name, args))
        if hook_name != "weather":
            raise HookFailed(f"execution failed for hook '{hook_name}': unknown hook: {hook_name}")
        return self.result


@pytest.fixture
async def env() -> AsyncIterator[tuple[TaskEngine, ScriptedOllama, Recorder, Hooks]]:
    states = States()
    clients = open_clients(Settings(provider_timeout=10, provider_connect_timeout=2))
    ollama = ScriptedOllama()
    await ollama.start()
    ollama.add_model(MODEL)
    ollama.add_model(EMBEDDER)
    states.current = [BackendState("o1", "o1-name", "ollama", ollama.url, (MODEL, EMBEDDER), (ALL, EMBEDS), "")]
    service = ExecutionService(states, Keys(), clients, DEFAULTS, retry_after=7, cool_down=60)
    recorder, hooks = Recorder(), Hooks()
    try:
        yield TaskEngine(service, hooks, recorder, step_limit=50), ollama, recorder, hooks  # type: ignore[arg-type]
    finally:
        await ollama.close()
        await clients.close()


def chain(*tasks: dict, **extra: Any) -> ChainDefinition:
    return ChainDefinition.from_json({"id": "c", "tasks": list(tasks), **extra})


def task(task_id: str, handler: str, goto: str = "end", **fields: Any) -> dict:
    return {"id": task_id, "handler": handler, "transition": {"branches": [{"operator": "default", "goto": goto}]}, **fields}


def bodies(fake, path: str) -> list[dict]:
    return [body for _, p, body in fake.requests if p == path]


TRIAGE = {
    "id": "ticket-triage",
    "debug": True,
    "token_limit": 2048,
    "tasks": [
        {
            "id": "classify",
            "handler": "condition_key",
            "system_instruction": "Reply with exactly one word: urgent or normal.",
            "prompt_template": "Ticket text: {{.input}}",
            "valid_conditions": {"urgent": True, "normal": False},
            "retry_on_failure": 1,
            "timeout": "20s",
            "transition": {
                "on_failure": "fallback",
                "branches": [{"operator": "equals", "when": "true", "goto": "apology"}, {"operator": "default", "goto": "anger"}],
            },
        },
        {
            "id": "anger",
            "handler": "parse_number",
            "prompt_template": "Rate the customer's anger from 1 to 10. Answer with the number only. Ticket: {{.input}}",
            "transition": {
                "branches": [
                    {"operator": "gt", "when": "7", "goto": "apology"},
                    {"operator": "in_range", "when": "1-7", "goto": "friendly"},
                    {"operator": "default", "goto": "fallback"},
                ]
            },
        },
        {
            "id": "apology",
            "handler": "raw_string",
            "execute_config": {"model": MODEL, "provider": "ollama", "temperature": 0.2},
            "prompt_template": "Write a two-sentence apology for this ticket: {{.input}}",
            "print": "apology drafted: {{.apology}}",
            "transition": {"branches": [{"operator": "default", "goto": "end"}]},
        },
        {
            "id": "friendly",
            "handler": "raw_string",
            "prompt_template": "Anger level {{.anger}}/10. Write a friendly reply to: {{.input}}",
            "transition": {"branches": [{"operator": "default", "goto": "end"}]},
        },
        {
            "id": "fallback",
            "handler": "noop",
            "prompt_template": "We received your ticket and will get back to you.",
            "transition": {"branches": [{"operator": "default", "goto": ""}]},
        },
    ],
}


async def test_ticket_triage_trace(env):
    engine, ollama, recorder, _ = env
    ollama.script = ["normal", " 4 ", "  Thanks for your patience!  "]
    result = await engine.run(ChainDefinition.from_json(TRIAGE), "printer on fire", "string", ctx=CTX)
    assert (result.output, result.output_type) == ("Thanks for your patience!", "string")
    assert [(u["taskID"], u["outputType"], u["transition"], u["output"]) for u in result.state] == [
        ("classify", "bool", "false", "false"),
        ("anger", "int", "4", "4"),
        ("friendly", "string", "Thanks for your patience!", '"Thanks for your patience!"'),
    ]
    assert all(u["error"] == {"error": ""} and u["inputType"] == "string" for u in result.state)
    assert result.state[0]["input"] == "Ticket text: printer on fire" and result.state[0]["inputVar"] == "classify"
    generated = bodies(ollama, "/api/generate")
    assert generated[0]["system"] == "Reply with exactly one word: urgent or normal."
    assert generated[2]["prompt"] == "Anger level 4/10. Write a friendly reply to: printer on fire"
    await engine.drain()
    assert recorder.calls[0][2:] == ("ticket-triage", "string", 50)
    assert recorder.calls[-1] == ("record", result.run_id, ["classify", "anger", "friendly"], ("finished", "string", result.output))


async def test_ticket_triage_fallback_after_failed_retries(env):
    engine, ollama, recorder, _ = env
    ollama.script = ["Urgent!", "Urgent!"]
    result = await engine.run(ChainDefinition.from_json(TRIAGE), "x", "string", ctx=CTX)
    assert (result.output, result.output_type) == ("We received your ticket and will get back to you.", "string")
    errors = [u["error"]["error"] for u in result.state]
    assert errors[:2] == ["task classify: failed to parse into valid condition output was: Urgent! prompt was: Ticket text: x"] * 2
    assert [u["taskID"] for u in result.state] == ["classify", "classify", "fallback"] and errors[2] == ""


async def test_apology_branch_forwards_model_and_temperature(env):
    engine, ollama, _, _ = env
    ollama.script = ["urgent", "Sorry!"]
    result = await engine.run(ChainDefinition.from_json(TRIAGE), "x", "string", ctx=CTX)
    assert result.output == "Sorry!"
    assert bodies(ollama, "/api/generate")[1]["options"]["temperature"] == 0.2


async def test_failure_without_on_failure_keeps_the_partial_state(env):
    engine, _, recorder, _ = env
    with pytest.raises(ChainFailed) as raised:
        await engine.run(chain(task("r", "raise_error", retry_on_failure=1, prompt_template="bad {{.input}}")), "x", "string", ctx=CTX)
    assert raised.value.message == "task r failed after 1 retries: task r: bad x"
    assert [u["error"]["error"] for u in raised.value.state] == ["task r: bad x"] * 2
    await engine.drain()
    assert raised.value.run_id and recorder.calls[-1][3] == ("failed", raised.value.message, None)


@pytest.mark.parametrize(
    "handler, replies, value, value_type, output, output_type, transition",
    [
        ("raw_string", ["  hi there \n"], "q", "string", "hi there", "string", "hi there"),
        ("parse_number", ["about 7"], "q", "string", 7, "int", "7"),
        ("parse_score", ["7.5/10"], "q", "string", 7.5, "float", "7.50"),
        ("parse_range", ['"3 - 5"'], "q", "string", "3-5", "string", "3-5"),
        ("parse_transition", [], "/search cats", "string", "/search cats", "string", "search"),
        ("parse_key_value", [], "a=1; b=x", "string", {"a": 1, "b": "x"}, "json", "parsed"),
        ("noop", [], {"k": 1}, "json", {"k": 1}, "json", "noop"),
        ("embedding", [], "text", "string", [0.1, 0.2, 0.3], "vector", "ok"),
        ("raw_string", ["answer"], 4, "int", "answer", "string", "answer"),
    ],
)
async def test_handlers(env, handler, replies, value, value_type, output, output_type, transition):
    engine, ollama, _, _ = env
    ollama.script = list(replies)
    result = await engine.run(chain(task("t", handler)), value, value_type, ctx=CTX)
    assert (result.output, result.output_type, result.state[0]["transition"]) == (output, output_type, transition)
    if handler == "raw_string" and value_type == "int":
        assert bodies(ollama, "/api/generate")[0]["prompt"] == "4"


@pytest.mark.parametrize(
    "definition, value, value_type, message",
    [
        (task("t", "parse_number"), "q", "string", "task t: parsed number is not an integer: 2.5"),
        (task("t", "raw_string"), "", "string", "task t: unprocessable empty prompt"),
        (task("t", "raw_string"), {"a": 1}, "json", "task t: getPrompt unsupported input type for task raw_string: json"),
        (task("t", "model_execution"), "x", "string", "handler 'model_execution' requires input of type 'openai_chat' or 'chat_history', but got 'string'"),
        (task("t", "execute_tool_calls"), "x", "string", "handler 'execute_tool_calls' requires 'chat_history' input, but got 'string'"),
        (task("t", "convert_to_openai_chat_response"), "x", "string", "requires input of type 'chat_history', but got 'string'"),
        (task("t", "hook"), "x", "string", "task t: hook task missing hook definition"),
        (task("t", ""), "x", "string", "task t: executor does not support the task type: task-type is empty"),
        (task("t", "dance"), "x", "string", "unknown task type: executor does not support the task type -- dance"),
        (task("t", "embedding", execute_config={"models": ["a", "b"]}), "x", "string", "task t: multiple models specified"),
        (task("t", "noop", input_var="nope"), "x", "string", 'task t: input variable "nope" not found'),
        (task("t", "noop", prompt_template="{{.input.x}}"), "x", "string", "task t: template error: can't evaluate field x"),
        (task("t", "noop", print="{{.t.x}}"), "x", "string", "task t: print template error:"),
        (task("t", "noop", timeout="soon"), "x", "string", "task t: invalid timeout:"),
        (task("t", "noop", goto="elsewhere"), "x", "string", "next task elsewhere not found: task not found: elsewhere"),
        ({**task("t", "raise_error"), "transition": {"on_failure": "ghost"}}, "x", "string", "error transition target not found: task not found: ghost"),
        ({**task("t", "noop"), "transition": {"branches": [{"operator": "", "when": "x", "goto": "end"}]}}, "x", "string", "task t: transition error: unsupported operator: "),
        (task("t", "noop", compose={"with_var": "ghost"}), "x", "string", 'task t: compose right_var "ghost" not found'),
        (task("t", "noop", compose={"with_var": "input"}), "x", "string", "task t: invalid types for override"),
    ],
)
async def test_task_errors(env, definition, value, value_type, message):
    engine, ollama, _, _ = env
    ollama.script = ["2.5"]
    with pytest.raises(ChainFailed) as raised:
        await engine.run(chain(definition), value, value_type, ctx=CTX)
    assert message in raised.value.message


@pytest.mark.parametrize(
    "definition, message",
    [
        ({"id": "c", "tasks": []}, "chain has no tasks serverops: bad request"),
        ({"id": "c", "tasks": [{"handler": "noop"}]}, "task ID cannot be empty serverops: bad request"),
        ({"id": "c", "tasks": [{"id": "end", "handler": "noop"}]}, "task ID cannot be 'end' serverops: bad request"),
    ],
)
async def test_validation(env, definition, message):
    engine, _, recorder, _ = env
    with pytest.raises(BadRequest, match=message):
        await engine.run(ChainDefinition.from_json(definition), "x", "string", ctx=CTX)
    await engine.drain()
    assert recorder.calls == []  # nothing ran, nothing recorded


async def test_timeout_per_attempt_then_on_failure(env):
    engine, ollama, _, _ = env
    ollama.delay = 0.3
    first = task("slow", "raw_string", timeout="20ms", retry_on_failure=1)
    first["transition"]["on_failure"] = "after"
    result = await engine.run(chain(first, task("after", "noop", prompt_template="gave up on {{.input}}")), "q", "string", ctx=CTX)
    assert result.output == "gave up on q"
    assert [u["error"]["error"] for u in result.state[:2]] == ["task slow: context deadline exceeded"] * 2


async def test_step_limit_keeps_partial_state(env):
    engine, _, recorder, _ = env
    engine.step_limit = 5
    looping = chain(task("a", "noop", goto="b"), task("b", "noop", goto="a"))
    with pytest.raises(ChainFailed) as raised:
        await engine.run(looping, "x", "string", ctx=CTX)
    assert raised.value.message == "task b: step limit 5 reached"
    assert [u["taskID"] for u in raised.value.state] == ["a", "b", "a", "b", "a"]
    await engine.drain()
    assert recorder.calls[-1][2] == ["a", "b", "a", "b", "a"]


async def test_a_long_run_is_recorded_in_batches(env):
    engine, _, recorder, _ = env
    engine.step_limit = 150
    with pytest.raises(ChainFailed, match="step limit 150 reached"):
        await engine.run(chain(task("a", "noop", goto="a")), "x", "string", ctx=CTX)
    await engine.drain()
    records = [c for c in recorder.calls if c[0] == "record"]
    assert [len(c[2]) for c in records] == [64, 64, 22]
    assert [c[3] is None for c in records] == [True, True, False]


async def test_variables_compose_and_input_var(env):
    engine, _, _, _ = env
    first = task("first", "parse_key_value", goto="second")
    second = task("second", "parse_key_value", goto="third", prompt_template="b=2; c={{.first.a}}", compose={"with_var": "first"})
    third = task("third", "noop", input_var="second_composed")
    result = await engine.run(chain(first, second, third), "a=1", "string", ctx=CTX)
    assert result.output == {"a": 1, "b": 2, "c": 1}
    assert result.output_type == "any"  # the chain's input type (string) is not the with_var's: quirk
    assert [u["inputVar"] for u in result.state] == ["first", "second", "second_composed"]
    assert result.state[1]["outputType"] == "json"  # captured before compose


def history(*messages: tuple[str, str], **extra: Any) -> dict:
    return {
        "messages": [{"id": "", "role": r, "content": c, "timestamp": "2026-01-01T00:00:00Z"} for r, c in messages],
        "model": "",
        "inputTokens": 0,
        "outputTokens": 0,
        **extra,
    }


async def test_model_execution_on_an_openai_chat_request(env):
    engine, ollama, _, _ = env
    ollama.script = ["Paris."]
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "temperature": 0.3}
    definition = chain(
        task("answer", "model_execution", goto="reply", system_instruction="Be concise."),
        task("reply", "convert_to_openai_chat_response"),
        token_limit=100,
    )
    result = await engine.run(definition, request, "openai_chat", ctx=CTX)
    assert result.output_type == "openai_chat_response"
    completion = result.output
    assert completion["id"].startswith("chatcmpl-") and completion["object"] == "chat.completion"
    assert completion["model"] == MODEL
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]
    usage = completion["usage"]
    assert usage["prompt_tokens"] == estimate_tokens("Be concise.") + estimate_tokens("Capital of France?") > 0
    assert usage["completion_tokens"] == estimate_tokens("Paris.") > 0
    [sent] = bodies(ollama, "/api/chat")
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["options"]["temperature"] == 0.3  # forwarded (the reference drops it)
    assert result.state[0]["transition"] == "executed"


async def test_model_execution_token_limit(env):
    engine, _, _, _ = env
    definition = chain(task("answer", "model_execution"), token_limit=2)
    with pytest.raises(ChainFailed, match="input token count 3 exceeds context length 2"):
        await engine.run(definition, history(("user", "twelve chars")), "chat_history", ctx=CTX)


async def test_model_execution_streams_pieces(env):
    engine, ollama, _, _ = env
    ollama.reply = ["Hel", "lo ", "there"]
    pieces: list[str] = []

    async def on_piece(piece: str) -> None:
        pieces.append(piece)

    result = await engine.run(chain(task("answer", "model_execution")), history(("user", "hi")), "chat_history", on_piece=on_piece, ctx=CTX)
    assert pieces == ["Hel", "lo ", "there"]
    assert result.output["messages"][-1]["content"] == "Hello there"
    assert result.output["messages"][0]["content"] == "hi"


async def test_tool_calling_loop_through_a_hook(env):
    engine, ollama, _, hooks = env
    ollama.script = ["", "It rains in Berlin."]
    ollama.tool_script = [[{"name": "weather.current", "arguments": {"city": "Berlin"}}], None]
    tools = {"type": "function", "function": {"name": "client_tool", "parameters": {}}}
    hidden = {"type": "function", "function": {"name": "secret", "parameters": {}}}
    agent = {
        "id": "agent",
        "handler": "model_execution",
        "execute_config": {"hooks": ["weather"], "pass_clients_tools": True, "hide_tools": ["secret"]},
        "transition": {"branches": [{"operator": "equals", "when": "tool-call", "goto": "tools"}, {"operator": "default", "goto": "reply"}]},
    }
    definition = chain(agent, task("tools", "execute_tool_calls", goto="agent"), task("reply", "convert_to_openai_chat_response"))
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Berlin?"}], "tools": [tools, hidden]}
    result = await engine.run(definition, request, "openai_chat", client_tools=[tools, hidden], ctx=CTX)
    assert [u["transition"] for u in result.state] == ["tool-call", "tools_executed", "executed", "converted"]
    assert hooks.calls == [("weather", "current", {"city": "Berlin"})]  # prefix stripped, the arguments flat
    first_chat = bodies(ollama, "/api/chat")[0]
    assert sorted(t["function"]["name"] for t in first_chat["tools"]) == ["client_tool", "weather.current"]
    second = bodies(ollama, "/api/chat")[1]["messages"]
    assert second[-1]["role"] == "tool" and json.loads(second[-1]["content"]) == {"summary": "light rain", "temp": 12.5}
    assert result.output["choices"][0]["message"]["content"] == "It rains in Berlin."


async def test_client_tool_calls_are_left_to_the_client(env):
    engine, ollama, _, hooks = env
    ollama.tool_script = [[{"name": "client_tool", "arguments": {}}]]
    tools = [{"type": "function", "function": {"name": "client_tool", "parameters": {}}}]
    agent = task("agent", "model_execution", goto="run", execute_config={"pass_clients_tools": True})
    definition = chain(agent, task("run", "execute_tool_calls", goto="reply"), task("reply", "convert_to_openai_chat_response"))
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    result = await engine.run(definition, request, "openai_chat", client_tools=tools, ctx=CTX)
    assert hooks.calls == []
    choice = result.output["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"][0]["function"]["name"] == "client_tool"


async def test_hook_task_with_and_without_output_template(env):
    engine, _, _, hooks = env
    lookup = {
        "id": "lookup",
        "handler": "hook",
        "hook": {"name": "weather", "tool_name": "current", "args": {"unit": "celsius"}},
        "output_template": "{{.summary}} at {{.temp}}",
        "transition": {"branches": [{"operator": "contains", "when": "rain", "goto": "umbrella"}, {"operator": "default", "goto": "end"}]},
    }
    result = await engine.run(chain(lookup, task("umbrella", "noop")), "Berlin", "string", ctx=CTX)
    assert (result.output, result.output_type) == ("light rain at 12.5", "string")
    assert hooks.calls == [("weather", "current", {"input": "Berlin", "unit": "celsius"})]
    hooks.result = ({"id": 1234567, "n": 4}, "json")
    numbers = {**lookup, "output_template": "{{.id}} {{.n}}"}
    result = await engine.run(chain(numbers, task("umbrella", "noop")), "Berlin", "string", ctx=CTX)
    assert result.output == "1.234567e+06 4"  # JSON numbers are floats to Go's templates
    hooks.result = ({"summary": "light rain", "temp": 12.5}, "json")
    plain = {**lookup, "output_template": "", "transition": {"branches": [{"operator": "default", "goto": "end"}]}}
    result = await engine.run(chain(plain), "Berlin", "string", ctx=CTX)
    assert (result.output, result.output_type, result.state[0]["transition"]) == ({"summary": "light rain", "temp": 12.5}, "json", "ok")
    broken = {**plain, "hook": {"name": "nope", "tool_name": "x"}}
    with pytest.raises(ChainFailed) as raised:
        await engine.run(chain(broken), "Berlin", "string", ctx=CTX)
    assert raised.value.message.endswith("task lookup: execution failed for hook 'nope': unknown hook: nope")
    assert raised.value.state[0]["transition"] == "failed"


async def test_hook_tool_discovery_failure_names_the_first_task(env):
    engine, _, _, _ = env
    agent = task("second", "model_execution", execute_config={"hooks": ["ghost"]})
    with pytest.raises(ChainFailed, match="task first: failed to get tools for hook ghost: unknown hook: ghost"):
        await engine.run(chain(task("first", "noop", goto="second"), agent), "x", "string", ctx=CTX)


async def test_model_execution_on_an_openai_backend() -> None:
    states = States()
    clients = open_clients(Settings(provider_timeout=10, provider_connect_timeout=2))
    try:
        async with FakeOpenAI(models=["gpt-4o-mini"]) as openai:
            openai.reply = "from openai"
            model = pulled("gpt-4o-mini", can_chat=True, can_prompt=True, can_stream=True)
            states.current = [BackendState("oa", "oa-name", "openai", openai.url, ("gpt-4o-mini",), (model,), "")]
            service = ExecutionService(states, Keys(openai="sk-test"), clients, DEFAULTS)
            engine = TaskEngine(service)
            definition = chain(task("answer", "model_execution", execute_config={"model": "gpt-4o-mini", "provider": "openai"}))
            result = await engine.run(definition, history(("user", "hi")), "chat_history", ctx=CTX)
            assert result.output["messages"][-1]["content"] == "from openai"
            assert result.output["outputTokens"] == estimate_tokens("from openai")
    finally:
        await clients.close()


async def test_a_run_ended_by_its_backend_answers_as_the_backend_failed(env):
    """A backend that is down ends the run with 503 (Retry-After: the service's), one that refuses with 502:
    a client may retry those, unlike a chain's own failure (422)."""
    engine, ollama, _, _ = env
    ollama.fail_with = 500
    with pytest.raises(ChainFailed) as down:
        await engine.run(chain(task("say", "raw_string")), "hi", "string", ctx=CTX)
    answer = down.value.as_answer()
    assert isinstance(answer, Unavailable) and answer.retry_after == 1 and answer.message == down.value.message
    ollama.fail_with = 400
    with pytest.raises(ChainFailed) as refused:
        await engine.run(chain(task("say", "raw_string")), "hi", "string", ctx=CTX)
    assert type(refused.value.as_answer()) is UpstreamRefused
    with pytest.raises(ChainFailed) as own:
        await engine.run(chain(task("boom", "raise_error")), "no", "string", ctx=CTX)
    assert type(own.value.as_answer()) is Unprocessable
