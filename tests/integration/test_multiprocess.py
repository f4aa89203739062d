"""``chainloom serve`` with several worker processes behaves as one service (issue 8).

Each test starts the real command (``CHAINLOOM_WORKERS=2`` unless it says
otherwise) on SQLite and on PostgreSQL, and talks to it over new connections, so
the kernel spreads the requests over the workers. Every test that is about more
than one worker first checks that two distinct workers answered (by
``X-Chainloom-Node``), so none of them can pass on a single process:

- read-your-writes: a write answered by one worker is read back through another;
- live streams: a subscriber on each worker gets every event, from either worker;
- fail-over: kill -9 the projection runner's holder, writes go on through the
  survivor, the parent restarts the worker, nothing acknowledged is lost;
- graceful shutdown: SIGTERM to the parent lets a request in flight finish (one
  whose body is still arriving; many under load), the parent exits 0, no worker
  is left;
- ``CHAINLOOM_WORKERS=1``: one process, as before.

The relay's fail-over needs the Kafka broker: tests/integration/kafka/test_multiprocess_relay.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import aiohttp
import pytest

from chainloom.infra.settings import Settings
from tests.integration.serve_process import (
    NODE_HEADER,
    call,
    fresh_connections,
    log_events,
    ready_workers,
    running,
    sole_holder,
)


async def create_group(session: aiohttp.ClientSession, name: str) -> str | None:
    """POST /groups; returns the answering worker's node id."""
    answer = await call(session, "POST", "/groups", {"name": name, "purposeType": "testing"})
    assert answer.status == 201, f"POST /groups {name}: {answer.status} {answer.body}"
    assert answer.body["name"] == name
    return answer.node


async def read_group(session: aiohttp.ClientSession, name: str) -> str | None:
    """GET /group-by-name (a new connection); returns the answering worker's node id."""
    answer = await call(session, "GET", f"/group-by-name/{name}")
    assert answer.status == 200 and answer.body["name"] == name, f"{name} not read back from {answer.node}: {answer.body}"
    return answer.node


async def distinct_versions(session: aiohttp.ClientSession, count: int, attempts: int = 80) -> set[str | None]:
    """The nodeInstanceIDs /version gives, asked until ``count`` distinct ones answered (or attempts run out)."""
    nodes: set[str | None] = set()
    for _ in range(attempts):
        answer = await call(session, "GET", "/version")
        assert answer.status == 200
        assert answer.node == answer.body["nodeInstanceID"], f"header {answer.node} != body {answer.body}"
        nodes.add(answer.node)
        if len(nodes) >= count:
            break
    return nodes


# -- read-your-writes ---------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_every_client_reads_its_write_through_any_worker(settings: Settings, serve):
    service = serve(settings)
    clients, iterations = 16, 12
    pairs: list[tuple[str | None, str | None]] = []  # (node that wrote, node that read back), one per write

    async with fresh_connections(service.base) as session:
        workers_at_start = await ready_workers(session, 2)
        version_nodes = await distinct_versions(session, 2)
        assert len(version_nodes) == 2, f"only {version_nodes} answered /version: the workers share one node id?"

        async def client(number: int) -> None:
            for i in range(iterations):
                name = f"rw-{number}-{i}"
                written_by = await create_group(session, name)
                pairs.append((written_by, await read_group(session, name)))

        await asyncio.gather(*(client(number) for number in range(clients)))
        listed = await call(session, "GET", "/groups")

    assert len(pairs) == clients * iterations
    assert service.children() >= set(workers_at_start), "a worker died during the test"
    assert service.logged_errors() == [], f"the service logged errors:\n{service.output()}"
    nodes = {node for pair in pairs for node in pair}
    assert None not in nodes, f"an answer without {NODE_HEADER}"
    assert nodes == version_nodes, f"answers came from {nodes}, /version named {version_nodes}"
    crossed = sum(1 for written_by, read_by in pairs if written_by != read_by)
    assert crossed > 0, "no write was read back through another worker than the one that answered it"
    names = {group["name"] for group in listed.body}
    assert {f"rw-{c}-{i}" for c in range(clients) for i in range(iterations)} <= names
    print(f"{len(pairs)} writes read back, {crossed} of them through the other worker")


# -- live streams -------------------------------------------------------------------


