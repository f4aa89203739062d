"""Routes of an operator's status (beyond the contract): ``GET /projections``, ``POST /projections/{name}/retry``,
``POST /projections/{name}/skip`` and ``GET /relay``.

What ``chainloom projections status|retry|skip`` show and do, over HTTP (for the
console and for scripts): each projection's position, the log's head, the lag
and the fault that stopped it; clearing a fault (retry) or moving past its
poison event (skip, audited on the log as ``projection.event_skipped`` with the
caller as actor). A retry or skip answers the projection's state right after it
(a retried event that fails again shows its fault anew within moments); a name
no projection has is 404, a projection that is not faulted 409. ``GET /relay``:
whether a Kafka relay is configured, how far it has published, and this
process's relay's latest failure. With security on these need ``view`` (GET) or
``manage`` (POST) on ``auditservice`` (``web.authz``).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from chainloom.commands.operator import ProjectionCommands
from chainloom.queries.operator import OperatorQueries, ProjectionState, projection_names
from chainloom.web.bodies import json_response
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, path_values, responds
from chainloom.web.schemas import Answer

routes = web.RouteTableDef()

OPERATOR_QUERIES = web.AppKey("operator_queries", OperatorQueries)
PROJECTION_COMMANDS = web.AppKey("projection_commands", ProjectionCommands)


# -- shapes (for /openapi.json) -----------------------------------------------------------------


class ProjectionFault(Answer):
    """``infra.readstore.Fault.public`` (as ``/health`` reports it): the event a projection stopped at."""

    projection: str
    position: int = Field(description="The poison event's `nid`.")
    event_id: str = Field(alias="eventId")
    event_type: str = Field(alias="eventType")
    error: str = Field(description="Why the projector could not apply it.")
    failed_at: str = Field(alias="failedAt", description="When it last failed (RFC 3339).")


class ProjectionStatus(Answer):
    """``queries.operator.ProjectionState.public``."""

    name: str
    position: int = Field(description="The last `nid` the projection applied (or passed over).")
    head: int = Field(description="The log's last position when read.")
    lag: int = Field(ge=0, description="`head - position`: events not applied yet.")
    fault: ProjectionFault | None = Field(description="What stopped it; null while it follows the log.")


class ProjectionsAnswer(Answer):
    head: int = Field(description="The log's last position when read (0: empty).")
    projections: list[ProjectionStatus] = Field(description="Every projection, in the order the runner applies them.")


class ProjectionPath(BaseModel):
    name: str = Field(
        description="A projection (`chainloom projections list`); any other name is 404.",
        json_schema_extra={"enum": list(projection_names())},
    )


class RelayError(Answer):
    message: str = Field(description="The error (URL credentials masked, shortened); the service's log has it whole.")
    at: str = Field(description="When (RFC 3339).")


class RelayStatus(Answer):
    """``queries.operator.RelayState.public``."""

    configured: bool = Field(description="Whether Kafka is configured (`CHAINLOOM_KAFKA_BOOTSTRAP`).")
    topic: str | None = Field(description="The events topic; null when not configured.")
    position: int | None = Field(description="The last `nid` the broker acknowledged (as tracked); null when not configured.")
    head: int = Field(description="The log's last position when read.")
    lag: int | None = Field(ge=0, description="`head - position`; null when not configured.")
    runs_here: bool = Field(alias="runsHere", description="Whether the answering process runs a relay (publishing or standing by).")
    publishing: bool = Field(description="Whether the answering process's relay holds the relay lock and publishes.")
    last_error: RelayError | None = Field(
        alias="lastError", description="The answering process's relay's latest step failure; null once a step succeeds."
    )


# -- routes -----------------------------------------------------------------------------------


def _queries(request: web.Request) -> OperatorQueries:
    return request.app[OPERATOR_QUERIES]


async def _state(request: web.Request, name: str) -> web.Response:
    (state,) = await _queries(request).projections([name])
    return json_response(state.public())


@routes.get("/projections")
@responds(200, ProjectionsAnswer)
async def projection_status(request: web.Request) -> web.Response:
    """Every projection's position, the log's head, its lag and its fault (null while it follows the log).

    Read from the read store's bookkeeping as it is now (whichever process projects), not from a read model.
    """
    states: list[ProjectionState] = await _queries(request).projections()
    head = states[0].head if states else 0
    return json_response({"head": head, "projections": [state.public() for state in states]})


@routes.post("/projections/{name}/retry")
@responds(200, ProjectionStatus)
@path_values(ProjectionPath)
@fails(404, 409)
async def retry_projection(request: web.Request) -> web.Response:
    """Clears the projection's fault: it tries its poison event again (``chainloom projections retry``).

    Answers the projection's state right after (no fault; the event may fail again within moments and show
    a fresh fault). 404 for a name no projection has, 409 when the projection is not faulted.
    """
    name = request.match_info["name"]
    await request.app[PROJECTION_COMMANDS].retry(name, command_context(request))
    return await _state(request, name)


@routes.post("/projections/{name}/skip")
@responds(200, ProjectionStatus)
@path_values(ProjectionPath)
@fails(404, 409)
async def skip_projection_event(request: web.Request) -> web.Response:
    """Skips the projection's poison event (``chainloom projections skip``): audited on the log first.

    A ``projection.event_skipped`` event (aggregate ``projection/<name>@<nid>``, the caller as actor) records
    it; then the projection moves past the event, for good (a rebuild skips it too). Answers the
    projection's state right after. 404 for a name no projection has, 409 when it is not faulted.
    """
    name = request.match_info["name"]
    await request.app[PROJECTION_COMMANDS].skip(name, command_context(request))
    return await _state(request, name)


@routes.get("/relay")
@responds(200, RelayStatus)
async def relay_status(request: web.Request) -> web.Response:
    """The Kafka relay: whether one is configured, the position it has published up to, the lag behind the
    log's head; whether the answering process runs it, and its latest failure."""
    state = await _queries(request).relay()
    return json_response(state.public())
