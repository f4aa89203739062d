"""Routes that put the backends to work: /execute, /embed, /defaultmodel, /supported, and the declared
models in OpenAI's format (/openai/v1/models, /openai/{chainID}/v1/models).

Thin: ``/execute`` and ``/embed`` hand their body to ``commands.execution.ExecutionService``,
which routes and fails over; the model lists are read from the catalog read model.
"""

from __future__ import annotations

import uuid
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.errors import BadRequest
from chainloom.infra.timefmt import parse_ns
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response, read_body, read_limited
from chainloom.web.keys import CATALOG_QUERIES, EXECUTION, HOOK_QUERIES, SETTINGS
from chainloom.web.openapi import fails, query, request_body, responds
from chainloom.web.schemas import Answer, PageQuery

routes = web.RouteTableDef()

_EMPTY_PROMPT = "prompt is empty serverops: empty request body"


# -- bodies and answers (described in /openapi.json) --------------------------------------


class ExecuteBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"required": ["prompt"]})

    prompt: str = Field("", json_schema_extra={"minLength": 1})
    model_name: str | None = Field(None, description="Default: CHAINLOOM_TASK_MODEL.")
    model_provider: str | None = Field(None, description="A backend type (ollama, vllm, openai, gemini); default: CHAINLOOM_TASK_PROVIDER.")


class EmbedBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"required": ["text"]})

    text: str = Field("", json_schema_extra={"minLength": 1})


class ExecuteAnswer(Answer):
    id: str = Field(description="A new UUIDv4 per answer.")
    response: str = Field(description="The model's output, untrimmed.")


class EmbedAnswer(Answer):
    vector: list[float]


class DefaultModelAnswer(Answer):
    model_name: str = Field(alias="modelName")


class OpenAIModel(Answer):
    id: str = Field(description="The model's name.")
    object: Literal["model"]
    created: int = Field(description="When it was declared (Unix seconds).")
    owned_by: Literal["system"]


class OpenAIModelList(Answer):
    object: Literal["list"]
    data: list[OpenAIModel]


# -- routes -------------------------------------------------------------------------


@routes.post("/execute")
@responds(200, ExecuteAnswer)
@fails(400, 502, 503)
@request_body(ExecuteBody)
async def execute(request: web.Request) -> web.Response:
    """Runs the prompt through the default LLM (or the model and provider type named).

    Routed to a backend that holds the model (canPrompt) and shares a group with it; when several do,
    requests are spread over them, and one that is unavailable is replaced by the next. 400: no prompt;
    422: nothing in any group can serve it (the answer says what there is); 503 (Retry-After): the
    backends that could are in error, still pulling the model, or failed; 502: a backend refused."""
    if not (await read_limited(request, request.app[SETTINGS].json_body_limit)).strip():
        raise BadRequest(_EMPTY_PROMPT, param="prompt")
    body = await read_body(request, ExecuteBody)
    if not body.prompt:
        raise BadRequest(_EMPTY_PROMPT, param="prompt")
    response = await request.app[EXECUTION].prompt(body.prompt, body.model_name, body.model_provider)
    return json_response({"id": str(uuid.uuid4()), "response": response})


@routes.post("/embed")
@responds(200, EmbedAnswer)
@fails(502, 503)
@request_body(EmbedBody)
async def embed(request: web.Request) -> web.Response:
    """Generates vector embeddings for text with the default embedding model (CHAINLOOM_EMBED_MODEL).

    Routed like /execute (canEmbed, provider type CHAINLOOM_EMBED_PROVIDER). 422: empty text, or nothing
    in any group can serve it; 503 (Retry-After) and 502 as for /execute."""
    body = await read_body(request, EmbedBody)
    return json_response({"vector": await request.app[EXECUTION].embed(body.text)})


@routes.get("/defaultmodel")
@responds(200, DefaultModelAnswer)
async def default_model(request: web.Request) -> web.Response:
    """Returns the default model configured during system initialization (the embedding model's name)."""
    return json_response({"modelName": request.app[SETTINGS].embed_model})


@routes.get("/supported")
@responds(200, list[str])
async def supported_hooks(request: web.Request) -> web.Response:
    """Lists available task-chain hook types.

    The names of the remote hooks task chains may call, newest first."""
    return json_response(await request.app[HOOK_QUERIES].names())


async def _openai_models(request: web.Request) -> web.Response:
    page = Page.parse(request.query.get("limit"), request.query.get("cursor"))
    models = await request.app[CATALOG_QUERIES].models(page)
    data = [
        {"id": m["model"], "object": "model", "created": parse_ns(m["createdAt"]) // 1_000_000_000, "owned_by": "system"}
        for m in models
    ]
    return json_response({"object": "list", "data": data})


@routes.get("/openai/v1/models")
@responds(200, OpenAIModelList)
@query(PageQuery)
@fails(400)
async def openai_models(request: web.Request) -> web.Response:
    """Lists all declared models in OpenAI-compatible format, newest first (paginated like /models).

    Only models assigned to a group that shares a backend can serve requests."""
    return await _openai_models(request)


@routes.get("/openai/{chainID}/v1/models")
@responds(200, OpenAIModelList)
@query(PageQuery)
@fails(400)
async def openai_chain_models(request: web.Request) -> web.Response:
    """Lists all declared models in OpenAI-compatible format (the chain ID is not used yet)."""
    return await _openai_models(request)
