"""The hook protocol over OpenAPI 3, as pure functions: operations and their tool names, the tool list a
model is offered (discovery), and the HTTP request a call becomes (the wire format).

    ops = operations(document)                      # every operation, with its tool name
    tools = tool_list(document, injected)            # OpenAI tool dicts (names not prefixed)
    request = build_request(spec, find_operation(ops, "echo"), args)

Local ``$ref``s (``#/...``) are resolved; external ones are left as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from chainloom.domain.hooks import HookSpec, InjectedProperty, scalar_text

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TOOL_METHODS = frozenset({"get", "post", "put", "patch", "delete"})
BODY_METHODS = frozenset({"post", "put", "patch"})
EXCLUDED_PATHS = frozenset({"/health", "/healthz", "/ready", "/readyz", "/metrics"})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# How deep $refs are followed inside one schema (a recursive schema keeps its $ref beyond).
_MAX_REF_DEPTH = 32


@dataclass(frozen=True)
class Operation:
    tool_name: str
    method: str  # lower case
    path: str
    operation: Mapping[str, Any]
    parameters: tuple[Mapping[str, Any], ...]  # path-level then operation-level, $refs resolved

    @property
    def has_body(self) -> bool:
        return bool(self.operation.get("requestBody"))


@dataclass(frozen=True)
class HookRequest:
    method: str  # upper case
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    args: dict[str, Any] = field(default_factory=dict)  # what went into the body


# -- $refs ---------------------------------------------------------------------------


def resolve(document: Mapping[str, Any], node: Any, depth: int = 0) -> Any:
    """``node`` with its local ``$ref``s replaced by what they point at (recursively, to a depth)."""
    if isinstance(node, list):
        return [resolve(document, item, depth) for item in node]
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if depth >= _MAX_REF_DEPTH:
            return dict(node)
        target = _pointer(document, ref)
        if target is None:
            return dict(node)  # external, or dangling: left as it is
        return resolve(document, target, depth + 1)
    return {key: resolve(document, value, depth) for key, value in node.items()}


def _pointer(document: Mapping[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return None
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# -- operations ----------------------------------------------------------------------


def tool_name(method: str, path: str, operation: Mapping[str, Any]) -> str | None:
    """``operationId``; else ``x-tool-name`` (must match ``[A-Za-z0-9_-]+``, else None: skipped); else
    ``<last non-empty path segment>_<method>``."""
    operation_id = operation.get("operationId")
    if isinstance(operation_id, str) and operation_id:
        return operation_id
    extension = operation.get("x-tool-name")
    if extension is not None:
        return extension if isinstance(extension, str) and _TOOL_NAME.match(extension) else None
    segments = [segment for segment in path.split("/") if segment]
    return f"{segments[-1] if segments else ''}_{method.lower()}"


def operations(document: Mapping[str, Any]) -> Iterator[Operation]:
    """Every operation of the document (any method), in its order, with its tool name."""
    paths = document.get("paths")
    if not isinstance(paths, Mapping):
        return
    for path, raw_item in paths.items():
        item = resolve(document, raw_item)
        if not isinstance(item, Mapping):
            continue
        shared = _parameters(document, item.get("parameters"))
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, Mapping):
                continue
            name = tool_name(method, str(path), operation)
            if name is None:
                continue
            own = _parameters(document, operation.get("parameters"))
            yield Operation(name, method, str(path), operation, shared + own)


def _parameters(document: Mapping[str, Any], raw: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(raw, list):
        return ()
    resolved = (resolve(document, parameter) for parameter in raw)
    return tuple(p for p in resolved if isinstance(p, Mapping) and isinstance(p.get("name"), str))


def find_operation(document: Mapping[str, Any], name: str) -> Operation | None:
    return next((op for op in operations(document) if op.tool_name == name), None)


# -- discovery -----------------------------------------------------------------------


def _hidden(injected: InjectedProperty, location: str, name: str) -> bool:
    """Whether the injected property takes the place of the argument ``name`` found at ``location``
    (``path``, ``query``, ``body``)."""
    if not injected.name or injected.name != name:
        return False
    where = injected.location if injected.location in ("path", "query") else "body"
    return where == location


def tool_parameters(operation: Operation, injected: InjectedProperty = InjectedProperty()) -> dict[str, Any] | None:
    """The JSON schema of an operation's arguments: its path and query parameters and the top-level
    properties of a JSON object body (POST, PUT, PATCH), less the injected one; None when none is left."""
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for parameter in operation.parameters:
        location, name = parameter.get("in"), parameter["name"]
        if location not in ("path", "query") or _hidden(injected, location, name):
            continue
        parameter_schema = dict(parameter.get("schema") or {"type": "string"})
        if parameter.get("description") and "description" not in parameter_schema:
            parameter_schema["description"] = parameter["description"]
        properties[name] = parameter_schema
        if parameter.get("required") or location == "path":
            required.add(name)
    if operation.method in BODY_METHODS:
        body = _json_body_schema(operation.operation.get("requestBody"))
        if body is not None:
            for name, schema in (body.get("properties") or {}).items():
                if not _hidden(injected, "body", name):
                    properties[name] = schema
            body_required = body.get("required") or []
            required.update(n for n in body_required if isinstance(n, str) and n in properties)
    if not properties:
        return None
    arguments: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        arguments["required"] = sorted(required)
    return arguments


def _json_body_schema(request_body: Any) -> Mapping[str, Any] | None:
    if not isinstance(request_body, Mapping):
        return None
    content = request_body.get("content")
    if not isinstance(content, Mapping):
        return None
    media = content.get("application/json") or next(
        (value for key, value in content.items() if "json" in str(key)), None
    )
    schema = media.get("schema") if isinstance(media, Mapping) else None
    if not isinstance(schema, Mapping):
        return None
    if schema.get("type") not in (None, "object") or not isinstance(schema.get("properties", {}), Mapping):
        return None
    return schema


def description(operation: Mapping[str, Any]) -> str:
    """The operation's description, the literal ``/n``, its summary; just the summary without a description."""
    summary = operation.get("summary") or ""
    text = operation.get("description") or ""
    return f"{text}/n{summary}" if text else str(summary)