class Stream:
    """One SSE subscription; its data frames decoded."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.node = response.headers.get(NODE_HEADER)
        self.events: list[dict] = []

    async def read_until(self, count: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while len(self.events) < count:
            line = await asyncio.wait_for(self.response.content.readline(), max(0.01, deadline - loop.time()))
            if line == b"":
                raise AssertionError(f"the stream of {self.node} ended after {len(self.events)} events")
            if line.startswith(b"data: "):
                self.events.append(json.loads(line[6:]))

    async def nothing_more(self, seconds: float) -> None:
        """No further data frame arrives within ``seconds`` (comments, such as keep-alives, are fine)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    line = await self.response.content.readline()
                    if line == b"":
                        return
                    assert not line.startswith(b"data: "), f"{self.node} sent an extra event: {line[:200]!r}"
        except TimeoutError:
            pass


async def open_stream_on_every_worker(session: aiohttp.ClientSession, event_type: str, workers: int) -> dict[str, Stream]:
    """Open streams (new connections) until one is subscribed on each worker; the extra ones are closed."""
    streams: dict[str, Stream] = {}
    for _ in range(60):
        response = await session.get(f"/events/stream/{event_type}", timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        assert response.status == 200, await response.text()
        first = await asyncio.wait_for(response.content.readline(), 10)  # subscribed once this arrives
        assert first.startswith(b": connected to event stream"), first
        stream = Stream(response)
        assert stream.node, f"the SSE response has no {NODE_HEADER}"
        if stream.node in streams:
            response.close()
        else:
            streams[stream.node] = stream
        if len(streams) == workers:
            return streams
    for stream in streams.values():
        stream.response.close()
    raise AssertionError(f"60 streams opened, all on {set(streams)}")


@pytest.mark.timeout(90)
async def test_a_stream_on_any_worker_gets_every_event_once_in_log_order(settings: Settings, serve):
    service = serve(settings)
    event_type = f"mp.sse{uuid.uuid4().hex[:8]}"
    async with fresh_connections(service.base) as session:
        streams = await open_stream_on_every_worker(session, event_type, workers=2)
        try:
            posted: list[dict] = []
            posted_by: set[str | None] = set()
            # Sequential posts: their answers' order is their log order. Go on until both workers wrote.
            while len(posted) < 30 or (len(posted_by) < 2 and len(posted) < 100):
                body = {"event_type": event_type, "event_source": "mp", "aggregate_type": "order",
                        "aggregate_id": f"o-{len(posted)}", "version": 1, "data": {"i": len(posted)}}
                answer = await call(session, "POST", "/events", body)
                assert answer.status == 201, answer.body
                posted.append(answer.body)
                posted_by.add(answer.node)
                if len(posted) % 10 == 0:  # some events in a burst, some apart
                    await asyncio.sleep(0.05)
            assert len(posted_by) == 2, f"every POST /events was answered by {posted_by}"
            assert set(streams) == posted_by, f"streams on {set(streams)}, posts answered by {posted_by}"
            assert [e["nid"] for e in posted] == sorted(e["nid"] for e in posted)

            deadline = asyncio.get_running_loop().time() + 15
            for node, stream in streams.items():
                try:
                    await stream.read_until(len(posted), deadline)
                except TimeoutError:
                    missing = sorted({e["nid"] for e in posted} - {e["nid"] for e in stream.events})
                    raise AssertionError(
                        f"the stream on {node} got {len(stream.events)} of {len(posted)} events; missing nids {missing[:20]}"
                    ) from None
            for stream in streams.values():
                await stream.nothing_more(0.5)
        finally:
            for stream in streams.values():
                stream.response.close()
    for node, stream in streams.items():
        assert [e["nid"] for e in stream.events] == [e["nid"] for e in posted], f"stream on {node}: nids differ or out of order"
        assert stream.events == posted, f"stream on {node}: events differ from what was stored"
    assert service.logged_errors() == [], f"the service logged errors:\n{service.output()}"


# -- fail-over of the projection runner ---------------------------------------------------


class Writers:
    """Clients writing groups until stopped: what was acknowledged, and what failed how."""

    def __init__(self, session: aiohttp.ClientSession, count: int) -> None:
        self.session = session
        self.count = count
        self.acknowledged: list[tuple[float, str]] = []  # (when answered, group name)
        self.refused: list[str] = []  # an HTTP answer other than 201
        self.connection_errors: list[tuple[float, str]] = []  # no answer: the worker died under it
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(number)) for number in range(self.count)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, number: int) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"w-{number}-{i}"
            i += 1
            try:
                answer = await call(self.session, "POST", "/groups", {"name": name, "purposeType": "testing"})
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.connection_errors.append((time.monotonic(), f"{name}: {error!r}"))
                await asyncio.sleep(0.05)
                continue
            if answer.status == 201:
                self.acknowledged.append((time.monotonic(), name))
            else:
                self.refused.append(f"{name}: {answer.status} {answer.body}")


