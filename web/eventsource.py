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

from domain.errors import BadRequest, Unprocessable
from domain.eventsource.events import check_json
from domain.eventsource.mappings import MappingConfig
from infra.timefmt import NS_MAX, NS_MIN, parse_ns
from queries.eventsource import Window, parse_limit, parse_raw_limit, required
from web.bodies import json_response, read_body, with_body
from web.keys import EVENT_HUB, EVENTSOURCE_COMMANDS, EVENTSOURCE_QUERIES, SETTINGS
from web.middleware import REQUEST_ID, REQUEST_ID_HEADER, command_context
from web.sse import stream

routes = web.RouteTableDef()

_INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
_BAD_PATH_VALUE = "serverops: bad path value"


class _Body(BaseModel):
    # Server-set fields (nid) and unknown fields are ignored; a wrong type is a 422.
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class EventBody(_Body):
    id: str = ""
    created_at: str | None = None
    event_type: str = ""
    event_source: str = ""
    aggregate_id: str = ""
    aggregate_type: str = ""
    version: int = 0
    data: Any = Field(default_factory=dict)
    metadata: Any = Field(default_factory=dict)


class RawEventBody(_Body):
    id: str = ""
    received_at: str | None = None
    path: str = ""
    headers: dict[str, str] | None = None
    payload: dict[str, Any] | None = None


class MappingBody(_Body):
    path: str = ""
    event_type: str = Field("", alias="eventType")
    event_source: str = Field("", alias="eventSource")
    aggregate_type: str = Field("", alias="aggregateType")
    aggregate_id_field: str = Field("", alias="aggregateIDField")
    aggregate_type_field: str = Field("", alias="aggregateTypeField")
    event_type_field: str = Field("", alias="eventTypeField")
    event_source_field: str = Field("", alias="eventSourceField")
    event_id_field: str = Field("", alias="eventIDField")
    version: int = 0
    version_field: str = Field("", alias="versionField")
    metadata_mapping: dict[str, str] | None = Field(None, alias="metadataMapping")
    signature_scheme: str = Field("", alias="signatureScheme")
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


def _commands(request: web.Request):
    return request.app[EVENTSOURCE_COMMANDS]


def _queries(request: web.Request):
    return request.app[EVENTSOURCE_QUERIES]


def _json_value(value: Any, name: str) -> Any:
    """Refuse NaN and Infinity (the JSON parser lets them through) and too deep nesting."""
    check_json(value, name)
    return value


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
        data=_json_value(body.data, "data"),
        metadata=_json_value(body.metadata, "metadata"),
    )
    return json_response(event, 201)


@routes.get("/events/aggregate")
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
async def events_of_type(request: web.Request) -> web.Response:
    """Retrieves events of a specific type within a time range (newest first)."""
    q = request.query
    event_type = required(q, "event_type")
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).events_of_type(event_type, window, limit))


@routes.get("/events/source")
async def events_of_source(request: web.Request) -> web.Response:
    """Retrieves events from a specific source within a time range (newest first)."""
    q = request.query
    event_type, event_source = required(q, "event_type"), required(q, "event_source")
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).events_of_source(event_type, event_source, window, limit))


@routes.get("/events/types")
async def event_types(request: web.Request) -> web.Response:
    """Lists distinct event types that occurred within a time range (ascending)."""
    window, limit = _window_and_limit(request)
    return json_response(await _queries(request).event_types(window, limit))


