"""Routes of the event source: /events*, /raw-events*, /ingest, /mappings, /mapping, /sync, /replay.

Statuses follow plain HTTP: 400 for a missing ``path``/``nid``/``from``/``to``
where the reference said "bad path value", 422 for any other bad value, 404
only for a missing raw event or mapping, 409 for a repeated event id, 413 for
an oversized webhook body, 401 for a webhook signature that does not verify.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict, JsonValue

from chainloom.domain.errors import BadRequest, Unprocessable
from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE, MAX_RAW_ID_LENGTH, MAX_VERSION
from chainloom.domain.eventsource.mappings import MAX_PATH_BYTES, SIGNATURE_SCHEMES, MappingConfig
from chainloom.infra.timefmt import NS_MAX, NS_MIN, parse_ns
from chainloom.infra.version import node_instance_id
from chainloom.projections.eventsource import EventSourceProjector
from chainloom.queries.eventsource import Window, parse_limit, parse_raw_limit, required
from chainloom.web.bodies import JsonInt, json_response, read_body, read_limited, with_body
from chainloom.web.keys import (
    EVENT_HUB,
    EVENTSOURCE_COMMANDS,
    EVENTSOURCE_QUERIES,
    LOG_HEAD,
    PROJECTIONS,
    SETTINGS,
    TRIGGER_WAITS,
)
from chainloom.web.middleware import NODE_HEADER, REQUEST_ID, REQUEST_ID_HEADER, command_context
from chainloom.web.openapi import fails, headers, path_values, query, request_body, responds
from chainloom.web.schemas import (
    STORABLE_TIME_PATTERN,
    DeleteEventsQuery,
    Event,
    EventFrame,
    EventsOfAggregateQuery,
    EventsOfSourceQuery,
    EventsOfTypeQuery,
    EventWindowQuery,
    IngestAnswer,
    LastEventIdHeaders,
    LastEventIdQuery,
    Mapping,
    MappingPathQuery,
    Message,
    RawEvent,
    RawEventPath,
    RawEventWindowQuery,
    ReplayQuery,
    WebhookPayload,
)
from chainloom.web.sse import Resume, stream, subscribe_from

routes = web.RouteTableDef()

_INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
_BAD_PATH_VALUE = "serverops: bad path value"
# Whether the triggers of what a request appended ran before it answered (``done``) or still run (``pending``).
TRIGGERS_HEADER = "X-Chainloom-Triggers"


class _Body(BaseModel):
    # Server-set fields (nid) and unknown fields are ignored; a wrong type is a 422.
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


_NOT_INTERNAL: JsonDict = {"not": {"const": INTERNAL_EVENT_SOURCE}}


class EventBody(_Body):
    # json_schema_extra: what the domain requires, for /openapi.json (the domain's messages stay).
    model_config = ConfigDict(json_schema_extra={"required": ["event_type", "aggregate_id", "aggregate_type", "version"]})

    id: str = ""
    # Set by the server unless given, and then only within ±10 minutes of its clock.
    created_at: str | None = Field(None, json_schema_extra={"readOnly": True, "format": "date-time"})
    event_type: str = Field("", json_schema_extra={"minLength": 1})
    event_source: str = Field("", json_schema_extra=_NOT_INTERNAL)
    aggregate_id: str = Field("", json_schema_extra={"minLength": 1})
    aggregate_type: str = Field("", json_schema_extra={"minLength": 1})
    version: JsonInt = Field(0, json_schema_extra={"minimum": 1, "maximum": MAX_VERSION})
    data: Any = Field(default_factory=dict)
    metadata: Any = Field(default_factory=dict)


class RawEventBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["path", "payload"]})

    id: str = Field("", json_schema_extra={"maxLength": MAX_RAW_ID_LENGTH})
    received_at: str | None = Field(None, json_schema_extra={"pattern": STORABLE_TIME_PATTERN})
    path: str = Field("", json_schema_extra={"minLength": 1})
    headers: dict[str, str] | None = None
    payload: dict[str, Any] | None = Field(None, json_schema_extra={"type": "object"})


# JSONPath is a grammar JSON Schema cannot state: a path that does not parse is a 422 (schemathesis.toml).
_FIELD_PATH: JsonDict = {"description": "A JSONPath into the payload, without the leading `$.` (`data.user_id`, `items[0].id`)."}
_MAPPING_REQUIRED: list[JsonValue] = ["eventType", "eventSource", "aggregateType", "version"]
# A signature scheme needs its secret (on PUT, an omitted one keeps the secret set before).
_SECRET_WITH_SCHEME: JsonDict = {
    "if": {"properties": {"signatureScheme": {"minLength": 1}}, "required": ["signatureScheme"]},
    "then": {"required": ["signatureSecret"], "properties": {"signatureSecret": {"type": "string", "minLength": 1}}},
}


class MappingBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["path", *_MAPPING_REQUIRED], **_SECRET_WITH_SCHEME})

    path: str = Field("", json_schema_extra={"minLength": 1, "maxLength": MAX_PATH_BYTES})
    event_type: str = Field("", alias="eventType", json_schema_extra={"minLength": 1})
    event_source: str = Field("", alias="eventSource", json_schema_extra={"minLength": 1, **_NOT_INTERNAL})
    aggregate_type: str = Field("", alias="aggregateType", json_schema_extra={"minLength": 1})
    aggregate_id_field: str = Field("", alias="aggregateIDField", json_schema_extra=_FIELD_PATH)
    aggregate_type_field: str = Field("", alias="aggregateTypeField", json_schema_extra=_FIELD_PATH)
    event_type_field: str = Field("", alias="eventTypeField", json_schema_extra=_FIELD_PATH)
    event_source_field: str = Field("", alias="eventSourceField", json_schema_extra=_FIELD_PATH)
    event_id_field: str = Field("", alias="eventIDField", json_schema_extra=_FIELD_PATH)
    version: JsonInt = Field(0, json_schema_extra={"minimum": 1})
    version_field: str = Field("", alias="versionField", json_schema_extra=_FIELD_PATH)
    metadata_mapping: dict[str, str] | None = Field(
        None, alias="metadataMapping", json_schema_extra={"additionalProperties": {"type": "string", **_FIELD_PATH}}
    )
    signature_scheme: str = Field("", alias="signatureScheme", json_schema_extra={"enum": list(SIGNATURE_SCHEMES)})
    signature_header: str = Field("", alias="signatureHeader")
    # Write-only: sealed before it is stored, never answered back.
    signature_secret: str | None = Field(None, alias="signatureSecret")

    def config(self, path: str) -> MappingConfig:
        return MappingConfig(
            path=path,
            event_type=self.event_type,
            event_source=self.event_source,
            aggregate_type=self.aggregate_type,
            version=self.version,
            aggregate_id_field=self.aggregate_id_field,
            aggregate_type_field=self.aggregate_type_field,
            event_type_field=self.event_type_field,
            event_source_field=self.event_source_field,
            event_id_field=self.event_id_field,
            version_field=self.version_field,
            metadata_mapping=dict(self.metadata_mapping or {}),
            signature_scheme=self.signature_scheme,
            signature_header=self.signature_header,
        )


class MappingUpdateBody(MappingBody):
    """``PUT /mapping``: the path of the query wins, so the body need not name one."""

    model_config = ConfigDict(json_schema_extra={"required": _MAPPING_REQUIRED, **_SECRET_WITH_SCHEME})

    path: str = Field("", description="Ignored: the path of the query is the mapping's.")


def _commands(request: web.Request):
    return request.app[EVENTSOURCE_COMMANDS]


def _queries(request: web.Request):
    return request.app[EVENTSOURCE_QUERIES]


def _time_field(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        ns = parse_ns(text)
    except ValueError:
        raise Unprocessable(f"invalid value for '{name}': expected an RFC 3339 time with a zone", param=name) from None
    if not NS_MIN <= ns <= NS_MAX:
        raise Unprocessable(f"invalid value for '{name}': times must lie between the years 1678 and 2261", param=name)
    return ns


def _query(request: web.Request, name: str) -> str:
    return request.query.get(name, "")


def _window_and_limit(request: web.Request) -> tuple[Window, int]:
    """``from``/``to`` (the last 24 h by default) and ``limit`` of the ``/events`` lists."""
    now = _queries(request).clock()
    return Window.of_events(request.query, now), parse_limit(request.query.get("limit"))


def _mapping_path(request: web.Request) -> str:
    path = _query(request, "path")
    if not path:
        raise BadRequest(f"missing path query parameter {_BAD_PATH_VALUE}", param="path")
    return path


# -- events ----------------------------------------------------------------------


@routes.post("/events")
@responds(201, Event)
@fails(409)
@with_body(EventBody)
async def append_event(request: web.Request, body: EventBody) -> web.Response:
    """Appends a new event to the event store (id and created_at default; created_at within ±10 minutes)."""
    event = await _commands(request).append_event(
        event_id=body.id,
        created_at_ns=_time_field(body.created_at, "created_at"),
        event_type=body.event_type,
        event_source=body.event_source,
        aggregate_type=body.aggregate_type,
        aggregate_id=body.aggregate_id,
        version=body.version,
        data=body.data,
        metadata=body.metadata,
    )
    return await _after_triggers(request, json_response(event, 201), [(event["nid"], event["event_type"])])


@routes.get("/events/aggregate")
@responds(200, list[Event])
@query(EventsOfAggregateQuery)
async def events_of_aggregate(request: web.Request) -> web.Response:
    """Retrieves events for a specific aggregate within a time range (newest first)."""
    q = request.query
    event_type, aggregate_type, aggregate_id = (
        required(q, "event_type"),
        required(q, "aggregate_type"),
        required(q, "aggregate_id"),
    )
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).events_of_aggregate(event_type, aggregate_type, aggregate_id, window, limit))


@routes.get("/events/type")
@responds(200, list[Event])
@query(EventsOfTypeQuery)
async def events_of_type(request: web.Request) -> web.Response:
    """Retrieves events of a specific type within a time range (newest first)."""
    q = request.query
    event_type = required(q, "event_type")
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).events_of_type(event_type, window, limit))


@routes.get("/events/source")
@responds(200, list[Event])
@query(EventsOfSourceQuery)
async def events_of_source(request: web.Request) -> web.Response:
    """Retrieves events from a specific source within a time range (newest first)."""
    q = request.query
    event_type, event_source = required(q, "event_type"), required(q, "event_source")
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).events_of_source(event_type, event_source, window, limit))


@routes.get("/events/types")
@responds(200, list[str])
@query(EventWindowQuery)
async def event_types(request: web.Request) -> web.Response:
    """Lists distinct event types that occurred within a time range (ascending)."""
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).event_types(window, limit))


@routes.delete("/events/type")
@responds(200, Message)
@query(DeleteEventsQuery)
@fails(403)
async def delete_events(request: web.Request) -> web.Response:
    """Deletes all events of a type within a time range, from the log and every read model (GDPR).

    Chainloom's own aggregate events are refused (403); an audit event records what was deleted.
    """
    q = request.query
    event_type = required(q, "event_type")
    if not _query(request, "from"):
        raise Unprocessable("'from' is required serverops: unprocessable entity", param="from")
    if not _query(request, "to"):
        raise Unprocessable("'to' is required serverops: unprocessable entity", param="to")
    window = Window.of_events(q, 0)
    await _commands(request).delete_events(event_type, window, command_context(request))
    return json_response("events deleted")


@routes.get("/events/stream/{eventType:.+}")
@responds(200, EventFrame, "One `id: <nid>` / `data: <eventstore_Event JSON>` frame per event.", "text/event-stream")
@query(LastEventIdQuery)
@headers(LastEventIdHeaders)
@fails(503)  # resuming needs the event index: faulted, or not there in time
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Streams events of a specific type in real time (SSE): one ``id: <nid>``/``data: <event JSON>`` frame per event.

    With ``Last-Event-ID`` (the header, or the ``lastEventId``/``last_event_id`` query parameter: the
    ``nid`` of the last event received) every event of the type after it comes first, then live ones.
    """
    event_type = request.match_info["eventType"]
    after = _last_event_id(request)
    hub = request.app[EVENT_HUB]
    settings = request.app[SETTINGS]
    projections = request.app[PROJECTIONS]
    subscription = await subscribe_from(  # the event index must have what the hub handed out before
        hub,
        event_type,
        after,
        lambda position: projections.wait_for(position, settings.projection_timeout, needs=[EVENT_INDEX]),
        request.app[LOG_HEAD],
    )
    resume = None
    if after is not None:
        queries = _queries(request)
        resume = Resume(after, lambda nid, limit: queries.events_of_type_after(event_type, nid, limit))
    return await stream(
        request,
        subscription,
        f"connected to event stream for type: {event_type}",
        settings.sse_keepalive,
        hub.unsubscribe,
        {REQUEST_ID_HEADER: request.get(REQUEST_ID, ""), NODE_HEADER: node_instance_id()},  # sent before the middleware adds them
        resume,
    )