@pytest.mark.timeout(120)
async def test_the_projection_runner_fails_over_when_its_holder_is_killed(store_kind: str, settings: Settings, serve):
    service = serve(settings)
    async with fresh_connections(service.base) as session:
        workers = await ready_workers(session, 2)
        assert set(workers) <= service.children(), f"/ready pids {set(workers)} are not the parent's children {service.children()}"
        holder = await sole_holder(session, set(workers), "projections")
        assert not any("kafka-relay" in ready["holds"] for ready in workers.values()), "a relay without Kafka"

        before = [f"before-{i}" for i in range(20)]
        for name in before:
            await create_group(session, name)

        writers = Writers(session, 3)
        writers.start()
        await asyncio.sleep(0.5)
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()

        # The first write made after the kill that is answered and read back.
        probe = 0
        while True:
            probe += 1
            try:
                await create_group(session, f"probe-{probe}")
                await read_group(session, f"probe-{probe}")
                break
            except (AssertionError, aiohttp.ClientError, asyncio.TimeoutError) as error:
                assert time.monotonic() - killed_at < 15, f"no write succeeded within 15 s of the kill: {error}"
                await asyncio.sleep(0.02)
        fail_over = time.monotonic() - killed_at
        print(f"{store_kind}: kill -9 of the projection runner's holder -> first write read back: {fail_over * 1000:.0f} ms")

        # The parent restarts the dead worker; then again exactly one worker holds the runner.
        deadline = time.monotonic() + 30
        while not (service.children() - set(workers)):
            service.assert_running()
            assert time.monotonic() < deadline, "the parent did not restart the killed worker within 30 s"
            await asyncio.sleep(0.1)
        restarted = await ready_workers(session, 2)
        assert holder not in restarted and len(set(restarted) - set(workers)) == 1, restarted
        await sole_holder(session, set(restarted), "projections")

        await asyncio.sleep(0.5)  # writes through both workers again
        await writers.stop()
        await create_group(session, "after-all")  # answered once the read models reached it: all before it too
        listed = await call(session, "GET", "/groups")

    after_kill = [name for answered_at, name in writers.acknowledged if answered_at > killed_at]
    assert writers.refused == [], f"writes refused around the fail-over: {writers.refused[:5]}"
    assert len(after_kill) >= 10, f"only {len(after_kill)} writes acknowledged after the kill"
    # Only requests in flight on the killed worker may go unanswered: at most one per writer.
    assert len(writers.connection_errors) <= writers.count, writers.connection_errors
    names = [group["name"] for group in listed.body]
    acknowledged = before + [name for _, name in writers.acknowledged] + [f"probe-{probe}", "after-all"]
    assert set(acknowledged) <= set(names), f"lost: {sorted(set(acknowledged) - set(names))[:10]}"
    # Every group the log has (acknowledged or not) is in the read model once, and no other.
    created = [e["data"]["name"] for e in log_events(settings) if e["event_type"] == "group.created"]
    assert sorted(names) == sorted(created), "read model and log disagree"
    assert fail_over < 5, f"fail-over took {fail_over:.1f} s"
    print(
        f"{store_kind}: {len(writers.acknowledged)} writes acknowledged ({len(after_kill)} after the kill),"
        f" {len(writers.connection_errors)} lost with the killed worker's connections"
    )


