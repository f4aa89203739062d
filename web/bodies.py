"""Reading request bodies: JSON objects into pydantic models, and JSON responses.

Field names match case-insensitively (existing clients rely on it); unknown
fields are ignored; a wrong type is a 422 naming the field. Every JSON body is
the boundary of the log: it is read up to ``CHAINLOOM_MAX_EVENT_BYTES`` (413
beyond, without buffering the rest) and refused whole (422 naming the field)
if any value in it could not be stored (``domain.storable``).
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ValidationError

from chainloom.domain.errors import Unprocessable
from chainloom.domain.storable import check_storable
from chainloom.web.errors import UnsupportedMediaType
from chainloom.web.keys import SETTINGS
from chainloom.web.openapi import request_body

M = TypeVar("M", bound=BaseModel)

_JSON_TYPES = ("application/json",)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer field of a body: JSON (and JSON Schema's "integer") does not tell 3 from 3.0, so
# neither do we; other numbers, strings and booleans stay refused (the models are strict).
JsonInt = Annotated[int, BeforeValidator(_integral)]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if "Content-Type" in request.headers:
        media_type = request.content_type
        if media_type not in _JSON_TYPES and not media_type.endswith("+json"):
            raise UnsupportedMediaType(f"unsupported content type {media_type!r}: send application/json")
    raw = await read_limited(request, request.app[SETTINGS].json_body_limit)
    if not raw.strip():
        raise Unprocessable("empty request body")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise Unprocessable(f"invalid JSON body: {error}") from None
    if not isinstance(value, dict):
        raise Unprocessable("the request body must be a JSON object")
    check_storable(value, "")
    return value


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    Read once, then kept with the request: a middleware that reads it first (``web.idempotency``
    fingerprints it) leaves it for the handler, whose own limit still applies."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    kept = request.get(_BODY)
    if kept is None:
        body = bytearray()
        while chunk := await request.content.read(1 << 16):
            body += chunk
            if len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
        kept = request[_BODY] = bytes(body)
    if len(kept) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(kept))
    return kept


_BODY = web.RequestKey("body", bytes)


async def read_body(request: web.Request, model: type[M]) -> M:
    return parse_object(await read_json_object(request), model)


def parse_object(value: dict[str, Any], model: type[M]) -> M:
    canonical = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        canonical[key.lower()] = key
    normalised = {canonical.get(k.lower(), k): v for k, v in value.items()}
    try:
        return model.model_validate(normalised)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"])
        raise Unprocessable(f"invalid value for '{param}': {first['msg']}", param=param) from None


def with_body(model: type[BaseModel]):
    """Parse the request body into ``model`` and pass it to the handler (also documents it in OpenAPI)."""

    def wrap(handler):
        @functools.wraps(handler)
        async def parse_then_handle(request: web.Request) -> web.StreamResponse:
            return await handler(request, await read_body(request, model))

        return request_body(model)(parse_then_handle)

    return wrap
