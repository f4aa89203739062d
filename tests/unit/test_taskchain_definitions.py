"""Chain definitions: Go's decoding rules, the reference's serialisation, validation, Go durations."""

from __future__ import annotations

import copy

import pytest

from chainloom.domain.errors import Unprocessable
from chainloom.domain.taskchains import (
    Branch,
    ChainDefinition,
    ExecuteConfig,
    HookCall,
    TaskDefinition,
    Transition,
    parse_duration,
    parse_duration_ns,
)

TRIAGE = {
    "id": "ticket-triage",
    "description": "Classify a support ticket, then draft a reply",
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
                "branches": [
                    {"operator": "equals", "when": "true", "goto": "apology"},
                    {"operator": "default", "goto": "anger"},
                ],
            },
        },
        {
            "id": "anger",
            "handler": "parse_number",
            "prompt_template": "Rate the anger from 1 to 10: {{.input}}",
            "transition": {"branches": [{"operator": "gt", "when": "7", "goto": "apology"},
                                        {"operator": "in_range", "when": "1-7", "goto": "lookup"},
                                        {"operator": "default", "goto": "fallback"}]},
        },
        {
            "id": "apology",
            "handler": "raw_string",
            "execute_config": {"model": "phi3:3.8b", "provider": "ollama", "temperature": 0.2},
            "prompt_template": "Apologise for: {{.input}}",
            "print": "apology drafted: {{.apology}}",
            "transition": {"branches": [{"operator": "default", "goto": "end"}]},
        },
        {
            "id": "lookup",
            "handler": "hook",
            "hook": {"name": "weather", "tool_name": "current", "args": {"unit": "celsius"}},
            "output_template": "{{.summary}}",
            "input_var": "input",
            "compose": {"with_var": "anger", "strategy": "override"},
            "transition": {"branches": [{"operator": "default", "goto": ""}]},
        },
        {"id": "fallback", "handler": "noop", "prompt_template": "We will get back to you.", "transition": {}},
    ],
}


def decode(obj) -> ChainDefinition:
    return ChainDefinition.from_json(obj)


def one_task(**task) -> ChainDefinition:
    return decode({"id": "c", "tasks": [{"id": "t", "handler": "noop", **task}]})


# -- serialisation ----------------------------------------------------------------------------------


def test_the_notes_example_task_comes_back_with_only_the_always_written_keys():
    chain = decode({"id": "c", "tasks": [{"id": "t1", "type": "llm", "prompt": "hi"}]})
    assert chain.to_json() == {
        "id": "c",
        "debug": False,
        "description": "",
        "tasks": [{"id": "t1", "description": "", "handler": "", "prompt_template": "",
                   "transition": {"on_failure": "", "branches": None}}],
        "token_limit": 0,
    }


def test_a_full_chain_round_trips_and_writes_what_it_was_given():
    chain = decode(TRIAGE)
    chain.validate()
    written = chain.to_json()
    assert decode(written) == chain
    assert written["tasks"][0] == {
        "id": "classify",
        "description": "",
        "handler": "condition_key",
        "system_instruction": "Reply with exactly one word: urgent or normal.",
        "valid_conditions": {"urgent": True, "normal": False},
        "prompt_template": "Ticket text: {{.input}}",
        "transition": {"on_failure": "fallback", "branches": [
            {"operator": "equals", "when": "true", "goto": "apology"},
            {"operator": "default", "when": "", "goto": "anger"},
        ]},
        "timeout": "20s",
        "retry_on_failure": 1,
    }
    assert written["tasks"][2]["execute_config"] == {
        "model": "phi3:3.8b", "provider": "ollama", "temperature": 0.2, "pass_clients_tools": False}
    assert written["tasks"][3]["hook"] == {"name": "weather", "tool_name": "current", "args": {"unit": "celsius"}}
    assert written["tasks"][3]["compose"] == {"with_var": "anger", "strategy": "override"}
    assert written["tasks"][4]["transition"] == {"on_failure": "", "branches": None}


