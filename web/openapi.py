"""``/openapi.json``: an OpenAPI 3.1 description derived from the routes actually registered.

The description of an operation lives on its handler, so it cannot drift from
the code beside it:

- the request body is the pydantic model ``web.bodies.with_body`` parses, or
  ``@request_body(Model)`` on a handler that reads its body itself;
- ``@query(Model)`` / ``@headers(Model)`` / ``@path_values(Model)``: the query string,
  headers or path values it reads, one parameter per field of a pydantic model
  (``web.schemas``; path values are non-empty strings unless a model says more);
- ``@responds(status, Shape)``: a success answer and its shape (a pydantic
  model, a type such as ``list[Group]``, ``None`` for an empty body), with its
  media type (``text/event-stream`` for streams);
- ``@fails(404, 409, …)``: the error statuses the operation decides itself, each
  answered with the one error envelope.

Statuses that follow from the route alone are added here, once: 422 for any
input (the boundary refuses values the log cannot hold, ``domain.storable``),
413/415 for a JSON body, 404 for a path value the router cannot match, 503 for
a command (its read-your-writes wait, or a faulted projector), 401 when an API
key is required (with security on: 401 and 403 as ``web.authz`` guards each route); every POST and PUT takes the ``Idempotency-Key`` header
(``web.idempotency``), with its 409 and 422, but those carrying a password or a token (``unkeyed``). Strings in request schemas carry the boundary's rule as a
``pattern`` (no NUL; lone surrogates are not Unicode text to begin with), and
free JSON values are ``JsonValue``, whose strings and keys follow it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from chainloom.infra.version import VERSION
from chainloom.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from chainloom.web.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from chainloom.web.idempotency import MAX_KEY_LENGTH
from chainloom.web.idempotency import METHODS as IDEMPOTENT_METHODS
from chainloom.web.idempotency import is_unkeyed
from chainloom.web.middleware import PUBLIC_PATHS
from chainloom.web.schemas import ErrorResponse

_PARAM = re.compile(r"\{([^}:]+)(?::([^}]*))?\}")
_REF = "#/components/schemas/{model}"
# The boundary's rule for text (domain.storable): NUL is refused everywhere.
STORABLE_TEXT = "^[^\\u0000]*$"
_JSON_VALUE_REF = "#/components/schemas/JsonValue"
_JSON_VALUE = {
    "description": "Any JSON value; its strings and keys hold no NUL.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": STORABLE_TEXT},
        {"type": "array", "items": {"$ref": _JSON_VALUE_REF}},
        {
            "type": "object",
            "propertyNames": {"pattern": STORABLE_TEXT},
            "additionalProperties": {"$ref": _JSON_VALUE_REF},
        },
    ],
}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: a request repeated with the same key (same method, path and body) gets the first"
        " answer again (with `Idempotent-Replayed: true`) and writes nothing. The same key with another request"
        " is refused with 422; while the first is still being answered, a retry waits, then gets 409 (nothing"
        " stored yet) or 503 (stored, read models behind), both with `Retry-After: 1`. Keys are the caller's"
        " own and kept for CHAINLOOM_IDEMPOTENCY_WINDOW seconds."
    ),
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}


@dataclass
class _Answer:
    shape: Any
    description: str
    media_type: str


@dataclass
class OperationDoc:
    """What a handler's decorators say about its operation."""

    answers: dict[int, _Answer] = field(default_factory=dict)
    errors: set[int] = field(default_factory=set)
    parameters: list[tuple[str, type[BaseModel]]] = field(default_factory=list)
    request_model: type[BaseModel] | None = None
    request_media_type: str = "application/json"


def operation_doc(handler: Callable) -> OperationDoc:
    doc = handler.__dict__.get("openapi")
    if doc is None:
        doc = OperationDoc()
        setattr(handler, "openapi", doc)
    return doc


def undocumented(handler):
    """Leave a route out of the document: a page for people (the console), not an operation of the API."""
    handler.__dict__["openapi_hidden"] = True
    return handler