_LAST_EVENT_ID = re.compile(r"^[0-9]{1,18}$")
EVENT_INDEX = EventSourceProjector.name  # the read model a resuming stream catches up from


def _last_event_id(request: web.Request) -> int | None:
    """Where a reconnecting SSE client left off: the header, else the query parameter; empty means nowhere.

    Every value given must be an nid, even one the header overrides (a malformed one is a client bug).
    """
    after = None
    for name, value in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("lastEventId", request.query.get("lastEventId")),
        ("last_event_id", request.query.get("last_event_id")),
    ):
        if value is None or value == "":
            continue
        if not _LAST_EVENT_ID.match(value):
            raise Unprocessable(
                f"invalid {name}: expected the nid of the last event received (a non-negative integer)", param=name
            )
        if after is None:
            after = int(value)
    return after


# -- raw events, ingest, replay ----------------------------------------------------


@routes.post("/raw-events")
@responds(201, RawEvent)
@fails(409)
@with_body(RawEventBody)
async def record_raw_event(request: web.Request, body: RawEventBody) -> web.Response:
    """Ingests a raw event into the event source (internal use: it is kept, not mapped)."""
    raw = await _commands(request).record_raw_event(
        raw_id=body.id,
        received_at_ns=_time_field(body.received_at, "received_at"),
        path=body.path,
        headers=dict(body.headers or {}),
        payload=body.payload,
        ctx=command_context(request),
    )
    return json_response(raw, 201)


