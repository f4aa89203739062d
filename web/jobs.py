"""Routes of the job queue: ``GET /jobs/pending``, ``GET /jobs/in-progress``, ``POST /leases``,
``PATCH /jobs/{id}/failed``, ``PATCH /jobs/{id}/done``, and (beyond the contract) ``GET /jobs/parked``.

Shapes and messages are the platform notes' (§7): a job is §7.1's object, a
lease answers 201 with the leased job or 404 when there is nothing to lease
(a worker's "idle"), a report on a job nobody leases is 404 and one by the
wrong leaser 422 ``job <id> not leased by <leaser>``. Listings are newest
first, at most 1000 (a ``limit`` below that is honoured, any other ignored as
the reference does), strictly before the ``cursor`` (RFC 3339; a bad one is
400 ``invalid cursor parameter: …``). Jobs are created by file changes
(``domain.jobs.vectorize_job``), never over HTTP.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.errors import Unprocessable
from chainloom.domain.jobs import DURATION_PATTERN, MAX_ERROR_LENGTH, parse_duration_ms
from chainloom.queries.jobs import MAX_ROWS
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response, with_body
from chainloom.web.keys import JOB_COMMANDS, JOB_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Answer, Message

routes = web.RouteTableDef()

# The most job types one lease may list (each is a value of one query).
MAX_JOB_TYPES = 1000

# -- bodies (unknown fields are ignored; field names match in any case) -------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class LeaseBody(_Body):
    """``dispatchapi.AssignRequest``."""

    model_config = ConfigDict(json_schema_extra={"required": ["jobTypes"]})

    leaser_id: str = Field("", alias="leaserId", description="Who leases (not checked; the reports must name it).")
    lease_duration: str = Field(
        "",
        alias="leaseDuration",
        description='A Go duration ("30s", "1m30s", "500ms", "2h"). Empty or absent: zero, the lease expires at once'
        " and is never put back by the reaper.",
        json_schema_extra={"pattern": DURATION_PATTERN},
    )
    job_types: list[str] | None = Field(
        None,
        alias="jobTypes",
        description="The oldest pending job of any of these types is leased.",
        json_schema_extra={"minItems": 1, "maxItems": MAX_JOB_TYPES, "type": "array", "items": {"type": "string"}},
    )


class JobReportBody(_Body):
    """``dispatchapi.JobUpdateRequest``, with the error a failed job keeps."""

    leaser_id: str = Field("", alias="leaserId", description="Must be the leaser holding the job (else 422).")
    error: str = Field(
        "",
        description=f"Why it failed (`/failed` only): kept as the job's last error (its first {MAX_ERROR_LENGTH}"
        " characters), shown by `GET /jobs/parked`.",
    )


# -- answers -------------------------------------------------------------------------------------------------


class Job(Answer):
    """``queries.jobs.job_json`` (platform notes §7.1)."""

    id: str
    task_type: str = Field(alias="taskType")
    operation: str
    subject: str
    entity_id: str = Field(alias="entityId")
    entity_type: str = Field(alias="entityType")
    payload: str = Field(description="Base64 (`e30=` is `{}`).")
    scheduled_for: int = Field(alias="scheduledFor")
    valid_until: int = Field(alias="validUntil")
    retry_count: int = Field(alias="retryCount", description="How many times it failed.")
    created_at: str = Field(
        alias="createdAt", description="When it last became pending.", json_schema_extra={"format": "date-time"}
    )


class LeasedJob(Job):
    """``queries.jobs.leased_job_json``: its ``createdAt`` is when it became pending, not when it was leased."""

    leaser: str
    lease_expiration: str = Field(alias="leaseExpiration", json_schema_extra={"format": "date-time"})


class ParkedJob(Job):
    """``queries.jobs.parked_job_json``: failed CHAINLOOM_JOB_MAX_FAILURES times, retried no more."""

    last_error: str = Field(alias="lastError")
    parked_at: str = Field(alias="parkedAt", json_schema_extra={"format": "date-time"})


# -- query strings -------------------------------------------------------------------------------------------


class JobsQuery(BaseModel):
    cursor: datetime | None = Field(None, description="Only jobs that became pending before this time (default: now).")
    limit: str | None = Field(
        None, description=f"At most this many (1 to {MAX_ROWS}); any other value is ignored (the reference's way)."
    )


def _page(request: web.Request) -> tuple[int, int]:
    """(before_ns, limit) of a listing's query string."""
    page = Page.lenient(request.query.get("limit"), request.query.get("cursor"))
    return page.before_ns, page.limit