@pytest.mark.parametrize(
    "task, written",
    [
        ({"execute_config": {}}, {"execute_config": {"model": "", "pass_clients_tools": False}}),
        ({"execute_config": {"temperature": 0, "models": [], "hooks": ["h"]}},
         {"execute_config": {"model": "", "hooks": ["h"], "pass_clients_tools": False}}),
        ({"hook": {}}, {"hook": {"name": "", "tool_name": "", "args": None}}),
        ({"hook": {"args": {}}}, {"hook": {"name": "", "tool_name": "", "args": {}}}),
        ({"compose": {}}, {"compose": {}}),
        ({"valid_conditions": {}}, {}),
        ({"retry_on_failure": -1}, {"retry_on_failure": -1}),
        ({"retry_on_failure": 0, "timeout": "", "print": "", "input_var": ""}, {}),
    ],
)
def test_other_keys_are_written_only_when_not_empty(task, written):
    out = one_task(**task).to_json()["tasks"][0]
    base = {"id", "description", "handler", "prompt_template", "transition"}
    assert {k: v for k, v in out.items() if k not in base} == written


@pytest.mark.parametrize(
    "transition, written",
    [
        ({}, {"on_failure": "", "branches": None}),
        ({"branches": None}, {"on_failure": "", "branches": None}),
        ({"branches": []}, {"on_failure": "", "branches": []}),
        ({"branches": [{"when": "x", "goto": "end", "operator": "equals"}]},
         {"on_failure": "", "branches": [{"operator": "equals", "when": "x", "goto": "end"}]}),
    ],
)
def test_branches_are_null_when_absent_and_a_list_when_given(transition, written):
    assert one_task(transition=transition).to_json()["tasks"][0]["transition"] == written


# -- Go decoding ------------------------------------------------------------------------------------


def test_keys_other_than_the_notes_snake_case_ones_are_dropped():
    task = one_task(systemInstruction="s", promptTemplate="p", inputVar="i", executeConfig={"model": "m"},
                    retryOnFailure=3, type="llm", transition={"onFailure": "x"}).tasks[0]
    assert task == TaskDefinition(id="t", handler="noop")


def test_keys_match_case_insensitively_exact_first_and_the_last_one_wins():
    chain = decode({"ID": "c", "Tasks": [{"Id": "t", "HANDLER": "noop", "Execute_Config": {"MODEL": "m"},
                                         "hook": {"Tool_Name": "x", "ARGS": {"Unit": "c"}}}], "TOKEN_LIMIT": 5})
    task = chain.tasks[0]
    assert (chain.id, chain.token_limit, task.id, task.handler) == ("c", 5, "t", "noop")
    assert task.execute_config == ExecuteConfig(model="m")
    assert task.hook == HookCall(tool_name="x", args={"Unit": "c"})  # map keys are data: kept as given
    assert decode({"id": "c", "tasks": [{"Handler": "raw_string", "handler": "noop"}]}).tasks[0].handler == "noop"
    assert decode({"id": "c", "tasks": [{"handler": "noop", "HANDLER": "hook"}]}).tasks[0].handler == "hook"
    # Go's folding maps ſ to s and the Kelvin sign to k, one character for one (ß is not ss).
    assert decode({"id": "c", "taſkſ": [{"id": "t"}], "token_limit": 1}).tasks[0].id == "t"
    assert one_task(paß_clients_tools=True, execute_config={"paß_clients_tools": True}).tasks[0].execute_config == \
        ExecuteConfig()


def test_an_object_given_twice_merges_as_go_decodes_into_the_value_already_there():
    task = one_task(transition={"on_failure": "x"}, Transition={"branches": []},
                    valid_conditions={"a": True}, Valid_Conditions={"b": False}).tasks[0]
    assert task.transition == Transition(on_failure="x", branches=())
    assert task.valid_conditions == {"a": True, "b": False}