def responds(status: int, shape: Any = None, description: str = "", media_type: str = "application/json"):
    """Document a success answer: its status, its shape (None: no body) and media type."""

    def document(handler):
        operation_doc(handler).answers[status] = _Answer(shape, description or HTTPStatus(status).phrase, media_type)
        return handler

    return document


def fails(*statuses: int):
    """Document the error statuses the operation decides (each answered with the error envelope)."""

    def document(handler):
        operation_doc(handler).errors.update(statuses)
        return handler

    return document


def request_body(model: type[BaseModel], media_type: str = "application/json"):
    """Document the request body as ``model`` (``with_body`` does it for the bodies it parses); ``media_type``
    ``multipart/form-data`` for a form whose ``bytes`` fields are uploaded files."""

    def document(handler):
        doc = operation_doc(handler)
        doc.request_model = model
        doc.request_media_type = media_type
        return handler

    return document


def query(model: type[BaseModel]):
    """Document the query string: one parameter per field of ``model`` (alias as name)."""
    return _parameters("query", model)


def path_values(model: type[BaseModel]):
    """Document path parameters more precisely than "a non-empty string": one per field of ``model``."""
    return _parameters("path", model)


def headers(model: type[BaseModel]):
    """Document request headers read by the operation: one per field of ``model`` (alias as name)."""
    return _parameters("header", model)


def _parameters(location: str, model: type[BaseModel]):
    def document(handler):
        operation_doc(handler).parameters.append((location, model))
        return handler

    return document


# -- the document ------------------------------------------------------------------


# The statuses a route's credential check may answer (none: a public route), by method and path.
Guard = Callable[[str, str], tuple[int, ...]]
_KEY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same API key as a bearer token."},
}
_USER_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A user's JWT, or the API key."},
    "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A user's JWT, or the API key."},
    "Cookie": {"type": "apiKey", "in": "cookie", "name": "auth_token", "description": "The UI's sign-in cookie (a JWT)."},
}


def _key_guard(method: str, path: str) -> tuple[int, ...]:
    return () if path in PUBLIC_PATHS else (401,)


def describe(app: web.Application, token_required: bool, guard: Guard | None = None) -> dict[str, Any]:
    """The document; ``guard`` with security on (users' tokens, ``web.authz``), else the API key's when required."""
    schemes = _USER_SCHEMES if guard is not None else _KEY_SCHEMES
    if guard is None and token_required:
        guard = _key_guard
    components: dict[str, Any] = {"JsonValue": _JSON_VALUE}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None or getattr(route.handler, "openapi_hidden", False):
            continue
        template = route.resource.canonical
        path = _PARAM.sub(r"{\1}", template)
        operation = _operation(route.method, template, route.handler, components)
        if guard is not None:
            refusals = guard(route.method, path)
            if refusals:
                _add_errors(operation, refusals)
            else:
                operation["security"] = []
        paths.setdefault(path, {})[route.method.lower()] = operation
    components["ErrorResponse"] = _schema_of(ErrorResponse, components)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "chainloom runtime API", "version": VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items()))},
    }
    if guard is not None:
        document["components"]["securitySchemes"] = schemes
        document["security"] = [{name: []} for name in schemes]
    return document


def _operation(method: str, template: str, handler: Callable, components: dict[str, Any]) -> dict[str, Any]:
    doc = operation_doc(handler)
    text = (handler.__doc__ or "").strip()
    summary, _, details = text.partition("\n")
    operation: dict[str, Any] = {"operationId": handler.__name__, "summary": summary or handler.__name__}
    if details.strip():
        operation["description"] = " ".join(details.split())
    parameters = [_path_parameter(name, pattern) for name, pattern in _PARAM.findall(template)]
    for location, model in doc.parameters:
        for parameter in _model_parameters(location, model):
            if location == "path":
                parameter["required"] = True
                parameters = [p for p in parameters if p["name"] != parameter["name"]]
            parameters.append(parameter)
    keyed = method in IDEMPOTENT_METHODS and not is_unkeyed(handler)
    if keyed:
        parameters.append(dict(_IDEMPOTENCY_KEY))
    if parameters:
        operation["parameters"] = parameters
    errors = set(doc.errors)
    if parameters:
        errors.add(422)
    if any(p["in"] == "path" for p in parameters):
        errors.add(404)
    body_model = doc.request_model
    if body_model is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                doc.request_media_type: {"schema": {"$ref": _component(body_model, components, request=True)}}
            },
        }
        errors.update((413, 415, 422))
    if method in _WRITE_METHODS:
        errors.add(503)
    if keyed:
        errors.update((409, 422))  # a key used for another request; its first request not answered yet
    responses: dict[str, Any] = {}
    for status, answer in doc.answers.items():
        response: dict[str, Any] = {"description": answer.description}
        if answer.shape is not None:
            response["content"] = {answer.media_type: {"schema": _schema_of(answer.shape, components)}}
        responses[str(status)] = response
    operation["responses"] = responses
    _add_errors(operation, errors)
    return operation


