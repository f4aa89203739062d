"""Routes of functions and event triggers: /functions and /event-triggers (CRUD, by name), the trigger
look-ups by event type and by function, and POST /executor/sync.

Path values are used as they arrive, decoded (the reference escaped them again, so names with ``/`` or a
space could not be reached through a path). A function's name, an event type and a function name in
the look-ups may hold ``/`` as it is; a trigger's name holds it escaped (``%2F``), since
``/event-triggers/event-type/…`` and ``/event-triggers/function/…`` are the look-ups.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from chainloom.domain.functions import MAX_NAME_BYTES, SCRIPT_TYPE, TRIGGER_TYPE, FunctionSpec, TriggerSpec
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response, with_body
from chainloom.web.keys import FUNCTION_COMMANDS, FUNCTION_QUERIES, TRIGGER_SYNC
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Message, PageQuery

routes = web.RouteTableDef()

# Names and listened types: bounded in bytes by the domain, so at most as many characters.
_NAME: JsonDict = {"minLength": 1, "maxLength": MAX_NAME_BYTES}

# -- bodies (server-set fields, createdAt and updatedAt, and unknown fields are ignored) ------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class FunctionUpdateBody(_Body):
    # json_schema_extra: what the domain requires, for /openapi.json (the domain's messages stay).
    model_config = ConfigDict(json_schema_extra={"required": ["scriptType", "script"]})

    name: str = Field("", description="POST: the function's name (unique); PUT: the path's name wins.")
    description: str = ""
    script_type: str = Field("", alias="scriptType", json_schema_extra={"const": SCRIPT_TYPE})
    script: str = Field(
        "",
        description="JavaScript, not checked when stored. A global function named like the function is called"
        " with the event; else the global `result` is the result.",
        json_schema_extra={"minLength": 1},
    )

    def spec(self) -> FunctionSpec:
        return FunctionSpec(self.name, self.description, self.script_type, self.script)


class FunctionBody(FunctionUpdateBody):
    model_config = ConfigDict(json_schema_extra={"required": ["name", "scriptType", "script"]})

    name: str = Field("", description="Unique. A JavaScript identifier, for the script's function of this name to be called.", json_schema_extra=_NAME)


class ListenForBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["type"]})

    type: str = Field("", description="The event_type listened for (exactly).", json_schema_extra=_NAME)
    source: str = Field("", description="Only events of this event_source (`chainloom`: internal ones); \"\": any.")


class EventTriggerUpdateBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["listenFor", "type", "function"]})

    name: str = Field("", description="POST: the trigger's name (unique); PUT: the path's name wins.")
    description: str = ""
    listen_for: ListenForBody | None = Field(None, alias="listenFor")
    type: str = Field("", json_schema_extra={"const": TRIGGER_TYPE})
    function: str = Field("", description="An existing function's name (else 409).", json_schema_extra=_NAME)

    def spec(self) -> TriggerSpec:
        listen_for = self.listen_for or ListenForBody()
        return TriggerSpec(self.name, self.description, listen_for.type, listen_for.source, self.type, self.function)


class EventTriggerBody(EventTriggerUpdateBody):
    model_config = ConfigDict(json_schema_extra={"required": ["name", "listenFor", "type", "function"]})

    name: str = Field("", description="Unique.", json_schema_extra=_NAME)


# -- answers ---------------------------------------------------------------------------------------------


class Function(BaseModel):
    """``queries.functions.function_json``."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    script_type: str = Field(alias="scriptType")
    script: str
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class ListenFor(BaseModel):
    type: str
    source: str = Field(description="\"\": events of any event_source.")


class EventTrigger(BaseModel):
    """``queries.functions.trigger_json``."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    listen_for: ListenFor = Field(alias="listenFor")
    type: str
    function: str
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


def _page(request: web.Request) -> Page:
    return Page.parse(request.query.get("limit"), request.query.get("cursor"))


# -- functions -------------------------------------------------------------------------------------------


@routes.post("/functions")
@responds(201, Function)
@fails(409)
@with_body(FunctionBody)
async def create_function(request: web.Request, body: FunctionBody) -> web.Response:
    """Stores a function: a JavaScript script that event triggers run.

    The script is not compiled when stored. Names are unique (409); a deleted function's name can be used again."""
    spec = body.spec()
    await request.app[FUNCTION_COMMANDS].create_function(spec, command_context(request))
    return json_response(await request.app[FUNCTION_QUERIES].function(spec.name), 201)


