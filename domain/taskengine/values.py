"""Value types of a chain (notes §3), the /tasks input conversion (§3.2) and text extraction (§4.5).

Values are plain JSON-like Python values; ``chat_history``, ``openai_chat`` and ``openai_chat_response`` are
dicts in the notes' JSON shapes. A value travels with its type name (``string``, ``chat_history`` …).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from chainloom.domain.errors import Unprocessable
from chainloom.domain.taskengine.errors import TaskError
from chainloom.domain.taskengine.gofmt import value_v
from chainloom.domain.taskengine.state import go_json

ANY = "any"
STRING = "string"
BOOL = "bool"
INT = "int"
FLOAT = "float"
VECTOR = "vector"
SEARCH_RESULTS = "search_results"
JSON = "json"
CHAT_HISTORY = "chat_history"
OPENAI_CHAT = "openai_chat"
OPENAI_CHAT_RESPONSE = "openai_chat_response"
NIL = "nil"
TYPES = (ANY, STRING, BOOL, INT, FLOAT, VECTOR, SEARCH_RESULTS, JSON, CHAT_HISTORY, OPENAI_CHAT, OPENAI_CHAT_RESPONSE, NIL)
ZERO_TIME = "0001-01-01T00:00:00Z"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def message(role: str, content: str = "", *, tool_call_id: str = "", call_tools: list | None = None, id: str = "", timestamp: str | None = None) -> dict[str, Any]:
    """A ChatHistory message in its JSON shape (empty content, tool_call_id and callTools left out)."""
    result: dict[str, Any] = {"id": id, "role": role}
    if content:
        result["content"] = content
    if tool_call_id:
        result["tool_call_id"] = tool_call_id
    if call_tools:
        result["callTools"] = call_tools
    result["timestamp"] = timestamp or now_rfc3339()
    return result


def chat_history(messages: list[dict[str, Any]], model: str = "", input_tokens: int = 0, output_tokens: int = 0) -> dict[str, Any]:
    return {"messages": messages, "model": model, "inputTokens": input_tokens, "outputTokens": output_tokens}


# -- /tasks input ----------------------------------------------------------------------------------------


def _fail(what: str, cause: str) -> Unprocessable:
    return Unprocessable(f"failed to convert to {what}: {cause}", param="input")


def _string(value: Any, where: str, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(what, f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type string")
    return value


def _int(value: Any, where: str, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise _fail(what, f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type int")
    return int(value)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _object(value: Any, what: str, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(what, f"json: cannot unmarshal {_json_kind(value)} into Go value of type {name}")
    return value


def _list(value: Any, what: str, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(what, f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type []")
    return value


def to_chat_history(value: Any) -> dict[str, Any]:
    what = "ChatHistory"
    obj = _object(value, what, "taskengine.ChatHistory")
    messages = []
    for raw in _list(obj.get("messages"), what, "ChatHistory.messages"):
        item = _object(raw, what, "taskengine.Message")
        calls = []
        for call in _list(item.get("callTools"), what, "Message.callTools"):
            call = _object(call, what, "taskengine.ToolCall")
            function = _object(call.get("function"), what, "taskengine.FunctionCall")
            calls.append(
                {
                    "id": _string(call.get("id"), "ToolCall.id", what),
                    "type": _string(call.get("type"), "ToolCall.type", what) or "function",
                    "function": {
                        "name": _string(function.get("name"), "FunctionCall.name", what),
                        "arguments": _string(function.get("arguments"), "FunctionCall.arguments", what),
                    },
                }
            )
        messages.append(
            message(
                _string(item.get("role"), "Message.role", what),
                _string(item.get("content"), "Message.content", what),
                tool_call_id=_string(item.get("tool_call_id"), "Message.tool_call_id", what),
                call_tools=calls,
                id=_string(item.get("id"), "Message.id", what),
                timestamp=_string(item.get("timestamp"), "Message.timestamp", what) or ZERO_TIME,
            )
        )
    return chat_history(
        messages,
        _string(obj.get("model"), "ChatHistory.model", what),
        _int(obj.get("inputTokens"), "ChatHistory.inputTokens", what),
        _int(obj.get("outputTokens"), "ChatHistory.outputTokens", what),
    )


_CHAT_REQUEST_KEYS = ("tools", "tool_choice", "max_tokens", "temperature", "top_p", "stop", "n", "stream", "presence_penalty", "frequency_penalty", "user")


def to_openai_chat(value: Any) -> dict[str, Any]:
    what = "OpenAIChatRequest"
    obj = _object(value, what, "taskengine.OpenAIChatRequest")
    messages = []
    for raw in _list(obj.get("messages"), what, "OpenAIChatRequest.messages"):
        item = _object(raw, what, "taskengine.OpenAIChatRequestMessage")
        messages.append(
            {
                "role": _string(item.get("role"), "OpenAIChatRequestMessage.role", what),
                "content": _string(item.get("content"), "OpenAIChatRequestMessage.content", what),
            }
        )
    result: dict[str, Any] = {"model": _string(obj.get("model"), "OpenAIChatRequest.model", what), "messages": messages}
    tools = _list(obj.get("tools"), what, "OpenAIChatRequest.tools")
    for tool in tools:
        _object(tool, what, "taskengine.Tool")
    stop = _list(obj.get("stop"), what, "OpenAIChatRequest.stop")
    for item in stop:
        _string(item, "OpenAIChatRequest.stop", what)
    for key in _CHAT_REQUEST_KEYS:
        if obj.get(key) not in (None, "", 0, False, [], {}):
            result[key] = obj[key]
    return result


def to_openai_chat_response(value: Any) -> dict[str, Any]:
    return dict(_object(value, "OpenAIChatResponse", "taskengine.OpenAIChatResponse"))


def to_search_results(value: Any) -> list[dict[str, Any]]:
    what = "[]SearchResult"
    result = []
    for raw in _list(value, what, "[]SearchResult"):
        item = _object(raw, what, "taskengine.SearchResult")
        distance = item.get("distance", 0)
        if distance is not None and (isinstance(distance, bool) or not isinstance(distance, (int, float))):
            raise _fail(what, "json: cannot unmarshal into Go struct field SearchResult.distance of type float32")
        result.append(
            {
                "id": _string(item.get("id"), "SearchResult.id", what),
                "type": _string(item.get("type"), "SearchResult.type", what),
                "distance": float(distance or 0),
            }
        )
    return result


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def convert_input(value: Any, input_type: str) -> tuple[Any, str]:
    """The chain input for a /tasks request's ``input`` and ``inputType`` (notes §3.2; ``json`` passes
    through where the reference nulls it). Unknown types → ``Unprocessable``."""
    kind = (input_type or "").lower()
    if kind == CHAT_HISTORY:
        return to_chat_history(value), kind
    if kind == OPENAI_CHAT:
        return to_openai_chat(value), kind
    if kind == OPENAI_CHAT_RESPONSE:
        return to_openai_chat_response(value), kind
    if kind == SEARCH_RESULTS:
        return to_search_results(value), kind
    if kind == STRING:
        if isinstance(value, str):
            return value, kind
        if isinstance(value, dict):
            inner = value.get("value")
            return (inner if isinstance(inner, str) else go_json(value)), kind
        return ("<nil>" if value is None else value_v(value, False)), kind
    if kind == BOOL:
        if isinstance(value, bool):
            return value, kind
        if isinstance(value, str):
            if value in _TRUE:
                return True, kind
            if value in _FALSE:
                return False, kind
            return value == "true", kind
        if isinstance(value, (int, float)):
            return value != 0, kind
        return False, kind
    if kind == INT:
        if isinstance(value, bool):
            return 0, kind
        if isinstance(value, (int, float)):
            return (int(value) if math.isfinite(value) else 0), kind
        if isinstance(value, str):
            parsed = _go_atoi(value)
            return (parsed if parsed is not None else 0), kind
        return 0, kind
    if kind == FLOAT:
        if isinstance(value, bool):
            return 0.0, kind
        if isinstance(value, (int, float)):
            return float(value), kind
        if isinstance(value, str):
            try:
                return float(value), kind
            except ValueError:
                return 0.0, kind
        return 0.0, kind
    if kind in (JSON, ANY, VECTOR, NIL):
        return value, kind
    raise Unprocessable(f"unknown data type: {input_type}", param="inputType")


def _go_atoi(text: str) -> int | None:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    return int(text)


# -- text extraction -------------------------------------------------------------------------------------


def prompt_text(value: Any, value_type: str, handler: str) -> str:
    """The text a handler works on (notes §4.5)."""
    if value_type == STRING:
        return value if isinstance(value, str) else value_v(value, False)
    if value_type == INT:
        return str(int(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else value_v(value, False)
    if value_type == FLOAT:
        return f"{float(value):.6f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else value_v(value, False)
    if value_type == BOOL:
        return "true" if value else "false"
    if value_type == CHAT_HISTORY:
        messages = (value or {}).get("messages") or []
        if not messages:
            raise TaskError("SEVERBUG: chat history is empty")
        return messages[-1].get("content", "") or ""
    if value_type == OPENAI_CHAT:
        messages = (value or {}).get("messages") or []
        if not messages:
            raise TaskError("cannot get prompt from empty OpenAI chat request")
        return messages[-1].get("content", "") or ""
    raise TaskError(f"getPrompt unsupported input type for task {handler}: {value_type}")