@routes.get("/raw-events")
@responds(200, list[RawEvent])
@query(EventWindowQuery)
async def list_raw_events(request: web.Request) -> web.Response:
    """Lists raw events within a time range, newest received first."""
    queries = _queries(request)
    window = Window.of_raw_events(request.query, queries.clock())
    return json_response(await queries.raw_events(window, parse_raw_limit(request.query.get("limit"))))


@routes.get("/raw-events/{nid}")
@responds(200, RawEvent)
@path_values(RawEventPath)
@query(RawEventWindowQuery)
async def get_raw_event(request: web.Request) -> web.Response:
    """Retrieves a raw event by numeric ID (NID) received within a time range (``from`` and ``to`` required)."""
    text = request.match_info["nid"]
    if not _INTEGER.match(text):
        raise Unprocessable(f"invalid nid format, must be integer: {text!r}", param="nid")
    for name in ("from", "to"):
        if not _query(request, name):
            raise Unprocessable(f"'{name}' query parameter is required", param=name)
    return json_response(await _queries(request).raw_event(int(text), Window.of_raw_events(request.query, 0)))


@routes.post("/ingest")
@responds(201, IngestAnswer)
@query(MappingPathQuery)
@request_body(WebhookPayload)  # read as bytes, documented as what a webhook sends
@fails(400, 401, 404, 409, 413)
async def ingest(request: web.Request) -> web.Response:
    """Ingests a webhook: keeps the raw payload, then appends the event its mapping (``?path=``) makes of it.

    Answers (201) the appended event (``eventstore_Event``, as the contract says) with the raw event's
    ``path``, ``payload``, ``received_at`` and ``headers`` (what clients of the reference read) and
    ``raw_id``/``raw_nid``. Unknown mapping → 404, a field the mapping needs that the payload lacks → 422
    (the raw event is kept: fix the mapping and ``/replay``), a signature that does not verify → 401, a body
    over ``CHAINLOOM_INGEST_MAX_BYTES`` → 413.
    """
    path = _query(request, "path")
    if not path:
        raise BadRequest(f"path query parameter is required: {_BAD_PATH_VALUE}", param="path")
    body = await read_limited(request, request.app[SETTINGS].ingest_max_bytes)
    answer = await _commands(request).ingest(path, body, request.headers, command_context(request))
    return await _after_triggers(request, json_response(answer, 201), [(answer["nid"], answer["event_type"])])


