"""Routes of stored task chains: /taskchains CRUD (``/chains``, on the same storage: ``web.chains``).

Bodies are decoded by ``ChainDefinition.from_json`` with Go's rules (the reference's), not by pydantic:
unknown keys are dropped, keys match case-insensitively, null leaves a value as it is. The pydantic
models below only describe the bodies and answers in /openapi.json.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.taskchains import HANDLERS, OPERATORS, ChainDefinition
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response, read_json_object
from chainloom.web.keys import TASKCHAIN_COMMANDS, TASKCHAIN_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, request_body, responds
from chainloom.web.schemas import Message, PageQuery

routes = web.RouteTableDef()

# The header of a list answer naming the cursor of the next page (chains do not carry their createdAt).
NEXT_CURSOR_HEADER = "X-Next-Cursor"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# -- /openapi.json: request bodies (null is accepted wherever Go's decoding accepts it) ----------------

Handler = Literal[HANDLERS]  # type: ignore[valid-type]
Operator = Literal[OPERATORS]  # type: ignore[valid-type]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BranchBody(_Doc):
    operator: Operator = Field(description="How the task's transition value is compared with `when`.")
    when: str | None = None
    goto: str | None = Field(None, description="A task id of the chain, or `end` / \"\" to finish.")
    alert_on_match: str | None = Field(
        None, description="Beyond the reference: a run taking this branch raises this alert (GET /activity/alerts)."
    )


class TransitionBody(_Doc):
    on_failure: str | None = Field(None, description="The task to go to when every attempt failed.")
    branches: list[BranchBody] | None = None


class ExecuteConfigBody(_Doc):
    model: str | None = None
    models: list[str | None] | None = None
    provider: str | None = None
    providers: list[str | None] | None = None
    temperature: float | None = None
    hooks: list[str | None] | None = None
    hide_tools: list[str | None] | None = None
    pass_clients_tools: bool | None = None


class HookCallBody(_Doc):
    name: str | None = Field(None, description="A remote hook's name (required by handler `hook`).")
    tool_name: str | None = Field(None, description="The operation to call (required by handler `hook`).")
    args: dict[str, str | None] | None = None


class ComposeBody(_Doc):
    with_var: str | None = None
    strategy: str | None = None


class TaskDefinitionBody(_Doc):
    id: str = Field(json_schema_extra={"minLength": 1, "not": {"const": "end"}})
    description: str | None = None
    handler: Handler
    system_instruction: str | None = None
    valid_conditions: dict[str, bool | None] | None = Field(None, description="Required by `condition_key`.")
    execute_config: ExecuteConfigBody | None = None
    hook: HookCallBody | None = None
    print: str | None = None
    prompt_template: str | None = None
    output_template: str | None = None
    input_var: str | None = None
    compose: ComposeBody | None = None
    transition: TransitionBody | None = None
    timeout: str | None = Field(None, description="Go duration syntax: 500ms, 30s, 2m, 1h30m.")
    retry_on_failure: int | None = Field(None, json_schema_extra={"minimum": _INT64_MIN, "maximum": _INT64_MAX})


class ChainDefinitionBody(_Doc):
    """A task chain; its first task is where a run starts. Every task must be reachable from it."""

    id: str | None = Field(None, description="Optional here: the path's id is the chain's.")
    description: str | None = None
    debug: bool | None = None
    tasks: list[TaskDefinitionBody] = Field(json_schema_extra={"minItems": 1})
    token_limit: int | None = Field(None, json_schema_extra={"minimum": _INT64_MIN, "maximum": _INT64_MAX})


class TaskChainBody(ChainDefinitionBody):
    id: str = Field(json_schema_extra={"minLength": 1})


# -- /openapi.json: answers (ChainDefinition.to_json) -------------------------------------------------


class TaskChainBranch(BaseModel):
    operator: str | None = None
    when: str
    goto: str
    alert_on_match: str | None = None


class TaskChainTransition(BaseModel):
    on_failure: str
    branches: list[TaskChainBranch] | None


class TaskChainExecuteConfig(BaseModel):
    model: str
    models: list[str] | None = None
    provider: str | None = None
    providers: list[str] | None = None
    temperature: float | None = None
    hooks: list[str] | None = None
    hide_tools: list[str] | None = None
    pass_clients_tools: bool


class TaskChainHookCall(BaseModel):
    name: str
    tool_name: str
    args: dict[str, str] | None


class TaskChainCompose(BaseModel):
    with_var: str | None = None
    strategy: str | None = None


class TaskChainTask(BaseModel):
    id: str
    description: str
    handler: str
    system_instruction: str | None = None
    valid_conditions: dict[str, bool] | None = None
    execute_config: TaskChainExecuteConfig | None = None
    hook: TaskChainHookCall | None = None
    print: str | None = None
    prompt_template: str
    output_template: str | None = None
    input_var: str | None = None
    compose: TaskChainCompose | None = None
    transition: TaskChainTransition
    timeout: str | None = None
    retry_on_failure: int | None = None


class TaskChain(BaseModel):
    """A stored task chain (keys other than these are left out when empty)."""

    id: str
    debug: bool
    description: str
    tasks: list[TaskChainTask]
    token_limit: int


# -- routes -------------------------------------------------------------------------------------------


def _commands(request: web.Request):
    return request.app[TASKCHAIN_COMMANDS]


def _queries(request: web.Request):
    return request.app[TASKCHAIN_QUERIES]


async def _store(request: web.Request) -> web.Response:
    chain = ChainDefinition.from_json(await read_json_object(request))
    stored = await _commands(request).store(chain, command_context(request))
    return json_response(stored.to_json(), 201)


@routes.post("/taskchains")
@responds(201, TaskChain)
@request_body(TaskChainBody)
async def create_taskchain(request: web.Request) -> web.Response:
    """Stores a task chain: created, or replacing the chain with its id (an upsert: no 409).
    Refused with 422 naming the task and field: an unknown handler, a transition to a task that does not
    exist, a field its handler requires, an unparsable timeout, a task no transition reaches.
    """
    return await _store(request)


@routes.get("/taskchains")
@responds(200, list[TaskChain])
@query(PageQuery)
@fails(400)
async def list_taskchains(request: web.Request) -> web.Response:
    """Lists stored task chains, newest first.
    The `X-Next-Cursor` header of the answer is the cursor of the next page.
    """
    return await chain_page(request)


async def chain_page(request: web.Request) -> web.Response:
    """A page of the stored chains (``limit``, ``cursor``), the next page's cursor in ``X-Next-Cursor``."""
    page = Page.parse(request.query.get("limit"), request.query.get("cursor"))
    chains, next_cursor = await _queries(request).chains(page)
    response = json_response(chains)
    if next_cursor is not None:
        response.headers[NEXT_CURSOR_HEADER] = next_cursor
    return response


@routes.get("/taskchains/{id:.+}")
@responds(200, TaskChain)
async def get_taskchain(request: web.Request) -> web.Response:
    """Retrieves a stored task chain."""
    return json_response(await _queries(request).chain(request.match_info["id"]))


@routes.put("/taskchains/{id:.+}")
@responds(200, TaskChain)
@request_body(ChainDefinitionBody)
async def update_taskchain(request: web.Request) -> web.Response:
    """Replaces a stored task chain (the path's id is kept; a different id in the body is refused)."""
    chain = ChainDefinition.from_json(await read_json_object(request))
    stored = await _commands(request).replace(request.match_info["id"], chain, command_context(request))
    return json_response(stored.to_json())


@routes.delete("/taskchains/{id:.+}")
@responds(200, Message)
async def delete_taskchain(request: web.Request) -> web.Response:
    """Removes a stored task chain."""
    chain_id = request.match_info["id"]
    await _commands(request).delete(chain_id, command_context(request))
    return json_response(f"task chain {chain_id} deleted")
