"""Routes of the model download queue: /queue, /queue/{model}, /queue/cancel, /queue/inProgress (SSE)."""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, Field

from chainloom.domain.errors import BadRequest
from chainloom.infra.version import node_instance_id
from chainloom.web.bodies import json_response
from chainloom.web.keys import DOWNLOAD_COMMANDS, DOWNLOAD_PROGRESS, DOWNLOAD_QUERIES
from chainloom.web.middleware import NODE_HEADER, REQUEST_ID, REQUEST_ID_HEADER, command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Message
from chainloom.web.sse import SSE_HEADERS

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# How often a progress stream with nothing to send checks that its client is still there.
_CHECK_INTERVAL = 1.0


class ModelJob(BaseModel):
    url: str
    model: str


class QueueJob(BaseModel):
    """``queries.downloads.job_json``: the reference's download job (its id is the backend's base URL)."""

    id: str
    task_type: str = Field(alias="taskType", json_schema_extra={"const": "model_download"})
    model_job: ModelJob = Field(alias="modelJob")
    scheduled_for: int = Field(alias="scheduledFor")
    valid_until: int = Field(alias="validUntil")
    created_at: str = Field(alias="createdAt", json_schema_extra={"format": "date-time"})


class ProgressEvent(BaseModel):
    """One line of a pull's progress (``projections.downloads.progress_line``)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    model: str
    base_url: str = Field(alias="baseUrl")


class ProgressFrame(BaseModel):
    """One frame of ``GET /queue/inProgress`` as an SSE client reads it: ``data: <compact JSON>``, nothing else."""

    data: str = Field(
        json_schema_extra={
            "contentMediaType": "application/json",
            "contentSchema": ProgressEvent.model_json_schema(by_alias=True, mode="serialization"),
        }
    )


class CancelQuery(BaseModel):
    """Which pulls to cancel: those on the backend at ``url``, else those of ``model`` (one of them is required)."""

    url: str | None = Field(None, min_length=1, description="The base URL of the backend whose pull to cancel.")
    model: str | None = Field(None, min_length=1, description="The model whose pulls to cancel, on every backend.")


class PurgeQuery(BaseModel):
    """``DELETE /models/{name}``: ``purge=true`` also dequeues the model's downloads and cancels its pulls."""

    purge: str | None = Field(None, description="`true`: also remove the model from the download queue and cancel its pulls.")


@routes.get("/queue")
@responds(200, list[QueueJob])
async def list_queue(request: web.Request) -> web.Response:
    """Retrieves the current model download queue state: the downloads waiting, oldest first.

    A download being pulled is no longer in the queue (``GET /queue/inProgress`` streams its progress).
    """
    return json_response(await request.app[DOWNLOAD_QUERIES].queue())


@routes.delete("/queue/cancel")
@responds(200, Message)
@query(CancelQuery)
@fails(400)
async def cancel_download(request: web.Request) -> web.Response:
    """Cancels in-progress model downloads: on the backend at ``url``, or of ``model`` on every backend.

    Queued downloads stay queued; with nothing pulling that matches, nothing happens.
    """
    url = request.query.get("url", "")
    model = request.query.get("model", "")
    if not url and not model:
        raise BadRequest("serverops: bad path value: required query parameter 'url' or 'model' is missing")
    commands = request.app[DOWNLOAD_COMMANDS]
    if url:
        await commands.cancel(command_context(request), url=url)
    else:
        await commands.cancel(command_context(request), model=model)
    return json_response("Model download cancellation initiated")


@routes.get("/queue/inProgress")
@responds(200, ProgressFrame, "One `data: <progress JSON>` frame per progress line of a pull.", "text/event-stream")
async def queue_progress(request: web.Request) -> web.StreamResponse:
    """Streams real-time download progress via Server-Sent Events (SSE).

    Each event is one ``data: <compact JSON>`` line and a blank line (no ``event:``/``id:`` lines, no
    heartbeats): ``status``, ``digest``, ``total``, ``completed`` (the last three left out when empty),
    ``model``, ``baseUrl``. Every pull's progress reaches every client, whichever process pulls; a client
    that does not keep up misses lines. The stream ends when the client leaves.
    """
    feed = request.app[DOWNLOAD_PROGRESS]
    response = web.StreamResponse(
        headers={
            **SSE_HEADERS,
            REQUEST_ID_HEADER: request.get(REQUEST_ID, ""),  # sent before the middleware would add them
            NODE_HEADER: node_instance_id(),
        }
    )
    subscription = await feed.subscribe()
    try:
        await response.prepare(request)  # a StreamResponse sends its headers at once
        while True:
            lines = await subscription.take(_CHECK_INTERVAL)
            if lines:
                await response.write(b"".join(b"data: " + line + b"\n\n" for line in lines))
            elif subscription.closed or request.transport is None or request.transport.is_closing():
                break
    except ConnectionError:
        logger.debug("progress stream client went away")
    finally:
        feed.unsubscribe(subscription)
    return response


# Not the two fixed paths beside it (so the allowed methods of /queue/inProgress are only its own).
@routes.delete("/queue/{model:(?!(?:inProgress|cancel)$).+}")
@responds(200, Message)
async def dequeue_model(request: web.Request) -> web.Response:
    """Removes a model from the download queue (on every backend); a pull in progress goes on."""
    await request.app[DOWNLOAD_COMMANDS].dequeue(request.match_info["model"], command_context(request))
    return json_response("Model removed from queue")


async def end_streams(app: web.Application) -> None:
    """Progress streams never end by themselves: end them before the server waits for its handlers."""
    feed = app.get(DOWNLOAD_PROGRESS)
    if feed is not None:
        feed.close()
