"""Routes of ``/chains`` (platform notes §10.3): the stored task chains again, as the older platform served them.

``/chains`` and ``/taskchains`` share one storage — the ``taskchain`` aggregates — so the seeded chat chains
(``commands.chat_chains``) are read and edited through either. What differs is the older platform's
answers: a chain without an id or tasks is 400 ``invalid chain definition: …``, a PUT keeps the path's id
whatever the body says, a DELETE answers ``{"status": "deleted"}``. Only ``POST /chains`` is in the
contract; the rest is beyond it, as the reference serves it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from chainloom.domain.errors import BadRequest
from chainloom.domain.taskchains import ChainDefinition
from chainloom.web.bodies import json_response, read_json_object
from chainloom.web.keys import TASKCHAIN_COMMANDS, TASKCHAIN_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, request_body, responds
from chainloom.web.schemas import PageQuery
from chainloom.web.taskchains import ChainDefinitionBody, TaskChain, TaskChainBody, chain_page

routes = web.RouteTableDef()


class ChainDeleted(BaseModel):
    status: Literal["deleted"]


def _definition(body: object, chain_id: str | None = None) -> ChainDefinition:
    """The chain of a body (``chain_id``: the path's, which wins); 400 without an id or tasks."""
    chain = ChainDefinition.from_json(body)
    if chain_id is not None:
        chain = replace(chain, id=chain_id)
    if not chain.id:
        raise BadRequest("invalid chain definition: chain ID is required", param="id")
    if not chain.tasks:
        raise BadRequest("invalid chain definition: chain must have at least one task", param="tasks")
    return chain


@routes.post("/chains")
@responds(201, TaskChain)
@request_body(TaskChainBody)
@fails(400)
async def set_chain(request: web.Request) -> web.Response:
    """Stores a task chain: created, or replacing the chain with its id (the same storage as /taskchains).
    400 `invalid chain definition` without an id or tasks; 422 for what POST /taskchains refuses besides."""
    chain = _definition(await read_json_object(request))
    stored = await request.app[TASKCHAIN_COMMANDS].store(chain, command_context(request))
    return json_response(stored.to_json(), 201)


@routes.get("/chains")
@responds(200, list[TaskChain])
@query(PageQuery)
@fails(400)
async def list_chains(request: web.Request) -> web.Response:
    """Lists the stored task chains, newest first (a fresh service holds the two seeded chat chains).
    The `X-Next-Cursor` header of the answer is the cursor of the next page."""
    return await chain_page(request)


@routes.get("/chains/{id:.+}")
@responds(200, TaskChain)
async def get_chain(request: web.Request) -> web.Response:
    """Retrieves a stored task chain."""
    return json_response(await request.app[TASKCHAIN_QUERIES].chain(request.match_info["id"]))


@routes.put("/chains/{id:.+}")
@responds(200, TaskChain)
@request_body(ChainDefinitionBody)
@fails(400)
async def update_chain(request: web.Request) -> web.Response:
    """Replaces a stored task chain; the path's id is kept whatever the body's (unlike PUT /taskchains).
    400 `invalid chain definition` without tasks."""
    chain_id = request.match_info["id"]
    chain = _definition(await read_json_object(request), chain_id)
    stored = await request.app[TASKCHAIN_COMMANDS].replace(chain_id, chain, command_context(request))
    return json_response(stored.to_json())


@routes.delete("/chains/{id:.+}")
@responds(200, ChainDeleted)
async def delete_chain(request: web.Request) -> web.Response:
    """Removes a stored task chain."""
    await request.app[TASKCHAIN_COMMANDS].delete(request.match_info["id"], command_context(request))
    return json_response({"status": "deleted"})