def _replay_time(request: web.Request, name: str) -> int:
    text = _query(request, name)
    if not text:
        raise BadRequest(f"{name} query parameter is required: {_BAD_PATH_VALUE}", param=name)
    try:
        return parse_ns(text)
    except ValueError as error:
        raise Unprocessable(f"invalid {name} time format: {error}", param=name) from None


@routes.post("/replay")
@responds(202, Message)
@query(ReplayQuery)
@fails(400, 404, 409, 413)
async def replay(request: web.Request) -> web.Response:
    """Replays a raw event by NID: maps its payload with the current mapping and appends a new event (202)."""
    text = _query(request, "nid")
    if not text:
        raise BadRequest(f"nid query parameter is required: {_BAD_PATH_VALUE}", param="nid")
    if not _INTEGER.match(text):
        raise Unprocessable("invalid nid format: expected integer", param="nid")
    from_ns, to_ns = _replay_time(request, "from"), _replay_time(request, "to")
    if from_ns > to_ns:
        raise BadRequest(f"'from' cannot be after 'to': {_BAD_PATH_VALUE}", param="from")
    appended = await _commands(request).replay(int(text), from_ns, to_ns)
    return await _after_triggers(request, json_response("event replayed", 202), [appended])


async def _after_triggers(request: web.Request, response: web.Response, appended: list[tuple[int, str]]) -> web.Response:
    """Answer once the triggers of the appended events ran (the reference ran them inline), saying so in
    ``X-Chainloom-Triggers``: ``done``, or ``pending`` when ``CHAINLOOM_TRIGGER_WAIT`` passed first (they
    still run). No header: no trigger listens for these events."""
    waits = request.app.get(TRIGGER_WAITS)
    status = await waits.settle(appended) if waits is not None else None
    if status is not None:
        response.headers[TRIGGERS_HEADER] = status
    return response


