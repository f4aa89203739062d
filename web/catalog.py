"""Routes of the catalog: /backends, /models, /groups, /group-by-*, /backend-affinity, /model-affinity."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.backends import BACKEND_TYPES, PROVIDER_TYPES
from chainloom.domain.errors import Unprocessable
from chainloom.domain.models import MAX_CONTEXT_LENGTH, ModelSpec
from chainloom.queries.pagination import Page
from chainloom.web.bodies import JsonInt, json_response, with_body
from chainloom.web.downloads import PurgeQuery
from chainloom.web.keys import CATALOG_COMMANDS, CATALOG_QUERIES, DOWNLOAD_COMMANDS
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Backend, BackendWithStatus, Group, Message, Model, PageQuery

routes = web.RouteTableDef()


class _Body(BaseModel):
    # Server-set fields (id, createdAt, updatedAt) and unknown fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class BackendBody(_Body):
    # json_schema_extra: what the domain requires, for /openapi.json (the domain's messages stay).
    model_config = ConfigDict(json_schema_extra={"required": ["name", "baseUrl", "type"]})

    name: str = Field("", json_schema_extra={"minLength": 1})
    base_url: str = Field("", alias="baseUrl", json_schema_extra={"minLength": 1})
    type: str = Field("", json_schema_extra={"enum": list(BACKEND_TYPES)})


class BackendUpdateBody(BackendBody):
    # A provider backend (made by /providers/{type}/configure) keeps its type: openai or gemini.
    model_config = ConfigDict(json_schema_extra={"required": ["name", "baseUrl", "type"]})

    type: str = Field("", json_schema_extra={"enum": [*BACKEND_TYPES, *PROVIDER_TYPES]})


_CAPABILITIES = ("canChat", "canEmbed", "canPrompt", "canStream")


class ModelBody(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "required": ["model", "contextLength"],
            "anyOf": [{"properties": {name: {"const": True}}, "required": [name]} for name in _CAPABILITIES],
        }
    )

    # The id is the model's name: set by the server; on PUT it may repeat the path's id.
    id: str = Field("", json_schema_extra={"readOnly": True})
    model: str = Field("", json_schema_extra={"minLength": 1})
    context_length: JsonInt = Field(0, alias="contextLength", json_schema_extra={"minimum": 1, "maximum": MAX_CONTEXT_LENGTH})
    can_chat: bool = Field(False, alias="canChat")
    can_embed: bool = Field(False, alias="canEmbed")
    can_prompt: bool = Field(False, alias="canPrompt")
    can_stream: bool = Field(False, alias="canStream")

    def spec(self) -> ModelSpec:
        return ModelSpec(
            self.model, self.context_length, self.can_chat, self.can_embed, self.can_prompt, self.can_stream
        )


class GroupBody(_Body):
    name: str = ""
    purpose_type: str = Field("", alias="purposeType")


def _commands(request: web.Request):
    return request.app[CATALOG_COMMANDS]


def _queries(request: web.Request):
    return request.app[CATALOG_QUERIES]


def _page(request: web.Request) -> Page:
    return Page.parse(request.query.get("limit"), request.query.get("cursor"))


# -- backends ------------------------------------------------------------------


@routes.post("/backends")
@responds(201, Backend)
@fails(409)
@with_body(BackendBody)
async def create_backend(request: web.Request, body: BackendBody) -> web.Response:
    """Creates a new backend connection to an LLM provider."""
    backend_id = await _commands(request).create_backend(body.name, body.base_url, body.type, command_context(request))
    return json_response(await _queries(request).plain_backend(backend_id), 201)


@routes.get("/backends")
@responds(200, list[BackendWithStatus])
@query(PageQuery)
@fails(400)
async def list_backends(request: web.Request) -> web.Response:
    """Lists all configured backend connections with runtime status."""
    return json_response(await _queries(request).backends(_page(request)))


@routes.get("/backends/{id}")
@responds(200, BackendWithStatus)
async def get_backend(request: web.Request) -> web.Response:
    """Retrieves complete information for a specific backend."""
    return json_response(await _queries(request).backend(request.match_info["id"]))


@routes.put("/backends/{id}")
@responds(200, Backend)
@fails(409)
@with_body(BackendUpdateBody)
async def update_backend(request: web.Request, body: BackendUpdateBody) -> web.Response:
    """Updates an existing backend configuration (the id of the path wins over the body's).
    Types ollama and vllm may change into each other; a provider backend (openai, gemini) keeps its type.
    """
    backend_id = request.match_info["id"]
    await _commands(request).update_backend(backend_id, body.name, body.base_url, body.type, command_context(request))
    return json_response(await _queries(request).plain_backend(backend_id))


@routes.delete("/backends/{id}")
@responds(200, Message)
async def delete_backend(request: web.Request) -> web.Response:
    """Removes a backend connection and its group assignments."""
    await _commands(request).delete_backend(request.match_info["id"], command_context(request))
    return json_response("backend removed")


# -- models --------------------------------------------------------------------


@routes.post("/models")
@responds(201, Model)
@fails(400, 409)
@with_body(ModelBody)
async def declare_model(request: web.Request, body: ModelBody) -> web.Response:
    """Declares a new model to the system; its id is its name."""
    model_id = await _commands(request).declare_model(body.spec(), command_context(request))
    return json_response(await _queries(request).model(model_id), 201)


@routes.get("/models")
@responds(200, list[Model])
@query(PageQuery)
@fails(400)
async def list_models(request: web.Request) -> web.Response:
    """Lists all registered models in internal format."""
    return json_response(await _queries(request).models(_page(request)))


@routes.put("/models/{id:.+}")
@responds(200, Model)
@fails(400, 409)
@with_body(ModelBody)
async def update_model(request: web.Request, body: ModelBody) -> web.Response:
    """Updates an existing model registration (name, context length and capabilities)."""
    model_id = request.match_info["id"]
    if body.id and body.id != model_id:
        raise Unprocessable("serverops: unprocessable entity: ID in payload does not match URL", param="id")
    await _commands(request).update_model(model_id, body.spec(), command_context(request))
    return json_response(await _queries(request).model(model_id))


@routes.delete("/models/{id:.+}")
@responds(200, Message)
@query(PurgeQuery)
@fails(403)
async def delete_model(request: web.Request) -> web.Response:
    """Deletes a model, addressed by its name, and its group assignments.

    With ``purge=true`` its queued downloads are dequeued and its pulls in progress cancelled too.
    """
    name = request.match_info["id"]
    await _commands(request).delete_model(name, command_context(request))
    if request.query.get("purge") == "true":
        await request.app[DOWNLOAD_COMMANDS].purge(name, command_context(request))
    return json_response("model removed")


# -- groups --------------------------------------------------------------------


@routes.post("/groups")
@responds(201, Group)
@fails(409)
@with_body(GroupBody)
async def create_group(request: web.Request, body: GroupBody) -> web.Response:
    """Creates a new affinity group for organizing backends and models."""
    group_id = await _commands(request).create_group(body.name, body.purpose_type, command_context(request))
    return json_response(await _queries(request).group(group_id), 201)


@routes.get("/groups")
@responds(200, list[Group])
async def list_groups(request: web.Request) -> web.Response:
    """Lists all affinity groups in the system, newest first."""
    return json_response(await _queries(request).groups())


@routes.get("/groups/{id}")
@responds(200, Group)
async def get_group(request: web.Request) -> web.Response:
    """Retrieves an affinity group by its unique ID."""
    return json_response(await _queries(request).group(request.match_info["id"]))


@routes.put("/groups/{id}")
@responds(200, Group)
@fails(403, 409)
@with_body(GroupBody)
async def update_group(request: web.Request, body: GroupBody) -> web.Response:
    """Updates an affinity group (a full replacement of name and purpose type)."""
    group_id = request.match_info["id"]
    await _commands(request).update_group(group_id, body.name, body.purpose_type, command_context(request))
    return json_response(await _queries(request).group(group_id))


@routes.delete("/groups/{id}")
@responds(200, Message)
@fails(403)
async def delete_group(request: web.Request) -> web.Response:
    """Removes an affinity group and its assignments."""
    await _commands(request).delete_group(request.match_info["id"], command_context(request))
    return json_response("deleted")


@routes.get("/group-by-name/{name}")
@responds(200, Group)
async def group_by_name(request: web.Request) -> web.Response:
    """Retrieves an affinity group by its human-readable name."""
    return json_response(await _queries(request).group_by_name(request.match_info["name"]))


@routes.get("/group-by-purpose/{purpose}")
@responds(200, list[Group])
@query(PageQuery)
@fails(400)
async def groups_by_purpose(request: web.Request) -> web.Response:
    """Lists groups filtered by purpose type with pagination support."""
    return json_response(await _queries(request).groups_by_purpose(request.match_info["purpose"], _page(request)))


# -- memberships ---------------------------------------------------------------


@routes.post("/backend-affinity/{groupID}/backends/{backendID}")
@responds(201, Message)
@fails(409)
async def assign_backend(request: web.Request) -> web.Response:
    """Associates a backend with an affinity group."""
    info = request.match_info
    await _commands(request).assign_backend(info["groupID"], info["backendID"], command_context(request))
    return json_response("backend assigned", 201)


@routes.delete("/backend-affinity/{groupID}/backends/{backendID}")
@responds(200, Message)
async def remove_backend(request: web.Request) -> web.Response:
    """Removes a backend from an affinity group."""
    info = request.match_info
    await _commands(request).remove_backend(info["groupID"], info["backendID"], command_context(request))
    return json_response("backend removed")


@routes.get("/backend-affinity/{groupID}/backends")
@responds(200, list[Backend])
async def backends_of_group(request: web.Request) -> web.Response:
    """Lists all backends associated with a specific affinity group."""
    return json_response(await _queries(request).backends_of_group(request.match_info["groupID"]))


@routes.get("/backend-affinity/{backendID}/groups")
@responds(200, list[Group])
async def groups_of_backend(request: web.Request) -> web.Response:
    """Lists all affinity groups that a specific backend belongs to."""
    return json_response(await _queries(request).groups_of_backend(request.match_info["backendID"]))


@routes.post("/model-affinity/{groupID}/models/{modelID:.+}")
@responds(200, Message)
@fails(409)
async def assign_model(request: web.Request) -> web.Response:
    """Associates a model with an affinity group."""
    info = request.match_info
    await _commands(request).assign_model(info["groupID"], info["modelID"], command_context(request))
    return json_response("model assigned")


@routes.delete("/model-affinity/{groupID}/models/{modelID:.+}")
@responds(200, Message)
@fails(403)
async def remove_model(request: web.Request) -> web.Response:
    """Removes a model from an affinity group."""
    info = request.match_info
    await _commands(request).remove_model(info["groupID"], info["modelID"], command_context(request))
    return json_response("model removed")


@routes.get("/model-affinity/{groupID}/models")
@responds(200, list[Model])
async def models_of_group(request: web.Request) -> web.Response:
    """Lists all models associated with a specific affinity group."""
    return json_response(await _queries(request).models_of_group(request.match_info["groupID"]))


@routes.get("/model-affinity/{modelID}/groups")
@responds(200, list[Group])
async def groups_of_model(request: web.Request) -> web.Response:
    """Lists all affinity groups that a specific model belongs to."""
    return json_response(await _queries(request).groups_of_model(request.match_info["modelID"]))