def test_null_leaves_values_alone_and_empties_pointers_maps_and_lists():
    task = one_task(description=None, retry_on_failure=None, hook=None, compose=None, transition=None,
                    valid_conditions={"a": None}, execute_config={"models": None, "temperature": None,
                                                                  "hooks": [None, "h"]}).tasks[0]
    assert (task.description, task.retry_on_failure, task.hook, task.compose) == ("", 0, None, None)
    assert task.transition == Transition()
    assert task.valid_conditions == {"a": False}
    assert task.execute_config == ExecuteConfig(hooks=("", "h"))
    assert one_task(hook={"args": {"a": None}}).tasks[0].hook == HookCall(args={"a": ""})
    assert decode({"id": "c", "tasks": None}).tasks == ()


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"id": 5}, "id: expected a string, got a number"),
        ({"debug": "yes"}, "debug: expected a boolean, got a string"),
        ({"token_limit": 1.5}, "token_limit: expected an integer, got a number"),
        ({"token_limit": 1.0}, "token_limit: expected an integer, got a number"),
        ({"token_limit": True}, "token_limit: expected an integer, got a boolean"),
        ({"token_limit": 1 << 63}, "token_limit: expected an integer, got a number"),
        ({"tasks": {"id": "t"}}, "tasks: expected an array of objects, got an object"),
        ({"tasks": [{}, {}, {"retry_on_failure": "1"}]}, "tasks[2].retry_on_failure: expected an integer, got a string"),
        ({"tasks": ["t"]}, "tasks[0]: expected an object, got a string"),
        ({"tasks": [{"handler": ["noop"]}]}, "tasks[0].handler: expected a string, got an array"),
        ({"tasks": [{"valid_conditions": {"a": "true"}}]}, "tasks[0].valid_conditions.a: expected a boolean"),
        ({"tasks": [{"valid_conditions": []}]}, "tasks[0].valid_conditions: expected an object of booleans"),
        ({"tasks": [{"hook": {"args": {"n": 1}}}]}, "tasks[0].hook.args.n: expected a string, got a number"),
        ({"tasks": [{"hook": "weather"}]}, "tasks[0].hook: expected an object, got a string"),
        ({"tasks": [{"execute_config": {"models": ["a", 2]}}]}, "tasks[0].execute_config.models[1]: expected a string"),
        ({"tasks": [{"execute_config": {"temperature": "0.2"}}]}, "tasks[0].execute_config.temperature: expected a number"),
        ({"tasks": [{"execute_config": {"pass_clients_tools": 1}}]},
         "tasks[0].execute_config.pass_clients_tools: expected a boolean"),
        ({"tasks": [{"transition": {"branches": [{"when": 7}]}}]}, "tasks[0].transition.branches[0].when: expected a string"),
        ({"tasks": [{"compose": {"strategy": False}}]}, "tasks[0].compose.strategy: expected a string"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_path(obj, message):
    with pytest.raises(Unprocessable) as refused:
        decode(obj)
    assert refused.value.message.startswith(message)
    assert refused.value.param == message.split(":")[0]


def test_a_chain_must_be_an_object():
    with pytest.raises(Unprocessable, match="task chain: expected an object, got an array"):
        decode([])


# -- validation -------------------------------------------------------------------------------------


def test_the_full_example_is_valid():
    decode(TRIAGE).validate()


def _broken(change) -> dict:
    chain = copy.deepcopy(TRIAGE)
    change(chain)
    return chain


def _set(path: str, value):
    def change(chain):
        *parents, last = path.split(".")
        target = chain
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    "change, message, param",
    [
        (_set("id", ""), "task chain ID is required", "id"),
        (_set("tasks", []), "task chain must contain at least one task", "tasks"),
        (_set("tasks.1.id", ""), "tasks[1].id: task ID cannot be empty", "tasks[1].id"),
        (_set("tasks.1.id", "end"), "tasks[1].id: task ID cannot be 'end'", "tasks[1].id"),
        (_set("tasks.1.id", "classify"), "task classify: id: duplicate task ID (tasks[0] and tasks[1])", "tasks[1].id"),
        (_set("tasks.2.handler", ""), "task apology: handler: a handler is required; one of raw_string,", "tasks[2].handler"),
        (_set("tasks.2.handler", "llm"), "task apology: handler: unknown handler 'llm'; one of raw_string,",
         "tasks[2].handler"),
        (_set("tasks.0.transition.on_failure", "nowhere"),
         "task classify: transition.on_failure: no task 'nowhere' in the chain", "tasks[0].transition.on_failure"),
        (_set("tasks.0.transition.on_failure", "end"),
         "task classify: transition.on_failure: no task 'end' in the chain", "tasks[0].transition.on_failure"),
        (_set("tasks.1.transition.branches.1.goto", "friendly"),
         "task anger: transition.branches[1].goto: no task 'friendly' in the chain",
         "tasks[1].transition.branches[1].goto"),
        (_set("tasks.1.transition.branches.0.operator", "greater"),
         "task anger: transition.branches[0].operator: unsupported operator 'greater'; one of equals,",
         "tasks[1].transition.branches[0].operator"),
        (_set("tasks.1.transition.branches.0.operator", _DELETE),
         "task anger: transition.branches[0].operator: an operator is required",
         "tasks[1].transition.branches[0].operator"),
        (_set("tasks.0.valid_conditions", _DELETE),
         "task classify: valid_conditions: handler condition_key needs at least one valid condition",
         "tasks[0].valid_conditions"),
        (_set("tasks.0.valid_conditions", {}), "task classify: valid_conditions:", "tasks[0].valid_conditions"),
        (_set("tasks.3.hook", _DELETE), "task lookup: hook.name: handler hook needs the name of a remote hook",
         "tasks[3].hook.name"),
        (_set("tasks.3.hook.name", ""), "task lookup: hook.name:", "tasks[3].hook.name"),
        (_set("tasks.3.hook.tool_name", ""), "task lookup: hook.tool_name: handler hook needs the tool",
         "tasks[3].hook.tool_name"),
        (_set("tasks.0.timeout", "20 seconds"), "task classify: timeout: unknown unit ' seconds'", "tasks[0].timeout"),
        (_set("tasks.0.timeout", "20"), "task classify: timeout: missing unit in duration '20'", "tasks[0].timeout"),
        (_set("tasks.0.timeout", "-1s"), "task classify: timeout: must be positive", "tasks[0].timeout"),
        (_set("tasks.0.timeout", "0s"), "task classify: timeout: must be positive", "tasks[0].timeout"),
        (lambda chain: (_set("tasks.0.transition.on_failure", "")(chain),
                        _set("tasks.1.transition.branches.2.goto", "end")(chain)),
         "task fallback: unreachable: no branch goto or on_failure leads to it from the first task classify",
         "tasks[4]"),
    ],
)
def test_what_could_not_run_as_meant_is_refused_naming_the_task_and_field(change, message, param):
    chain = decode(_broken(change))
    with pytest.raises(Unprocessable) as refused:
        chain.validate()
    assert refused.value.message.startswith(message), refused.value.message
    assert refused.value.param == param


