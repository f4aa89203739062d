"""Parsing handlers (notes §5), transitions (§6) and compose strategies (§4.6)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chainloom.domain.taskengine import TaskError
from chainloom.domain.taskengine.compose import compose
from chainloom.domain.taskengine.parsing import (
    lenient_number,
    parse_key_value,
    parse_number,
    parse_range,
    parse_transition,
)
from chainloom.domain.taskengine.transitions import matches, next_task


@pytest.mark.parametrize(
    "text, expected",
    [("42", 42.0), (' "7.5" ', 7.5), ("I'd say 8 out of 10", 8.0), ("-3", -3.0), ("1300-1700", 1300.0), ("score: .5", 0.5), ("1e3", 1000.0)],
)
def test_lenient_number(text, expected):
    assert lenient_number(text) == expected


@pytest.mark.parametrize("text, message", [("", "cannot parse number from empty string"), ("none", 'no valid number found in "none"')])
def test_lenient_number_refusals(text, message):
    with pytest.raises(TaskError, match=message):
        lenient_number(text)


def test_parse_number():
    assert parse_number("p", " 4 ") == 4
    with pytest.raises(TaskError, match="parsed number is not an integer: 4.5"):
        parse_number("p", "4.5")
    with pytest.raises(TaskError, match="invalid number format: prompt p answer none no valid number"):
        parse_number("p", "none")


@pytest.mark.parametrize("answer, expected", [("3-5", "3-5"), (' "10 - 20" ', "10-20"), ("7", "7-7"), ("about 7", "about7-about7")])
def test_parse_range(answer, expected):
    assert parse_range("p", answer) == expected


@pytest.mark.parametrize("answer", ["-3-5", "a-b", "1-2-3", "x"])
def test_parse_range_refusals(answer):
    with pytest.raises(TaskError):
        parse_range("p", answer)


@pytest.mark.parametrize(
    "text, expected",
    [("", ""), ("hello", "pass"), ("  /search cats", "search"), ("/help", "help")],
)
def test_parse_transition(text, expected):
    assert parse_transition(text) == expected


def test_parse_transition_empty_command():
    with pytest.raises(TaskError, match="empty command"):
        parse_transition("/")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("a=1; b=two; c=true", {"a": 1, "b": "two", "c": True}),
        ("a: 1.5\nb: 'quoted'", {"a": 1.5, "b": "quoted"}),
        ('x=1, y="z"', {"x": 1, "y": "z"}),
        ("url=http://x:1", {"url": "http://x:1"}),
    ],
)
def test_parse_key_value(text, expected):
    assert parse_key_value(text) == expected


def test_parse_key_value_refusal():
    with pytest.raises(TaskError, match='invalid key-value pair: "nope"'):
        parse_key_value("a=1; nope")


@pytest.mark.parametrize(
    "operator, response, when, expected",
    [
        ("equals", "true", "true", True),
        ("equals", "True", "true", False),
        ("contains", "light rain", "rain", True),
        ("starts_with", "/search", "/s", True),
        ("ends_with", "file.txt", ".txt", True),
        ("gt", "8", "7", True),
        (">", "7", "7", False),
        ("lt", "3", "7", True),
        ("<", "1300-1700", "1400", True),
        ("in_range", "4", "1-7", True),
        ("in_range", "7", "1-7", True),
        ("in_range", "8", "1-7", False),
    ],
)
def test_operators(operator, response, when, expected):
    assert matches(operator, response, when) is expected


@pytest.mark.parametrize(
    "operator, when, message",
    [("", "x", "unsupported operator: "), ("like", "x", "unsupported operator: like"), ("in_range", "1", "invalid inrange format: 1"), ("in_range", "9-1", "invalid range")],
)
def test_operator_refusals(operator, when, message):
    with pytest.raises(TaskError, match=message):
        matches(operator, "5", when)


def branch(operator: str, when: str, goto: str) -> SimpleNamespace:
    return SimpleNamespace(operator=operator, when=when, goto=goto)


def test_next_task():
    branches = (branch("default", "ignored", "fallback"), branch("equals", "true", "yes"), branch("default", "", "second"))
    assert next_task(branches, "true") == "yes"
    assert next_task(branches, "false") == "fallback"
    with pytest.raises(TaskError, match="no matching transition found for eval: x"):
        next_task((branch("equals", "y", "a"),), "x")
    with pytest.raises(TaskError, match="no matching transition found for eval: x"):
        next_task(None, "x")


def history(*contents: str, model: str = "", tokens: int = 0) -> dict:
    messages = [{"id": "m", "role": "user", "content": c, "timestamp": "t"} for c in contents]
    return {"messages": messages, "model": model, "inputTokens": tokens, "outputTokens": tokens}


def test_override_merges_deeply_right_wins():
    left = {"a": 1, "n": {"x": 1, "y": 2}, "keep": "s", "list": [1]}
    right = {"a": 2, "n": {"y": 3, "z": 4}, "keep": {"o": 1}, "list": [2], "new": None}
    result, kind = compose("override", "json", left, "json", right, "json")
    assert result == {"a": 2, "n": {"x": 1, "y": 3, "z": 4}, "keep": "s", "list": [2], "new": None}
    assert kind == "json"
    assert compose("", "string", {"a": 1}, "json", {"b": 2}, "json")[1] == "any"


def test_override_refuses_non_objects():
    with pytest.raises(TaskError, match="invalid types for override"):
        compose("override", "string", "text", "string", {"a": 1}, "json")


def test_append_string_to_chat_history():
    result, kind = compose("append_string_to_chat_history", "string", "be brief", "string", history("hi", model="m", tokens=5), "chat_history")
    assert [m["role"] for m in result["messages"]] == ["system", "user"]
    assert result["messages"][0]["content"] == "be brief"
    assert (result["model"], result["inputTokens"], result["outputTokens"]) == ("m", 0, 0)
    assert kind == "any"  # the chain input (string) is not the type of with_var (chat_history): quirk
    with pytest.raises(TaskError, match="append_string_to_chat_history"):
        compose("append_string_to_chat_history", "string", 1, "int", "x", "string")


def test_merge_chat_histories_right_first_and_quirks():
    left, right = history("l", model="lm", tokens=1), history("r", model="rm", tokens=2)
    result, kind = compose("", "chat_history", left, "chat_history", right, "chat_history")
    assert [m["content"] for m in result["messages"]] == ["r", "l"]
    assert result["model"] == ""  # the left history has a model: quirk
    assert (result["inputTokens"], result["outputTokens"]) == (3, 3)
    assert kind == "chat_history"
    only_right, _ = compose("merge_chat_histories", "string", "text", "string", right, "chat_history")
    assert only_right == {"model": "rm", "messages": [{"role": "user", "content": "r"}]}


def test_unknown_strategy():
    with pytest.raises(TaskError, match='unsupported compose strategy: "zip"'):
        compose("zip", "json", {}, "json", {}, "json")