@routes.delete("/events/type")
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
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Streams events of a specific type in real time (SSE): one ``data: <event JSON>`` frame per new event."""
    event_type = request.match_info["eventType"]
    hub = request.app[EVENT_HUB]
    settings = request.app[SETTINGS]
    subscription = hub.subscribe(event_type)
    return await stream(
        request,
        subscription,
        f"connected to event stream for type: {event_type}",
        settings.sse_keepalive,
        hub.unsubscribe,
        {REQUEST_ID_HEADER: request.get(REQUEST_ID, "")},  # sent before the middleware could add it
    )


# -- raw events, ingest, replay ----------------------------------------------------


@routes.post("/raw-events")
@with_body(RawEventBody)
async def record_raw_event(request: web.Request, body: RawEventBody) -> web.Response:
    """Ingests a raw event into the event source (internal use: it is kept, not mapped)."""
    raw = await _commands(request).record_raw_event(
        raw_id=body.id,
        received_at_ns=_time_field(body.received_at, "received_at"),
        path=body.path,
        headers=dict(body.headers or {}),
        payload=_json_value(body.payload, "payload"),
        ctx=command_context(request),
    )
    return json_response(raw, 201)


@routes.get("/raw-events")
async def list_raw_events(request: web.Request) -> web.Response:
    """Lists raw events within a time range, newest received first."""
    queries = _queries(request)
    window = Window.of_raw_events(request.query, queries.clock())
    return json_response(await queries.raw_events(window, parse_raw_limit(request.query.get("limit"))))


@routes.get("/raw-events/{nid}")
async def get_raw_event(request: web.Request) -> web.Response:
    """Retrieves a raw event by numeric ID (NID) received within a time range (``from`` and ``to`` required)."""
    text = request.match_info["nid"]
    if not _INTEGER.match(text):
        raise Unprocessable(f"invalid nid format, must be integer: {text!r}", param="nid")
    for name in ("from", "to"):
        if not _query(request, name):
            raise Unprocessable(f"'{name}' query parameter is required", param=name)
    return json_response(await _queries(request).raw_event(int(text), Window.of_raw_events(request.query, 0)))


async def _read_webhook_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    while chunk := await request.content.read(1 << 16):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


@routes.post("/ingest")
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
    body = await _read_webhook_body(request, request.app[SETTINGS].ingest_max_bytes)
    answer = await _commands(request).ingest(path, body, request.headers, command_context(request))
    return json_response(answer, 201)


def _replay_time(request: web.Request, name: str) -> int:
    text = _query(request, name)
    if not text:
        raise BadRequest(f"{name} query parameter is required: {_BAD_PATH_VALUE}", param=name)
    try:
        return parse_ns(text)
    except ValueError as error:
        raise Unprocessable(f"invalid {name} time format: {error}", param=name) from None


@routes.post("/replay")
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
    await _commands(request).replay(int(text), from_ns, to_ns)
    return json_response("event replayed", 202)


# -- mappings --------------------------------------------------------------------


@routes.post("/mappings")
@with_body(MappingBody)
async def create_mapping(request: web.Request, body: MappingBody) -> web.Response:
    """Creates a new event mapping configuration (``signatureSecret`` is stored sealed and never answered)."""
    config = body.config(body.path)
    await _commands(request).create_mapping(config, body.signature_secret, command_context(request))
    return json_response(await _queries(request).mapping(config.path), 201)


@routes.get("/mappings")
async def list_mappings(request: web.Request) -> web.Response:
    """Lists all configured event mappings, sorted by path."""
    return json_response(await _queries(request).mappings())


@routes.get("/mapping")
async def get_mapping(request: web.Request) -> web.Response:
    """Retrieves details for a specific event mapping by path."""
    return json_response(await _queries(request).mapping(_mapping_path(request)))


@routes.put("/mapping")
async def update_mapping(request: web.Request) -> web.Response:
    """Updates (replaces) a mapping; the path of the query wins over the body's.

    An omitted ``signatureSecret`` keeps the secret set before, as long as ``signatureScheme`` stays set.
    """
    path = _mapping_path(request)  # a missing path (400) is told before a bad body (422)
    body = await read_body(request, MappingBody)
    await _commands(request).update_mapping(body.config(path), body.signature_secret, command_context(request))
    return json_response(await _queries(request).mapping(path))


update_mapping.request_model = MappingBody  # type: ignore[attr-defined]  # documented in /openapi.json


@routes.delete("/mapping")
async def delete_mapping(request: web.Request) -> web.Response:
    """Deletes an event mapping configuration by path."""
    await _commands(request).delete_mapping(_mapping_path(request), command_context(request))
    return json_response("mapping removed")


@routes.post("/sync")
async def sync_mappings(request: web.Request) -> web.Response:
    """Refreshes the mappings ingest uses (changes made through this process apply at once anyway;
    this makes changes made through another process apply now rather than within a second)."""
    _commands(request).sync_mappings()
    return json_response("mappings synchronized")