# -- listings ------------------------------------------------------------------------------------------------


@routes.get("/jobs/pending")
@responds(200, list[Job])
@fails(400)
@query(JobsQuery)
async def list_pending_jobs(request: web.Request) -> web.Response:
    """Lists all pending jobs available for leasing, newest first.

    At most 1000, those that became pending strictly before `cursor` (default: now); a bad cursor is 400."""
    return json_response(await request.app[JOB_QUERIES].pending(*_page(request)))


@routes.get("/jobs/in-progress")
@responds(200, list[LeasedJob])
@fails(400)
@query(JobsQuery)
async def list_in_progress_jobs(request: web.Request) -> web.Response:
    """Lists all jobs currently in progress (leased), newest first.

    The cursor goes by `createdAt` (when the job became pending), as for pending jobs."""
    return json_response(await request.app[JOB_QUERIES].in_progress(*_page(request)))


@routes.get("/jobs/parked")
@responds(200, list[ParkedJob])
@fails(400)
@query(JobsQuery)
async def list_parked_jobs(request: web.Request) -> web.Response:
    """Lists the jobs parked after failing CHAINLOOM_JOB_MAX_FAILURES times, with their last error, newest first.

    Beyond the contract. A parked job is not leased again; it leaves the list when its file is deleted."""
    return json_response(await request.app[JOB_QUERIES].parked(*_page(request)))


# -- leasing and reports ---------------------------------------------------------------------------------------


@routes.post("/leases")
@responds(201, LeasedJob)
@fails(404, 409)
@with_body(LeaseBody)
async def lease_job(request: web.Request, body: LeaseBody) -> web.Response:
    """Assigns a pending job to a leaser for processing: the oldest pending job of any of `jobTypes`.

    Leased atomically: two leasers never get the same job. 404 when none of those types is pending (a worker's
    idle); empty `jobTypes` is 422 `no job types provided` (more than 1000: 422), a `leaseDuration` Go cannot
    parse 422. 409 only when
    other processes kept taking every job proposed to this lease (try again)."""
    if not body.job_types:
        raise Unprocessable("no job types provided", param="jobTypes")
    if len(body.job_types) > MAX_JOB_TYPES:
        raise Unprocessable(f"too many job types: at most {MAX_JOB_TYPES}", param="jobTypes")
    duration_ms = parse_duration_ms(body.lease_duration)
    job = await request.app[JOB_COMMANDS].lease(body.leaser_id, duration_ms, body.job_types, command_context(request))
    return json_response(job, 201)


@routes.patch("/jobs/{id}/failed")
@responds(200, Message)
@fails(404)
@with_body(JobReportBody)
async def mark_job_failed(request: web.Request, body: JobReportBody) -> web.Response:
    """Marks a job as failed: it goes back to pending with `retryCount` + 1 and a new `createdAt`.

    A job that has failed CHAINLOOM_JOB_MAX_FAILURES times is parked instead, with `error` as its last error.
    No job of that id leased: 404; leased by another leaser: 422 `job <id> not leased by <leaser>`."""
    commands = request.app[JOB_COMMANDS]
    await commands.failed(request.match_info["id"], body.leaser_id, body.error, command_context(request))
    return json_response("job marked as failed")


@routes.patch("/jobs/{id}/done")
@responds(204, None, "No Content: the job is done and leaves the queue.")
@fails(404)
@with_body(JobReportBody)
async def mark_job_done(request: web.Request, body: JobReportBody) -> web.Response:
    """Marks a job as successfully completed; it leaves the queue.

    The leaser must be the one holding it: no job of that id leased is 404, another leaser 422."""
    await request.app[JOB_COMMANDS].done(request.match_info["id"], body.leaser_id, command_context(request))
    return web.Response(status=204)