# -- mappings --------------------------------------------------------------------


@routes.post("/mappings")
@responds(201, Mapping)
@fails(409)
@with_body(MappingBody)
async def create_mapping(request: web.Request, body: MappingBody) -> web.Response:
    """Creates a new event mapping configuration (``signatureSecret`` is stored sealed and never answered)."""
    config = body.config(body.path)
    await _commands(request).create_mapping(config, body.signature_secret, command_context(request))
    return json_response(await _queries(request).mapping(config.path), 201)


@routes.get("/mappings")
@responds(200, list[Mapping])
async def list_mappings(request: web.Request) -> web.Response:
    """Lists all configured event mappings, sorted by path."""
    return json_response(await _queries(request).mappings())


@routes.get("/mapping")
@responds(200, Mapping)
@query(MappingPathQuery)
@fails(400, 404)
async def get_mapping(request: web.Request) -> web.Response:
    """Retrieves details for a specific event mapping by path."""
    return json_response(await _queries(request).mapping(_mapping_path(request)))


@routes.put("/mapping")
@responds(200, Mapping)
@query(MappingPathQuery)
@request_body(MappingUpdateBody)  # read after the path is checked (a missing path is a 400 first)
@fails(400, 404)
async def update_mapping(request: web.Request) -> web.Response:
    """Updates (replaces) a mapping; the path of the query wins over the body's.

    An omitted ``signatureSecret`` keeps the secret set before, as long as ``signatureScheme`` stays set.
    """
    path = _mapping_path(request)  # a missing path (400) is told before a bad body (422)
    body = await read_body(request, MappingUpdateBody)
    await _commands(request).update_mapping(body.config(path), body.signature_secret, command_context(request))
    return json_response(await _queries(request).mapping(path))


@routes.delete("/mapping")
@responds(200, Message)
@query(MappingPathQuery)
@fails(400, 404)
async def delete_mapping(request: web.Request) -> web.Response:
    """Deletes an event mapping configuration by path."""
    await _commands(request).delete_mapping(_mapping_path(request), command_context(request))
    return json_response("mapping removed")


@routes.post("/sync")
@responds(200, Message)
async def sync_mappings(request: web.Request) -> web.Response:
    """Refreshes the mappings ingest uses (changes made through this process apply at once anyway;
    this makes changes made through another process apply now rather than within a second)."""
    _commands(request).sync_mappings()
    return json_response("mappings synchronized")
