"""Routes of activity (platform notes §12): ``GET /activity/requests``, ``/activity/requests/{id}``,
``/activity/requests/{id}/state``, ``/activity/operations``, ``/activity/operations/{op}/{subject}``,
``/activity/stateful-requests``, ``/activity/alerts``, and the reference's ``/activity/logs`` (beyond the
contract). All need view on activityservice.

An activity event is what a request did: an operation on a subject (create/file, login/user, search/query
…), from the log (``projections.activity``) or, for reads and failures, from the records beside it
(``web.activity_record``). A request's *state* is the steps of the task chains it ran. Alerts come from
chain transitions marked ``alert_on_match``. Unknown ids answer empty lists, as the reference does.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from chainloom.web.bodies import json_response
from chainloom.web.keys import ACTIVITY_QUERIES, SETTINGS
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Answer
from chainloom.web.tasks import CapturedState

routes = web.RouteTableDef()

ALERTS_LIMIT = 99  # the reference's default (its range is inclusive: 100 alerts)
LOGS_LIMIT = 100


class ActivityEvent(Answer):
    """``queries.activity.activity_json`` (platform notes §12)."""

    id: str
    operation: str = Field(description="create, read, list, update, delete, login, register, search, index, chat, run …")
    subject: str = Field(description="file, folder, user, access_entry, document, query, chat-session, task_chain …")
    start: str = Field(json_schema_extra={"format": "date-time"})
    end: str = Field(json_schema_extra={"format": "date-time"})
    duration: float = Field(description="Milliseconds from start to end.")
    error: str | None = Field(None, description="Only when it failed.")
    entity_id: str | None = Field(None, alias="entityID", description="Only when it concerned one entity.")
    metadata: dict[str, str] = Field(description="A few string values of the call (never content or secrets).")
    request_id: str = Field(alias="requestID")


class RequestRef(Answer):
    id: str = Field(description="A request id (the X-Request-ID the request was answered with).")


class Operation(Answer):
    operation: str
    subject: str


class Alert(Answer):
    id: str
    message: str = Field(description="The branch's `alert_on_match`.")
    request_id: str = Field(alias="requestID")
    metadata: dict[str, str] = Field(description="chainId, runId, taskId, transition.")
    timestamp: str = Field(alias="Timestamp", json_schema_extra={"format": "date-time"})


class AlertsQuery(BaseModel):
    limit: str | None = Field(
        None,
        description=f"The newest limit+1 alerts, as the reference answers (default {ALERTS_LIMIT}); a value that is"
        " not a whole number is ignored.",
    )


class LogsQuery(BaseModel):
    limit: str | None = Field(
        None, description=f"At most this many (default {LOGS_LIMIT}); a value that is not a whole number is ignored."
    )


def _limit(request: web.Request, default: int) -> int:
    """The query's ``limit`` when it is a whole number (bounded by what is kept), else ``default``."""
    value = request.query.get("limit", "")
    limit = int(value) if value.isascii() and value.isdigit() else default
    return min(limit, request.app[SETTINGS].activity_retention)


@routes.get("/activity/requests")
@responds(200, list[RequestRef])
@fails(503)
async def list_activity_requests(request: web.Request) -> web.Response:
    """Lists the requests there was activity of, the most recent first.

    All of those kept (CHAINLOOM_ACTIVITY_RETENTION); a `limit` is ignored, as the reference does."""
    return json_response(await request.app[ACTIVITY_QUERIES].requests())


@routes.get("/activity/requests/{id}")
@responds(200, list[ActivityEvent])
@fails(503)
async def get_activity_request(request: web.Request) -> web.Response:
    """Lists what one request did, newest first: its activity events (empty for an unknown request)."""
    return json_response(await request.app[ACTIVITY_QUERIES].request(request.match_info["id"]))


@routes.get("/activity/requests/{id}/state")
@responds(200, list[CapturedState])
@fails(503)
async def get_activity_request_state(request: web.Request) -> web.Response:
    """Lists the task-engine steps a request's chain runs recorded, in order (empty when it ran none).

    A step whose transition took a branch marked `alert_on_match` carries the message as `alert`."""
    return json_response(await request.app[ACTIVITY_QUERIES].state(request.match_info["id"]))


@routes.get("/activity/operations")
@responds(200, list[Operation])
@fails(503)
async def list_activity_operations(request: web.Request) -> web.Response:
    """Lists every operation and subject there was activity of."""
    return json_response(await request.app[ACTIVITY_QUERIES].operations())


@routes.get("/activity/operations/{op}/{subject}")
@responds(200, list[RequestRef])
@fails(503)
async def list_activity_requests_of_operation(request: web.Request) -> web.Response:
    """Lists the requests that did an operation on a subject, the most recent first (empty when none did)."""
    match = request.match_info
    return json_response(await request.app[ACTIVITY_QUERIES].requests_of(match["op"], match["subject"]))


@routes.get("/activity/stateful-requests")
@responds(200, list[str])
@fails(503)
async def list_stateful_requests(request: web.Request) -> web.Response:
    """Lists the ids of the requests whose chain runs recorded task-engine state, the most recent first."""
    return json_response(await request.app[ACTIVITY_QUERIES].stateful_requests())


@routes.get("/activity/alerts")
@responds(200, list[Alert])
@fails(503)
@query(AlertsQuery)
async def list_activity_alerts(request: web.Request) -> web.Response:
    """Lists the newest alerts, raised by task-chain transitions marked `alert_on_match`.

    `limit` (default 99) answers up to limit+1 alerts, the reference's inclusive range; note `Timestamp`."""
    return json_response(await request.app[ACTIVITY_QUERIES].alerts(_limit(request, ALERTS_LIMIT) + 1))


@routes.get("/activity/logs")
@responds(200, list[ActivityEvent])
@fails(503)
@query(LogsQuery)
async def list_activity_logs(request: web.Request) -> web.Response:
    """Lists the newest activity events of every request (the reference's, beyond the contract)."""
    return json_response(await request.app[ACTIVITY_QUERIES].logs(_limit(request, LOGS_LIMIT)))