@routes.get("/functions")
@responds(200, list[Function])
@query(PageQuery)
@fails(400)
async def list_functions(request: web.Request) -> web.Response:
    """Lists functions, newest first."""
    return json_response(await request.app[FUNCTION_QUERIES].functions(_page(request)))


@routes.get("/functions/{name:.+}")
@responds(200, Function)
async def get_function(request: web.Request) -> web.Response:
    """Retrieves a function by its name."""
    return json_response(await request.app[FUNCTION_QUERIES].function(request.match_info["name"]))


@routes.put("/functions/{name:.+}")
@responds(200, Function)
@with_body(FunctionUpdateBody)
async def update_function(request: web.Request, body: FunctionUpdateBody) -> web.Response:
    """Replaces a function's description and script (the path's name wins over the body's).

    Answers the function as stored (its own createdAt). Triggers running it run the new script."""
    name = request.match_info["name"]
    await request.app[FUNCTION_COMMANDS].update_function(name, body.spec(), command_context(request))
    return json_response(await request.app[FUNCTION_QUERIES].function(name))


@routes.delete("/functions/{name:.+}")
@responds(200, Message)
async def delete_function(request: web.Request) -> web.Response:
    """Removes a function and every event trigger that runs it."""
    await request.app[FUNCTION_COMMANDS].delete_function(request.match_info["name"], command_context(request))
    return json_response("function removed")


# -- event triggers --------------------------------------------------------------------------------------


@routes.post("/event-triggers")
@responds(201, EventTrigger)
@fails(409)
@with_body(EventTriggerBody)
async def create_event_trigger(request: web.Request, body: EventTriggerBody) -> web.Response:
    """Stores an event trigger: events of type `listenFor.type` (and source `listenFor.source`, if set) run its function.

    It fires for events appended after it is created. Names are unique (409); the function must exist (409)."""
    spec = body.spec()
    await request.app[FUNCTION_COMMANDS].create_trigger(spec, command_context(request))
    return json_response(await request.app[FUNCTION_QUERIES].trigger(spec.name), 201)


@routes.get("/event-triggers")
@responds(200, list[EventTrigger])
@query(PageQuery)
@fails(400)
async def list_event_triggers(request: web.Request) -> web.Response:
    """Lists event triggers, newest first."""
    return json_response(await request.app[FUNCTION_QUERIES].triggers(_page(request)))


@routes.get("/event-triggers/event-type/{eventType:.+}")
@responds(200, list[EventTrigger])
async def list_event_triggers_by_event_type(request: web.Request) -> web.Response:
    """Lists the event triggers listening for an event type, newest first ([] if none)."""
    return json_response(await request.app[FUNCTION_QUERIES].triggers_listening_for(request.match_info["eventType"]))


@routes.get("/event-triggers/function/{functionName:.+}")
@responds(200, list[EventTrigger])
async def list_event_triggers_by_function(request: web.Request) -> web.Response:
    """Lists the event triggers running a function, newest first ([] if none)."""
    return json_response(await request.app[FUNCTION_QUERIES].triggers_of_function(request.match_info["functionName"]))


@routes.get("/event-triggers/{name}")
@responds(200, EventTrigger)
async def get_event_trigger(request: web.Request) -> web.Response:
    """Retrieves an event trigger by its name."""
    return json_response(await request.app[FUNCTION_QUERIES].trigger(request.match_info["name"]))


@routes.put("/event-triggers/{name}")
@responds(200, EventTrigger)
@fails(409)
@with_body(EventTriggerUpdateBody)
async def update_event_trigger(request: web.Request, body: EventTriggerUpdateBody) -> web.Response:
    """Replaces an event trigger (the path's name wins over the body's); its function must exist (409).

    Answers the trigger as stored (its own createdAt). It keeps firing only for events appended after its creation."""
    name = request.match_info["name"]
    await request.app[FUNCTION_COMMANDS].update_trigger(name, body.spec(), command_context(request))
    return json_response(await request.app[FUNCTION_QUERIES].trigger(name))


@routes.delete("/event-triggers/{name}")
@responds(200, Message)
async def delete_event_trigger(request: web.Request) -> web.Response:
    """Removes an event trigger."""
    await request.app[FUNCTION_COMMANDS].delete_trigger(request.match_info["name"], command_context(request))
    return json_response("event trigger removed")


@routes.post("/executor/sync")
@responds(200, Message)
async def sync_executor(request: web.Request) -> web.Response:
    """Asks the trigger dispatcher to read functions and triggers again (the reference's cache refresh)."""
    request.app[TRIGGER_SYNC]()
    return json_response("sync triggered")
