"""Routes of the remote hooks: /hooks/remote (CRUD, by name) and /hooks/schemas."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.hooks import MAX_TIMEOUT_MS, HookFailed, HookSpec, InjectedProperty
from chainloom.queries.pagination import Page
from chainloom.web.bodies import JsonInt, json_response, with_body
from chainloom.web.keys import HOOK_COMMANDS, HOOK_QUERIES, HOOK_RUNNER
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Message, PageQuery

routes = web.RouteTableDef()

Scalar = str | int | float | bool | None


class HookPropertyBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    name: str = Field("", description="The argument's name; empty: nothing is injected.")
    value: Scalar = Field(None, description="Sent as text.")
    in_: str = Field("", alias="in", description="`path`, `query`, else the JSON body.")


class HookBody(BaseModel):
    # Server-set fields (createdAt, updatedAt) and unknown fields are ignored.
    model_config = ConfigDict(
        strict=True, extra="ignore", json_schema_extra={"required": ["name", "endpointUrl", "timeoutMs"]}
    )

    id: str = Field("", description="POST: kept when given (else a new UUID); PUT: the path's id wins.")
    name: str = Field("", json_schema_extra={"minLength": 1})
    endpoint_url: str = Field(
        "",
        alias="endpointUrl",
        description="Base URL: the schema is `<endpointUrl>/openapi.json`, operations are relative to it.",
        json_schema_extra={"pattern": "^https?://[^/?#\\s]+"},
    )
    timeout_ms: JsonInt = Field(
        0,
        alias="timeoutMs",
        description="Deadline of a whole hook execution, schema fetch included.",
        json_schema_extra={"minimum": 1, "maximum": MAX_TIMEOUT_MS},
    )
    headers: dict[str, str] | None = Field(None, description="Sent on every tool call.")
    properties: HookPropertyBody | None = Field(None, description="An argument injected into every tool call.")

    def spec(self) -> HookSpec:
        injected = InjectedProperty()
        if self.properties is not None:
            injected = InjectedProperty(self.properties.name, self.properties.value, self.properties.in_)
        return HookSpec(self.name, self.endpoint_url, self.timeout_ms, self.headers or {}, injected)


class HookProperty(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    value: Scalar
    in_: str = Field(alias="in")


class RemoteHook(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str
    endpoint_url: str = Field(alias="endpointUrl")
    timeout_ms: int = Field(alias="timeoutMs")
    headers: dict[str, str] = Field(default_factory=dict, description="Left out when there are none.")
    properties: HookProperty
    created_at: str = Field(alias="createdAt", json_schema_extra={"format": "date-time"})
    updated_at: str = Field(alias="updatedAt", json_schema_extra={"format": "date-time"})


def _page(request: web.Request) -> Page:
    return Page.parse(request.query.get("limit"), request.query.get("cursor"))


@routes.post("/hooks/remote")
@responds(201, RemoteHook)
@fails(409)
@with_body(HookBody)
async def create_remote_hook(request: web.Request, body: HookBody) -> web.Response:
    """Registers a remote hook: an HTTP service publishing an OpenAPI 3 document.

    The endpoint is not contacted. Names are unique (409), and so are ids."""
    hook_id = await request.app[HOOK_COMMANDS].create(body.spec(), body.id, command_context(request))
    return json_response(await request.app[HOOK_QUERIES].hook(hook_id), 201)


@routes.get("/hooks/remote")
@responds(200, list[RemoteHook])
@query(PageQuery)
@fails(400)
async def list_remote_hooks(request: web.Request) -> web.Response:
    """Lists remote hooks, newest first."""
    return json_response(await request.app[HOOK_QUERIES].hooks(_page(request)))


@routes.get("/hooks/remote/by-name/{name}")
@responds(200, RemoteHook)
async def remote_hook_by_name(request: web.Request) -> web.Response:
    """Retrieves a remote hook by its name."""
    return json_response(await request.app[HOOK_QUERIES].by_name(request.match_info["name"]))


@routes.get("/hooks/remote/{id}")
@responds(200, RemoteHook)
async def get_remote_hook(request: web.Request) -> web.Response:
    """Retrieves a remote hook by its id."""
    return json_response(await request.app[HOOK_QUERIES].hook(request.match_info["id"]))


@routes.put("/hooks/remote/{id}")
@responds(200, RemoteHook)
@fails(409)
@with_body(HookBody)
async def update_remote_hook(request: web.Request, body: HookBody) -> web.Response:
    """Replaces a remote hook's configuration (the path's id wins over the body's).

    Answers the hook as stored (its own createdAt)."""
    hook_id = request.match_info["id"]
    await request.app[HOOK_COMMANDS].update(hook_id, body.spec(), command_context(request))
    return json_response(await request.app[HOOK_QUERIES].hook(hook_id))


@routes.delete("/hooks/remote/{id}")
@responds(200, Message)
async def delete_remote_hook(request: web.Request) -> web.Response:
    """Removes a remote hook."""
    await request.app[HOOK_COMMANDS].delete(request.match_info["id"], command_context(request))
    return json_response("deleted")


@routes.get("/hooks/schemas")
@responds(200, dict[str, Any])
async def hook_schemas(request: web.Request) -> web.Response:
    """The OpenAPI document of every remote hook, by hook name, fetched now.

    A hook whose document cannot be fetched (unreachable, timed out, not 200, not a JSON object) is left out."""
    hooks = await request.app[HOOK_QUERIES].all()
    runner = request.app[HOOK_RUNNER]
    fetched = await asyncio.gather(*(runner.schema(hook) for hook in hooks), return_exceptions=True)
    schemas: dict[str, Any] = {}
    for hook, document in zip(hooks, fetched):
        if isinstance(document, HookFailed):
            continue
        if isinstance(document, BaseException):
            raise document
        schemas[hook["name"]] = document
    return json_response(schemas)