def _add_errors(operation: dict[str, Any], statuses) -> None:
    responses = operation["responses"]
    for status in statuses:
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
    operation["responses"] = dict(sorted(responses.items()))


def _path_parameter(name: str, pattern: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": STORABLE_TEXT}
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
    if pattern == ".+":
        parameter["description"] = "May contain '/'."
    return parameter


def _model_parameters(location: str, model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = _request_schema(model.model_json_schema(by_alias=True, ref_template=_REF))
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema.get("properties", {}).items():
        value_schema = _non_null(property_schema)
        for key in ("title", "description"):
            value_schema.pop(key, None)
        if location in ("query", "header") and name not in required:
            # The handlers read an optional query value or header sent empty as absent.
            value_schema = {"anyOf": [value_schema, {"type": "string", "maxLength": 0}]}
        parameter = {"name": name, "in": location, "required": name in required, "schema": value_schema}
        if property_schema.get("description"):
            parameter["description"] = property_schema["description"]
        parameters.append(parameter)
    return parameters


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter is absent, not null: ``X | None`` is documented as ``X``."""
    options = schema.get("anyOf")
    if options and any(option.get("type") == "null" for option in options):
        rest = [option for option in options if option.get("type") != "null"]
        merged = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**rest[0], **merged} if len(rest) == 1 else {**merged, "anyOf": rest}
    return {k: v for k, v in schema.items() if k != "default"}


def _schema_of(shape: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of an answer shape; named models go to the components."""
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        return {"$ref": _component(shape, components)}
    schema = TypeAdapter(shape).json_schema(by_alias=True, ref_template=_REF, mode="serialization")
    components.update(schema.pop("$defs", {}))
    return schema


def _component(model: type[BaseModel], components: dict[str, Any], request: bool = False) -> str:
    schema = model.model_json_schema(by_alias=True, ref_template=_REF, mode="validation" if request else "serialization")
    definitions = schema.pop("$defs", {})
    if request:
        schema = _request_schema(schema)
        definitions = {name: _request_schema(value) for name, value in definitions.items()}
    components.update(definitions)
    components[model.__name__] = schema
    return _REF.format(model=model.__name__)


def _request_schema(schema: Any) -> Any:
    """A request schema with the boundary's rules: storable strings and keys, free values as ``JsonValue``."""
    if isinstance(schema, list):
        return [_request_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if not set(schema) - {"title", "description"}:  # any value at all
        return {**schema, "$ref": _JSON_VALUE_REF}
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            result[key] = {name: _request_schema(property_schema) for name, property_schema in value.items()}
        elif key in ("default", "examples", "const", "enum"):
            result[key] = value
        else:
            result[key] = _request_schema(value)
    for name in schema.get("required", ()):  # a required property has no default
        result.get("properties", {}).get(name, {}).pop("default", None)
    if schema.get("type") == "string" and not {"enum", "const", "format", "pattern"} & set(schema):
        result["pattern"] = STORABLE_TEXT
    if schema.get("type") == "object":
        result.setdefault("propertyNames", {"pattern": STORABLE_TEXT})
        if result.get("additionalProperties", True) is True:
            result["additionalProperties"] = {"$ref": _JSON_VALUE_REF}
    return result
