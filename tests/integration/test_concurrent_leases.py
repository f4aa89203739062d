"""Leasing across writers on one store (SQLite and PostgreSQL): two services in this process, each with its
own log writer, and the real ``chainloom serve`` with two worker processes. Many leasers at once, over
fewer jobs: every job is leased exactly once (one ``job.leased`` on the log), each leaser that got none
gets 404, and nobody gets 409 or 5xx.

Within one process leases are decided one after the other by its log writer; between writers they race,
and the log's optimistic concurrency makes the loser decide again on fresh state (``commands.jobs``).
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.domain.jobs import vectorize_job
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from chainloom.web.keys import PROJECTIONS
from tests.integration.serve_process import call, fresh_connections, log_events

TYPES = ["vectorize_text/plain; charset=utf-8", "vectorize_application/pdf"]


def enqueue(settings: Settings, count: int) -> tuple[set[str], int | None]:
    """``count`` jobs, alternating between two types, appended to the store's log as a service would; their
    ids, and the log's position after them."""
    content_types = [job_type.removeprefix("vectorize_") for job_type in TYPES]
    jobs = [vectorize_job(str(uuid.uuid4()), str(uuid.uuid4()), content_types[i % 2], "create") for i in range(count)]
    log = EventLog(settings.event_store_env())
    try:
        position = log.save(*jobs)
    finally:
        log.close()
    return {job.key for job in jobs}, position


def assert_leased_once(settings: Settings, answers: list[tuple[int, Any]], jobs: set[str]) -> None:
    statuses = collections.Counter(status for status, _ in answers)
    assert statuses == {201: len(jobs), 404: len(answers) - len(jobs)}, statuses
    leased = [body["id"] for status, body in answers if status == 201]
    assert sorted(leased) == sorted(jobs), "a job leased twice, or one not leased"
    on_log = collections.Counter(e["aggregate_id"] for e in log_events(settings) if e["event_type"] == "job.leased")
    assert on_log == dict.fromkeys(jobs, 1), "the log holds a job leased twice"


def lease_body(i: int) -> dict[str, Any]:
    return {"leaserId": f"w-{i}", "leaseDuration": "1m", "jobTypes": TYPES}


async def test_two_services_on_one_store_never_lease_a_job_twice(settings: Settings):
    """Two services (two log writers, as two processes or machines would have) over one store, 60 leasers at
    once split between them, 30 jobs."""
    async with (
        TestClient(TestServer(create_app(settings))) as first,
        TestClient(TestServer(create_app(settings))) as second,
    ):
        jobs, position = await asyncio.to_thread(enqueue, settings, 30)
        clients = (first, second)
        for client in clients:  # both read models show them (their candidates are read there)
            client.server.app[PROJECTIONS].poke()
            await client.server.app[PROJECTIONS].wait_for(position, 10.0)

        async def lease(i: int) -> tuple[int, Any]:
            async with clients[i % 2].post("/leases", json=lease_body(i)) as response:
                return response.status, await response.json()

        answers = await asyncio.gather(*(lease(i) for i in range(60)))
    # Which service gets how many is the race's (one may decide all its leases on state the other already
    # changed: its group collides and each lease is decided again, finding the jobs taken).
    assert_leased_once(settings, answers, jobs)


@pytest.mark.timeout(90)
async def test_the_workers_of_chainloom_serve_never_lease_a_job_twice(settings: Settings, serve):
    """The real service with two worker processes: 40 leasers at once over new connections, 20 jobs."""
    service = serve(settings, workers=2)
    jobs, _ = await asyncio.to_thread(enqueue, settings, 20)
    async with fresh_connections(service.base) as session:
        deadline = time.monotonic() + 15
        while len((await call(session, "GET", "/jobs/pending")).body) < len(jobs):
            assert time.monotonic() < deadline, "the jobs were never listed"
            await asyncio.sleep(0.05)
        answers = await asyncio.gather(*(call(session, "POST", "/leases", lease_body(i)) for i in range(40)))
    assert_leased_once(settings, [(a.status, a.body) for a in answers], jobs)
    nodes = {a.node for a in answers}
    assert len(nodes) == 2 and None not in nodes, f"the leases did not reach both workers: {nodes}"
    assert service.logged_errors() == [], service.output()
