"""Model downloads on SQLite and PostgreSQL through real HTTP, against a fake Ollama.

The reconciler queues what a grouped Ollama backend lacks, the download job pulls it
(recording started/completed/failed on the log), progress streams on /queue/inProgress,
and a cancel, a dequeue or a purge stops or removes it. Intervals are small; every
wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.web.app import create_app
from chainloom.web.keys import DOWNLOAD_COMMANDS, DOWNLOAD_JOB
from tests.api.helpers import assert_error, call, create_backend, create_group, declare_model
from tests.fakes.llm import FakeOllama

FAST = {
    "download_poll": 0.05,
    "download_cancel_check": 0.05,
    "download_progress_interval": 0.05,
    "download_retry_after": 60.0,
    "reconcile_interval": 0.2,
}
DEADLINE = 20.0


@pytest.fixture
def settings(settings, request):
    """Small intervals; ``@pytest.mark.parametrize("settings", [{...}], indirect=True)`` overrides more."""
    return settings.model_copy(update=FAST | getattr(request, "param", {}))


async def eventually(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.03)


def download_events(settings, model: str | None = None) -> list[dict]:
    log = EventLog(settings.event_store_env())
    try:
        events = log.read(0, 100000)
    finally:
        log.close()
    return [
        e for e in events
        if e["aggregate_type"] == "download" and (model is None or e["aggregate_id"].endswith("/" + model))
    ]


def types_of(settings, model: str) -> list[str]:
    return [e["event_type"] for e in download_events(settings, model)]


async def grouped_backend(client, url: str, *models: str, name: str = "ollama-dl") -> dict:
    """An Ollama backend in a group declaring ``models``: the reconciler queues what it lacks."""
    backend = await create_backend(client, name, url)
    group = await create_group(client, f"group-{name}")
    for model in models:
        await declare_model(client, model)
        status, body = await call(client, "POST", f"/model-affinity/{group['id']}/models/{model}")
        assert status == 200, body
    status, body = await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    assert status == 201, body
    return backend


class ProgressReader:
    """A client of GET /queue/inProgress, collecting the frames in the background."""

    def __init__(self, client) -> None:
        self._client = client
        self.raw = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self._connected = asyncio.Event()

    async def __aenter__(self) -> ProgressReader:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._connected.wait(), 10)  # the headers come at once, before any event
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with self._client.get("/queue/inProgress") as response:
            self.status = response.status
            self.headers = dict(response.headers)
            self._connected.set()
            async for chunk in response.content.iter_any():
                self.raw += chunk

    def events(self) -> list[dict]:
        """The complete frames so far; each must be exactly ``data: <compact JSON>`` and a blank line."""
        complete = self.raw[: self.raw.rfind(b"\n\n") + 2] if b"\n\n" in self.raw else b""
        frames = [frame for frame in complete.split(b"\n\n") if frame]
        events = []
        for frame in frames:
            assert frame.startswith(b"data: ") and b"\n" not in frame, frame
            payload = frame[len(b"data: "):]
            event = json.loads(payload)
            assert payload == json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
            events.append(event)
        return events


async def test_empty_queue_and_refusals(client):
    assert await call(client, "GET", "/queue") == (200, [])
    status, body = await call(client, "DELETE", "/queue/cancel")
    assert_error(status, body, 400, "serverops: bad path value: required query parameter 'url' or 'model' is missing")
    status, body = await call(client, "DELETE", "/queue/cancel", params={"url": "", "model": ""})
    assert_error(status, body, 400, "required query parameter")
    assert await call(client, "DELETE", "/queue/cancel", params={"model": "nothing:1b"}) == (
        200, "Model download cancellation initiated"
    )
    assert await call(client, "DELETE", "/queue/cancel", params={"url": "http://nowhere:11434"}) == (
        200, "Model download cancellation initiated"
    )
    assert await call(client, "DELETE", "/queue/nothing:1b") == (200, "Model removed from queue")
    async with ProgressReader(client) as reader:  # headers flushed at once, no greeting
        assert reader.status == 200
        assert reader.headers["Content-Type"] == "text/event-stream"
        assert reader.headers["Cache-Control"] == "no-cache"
        assert reader.raw == b""


async def test_the_reconciler_queues_and_the_job_pulls_one_per_backend(client, settings):
    async with FakeOllama() as ollama:
        ollama.pullable = {"tiny-a:1b": 3000, "tiny-b:1b": 6000}
        ollama.pull_steps = 3
        ollama.pull_step_delay = 0.15
        async with ProgressReader(client) as reader:
            backend = await grouped_backend(client, ollama.url, "tiny-a:1b", "tiny-b:1b")

            # One pull per backend: while one model is pulled, the other waits in the queue.
            status, queue = await eventually(
                lambda: _queue_with_one(client), "one download waiting while the other is pulled"
            )
            job = queue[0]
            assert job["id"] == ollama.url and job["taskType"] == "model_download"
            assert job["modelJob"]["url"] == ollama.url and job["modelJob"]["model"] in ("tiny-a:1b", "tiny-b:1b")
            assert (job["scheduledFor"], job["validUntil"]) == (0, 0) and job["createdAt"].endswith("Z")

            for model in ("tiny-a:1b", "tiny-b:1b"):
                await eventually(lambda: "download.completed" in types_of(settings, model), f"{model} pulled")
            assert set(ollama.models) >= {"tiny-a:1b", "tiny-b:1b"}
            assert await call(client, "GET", "/queue") == (200, [])
            await eventually(lambda: _saw_success(reader, "tiny-b:1b") and _saw_success(reader, "tiny-a:1b"), "progress")

        events = reader.events()
        for event in events:
            assert event["baseUrl"] == ollama.url and event["model"] in ("tiny-a:1b", "tiny-b:1b")
            assert list(event)[0] == "status" and list(event)[-2:] == ["model", "baseUrl"]
            assert all(event.get(k) for k in ("digest", "total", "completed") if k in event)  # empty ones left out
        layers = [e for e in events if e.get("digest")]
        assert layers and layers[-1]["total"] > 0 and any(e["completed"] == e["total"] for e in layers)
        statuses = [e["status"] for e in events if e["model"] == "tiny-a:1b"]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"

    for model in ("tiny-a:1b", "tiny-b:1b"):
        assert types_of(settings, model) == ["download.queued", "download.started", "download.completed"]
        queued = download_events(settings, model)[0]
        assert queued["data"] == {"backendId": backend["id"], "baseUrl": ollama.url, "model": model}
        assert queued["event_source"] == "chainloom"


async def _queue_with_one(client):
    status, queue = await call(client, "GET", "/queue")
    return (status, queue) if len(queue) == 1 else None


def _saw_success(reader: ProgressReader, model: str) -> bool:
    return any(e["status"] == "success" and e["model"] == model for e in reader.events())


async def test_cancel_stops_the_pull_wherever_it_runs(client, settings):
    async with FakeOllama() as ollama:
        ollama.pullable = {"slow:7b": 10_000}
        ollama.pull_steps = 12
        ollama.pull_step_delay = 0.25
        async with ProgressReader(client) as reader:
            await grouped_backend(client, ollama.url, "slow:7b")
            await eventually(lambda: any(e.get("digest") for e in reader.events()), "the pull under way")
        assert await call(client, "DELETE", "/queue/cancel", params={"url": ollama.url}) == (
            200, "Model download cancellation initiated"
        )
        assert types_of(settings, "slow:7b") == ["download.queued", "download.started", "download.cancelled"]
        # The job notices and closes the stream: the fake never gets to the end of the pull.
        await asyncio.sleep(ollama.pull_steps * ollama.pull_step_delay)
        assert "slow:7b" not in ollama.models
        assert types_of(settings, "slow:7b") == ["download.queued", "download.started", "download.cancelled"]
        assert await call(client, "GET", "/queue") == (200, [])  # not queued again before the retry delay


async def test_dequeue_leaves_the_running_pull_alone_and_purge_cancels(client, settings):
    async with FakeOllama() as ollama:
        ollama.pullable = {"first:1b": 1000, "second:1b": 1000, "third:1b": 1000}
        ollama.pull_steps = 8
        ollama.pull_step_delay = 0.2
        await grouped_backend(client, ollama.url, "first:1b", "second:1b", "third:1b")
        status, queue = await eventually(lambda: _queue_of(client, 2), "two downloads waiting")
        running = await eventually(lambda: _running(settings), "a pull under way")
        waiting = [job["modelJob"]["model"] for job in queue]
        assert running not in waiting

        # DELETE /queue/{model}: out of the queue; the running pull goes on.
        assert await call(client, "DELETE", f"/queue/{waiting[0]}") == (200, "Model removed from queue")
        status, queue = await call(client, "GET", "/queue")
        assert [job["modelJob"]["model"] for job in queue] == [waiting[1]]
        assert types_of(settings, waiting[0])[-1] == "download.dequeued"

        # Purging the running model cancels its pull; the next one starts.
        assert await call(client, "DELETE", f"/models/{running}", params={"purge": "true"}) == (200, "model removed")
        assert types_of(settings, running)[-1] == "download.cancelled"
        await eventually(lambda: "download.started" in types_of(settings, waiting[1]), "the next pull")
        await eventually(lambda: "download.completed" in types_of(settings, waiting[1]), "the last pull")
        assert running not in ollama.models and waiting[0] not in ollama.models


async def _queue_of(client, n: int):
    status, queue = await call(client, "GET", "/queue")
    return (status, queue) if len(queue) == n else None


def _running(settings) -> str | None:
    last: dict[str, str] = {}
    for event in download_events(settings):
        last[event["aggregate_id"].split("/", 1)[1]] = event["event_type"]
    running = [model for model, type_ in last.items() if type_ == "download.started"]
    return running[0] if running else None


@pytest.mark.parametrize("settings", [{"download_retry_after": 1.0}], indirect=True)
async def test_a_failed_pull_is_recorded_and_retried_after_the_delay(client, settings):
    async with FakeOllama() as ollama:
        # Not pullable: the fake answers the pull with an error line.
        await grouped_backend(client, ollama.url, "missing:1b")
        await eventually(lambda: "download.failed" in types_of(settings, "missing:1b"), "the failure")
        failed = [e for e in download_events(settings, "missing:1b") if e["event_type"] == "download.failed"][0]
        assert "file does not exist" in failed["data"]["error"]

        ollama.pullable = {"missing:1b": 500}
        await eventually(lambda: "download.completed" in types_of(settings, "missing:1b"), "the retry")
        events = download_events(settings, "missing:1b")
        assert [e["event_type"] for e in events] == [
            "download.queued", "download.started", "download.failed",
            "download.requeued", "download.started", "download.completed",
        ]
        requeued = events[3]
        waited = _seconds(requeued["created_at"]) - _seconds(failed["created_at"])
        assert waited >= 1.0, waited  # not before CHAINLOOM_DOWNLOAD_RETRY_AFTER
        assert requeued["data"] == {"backendId": events[0]["data"]["backendId"], "baseUrl": ollama.url, "model": "missing:1b"}


def _seconds(text: str) -> float:
    from chainloom.infra.timefmt import parse_ns

    return parse_ns(text) / 1e9


@pytest.mark.in_process(reason="calls the download commands of the in-process service")
async def test_queue_missing_is_idempotent(client, settings):
    commands = client.server.app[DOWNLOAD_COMMANDS]
    async with FakeOllama() as ollama:
        ollama.pullable = {"m1:1b": 100, "m2:1b": 100}
        ollama.pull_step_delay = 0.1
        await asyncio.gather(*(commands.queue_missing("backend-1", ollama.url, ["m1:1b", "m2:1b", "m1:1b"]) for _ in range(3)))
        await commands.queue_missing("backend-1", ollama.url, ["m1:1b", "m2:1b"])
        for model in ("m1:1b", "m2:1b"):
            await eventually(lambda: "download.completed" in types_of(settings, model), f"{model} pulled")
        await commands.queue_missing("backend-1", ollama.url, ["m1:1b", "m2:1b"])  # ended just now: not again
        for model in ("m1:1b", "m2:1b"):
            assert types_of(settings, model) == ["download.queued", "download.started", "download.completed"]
        assert client.server.app[DOWNLOAD_JOB].pulling == []


async def test_progress_reaches_a_client_of_another_process_and_so_does_a_cancel(settings):
    """Two services on one store (two processes, or machines on PostgreSQL): the pull runs in the one holding
    the downloads lock; a client of the other sees its progress, and a cancel sent there stops it."""
    async with TestClient(TestServer(create_app(settings))) as first, TestClient(TestServer(create_app(settings))) as second:
        jobs = [first.server.app[DOWNLOAD_JOB], second.server.app[DOWNLOAD_JOB]]
        await eventually(lambda: any(job.holding for job in jobs), "a holder of the downloads lock")
        holder, other = (first, second) if jobs[0].holding else (second, first)
        assert not (jobs[0].holding and jobs[1].holding)
        async with FakeOllama() as ollama:
            ollama.pullable = {"far:1b": 5000}
            ollama.pull_steps = 12
            ollama.pull_step_delay = 0.2
            async with ProgressReader(other) as reader:
                await other.server.app[DOWNLOAD_COMMANDS].queue_missing("backend-far", ollama.url, ["far:1b"])
                await eventually(lambda: any(e.get("completed") for e in reader.events()), "progress on the other")
            assert holder.server.app[DOWNLOAD_JOB].pulling == ["backend-far/far:1b"]
            assert await call(other, "DELETE", "/queue/cancel", params={"model": "far:1b"}) == (
                200, "Model download cancellation initiated"
            )
            await eventually(lambda: holder.server.app[DOWNLOAD_JOB].pulling == [], "the pull stopped in the holder")
            assert "far:1b" not in ollama.models
            assert types_of(settings, "far:1b") == ["download.queued", "download.started", "download.cancelled"]


async def test_a_pull_cut_off_by_its_process_stopping_is_failed_by_the_next_holder(settings):
    """The holder stops mid-pull (a worker restarted, a machine gone): the next holder of the downloads lock
    finds the download still running with no pull behind it, records it failed, and the reconciler may
    queue it again after the retry delay."""
    async with FakeOllama() as ollama:
        ollama.pullable = {"cut:1b": 5000}
        ollama.pull_steps = 20
        ollama.pull_step_delay = 0.2
        first = TestClient(TestServer(create_app(settings)))
        await first.start_server()
        try:
            await eventually(lambda: first.server.app[DOWNLOAD_JOB].holding, "the first service holding the lock")
            async with TestClient(TestServer(create_app(settings))) as second:
                await first.server.app[DOWNLOAD_COMMANDS].queue_missing("backend-cut", ollama.url, ["cut:1b"])
                await eventually(lambda: "download.started" in types_of(settings, "cut:1b"), "the pull under way")
                await first.close()  # stops its job (and its pull), releases the lock
                await eventually(lambda: "download.failed" in types_of(settings, "cut:1b"), "the next holder's record")
                assert second.server.app[DOWNLOAD_JOB].holding
                failed = download_events(settings, "cut:1b")[-1]
                assert failed["event_type"] == "download.failed" and "interrupted" in failed["data"]["error"]
                assert "cut:1b" not in ollama.models
        finally:
            await first.close()