def tool_list(document: Mapping[str, Any], injected: InjectedProperty = InjectedProperty()) -> list[dict[str, Any]]:
    """The tools a hook offers (OpenAI function tools, names not prefixed): its GET, POST, PUT, PATCH
    and DELETE operations, less the health and metrics paths."""
    tools = []
    for operation in operations(document):
        if operation.method not in TOOL_METHODS or operation.path.lower() in EXCLUDED_PATHS:
            continue
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": operation.tool_name,
                    "description": description(operation.operation),
                    "parameters": tool_parameters(operation, injected),
                },
            }
        )
    return tools


# -- the wire format -----------------------------------------------------------------


def argument_text(value: Any) -> str:
    """An argument placed in a path or query: text as it is, other JSON values as compact JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return scalar_text(value)


def build_request(spec: HookSpec, operation: Operation, args: Mapping[str, Any]) -> HookRequest:
    """The request a call of ``operation`` with ``args`` (the whole argument map) becomes."""
    arguments = dict(args)
    injected = spec.properties
    injected_location = ""
    if injected.name:
        injected_location = injected.location if injected.location in ("path", "query") else "body"
        arguments[injected.name] = injected.text
    path = operation.path
    query: dict[str, str] = {}
    for parameter in operation.parameters:
        name = parameter["name"]
        if name not in arguments:
            continue
        value = arguments.pop(name)
        location = parameter.get("in")
        if location == "path":
            path = path.replace("{" + name + "}", quote(argument_text(value), safe=""))
        elif location == "query":
            query[name] = argument_text(value)
    if injected_location == "path":
        path = path.replace("{" + injected.name + "}", quote(injected.text, safe=""))
        arguments.pop(injected.name, None)
    elif injected_location == "query":
        query[injected.name] = injected.text
        arguments.pop(injected.name, None)
    url = spec.endpoint_url.rstrip("/") + path
    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)
    headers = dict(spec.headers)
    headers["Accept"] = "application/json"
    body = None
    if operation.has_body and operation.method in BODY_METHODS and arguments:
        body = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    return HookRequest(operation.method.upper(), url, headers, body, arguments if body is not None else {})


def answer_value(status: int, content_type: str, body: bytes) -> tuple[Any, str]:
    """A hook's answer as (value, type): non-2xx → ``ValueError``; empty → (None, ``any``); JSON →
    (parsed, ``json``); anything else → (text, ``string``)."""
    text = body.decode("utf-8", errors="replace")
    if not 200 <= status < 300:
        raise ValueError(f"API request failed with status {status}: {text}")
    if not body:
        return None, "any"
    if "application/json" in content_type.lower():
        try:
            return json.loads(text), "json"
        except ValueError as error:
            raise ValueError(f"failed to decode the JSON answer: {error}") from None
    return text, "string"