def test_a_task_reached_only_through_on_failure_or_a_later_task_is_reachable():
    chain = ChainDefinition("c", tasks=(
        TaskDefinition(id="a", handler="noop", transition=Transition(on_failure="c")),
        TaskDefinition(id="b", handler="noop"),
        TaskDefinition(id="c", handler="noop", transition=Transition(branches=(Branch("default", "", "b"),))),
    ))
    chain.validate()
    assert chain.task("b") is chain.tasks[1] and chain.task("end") is None


# -- Go durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, nanoseconds",
    [
        ("500ms", 500_000_000),
        ("30s", 30_000_000_000),
        ("2m", 120_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5us", 500),
        ("1.s", 1_000_000_000),
        ("3µs", 3_000),
        ("3μs", 3_000),
        ("7ns", 7),
        ("0", 0),
        ("+0", 0),
        ("-1.5s", -1_500_000_000),
        ("1h1m1s1ms1us1ns", 3_661_001_001_001),
        ("0.3333333333s", 333_333_333),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
    ],
)
def test_go_durations_parse(text, nanoseconds):
    assert parse_duration_ns(text) == nanoseconds
    assert parse_duration(text) == nanoseconds / 1e9


@pytest.mark.parametrize(
    "text", ["", "1", "s", "1sec", "1e3s", ".s", "-", "1.5", " 1s", "1s ", "1 s", "9223372036854775808ns", "3000000h"]
)
def test_bad_go_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration_ns(text)