# -- graceful shutdown --------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_sigterm_drains_a_request_in_flight_and_stops_every_worker(settings: Settings, serve):
    service = serve(settings)
    async with fresh_connections(service.base) as session:
        workers = await ready_workers(session, 2)
    members = service.group_members()
    assert set(workers) | {service.popen.pid} <= members

    event = {"event_type": "slow.posted", "event_source": "mp", "aggregate_type": "order",
             "aggregate_id": "slow-1", "version": 1, "data": {"pad": "x" * 2000}}
    body = json.dumps(event).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body[:1000])
    await writer.drain()
    await asyncio.sleep(0.5)  # the worker has the headers: the request is in flight
    service.popen.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.5)
    assert service.popen.poll() is None, "the parent exited with a request in flight"
    writer.write(body[1000:])
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), 30)
    except TimeoutError:
        raise AssertionError(
            "no answer within 30 s to a request whose body was completed after SIGTERM"
            f" (parent {'running' if service.popen.poll() is None else 'exited'}):\n{service.output()}"
        ) from None
    finally:
        writer.close()

    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 201"), raw[:500]
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert NODE_HEADER.lower().encode() in headers.lower(), headers
    stored = json.loads(payload)
    assert stored["aggregate_id"] == "slow-1"

    returncode = await asyncio.to_thread(service.popen.wait, 30)
    assert returncode == 0, f"the parent exited {returncode}:\n{service.output()}"
    deadline = time.monotonic() + 10
    while [pid for pid in members if running(pid)]:  # children reaped by the parent, or by init after it
        assert time.monotonic() < deadline, f"left running after the parent exited: {[p for p in members if running(p)]}"
        await asyncio.sleep(0.1)
    assert service.group_members() == set(), f"processes of the service still running: {service.group_members()}"
    assert stored["id"] in {e["id"] for e in log_events(settings)}


@pytest.mark.timeout(90)
async def test_sigterm_under_load_answers_every_accepted_write(settings: Settings, serve):
    """Clients keep writing while the service stops: each answer is a 201 (in the log) or no answer at all."""
    service = serve(settings)
    acknowledged: list[str] = []
    refused: list[str] = []
    unanswered = 0
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    sigterm_at = 0.0

    async with fresh_connections(service.base) as session:
        await ready_workers(session, 2)

        async def write(number: int) -> None:
            nonlocal unanswered
            i = 0
            while not (stopping.is_set() and loop.time() > sigterm_at + 1.0):  # on for a second after SIGTERM
                body = {"event_type": "mp.stopping", "event_source": "mp", "aggregate_type": "order",
                        "aggregate_id": f"s-{number}-{i}", "version": 1, "data": {}}
                i += 1
                try:
                    answer = await call(session, "POST", "/events", body)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    unanswered += 1  # not accepted (the workers stopped listening) or cut: not acknowledged
                    if stopping.is_set():
                        return
                    continue
                if answer.status == 201:
                    acknowledged.append(answer.body["id"])
                else:
                    refused.append(f"{answer.status} {answer.body}")

        writers = [asyncio.create_task(write(number)) for number in range(8)]
        await asyncio.sleep(1.0)
        at_sigterm = len(acknowledged)
        service.popen.send_signal(signal.SIGTERM)
        sigterm_at = loop.time()
        stopping.set()
        await asyncio.gather(*writers)

    returncode = await asyncio.to_thread(service.popen.wait, 30)
    assert returncode == 0, f"the parent exited {returncode}:\n{service.output()}"
    assert at_sigterm > 0, "nothing was written before SIGTERM"
    assert refused == [], f"answers other than 201 while stopping: {refused[:5]}"
    stored = {e["id"] for e in log_events(settings)}
    assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged writes are not in the log"
    assert service.group_members() == set(), f"processes of the service still running: {service.group_members()}"
    print(f"{len(acknowledged)} writes acknowledged ({len(acknowledged) - at_sigterm} after SIGTERM), {unanswered} unanswered")


# -- one worker ----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_one_worker_is_a_single_process(settings: Settings, serve):
    service = serve(settings, workers=1)
    async with fresh_connections(service.base) as session:
        nodes = {await create_group(session, f"single-{i}") for i in range(5)}
        nodes |= {await read_group(session, f"single-{i}") for i in range(5)}
        nodes |= await distinct_versions(session, 2, attempts=10)
        ready = await call(session, "GET", "/ready")
    assert len(nodes) == 1 and None not in nodes, nodes
    assert ready.status == 200 and ready.body["status"] == "ready", ready.body
    assert ready.body["nodeInstanceID"] in nodes
    assert ready.body["holds"] == [
        "projections", "reconciler", "downloads", "triggers", "leases", "blobs", "telegram-poller", "telegram-worker",
        "seals",
    ], ready.body  # every singleton job
    assert ready.body["pid"] == service.popen.pid, "CHAINLOOM_WORKERS=1 should answer from the process started"
    assert service.logged_errors() == [], f"the service logged errors:\n{service.output()}"
