"""The OpenAI chat endpoint's pure parts (web/openai_chat.py): the request as the chain's input, the chain's result
as a chat completion, the usage estimate, the built-in chain."""

from __future__ import annotations

import pytest

from chainloom.commands.tasks import RunResult
from chainloom.domain.errors import Unprocessable
from chainloom.web.bodies import parse_object
from chainloom.web.openai_chat import (
    BUILTIN_CHAT_CHAIN,
    ChatCompletionBody,
    builtin_chain,
    chain_input,
    completion_of,
)

HI = [{"role": "user", "content": "Say hello to everyone"}]


def body(**fields) -> ChatCompletionBody:
    return parse_object({"messages": HI, **fields}, ChatCompletionBody)


def history(*messages: dict, input_tokens: int = 0, output_tokens: int = 0) -> dict:
    return {"messages": list(messages), "model": "", "inputTokens": input_tokens, "outputTokens": output_tokens}


def test_the_request_becomes_the_openai_chat_input_with_its_non_empty_keys():
    request = body(
        model="m", temperature=0.5, max_tokens=0, stop=[], user="", stream=False, Tools=[{"function": {"name": "f"}}],
        messages=[{"role": "user", "content": None, "name": "dropped"},
                  {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "42"}],
    )
    assert chain_input(request) == {
        "model": "m",
        "messages": [
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                                                                 "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
        "temperature": 0.5,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "messages.0.content"),
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "hi"}]}, "messages.0.role"),
        ({"model": 4}, "model"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"stop": [1]}, "stop"),
    ],
)
def test_what_does_not_decode_is_422_naming_the_field(fields, param):
    with pytest.raises(Unprocessable) as refused:
        parse_object({"messages": HI, **fields}, ChatCompletionBody)
    assert refused.value.param is not None and refused.value.param.startswith(param)


def test_a_history_is_converted_with_the_request_model_and_its_counts():
    result = RunResult("run", history({"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"},
                                      input_tokens=7, output_tokens=2), "chat_history", [])
    completion = completion_of(result, body(model="asked"), "chatcmpl-1")
    assert completion["id"] == "chatcmpl-1" and completion["model"] == "asked"
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]
    assert completion["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


@pytest.mark.parametrize(
    "reply, completion_tokens",
    [
        ({"role": "assistant", "content": "Hello there, friend"}, 5),  # 19 bytes / 4, rounded up
        ({"role": "assistant"}, 1),  # an empty reply still counts 1
        ({"role": "assistant", "callTools": [{"id": "c", "type": "function",
                                              "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}, 6),
    ],
)
def test_missing_counts_are_estimated_and_positive(reply, completion_tokens):
    result = RunResult("run", history(*HI, reply), "chat_history", [])
    usage = completion_of(result, body(), "x")["usage"]
    assert usage == {"prompt_tokens": 6, "completion_tokens": completion_tokens, "total_tokens": 6 + completion_tokens}


def test_a_chat_response_is_answered_as_it_is_but_the_model_and_usage():
    response = {"id": "chatcmpl-chain", "object": "chat.completion", "created": 5, "model": "other", "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, "system_fingerprint": ""}
    completion = completion_of(RunResult("run", response, "openai_chat_response", []), body(model="asked"), "x")
    assert completion == {"id": "chatcmpl-chain", "object": "chat.completion", "created": 5, "model": "asked",
                          "choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}}


@pytest.mark.parametrize(
    "output, kind, message",
    [
        (None, "chat_history", "empty result from chain execution"),
        ("text", "string", "invalid result type from chain: string"),
        ({"model": "m", "messages": HI}, "openai_chat", "invalid result type from chain: openai_chat"),
    ],
)
def test_other_results_are_422(output, kind, message):
    with pytest.raises(Unprocessable, match=f"^{message}$"):
        completion_of(RunResult("run", output, kind, []), body(), "x")


@pytest.mark.parametrize("model, providers", [("llama3:8b", ("ollama", "vllm", "openai", "gemini")), ("", ())])
def test_the_built_in_chain_is_valid_and_runs_the_request_model_anywhere(model, providers):
    chain = builtin_chain(model)
    chain.validate()
    assert chain.id == BUILTIN_CHAT_CHAIN
    assert [(t.id, t.handler) for t in chain.tasks] == [("chat", "model_execution"), ("reply", "convert_to_openai_chat_response")]
    config = chain.tasks[0].execute_config
    assert config is not None and config.pass_clients_tools
    assert (config.model, config.providers) == (model, providers)
