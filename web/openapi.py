"""``/openapi.json``: an OpenAPI 3.1 description derived from the routes actually registered."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from infra.version import VERSION

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}


def describe(app: web.Application, token_required: bool) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"ErrorResponse": _ERROR_SCHEMA}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        template = route.resource.canonical
        path = _PARAM.sub(r"{\1}", template)
        handler = route.handler
        doc = (handler.__doc__ or "").strip()
        operation: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": doc.splitlines()[0] if doc else handler.__name__,
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(template)
            ],
            "responses": {
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                }
            },
        }
        model = getattr(handler, "request_model", None)
        if model is not None:
            schemas[model.__name__] = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "chainloom runtime API", "version": VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas},
    }
    if token_required:
        document["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        document["security"] = [{"ApiKey": []}]
    return document
