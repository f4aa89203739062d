"""Routes of the catalog: /backends, /models, /groups, /group-by-*, /backend-affinity, /model-affinity."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from domain.errors import Unprocessable
from domain.models import ModelSpec
from queries.pagination import Page
from web.bodies import json_response, with_body
from web.keys import CATALOG_COMMANDS, CATALOG_QUERIES
from web.middleware import command_context

routes = web.RouteTableDef()


class _Body(BaseModel):
    # Server-set fields (id, createdAt, updatedAt) and unknown fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class BackendBody(_Body):
    name: str = ""
    base_url: str = Field("", alias="baseUrl")
    type: str = ""


class ModelBody(_Body):
    id: str = ""
    model: str = ""
    context_length: int = Field(0, alias="contextLength")
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
@with_body(BackendBody)
async def create_backend(request: web.Request, body: BackendBody) -> web.Response:
    """Creates a new backend connection to an LLM provider."""
    backend_id = await _commands(request).create_backend(body.name, body.base_url, body.type, command_context(request))
    return json_response(await _queries(request).plain_backend(backend_id), 201)


@routes.get("/backends")
async def list_backends(request: web.Request) -> web.Response:
    """Lists all configured backend connections with runtime status."""
    return json_response(await _queries(request).backends(_page(request)))


@routes.get("/backends/{id}")
async def get_backend(request: web.Request) -> web.Response:
    """Retrieves complete information for a specific backend."""
    return json_response(await _queries(request).backend(request.match_info["id"]))


@routes.put("/backends/{id}")
@with_body(BackendBody)
async def update_backend(request: web.Request, body: BackendBody) -> web.Response:
    """Updates an existing backend configuration (the id of the path wins over the body's)."""
    backend_id = request.match_info["id"]
    await _commands(request).update_backend(backend_id, body.name, body.base_url, body.type, command_context(request))
    return json_response(await _queries(request).plain_backend(backend_id))


@routes.delete("/backends/{id}")
async def delete_backend(request: web.Request) -> web.Response:
    """Removes a backend connection and its group assignments."""
    await _commands(request).delete_backend(request.match_info["id"], command_context(request))
    return json_response("backend removed")


# -- models --------------------------------------------------------------------


@routes.post("/models")
@with_body(ModelBody)
async def declare_model(request: web.Request, body: ModelBody) -> web.Response:
    """Declares a new model to the system; its id is its name."""
    model_id = await _commands(request).declare_model(body.spec(), command_context(request))
    return json_response(await _queries(request).model(model_id), 201)


@routes.get("/models")
async def list_models(request: web.Request) -> web.Response:
    """Lists all registered models in internal format."""
    return json_response(await _queries(request).models(_page(request)))


@routes.put("/models/{id:.+}")
@with_body(ModelBody)
async def update_model(request: web.Request, body: ModelBody) -> web.Response:
    """Updates an existing model registration (name, context length and capabilities)."""
    model_id = request.match_info["id"]
    if body.id and body.id != model_id:
        raise Unprocessable("serverops: unprocessable entity: ID in payload does not match URL", param="id")
    await _commands(request).update_model(model_id, body.spec(), command_context(request))
    return json_response(await _queries(request).model(model_id))


@routes.delete("/models/{model:.+}")
async def delete_model(request: web.Request) -> web.Response:
    """Deletes a model, addressed by its name, and its group assignments."""
    await _commands(request).delete_model(request.match_info["model"], command_context(request))
    return json_response("model removed")


# -- groups --------------------------------------------------------------------


@routes.post("/groups")
@with_body(GroupBody)
async def create_group(request: web.Request, body: GroupBody) -> web.Response:
    """Creates a new affinity group for organizing backends and models."""
    group_id = await _commands(request).create_group(body.name, body.purpose_type, command_context(request))
    return json_response(await _queries(request).group(group_id), 201)


@routes.get("/groups")
async def list_groups(request: web.Request) -> web.Response:
    """Lists all affinity groups in the system, newest first."""
    return json_response(await _queries(request).groups())


@routes.get("/groups/{id}")
async def get_group(request: web.Request) -> web.Response:
    """Retrieves an affinity group by its unique ID."""
    return json_response(await _queries(request).group(request.match_info["id"]))


@routes.put("/groups/{id}")
@with_body(GroupBody)
async def update_group(request: web.Request, body: GroupBody) -> web.Response:
    """Updates an affinity group (a full replacement of name and purpose type)."""
    group_id = request.match_info["id"]
    await _commands(request).update_group(group_id, body.name, body.purpose_type, command_context(request))
    return json_response(await _queries(request).group(group_id))


@routes.delete("/groups/{id}")
async def delete_group(request: web.Request) -> web.Response:
    """Removes an affinity group and its assignments."""
    await _commands(request).delete_group(request.match_info["id"], command_context(request))
    return json_response("deleted")


@routes.get("/group-by-name/{name}")
async def group_by_name(request: web.Request) -> web.Response:
    """Retrieves an affinity group by its human-readable name."""
    return json_response(await _queries(request).group_by_name(request.match_info["name"]))


@routes.get("/group-by-purpose/{purpose}")
async def groups_by_purpose(request: web.Request) -> web.Response:
    """Lists groups filtered by purpose type with pagination support."""
    return json_response(await _queries(request).groups_by_purpose(request.match_info["purpose"], _page(request)))


# -- memberships ---------------------------------------------------------------


@routes.post("/backend-affinity/{groupID}/backends/{backendID}")
async def assign_backend(request: web.Request) -> web.Response:
    """Associates a backend with an affinity group."""
    info = request.match_info
    await _commands(request).assign_backend(info["groupID"], info["backendID"], command_context(request))
    return json_response("backend assigned", 201)


@routes.delete("/backend-affinity/{groupID}/backends/{backendID}")
async def remove_backend(request: web.Request) -> web.Response:
    """Removes a backend from an affinity group."""
    info = request.match_info
    await _commands(request).remove_backend(info["groupID"], info["backendID"], command_context(request))
    return json_response("backend removed")


@routes.get("/backend-affinity/{groupID}/backends")
async def backends_of_group(request: web.Request) -> web.Response:
    """Lists all backends associated with a specific affinity group."""
    return json_response(await _queries(request).backends_of_group(request.match_info["groupID"]))


@routes.get("/backend-affinity/{backendID}/groups")
async def groups_of_backend(request: web.Request) -> web.Response:
    """Lists all affinity groups that a specific backend belongs to."""
    return json_response(await _queries(request).groups_of_backend(request.match_info["backendID"]))


@routes.post("/model-affinity/{groupID}/models/{modelID:.+}")
async def assign_model(request: web.Request) -> web.Response:
    """Associates a model with an affinity group."""
    info = request.match_info
    await _commands(request).assign_model(info["groupID"], info["modelID"], command_context(request))
    return json_response("model assigned")


@routes.delete("/model-affinity/{groupID}/models/{modelID:.+}")
async def remove_model(request: web.Request) -> web.Response:
    """Removes a model from an affinity group."""
    info = request.match_info
    await _commands(request).remove_model(info["groupID"], info["modelID"], command_context(request))
    return json_response("model removed")


@routes.get("/model-affinity/{groupID}/models")
async def models_of_group(request: web.Request) -> web.Response:
    """Lists all models associated with a specific affinity group."""
    return json_response(await _queries(request).models_of_group(request.match_info["groupID"]))


@routes.get("/model-affinity/{modelID}/groups")
async def groups_of_model(request: web.Request) -> web.Response:
    """Lists all affinity groups that a specific model belongs to."""
    return json_response(await _queries(request).groups_of_model(request.match_info["modelID"]))
