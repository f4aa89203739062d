"""``POST /tasks`` (run a chain on an input) and ``GET /tasks/runs/{id}`` (a recorded run).

The envelope ``{input, inputType, chain}`` is decoded with Go's rules, as the reference does: keys match
case-insensitively, unknown ones are dropped; the chain by ``ChainDefinition.from_json``. A chain
without tasks, a task without an id or with the id ``end`` → 400; a body, chain or input that does not
decode, or an unknown ``inputType`` → 422; a chain that fails → 422 with the chain error (the reference
answers 500). Every answer of a run that started names it in ``X-Task-Run-Id`` (the failed ones too:
their partial state is at ``GET /tasks/runs/{id}``).
"""

from __future__ import annotations

import math

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.errors import BadRequest, Unavailable, Unprocessable
from chainloom.domain.taskchains import ChainDefinition
from chainloom.domain.taskengine import ChainFailed
from chainloom.domain.taskengine.values import TYPES, convert_input
from chainloom.web.bodies import json_response, read_json_object
from chainloom.web.errors import error_response, status_of
from chainloom.web.keys import TASK_ENGINE, TASK_RUN_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, request_body, responds
from chainloom.web.taskchains import ChainDefinitionBody

routes = web.RouteTableDef()

RUN_HEADER = "X-Task-Run-Id"


class TasksBody(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"required": ["inputType", "chain"]})

    input: Any = Field(None, description="The chain's input, converted according to inputType.")
    input_type: str = Field(
        "", alias="inputType", json_schema_extra={"enum": list(TYPES)}, description="Matched case-insensitively."
    )
    chain: ChainDefinitionBody


class CapturedState(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    taskID: str
    taskHandler: str
    inputType: str
    outputType: str
    transition: str
    duration: float = Field(description="Milliseconds the handler took.")
    error: dict[str, str] = Field(description='{"error": ""} on success, else the task error.')
    input: str = Field(description="With debug: the task's input; else empty.")
    output: str = Field(description="With debug: the handler's output as compact JSON; else empty.")
    inputVar: str


class TasksAnswer(BaseModel):
    id: str = Field(description="The run's id (GET /tasks/runs/{id}).")
    output: Any = None
    outputType: str
    state: list[CapturedState]


class TaskRun(BaseModel):
    id: str
    chainId: str
    inputType: str
    stepLimit: int
    status: str = Field(json_schema_extra={"enum": ["running", "finished", "failed"]})
    state: list[CapturedState]
    stepOutputs: list[dict[str, Any]] = Field(
        description="Each step's handler output: {value, size} up to 64 KiB, else {sha256, size}."
    )
    startedAt: str
    finishedAt: str | None = None
    output: Any = None
    outputType: str | None = None
    outputSha256: str | None = None
    outputSize: int | None = None
    error: str | None = None


def _field(body: dict[str, Any], name: str) -> Any:
    """Go's key matching: exact first, then case-insensitive (the last such key wins)."""
    if name in body:
        return body[name]
    found = None
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == name.lower():
            found = (value,)
    return found[0] if found is not None else None


@routes.post("/tasks")
@responds(200, TasksAnswer)
@fails(400, 422, 502, 503)
@request_body(TasksBody)
async def run_tasks(request: web.Request) -> web.Response:
    """Runs a task chain on an input and answers its output, its type and the state of every attempt.

    400: the chain has no tasks, or a task has no id or the id `end`; 422: the body, the chain or the
    input does not decode, the inputType is unknown, or the chain failed (the message is the chain
    error; the run, with its partial state, is at GET /tasks/runs/{id}, named by `X-Task-Run-Id`)."""
    body = await read_json_object(request)
    raw_chain = _field(body, "chain")
    if raw_chain is None:
        raise BadRequest("chain has no tasks serverops: bad request", param="chain")
    try:
        chain = ChainDefinition.from_json(raw_chain)
    except Unprocessable as error:
        raise Unprocessable(f"invalid chain: {error.message}", param=f"chain.{error.param}" if error.param else "chain") from None
    input_type = _field(body, "inputType")
    if input_type is not None and not isinstance(input_type, str):
        raise Unprocessable("invalid value for 'inputType': expected a string", param="inputType")
    if not chain.tasks:
        raise BadRequest("chain has no tasks serverops: bad request", param="chain.tasks")
    value, value_type = convert_input(_field(body, "input"), input_type or "")
    try:
        result = await request.app[TASK_ENGINE].run(chain, value, value_type, ctx=command_context(request))
    except ChainFailed as error:
        answer = error.as_answer()
        headers = {RUN_HEADER: error.run_id} if error.run_id else {}
        if isinstance(answer, Unavailable):
            headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after)))
        return error_response(status_of(answer), answer.message, answer.param, headers=headers or None)
    response = json_response({"id": result.run_id, "output": result.output, "outputType": result.output_type, "state": result.state})
    response.headers[RUN_HEADER] = result.run_id
    return response


@routes.get("/tasks/runs/{id}")
@responds(200, TaskRun)
@fails(404)
async def get_task_run(request: web.Request) -> web.Response:
    """A chain run as recorded on the log: its chain, status, the state of every attempt, and its output
    (or error) once it ended. 404 until the read model has the run (it is recorded without waiting)."""
    return json_response(await request.app[TASK_RUN_QUERIES].get(request.match_info["id"]))
