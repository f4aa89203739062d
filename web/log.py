"""Routes of the log by position: ``GET /log`` and ``GET /log/stream`` (beyond the contract).

For replay and audit tools: every event of the log in log order after a position, as ``/events``
shows events (with ``nid``, sealed secrets as the ciphertext they were stored as), filtered by type
prefix, source, aggregate and actor (``infra.log_reader``). ``/log`` answers a page and where to go
on, ``/log/stream`` the same as Server-Sent Events that never end. With security on both need
``view`` on ``auditservice`` (``web.authz``).
"""

from __future__ import annotations

import re
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.errors import Unprocessable
from chainloom.infra.log_reader import LogFilter
from chainloom.infra.version import node_instance_id
from chainloom.queries.log import LogQueries
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response
from chainloom.web.keys import EVENT_HUB, SETTINGS
from chainloom.web.middleware import NODE_HEADER, REQUEST_ID, REQUEST_ID_HEADER
from chainloom.web.openapi import fails, headers, query, responds
from chainloom.web.schemas import Event, EventFrame, LastEventIdHeaders, Limit
from chainloom.web.sse import Resume, stream

routes = web.RouteTableDef()

LOG_QUERIES = web.AppKey("log_queries", LogQueries)  # reads the log itself, through the app's pool

_POSITION = re.compile(r"^[0-9]{1,18}$")
MAX_POSITION = 10**18 - 1
# TYPE or TYPE/ID (the id is everything after the first '/'); no NUL anywhere.
AGGREGATE_PATTERN = "^[^/\\u0000]+(/[^\\u0000]+)?$"


# -- shapes (for /openapi.json) -----------------------------------------------------------------


Position = Annotated[int, Field(ge=0, le=MAX_POSITION)]


class LogFilterQuery(BaseModel):
    """``infra.log_reader.LogFilter``: each value given narrows the events; empty ones are absent."""

    after: Position | None = Field(None, description="The position (`nid`) to read after (default 0: from the start).")
    type: str | None = Field(None, description="Only events whose `event_type` starts with this.")
    source: str | None = Field(None, description="Only events of this `event_source`.")
    aggregate: str | None = Field(
        None,
        pattern=AGGREGATE_PATTERN,
        description="Only events of this aggregate: `TYPE`, or `TYPE/ID` (the id is all after the first `/`).",
    )
    actor: str | None = Field(None, description="Only events whose `metadata.actor` is this.")


class LogQuery(LogFilterQuery):
    limit: Limit | None = None


class LogPageAnswer(BaseModel):
    """``infra.log_reader.LogPage``: pass ``next`` back as ``after`` to go on; all is read once ``next`` reaches
    ``head``."""

    model_config = ConfigDict(populate_by_name=True)

    events: list[Event] = Field(description="The events found, in log order (at most `limit`).")
    next: int = Field(
        description="The position to read after next: the last event answered when `limit` were found, else the"
        " last position looked at (a filtered read looks at no more than CHAINLOOM_LOG_SCAN_LIMIT events)."
    )
    head: int = Field(description="The log's last position when the page was read (0: empty).")


class LogFrame(EventFrame):
    """One frame of ``GET /log/stream`` (``web.sse``) as an SSE client reads it: an event frame of ``/events``."""


# -- reading the query ------------------------------------------------------------------------


def _position(value: str | None, name: str) -> int | None:
    """A log position given as ``name`` (None when absent or empty); 422 for anything but one."""
    if value is None or value == "":
        return None
    if not _POSITION.match(value):
        raise Unprocessable(f"invalid {name}: expected a log position (a non-negative integer)", param=name)
    return int(value)


def _filters(request: web.Request) -> LogFilter:
    q = request.query
    try:
        return LogFilter.parse(q.get("type"), q.get("source"), q.get("aggregate"), q.get("actor"))
    except ValueError as error:
        raise Unprocessable(str(error), param="aggregate") from None


def _queries(request: web.Request) -> LogQueries:
    return request.app[LOG_QUERIES]


# -- routes -----------------------------------------------------------------------------------


@routes.get("/log")
@responds(200, LogPageAnswer)
@query(LogQuery)
@fails(400)
async def read_log(request: web.Request) -> web.Response:
    """Reads the log by position: events after ``after`` in log order, filtered; resumable from ``next``.

    Every event of the log, internal and external, in the ``/events`` shape with its ``nid``; sealed
    secrets stay the ciphertext they were stored as. ``limit`` (default 100, at most 1000) bounds the
    events answered; a filtered read also looks at no more than ``CHAINLOOM_LOG_SCAN_LIMIT`` events and
    says where it stopped (``next``), so a client passes ``next`` back as ``after`` until it reaches
    ``head`` — even when nothing matched. Read from the log itself, not a read model.
    """
    filters = _filters(request)
    after = _position(request.query.get("after"), "after") or 0
    limit = Page.parse(request.query.get("limit"), None).limit
    page = await _queries(request).page(after, limit, filters)
    return json_response(page.json())


@routes.get("/log/stream")
@responds(200, LogFrame, "One `id: <nid>` / `data: <eventstore_Event JSON>` frame per event.", "text/event-stream")
@query(LogFilterQuery)
@headers(LastEventIdHeaders)
async def stream_log(request: web.Request) -> web.StreamResponse:
    """Streams the log from a position (SSE): every event after it that the filters keep, then live ones.

    One ``id: <nid>``/``data: <event JSON>`` frame per event, in log order, no gap, no duplicate.
    ``Last-Event-ID`` (the nid of the last event received; what ``EventSource`` sends when it
    reconnects) wins over ``after``; neither: from the start of the log. A client more than
    ``CHAINLOOM_SSE_QUEUE_SIZE`` events behind is dropped (a comment says so) and resumes by reconnecting.
    """
    filters = _filters(request)
    after = _position(request.query.get("after"), "after")
    resumed = _position(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    if resumed is not None:
        after = resumed
    after = after or 0
    hub = request.app[EVENT_HUB]
    queries = _queries(request)
    # Subscribed before the catch-up reads the log: whatever the hub hands out later is buffered, and
    # everything it handed out before is in the log already.
    subscription = hub.subscribe_all(filters.accepts)
    return await stream(
        request,
        subscription,
        f"connected to the log after position {after}",
        request.app[SETTINGS].sse_keepalive,
        hub.unsubscribe,
        # Sent before the middleware adds them.
        {REQUEST_ID_HEADER: request.get(REQUEST_ID, ""), NODE_HEADER: node_instance_id()},
        Resume(after, lambda position, limit: queries.read_after(position, limit, filters)),
    )
