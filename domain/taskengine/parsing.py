"""The text parsers of the handlers (notes §5): the lenient number parse, ranges, key-value pairs, commands."""

from __future__ import annotations

import re
from typing import Any

from chainloom.domain.taskengine.errors import TaskError

_NUMBER = re.compile(r"[-+]?\d*\.?\d+")
_FLOAT = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])")


def go_parse_float(text: str) -> float | None:
    """Go's ``strconv.ParseFloat(text, 64)`` for decimal text (no hex, no underscores); None when it fails."""
    if not _FLOAT.fullmatch(text):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def lenient_number(text: str) -> float:
    """Trim, drop quotes and spaces, parse as a float, else the first ``[-+]?\\d*\\.?\\d+``."""
    cleaned = text.strip().replace('"', "").replace("'", "").replace(" ", "")
    if not cleaned:
        raise TaskError("cannot parse number from empty string")
    value = go_parse_float(cleaned)
    if value is not None:
        return value
    match = _NUMBER.search(cleaned)
    if match is None:
        raise TaskError(f'no valid number found in "{cleaned}"')
    return float(match.group())


def number_reply(prompt: str, answer: str) -> float:
    try:
        return lenient_number(answer)
    except TaskError as error:
        raise TaskError(f"invalid number format: prompt {prompt} answer {answer} {error}") from None


def parse_number(prompt: str, answer: str) -> int:
    value = number_reply(prompt, answer)
    if not value.is_integer():
        raise TaskError(f"parsed number is not an integer: {_g(value)}")
    return int(value)


def _g(value: float) -> str:
    from chainloom.domain.taskengine.gofmt import float_v

    return float_v(value)


def parse_range(prompt: str, answer: str) -> str:
    cleaned = answer.strip().replace(" ", "").replace('"', "").replace("'", "")
    if "-" in cleaned:
        parts = cleaned.split("-")
        if len(parts) != 2:
            raise TaskError(f"invalid range format: prompt {prompt} answer {answer}")
        for part in parts:
            number_reply(prompt, part)
        return f"{parts[0]}-{parts[1]}"
    number_reply(prompt, cleaned)
    return f"{cleaned}-{cleaned}"


def parse_transition(text: str) -> str:
    """The command of a ``/command rest`` text: ``""`` for empty text, ``pass`` when it is no command."""
    if text == "":
        return ""
    trimmed = text.strip()
    if not trimmed.startswith("/"):
        return "pass"
    word = trimmed[1:].split()
    if not word or not trimmed[1:2].strip():
        raise TaskError("empty command")
    return word[0]


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse_key_value(text: str) -> dict[str, Any]:
    """``a=1; b: two`` → {"a": 1, "b": "two"} (notes §5)."""
    result: dict[str, Any] = {}
    if not text.strip():
        return result
    if ";" in text:
        pairs = text.split(";")
    elif "\n" in text:
        pairs = text.split("\n")
    else:
        pairs = text.split(",")
    for pair in pairs:
        pair = pair.strip()
        if not pair:
            continue
        if "=" in pair:
            key, _, value = pair.partition("=")
        elif ":" in pair:
            key, _, value = pair.partition(":")
        else:
            raise TaskError(f'invalid key-value pair: "{pair}"')
        key = _unquote(key.strip())
        value = _unquote(value.strip())
        result[key] = _scalar(value)
    return result


def _scalar(value: str) -> Any:
    if value == "true":
        return True
    if value == "false":
        return False
    number = go_parse_float(value)
    if number is not None and number == number and number not in (float("inf"), float("-inf")):
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    return value
