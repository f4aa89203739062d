"""/tasks input conversion by inputType (notes §3.2) and handler text extraction (§4.5)."""

from __future__ import annotations

import pytest

from chainloom.domain.errors import Unprocessable
from chainloom.domain.taskengine import TaskError
from chainloom.domain.taskengine.values import ZERO_TIME, convert_input, prompt_text


@pytest.mark.parametrize(
    "value, input_type, expected, expected_type",
    [
        ("hello", "string", "hello", "string"),
        ("hello", "STRING", "hello", "string"),
        ({"value": "inner"}, "string", "inner", "string"),
        ({"value": 3, "b": "<"}, "string", '{"b":"\\u003c","value":3}', "string"),
        (42, "string", "42", "string"),
        (1.5, "string", "1.5", "string"),
        (True, "string", "true", "string"),
        (None, "string", "<nil>", "string"),
        (["a", "b"], "string", "[a b]", "string"),
        (True, "bool", True, "bool"),
        ("T", "bool", True, "bool"),
        ("False", "bool", False, "bool"),
        ("yes", "bool", False, "bool"),
        (2, "bool", True, "bool"),
        (0, "bool", False, "bool"),
        (None, "bool", False, "bool"),
        (3.9, "int", 3, "int"),
        (-3.9, "int", -3, "int"),
        ("17", "int", 17, "int"),
        ("17.5", "int", 0, "int"),
        ([1], "int", 0, "int"),
        ("2.5", "float", 2.5, "float"),
        (2, "float", 2.0, "float"),
        ("x", "float", 0.0, "float"),
        ({"a": [1, 2]}, "json", {"a": [1, 2]}, "json"),
        (None, "json", None, "json"),
        ({"k": 1}, "any", {"k": 1}, "any"),
        ([0.5, 1.0], "vector", [0.5, 1.0], "vector"),
        (None, "nil", None, "nil"),
        ([{"id": "d1", "type": "doc", "distance": 1}], "search_results", [{"id": "d1", "type": "doc", "distance": 1.0}], "search_results"),
    ],
)
def test_convert_input(value, input_type, expected, expected_type):
    assert convert_input(value, input_type) == (expected, expected_type)


def test_chat_history_is_normalised():
    history, kind = convert_input({"messages": [{"role": "user", "content": "hi", "extra": 1}], "model": "m"}, "chat_history")
    assert kind == "chat_history"
    assert history == {
        "messages": [{"id": "", "role": "user", "content": "hi", "timestamp": ZERO_TIME}],
        "model": "m",
        "inputTokens": 0,
        "outputTokens": 0,
    }


def test_openai_chat_keeps_role_and_content_only():
    request, kind = convert_input(
        {"model": "m", "messages": [{"role": "user", "content": "hi", "name": "x"}], "tools": [{"type": "function"}], "n": 0},
        "openai_chat",
    )
    assert request == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}


@pytest.mark.parametrize(
    "value, input_type, message",
    [
        ({"messages": [{"role": "user", "content": ["part"]}]}, "openai_chat", "failed to convert to OpenAIChatRequest"),
        ({"messages": "x"}, "chat_history", "failed to convert to ChatHistory"),
        ("x", "openai_chat_response", "failed to convert to OpenAIChatResponse"),
        ([{"distance": "far"}], "search_results", "failed to convert to []SearchResult"),
        ("x", "", "unknown data type: "),
        ("x", "text", "unknown data type: text"),
    ],
)
def test_convert_input_refusals(value, input_type, message):
    with pytest.raises(Unprocessable) as caught:
        convert_input(value, input_type)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    "value, value_type, expected",
    [
        ("text", "string", "text"),
        (4, "int", "4"),
        (4.0, "float", "4.000000"),
        (True, "bool", "true"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "chat_history", "b"),
        ({"messages": [{"role": "user", "content": "q"}]}, "openai_chat", "q"),
    ],
)
def test_prompt_text(value, value_type, expected):
    assert prompt_text(value, value_type, "raw_string") == expected


@pytest.mark.parametrize(
    "value, value_type, message",
    [
        ({"messages": []}, "chat_history", "SEVERBUG: chat history is empty"),
        ({"messages": []}, "openai_chat", "cannot get prompt from empty OpenAI chat request"),
        ({"a": 1}, "json", "getPrompt unsupported input type for task raw_string: json"),
    ],
)
def test_prompt_text_refusals(value, value_type, message):
    with pytest.raises(TaskError, match=message):
        prompt_text(value, value_type, "raw_string")
