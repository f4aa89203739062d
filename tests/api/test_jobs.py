"""The job queue through real HTTP on SQLite and PostgreSQL: listings and their cursors, leases (the oldest
across the listed types, never one job twice), failed and done reports with the notes' messages, parking
after CHAINLOOM_JOB_MAX_FAILURES failures, and the lease reaper.

Jobs are made by file changes, not over HTTP: ``enqueue`` appends ``vectorize_job``s to the service's log
directly (as another process of the service would) and waits until the listing shows them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from chainloom.domain.jobs import Job, parse_rfc3339, vectorize_job
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.rebuild import rebuild
from chainloom.web.keys import LEASE_REAPER, PROJECTIONS
from tests.api.helpers import assert_error, call

TEXT = "text/plain; charset=utf-8"
PDF = "application/pdf"
JOB_KEYS = {
    "id", "taskType", "operation", "subject", "entityId", "entityType", "payload", "scheduledFor", "validUntil",
    "retryCount", "createdAt",
}  # fmt: skip


@pytest.fixture
def settings(settings, request):
    """``@pytest.mark.parametrize("settings", [{...}], indirect=True)`` overrides settings."""
    return settings.model_copy(update=getattr(request, "param", {}))


async def enqueue(client: Any, settings: Settings, *content_types: str, operation: str = "create") -> list[Job]:
    """One vectorize job per content type, each created a moment after the one before; shown once listed."""
    jobs: list[Job] = []
    for content_type in content_types:
        job = vectorize_job(str(uuid.uuid4()), str(uuid.uuid4()), content_type, operation)
        while jobs and job.created_at <= jobs[-1].created_at:  # distinct times: cursors go strictly before
            job = vectorize_job(job.key, job.entity_id, content_type, operation)
        jobs.append(job)

    def save() -> int | None:
        log = EventLog(settings.event_store_env())
        try:
            return log.save(*jobs)
        finally:
            log.close()

    position = await asyncio.to_thread(save)
    app = getattr(getattr(client, "server", None), "app", None)  # None: the service runs in worker processes
    if app is not None:  # in this process: have the read models look now
        app[PROJECTIONS].poke()
        await app[PROJECTIONS].wait_for(position, 10.0)
    else:
        await eventually(lambda: listed_ids(client, "pending"), {job.key for job in jobs}.issubset, "the jobs listed")
    return jobs


async def listed_ids(client: Any, listing: str, **params: str) -> list[str]:
    status, body = await call(client, "GET", f"/jobs/{listing}", params=params)
    assert status == 200, body
    return [job["id"] for job in body]


async def eventually(load: Any, check: Any, what: str, deadline: float = 10.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = await load()
        if check(value):
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}: {value}"
        await asyncio.sleep(0.02)


def job_events(settings: Settings, job_id: str | None = None) -> list[dict]:
    """The events of the job (of every job when None), in log order."""
    log = EventLog(settings.event_store_env())
    try:
        events = log.read(0, 100_000)
    finally:
        log.close()
    return [e for e in events if e["aggregate_type"] == "job" and job_id in (None, e["aggregate_id"])]


async def lease(
    client: Any, leaser: str = "w-1", duration: str = "30s", types: tuple[str, ...] = (TEXT,)
) -> tuple[int, Any]:
    body = {"leaserId": leaser, "leaseDuration": duration, "jobTypes": [f"vectorize_{t}" for t in types]}
    return await call(client, "POST", "/leases", body)


# -- the life of a job ------------------------------------------------------------------------------------


async def test_a_job_is_listed_leased_failed_and_done(client, settings):
    first, pdf, third = await enqueue(client, settings, TEXT, PDF, TEXT)
    status, pending = await call(client, "GET", "/jobs/pending")
    assert status == 200 and [job["id"] for job in pending] == [third.key, pdf.key, first.key]  # newest first
    assert pending[2] == {
        "id": first.key, "taskType": f"vectorize_{TEXT}", "operation": "create", "subject": "file",
        "entityId": first.entity_id, "entityType": "file", "payload": "e30=", "scheduledFor": 0, "validUntil": 0,
        "retryCount": 0, "createdAt": first.created_at,
    }  # fmt: skip

    # The oldest job across every listed type (the reference would pick one type at random).
    before = time.time()
    status, leased = await lease(client, duration="1m30s", types=(PDF, TEXT))
    assert status == 201, leased
    assert set(leased) == JOB_KEYS | {"leaser", "leaseExpiration"}
    assert (leased["id"], leased["leaser"], leased["createdAt"]) == (first.key, "w-1", first.created_at)
    assert before + 89 < parse_ns(leased["leaseExpiration"]) / 1e9 < time.time() + 91
    status, in_progress = await call(client, "GET", "/jobs/in-progress")
    assert in_progress == [leased]
    assert await listed_ids(client, "pending") == [third.key, pdf.key]
    status, leased_pdf = await lease(client, "w-2", "10s", types=(PDF,))
    assert (status, leased_pdf["id"]) == (201, pdf.key)

    # Reports: only the leaser's count.
    failed = f"/jobs/{first.key}/failed"
    assert_error(*await call(client, "PATCH", failed, {"leaserId": "w-2"}), 422, f"job {first.key} not leased by w-2")
    assert_error(*await call(client, "PATCH", f"/jobs/{third.key}/failed", {"leaserId": "w-1"}), 404, "not found")
    assert_error(*await call(client, "PATCH", f"/jobs/{uuid.uuid4()}/done", {"leaserId": "w-1"}), 404, "not found")
    answer = await call(client, "PATCH", failed, {"leaserId": "w-1", "error": "no text in it"})
    assert answer == (200, "job marked as failed")
    status, pending = await call(client, "GET", "/jobs/pending")
    retried = next(job for job in pending if job["id"] == first.key)
    assert pending[0] == retried and retried["retryCount"] == 1  # back with a new createdAt: the newest
    assert parse_ns(retried["createdAt"]) > parse_ns(third.created_at) and "leaser" not in retried
    assert_error(*await call(client, "PATCH", failed, {"leaserId": "w-1"}), 404)  # pending, no longer leased

    # Leased again (now the oldest is `third`), then done: it leaves the queue.
    status, again = await lease(client)
    assert (status, again["id"]) == (201, third.key)
    done = f"/jobs/{third.key}/done"
    assert_error(*await call(client, "PATCH", done, {"leaserId": "w-9"}), 422, f"job {third.key} not leased by w-9")
    async with client.request("PATCH", done, json={"leaserId": "w-1"}) as response:
        assert response.status == 204 and await response.read() == b""
    assert_error(*await call(client, "PATCH", done, {"leaserId": "w-1"}), 404)
    assert await listed_ids(client, "in-progress") == [pdf.key]
    assert await listed_ids(client, "pending") == [first.key]
    assert [e["event_type"] for e in job_events(settings, third.key)] == ["job.enqueued", "job.leased", "job.completed"]
    assert [e["event_type"] for e in job_events(settings, first.key)] == ["job.enqueued", "job.leased", "job.failed"]
    assert job_events(settings, first.key)[2]["data"]["error"] == "no text in it"


async def test_every_refusal_says_why(client, settings):
    no_types = {"leaserId": "w", "jobTypes": []}
    assert_error(*await call(client, "POST", "/leases", no_types), 422, "no job types provided")
    assert_error(*await call(client, "POST", "/leases", {"leaserId": "w"}), 422, "no job types provided")
    too_many = {"leaserId": "w", "jobTypes": [f"t{i}" for i in range(1001)]}
    assert_error(*await call(client, "POST", "/leases", too_many), 422, "too many job types: at most 1000")
    assert_error(*await lease(client, duration="abc"), 422, 'invalid lease duration: time: invalid duration "abc"')
    assert_error(*await lease(client, duration="5"), 422, 'time: missing unit in duration "5"')
    assert_error(*await lease(client, duration="-5s"), 422, "must not be negative")
    assert_error(*await lease(client), 404, "libdb: not found")  # nothing to lease: the worker's idle
    for listing in ("pending", "in-progress", "parked"):
        answer = await call(client, "GET", f"/jobs/{listing}", params={"cursor": "yesterday"})
        assert_error(*answer, 400, "invalid cursor parameter: ")
    # The older platform's surface: flat messages clients match on.
    status, body = await call(client, "POST", "/api/leases", {"leaserId": "w", "jobTypes": []})
    assert (status, body) == (422, {"error": "no job types provided"})
    status, body = await call(client, "GET", "/api/jobs/pending", params={"cursor": "2025-13-01T00:00:00Z"})
    assert status == 400 and body["error"].startswith("invalid cursor parameter: ")
    [job] = await enqueue(client, settings, TEXT)
    status, _ = await call(client, "POST", "/api/leases", {"leaserId": "w", "jobTypes": [f"vectorize_{TEXT}"]})
    assert status == 201
    status, body = await call(client, "PATCH", f"/api/jobs/{job.key}/failed", {"leaserId": "x"})
    assert (status, body) == (422, {"error": f"job {job.key} not leased by x"})
    answer = await call(client, "PATCH", f"/api/jobs/{job.key}/failed", {"leaserId": "w"})
    assert answer == (200, "job marked as failed")


async def test_listings_go_strictly_before_their_cursor(client, settings):
    jobs = await enqueue(client, settings, TEXT, TEXT, TEXT, TEXT)
    newest_first = [job.key for job in reversed(jobs)]
    assert await listed_ids(client, "pending") == newest_first
    assert await listed_ids(client, "pending", cursor=jobs[2].created_at) == newest_first[2:]  # strictly before
    assert await listed_ids(client, "pending", cursor=jobs[0].created_at) == []
    assert await listed_ids(client, "pending", cursor="2999-01-01T00:00:00+02:00") == newest_first
    assert await listed_ids(client, "pending", limit="2") == newest_first[:2]
    assert await listed_ids(client, "pending", limit="lots") == newest_first  # ignored, as the reference does
    for _ in range(3):
        assert (await lease(client))[0] == 201  # the three oldest
    # In progress: the cursor goes by the original createdAt.
    assert await listed_ids(client, "in-progress") == newest_first[1:]
    assert await listed_ids(client, "in-progress", cursor=jobs[2].created_at) == newest_first[2:]
    assert await listed_ids(client, "pending") == newest_first[:1]


@pytest.mark.parametrize("settings", [{"job_max_failures": 2}], indirect=True)
async def test_a_job_that_failed_too_often_is_parked_with_its_last_error(client, settings):
    [job] = await enqueue(client, settings, PDF)
    for attempt in (1, 2):
        status, leased = await lease(client, types=(PDF,))
        assert (status, leased["id"], leased["retryCount"]) == (201, job.key, attempt - 1)
        report = {"leaserId": "w-1", "error": f"boom {attempt}"}
        assert await call(client, "PATCH", f"/jobs/{job.key}/failed", report) == (200, "job marked as failed")
    assert await listed_ids(client, "pending") == [] and await listed_ids(client, "in-progress") == []
    assert_error(*await lease(client, types=(PDF,)), 404)  # never leased again
    status, parked = await call(client, "GET", "/jobs/parked")
    assert status == 200 and len(parked) == 1
    assert parked[0]["id"] == job.key and parked[0]["retryCount"] == 2 and parked[0]["lastError"] == "boom 2"
    assert set(parked[0]) == JOB_KEYS | {"lastError", "parkedAt"}
    assert [e["event_type"] for e in job_events(settings, job.key)][-2:] == ["job.leased", "job.parked"]

    # The read model is the log's: rebuilt from position 0 (with a pending and a leased job besides), the same.
    await enqueue(client, settings, TEXT, TEXT)
    assert (await lease(client))[0] == 201
    live = await asyncio.to_thread(job_rows, settings)
    assert sorted(row["state"] for row in live) == ["leased", "parked", "pending"]
    await asyncio.to_thread(rebuild, settings, ["jobs"])
    assert await asyncio.to_thread(job_rows, settings) == live


def job_rows(settings: Settings) -> list[dict]:
    store, factory = open_read_store(settings.read_store_env())
    try:
        return store.query("SELECT * FROM jobs ORDER BY id")
    finally:
        factory.close()


@pytest.mark.in_process(reason="counts the in-process reaper's cycles")
@pytest.mark.parametrize("settings", [{"lease_reap_interval": 0.05}], indirect=True)
async def test_the_reaper_puts_back_a_lease_that_ran_out_and_never_a_zero_length_one(client, settings):
    short, zero = await enqueue(client, settings, TEXT, TEXT)
    status, leased = await lease(client, "w-short", "300ms")
    assert (status, leased["id"]) == (201, short.key)
    status, held = await lease(client, "w-zero", "")  # no duration: expires at once, stays with its leaser
    assert (status, held["id"]) == (201, zero.key)
    assert parse_ns(held["leaseExpiration"]) <= time.time_ns()
    listed = await listed_ids(client, "in-progress")
    if time.time_ns() < parse_ns(leased["leaseExpiration"]):  # (a slow machine may be past it already)
        assert set(listed) == {short.key, zero.key}  # not put back before its expiration
    back = await eventually(lambda: call(client, "GET", "/jobs/pending"), lambda answer: answer[1], "the put-back", 5)
    [job] = back[1]
    assert job["id"] == short.key and job["retryCount"] == 0
    assert parse_ns(job["createdAt"]) >= parse_ns(leased["leaseExpiration"])
    expired = job_events(settings, short.key)[-1]
    assert expired["event_type"] == "job.lease_expired"
    assert parse_ns(expired["created_at"]) >= parse_ns(leased["leaseExpiration"])  # never a moment early
    assert expired["data"]["leaser"] == "w-short" and expired["metadata"]["actor"] == "system"
    assert_error(*await call(client, "PATCH", f"/jobs/{short.key}/done", {"leaserId": "w-short"}), 404)
    server = getattr(client, "server", None)
    if server is not None:  # the zero-length lease outlives several more cycles
        reaper = server.app[LEASE_REAPER]
        assert reaper.holding
        cycles = reaper.cycles
        await eventually(lambda: asyncio.sleep(0, reaper.cycles), lambda n: n >= cycles + 3, "more reaper cycles", 2)
    assert await listed_ids(client, "in-progress") == [zero.key]
    assert await call(client, "PATCH", f"/jobs/{zero.key}/done", {"leaserId": "w-zero"}) == (204, None)


async def test_concurrent_leasers_each_get_a_distinct_job(client, settings):
    """60 leasers at once over 45 jobs (more than one lease's proposals, so some look further): every job is
    leased exactly once, the other 15 leasers get 404."""
    jobs = await enqueue(client, settings, *([TEXT] * 45))
    answers = await asyncio.gather(*(lease(client, f"w-{i}") for i in range(60)))
    leased = [body["id"] for status, body in answers if status == 201]
    assert sorted(leased) == sorted(job.key for job in jobs)
    assert sorted(status for status, _ in answers) == [201] * 45 + [404] * 15
    assert all(body["leaser"].startswith("w-") for status, body in answers if status == 201)
    assert sorted(await listed_ids(client, "in-progress")) == sorted(leased)
    leases = [e["aggregate_id"] for e in job_events(settings) if e["event_type"] == "job.leased"]
    assert sorted(leases) == sorted(leased)
