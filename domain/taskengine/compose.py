"""Compose strategies (notes §4.6, with the reference's quirks)."""

from __future__ import annotations

import copy
from typing import Any

from chainloom.domain.taskengine.errors import TaskError
from chainloom.domain.taskengine.values import ANY, CHAT_HISTORY, STRING, ZERO_TIME, chat_history, message

OVERRIDE = "override"
APPEND_STRING = "append_string_to_chat_history"
MERGE_HISTORIES = "merge_chat_histories"


def _is_history(value: Any, kind: str) -> bool:
    return kind == CHAT_HISTORY and isinstance(value, dict)


def _deep_merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    result = dict(left)
    for key, value in right.items():
        if isinstance(value, dict):
            existing = result.get(key)
            if isinstance(existing, dict):
                result[key] = _deep_merge(existing, value)
            elif key in result and existing not in (None, "", 0, False) and not isinstance(existing, (list, dict)):
                continue  # the reference keeps a non-empty left scalar when the right has an object there
            else:
                result[key] = copy.deepcopy(value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def compose(
    strategy: str, chain_input_type: str, left: Any, left_type: str, right: Any, right_type: str
) -> tuple[Any, str]:
    """The composed value and its type: the chain's input type when it equals the type of ``with_var``,
    ``any`` otherwise (**quirk**, as the reference)."""
    if not strategy:
        strategy = MERGE_HISTORIES if chain_input_type == CHAT_HISTORY and right_type == CHAT_HISTORY else OVERRIDE
    result_type = chain_input_type if chain_input_type == right_type else ANY
    if strategy == OVERRIDE:
        if not isinstance(left, dict) or not isinstance(right, dict):
            raise TaskError("invalid types for override")
        return _deep_merge(left, right), result_type
    if strategy == APPEND_STRING:
        if left_type == STRING and isinstance(left, str) and _is_history(right, right_type):
            text, history = left, right
        elif right_type == STRING and isinstance(right, str) and _is_history(left, left_type):
            text, history = right, left
        else:
            raise TaskError(
                "compose strategy 'append_string_to_chat_history' requires both left and right values to be "
                "either string or ChatHistory"
            )
        messages = [message("system", text)] + [copy.deepcopy(m) for m in history.get("messages") or []]
        return chat_history(messages, history.get("model", "")), result_type
    if strategy == MERGE_HISTORIES:
        left_history = left if _is_history(left, left_type) else None
        right_history = right if _is_history(right, right_type) else None
        messages = []
        for side in (right_history, left_history):
            for item in (side or {}).get("messages") or []:
                messages.append(message(item.get("role", ""), item.get("content", "") or "", timestamp=ZERO_TIME))
        model = "" if left_history is not None and left_history.get("model") else (right_history or {}).get("model", "")
        if left_history is not None and right_history is not None:
            return (
                chat_history(
                    messages,
                    model,
                    int(left_history.get("inputTokens") or 0) + int(right_history.get("inputTokens") or 0),
                    int(left_history.get("outputTokens") or 0) + int(right_history.get("outputTokens") or 0),
                ),
                result_type,
            )
        return {"model": model, "messages": [{"role": m["role"], "content": m.get("content", "")} for m in messages]}, result_type
    raise TaskError(f'unsupported compose strategy: "{strategy}"')
