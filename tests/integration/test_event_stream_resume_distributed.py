"""Resuming an SSE stream in the distributed mode, without Kafka: the pieces the API runs there.

With ``CHAINLOOM_PROJECTIONS=kafka`` the hub is fed by the API's own follower
of the log (``LiveLog``) while the event index is kept by projector workers
that may lag behind it. A worker is stood in for by applying the real event
index projector up to a chosen position, as a worker does; the API sees its
progress through ``TrackedProjections``, as it does in that mode. A resuming
stream must wait for the index to reach what the hub had already handed out,
or the events in between are lost.
"""

import asyncio
import contextlib
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent

from chainloom.infra.blocking import BlockingPool
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.projections.base import create_tables
from chainloom.projections.eventsource import EventSourceProjector
from chainloom.projections.live import LiveLog
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner
from chainloom.projections.tracked import TrackedProjections
from chainloom.queries.eventsource import EventSourceQueries
from tests.api.helpers import assert_error, call
from tests.api.test_event_stream_resume import open_frames, post
from chainloom.web.app import create_app
from chainloom.web.keys import EVENT_HUB, SETTINGS
from chainloom.web.sse import EventHub, Resume, follow, subscribe_from

TYPE = "order.placed"


def append(log: EventLog, name: str, event_type: str = TYPE) -> int:
    envelope = {"id": name, "created_at": "2025-05-01T10:00:00Z", "event_type": event_type, "event_source": "shop",
                "aggregate_type": "order", "aggregate_id": name, "version": 1, "data": {}, "metadata": {}}
    return log.insert([StoredEvent(f"event:{name}", 1, event_type, json.dumps(envelope).encode())])[0]


class Distributed:
    """The log, the read store, a lagging index worker, and the API's live follower and tracked positions."""

    def __init__(self, settings) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(settings.event_store_env())
        self.store, self._factory = open_read_store(settings.read_store_env())
        self.index = EventSourceProjector()
        with self.store.transaction() as cursor:
            create_tables(self.store, cursor, [self.index])
        self.pool = BlockingPool(4)
        self.hub = EventHub(queue_size=100)
        self.live = LiveLog(self.log, self.pool.run, self.hub.publish, self.hub.subscriber_count, poll=0.02)
        self.tracked = TrackedProjections(self.store, [self.index], self.pool.run)
        self.queries = EventSourceQueries(self.store, self.pool.run)

    def project_to(self, position: int) -> None:
        """What a projector worker does with the events it consumed: apply and track them in one transaction."""
        with self.store.transaction() as cursor:
            done = self.store.positions(cursor, [self.index.name])[self.index.name]
            events = [e for e in self.log.read(after=done, limit=10_000) if e["nid"] <= position]
            for event in events:
                self.index.apply(cursor, event)
            if events:
                self.store.track(cursor, self.index.name, events[-1]["nid"])

    def index_reached(self, position: int):
        return self.tracked.wait_for(position, 5.0, [self.index.name])

    def resume(self, after: int, page_size: int = 2) -> Resume:
        return Resume(after, lambda nid, limit: self.queries.events_of_type_after(TYPE, nid, limit), page_size)

    async def close(self) -> None:
        await self.live.stop()
        await self.tracked.stop()
        self.pool.close()
        self.log.close()
        self._factory.close()


@pytest.fixture
async def world(settings):
    world = Distributed(settings)
    await world.tracked.start()
    world.live.start()
    yield world
    await world.close()


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def collect(chunks, count: int, timeout: float = 5.0) -> list[int]:
    """The ids of the next ``count`` frames the stream body yields."""
    ids: list[int] = []
    async with asyncio.timeout(timeout):
        while len(ids) < count:
            chunk = await anext(chunks)
            ids += [int(line[4:]) for line in chunk.decode().splitlines() if line.startswith("id: ")]
    return ids


async def test_a_resuming_stream_waits_for_the_lagging_index_then_misses_nothing(world):
    watcher = world.hub.subscribe(TYPE)  # someone is watching: the live follower reads the log
    nids = [append(world.log, f"e{i}") for i in range(6)]
    world.live.poke()
    await until(lambda: world.hub.position >= nids[-1])  # handed out live; the index has none of them yet

    subscribing = asyncio.create_task(subscribe_from(world.hub, TYPE, nids[1], world.index_reached))
    await asyncio.sleep(0.2)
    assert not subscribing.done()  # waits for the index to reach what the hub handed out
    await world.pool.run(world.project_to, nids[-1])
    subscription = await asyncio.wait_for(subscribing, 5)

    chunks = follow(subscription, world.resume(nids[1]), interval=0.05)
    assert await collect(chunks, 4) == nids[2:]  # from the index, in pages of 2
    later = [append(world.log, f"l{i}") for i in range(3)]
    world.live.poke()
    assert await collect(chunks, 3) == later  # then live, nothing twice
    await chunks.aclose()
    world.hub.unsubscribe(subscription)
    world.hub.unsubscribe(watcher)


async def test_without_the_wait_the_events_the_index_lacks_would_be_lost(world):
    """Why the wait is there: the hub handed these out before the subscription, the index does not have them yet."""
    watcher = world.hub.subscribe(TYPE)
    nids = [append(world.log, f"e{i}") for i in range(4)]
    world.live.poke()
    await until(lambda: world.hub.position >= nids[-1])

    async def no_wait(position: int) -> None:
        return None

    subscription = await subscribe_from(world.hub, TYPE, nids[0], no_wait)
    chunks = follow(subscription, world.resume(nids[0]), interval=0.05)
    later = append(world.log, "later")
    world.live.poke()
    assert await collect(chunks, 1) == [later]  # nids[1:] are missing
    await chunks.aclose()
    world.hub.unsubscribe(subscription)
    world.hub.unsubscribe(watcher)


async def test_a_subscriber_arriving_while_the_follower_passes_events_over_still_gets_them(settings):
    """The follower skips the log while nobody listens; one who subscribes meanwhile must not lose those events."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    pool = BlockingPool(2)
    answers = [0]  # the step finds nobody subscribed; by the time it is done, somebody is
    received: list[tuple[list[int], int]] = []
    live = LiveLog(
        log, pool.run, lambda events, position: received.append(([e["nid"] for e in events], position)),
        lambda: answers.pop(0) if answers else 1, poll=30,
    )
    try:
        live.start()
        await until(lambda: received)  # the first step: from the head on
        nid = append(log, "skipped")
        live.poke()
        await until(lambda: any(events for events, _ in received))
        assert received[1:] == [([nid], nid)]
    finally:
        await live.stop()
        pool.close()
        log.close()


# -- end to end: the service in the distributed mode, a projector worker stood in for in this process ----------


class LaggingWorker:
    """A projector worker (``chainloom project`` reads Kafka; this reads the log itself — the same projectors
    and tracked positions), which can be paused to lag behind the API's live follower."""

    def __init__(self, settings) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(settings.event_store_env())
        self.store, self._factory = open_read_store(settings.read_store_env())
        self.runner = ProjectionRunner(self.log, self.store, all_projectors())
        self.runner.setup()
        self.running = asyncio.Event()
        self.running.set()
        self._catching_up: asyncio.Future | None = None

    async def run(self) -> None:
        while True:
            await self.running.wait()
            # Shielded: cancelling ``run`` cannot stop the thread, and ``close`` must wait for it (closing a
            # SQLite connection another thread reads from crashes the process).
            self._catching_up = asyncio.ensure_future(asyncio.to_thread(self.runner.catch_up))
            await asyncio.shield(self._catching_up)
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._catching_up is not None:
            await asyncio.wait([self._catching_up])
        self.log.close()
        self._factory.close()


@pytest.fixture
async def distributed(settings):
    settings = settings.model_copy(update={"projections": "kafka", "kafka_bootstrap": "", "sse_keepalive": 0.2})
    worker = LaggingWorker(settings)
    working = asyncio.create_task(worker.run())
    try:
        async with TestClient(TestServer(create_app(settings))) as client:
            yield client, worker
    finally:
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
        await worker.close()


async def test_the_service_resumes_a_stream_once_the_workers_index_has_caught_up(distributed):
    client, worker = distributed
    watcher = await open_frames(client)  # keeps the API's live follower reading
    stream = await open_frames(client)
    posted = [(await post(client, aggregate_id=f"o{i}")) for i in range(4)]
    assert await stream.events(2) == posted[:2]
    assert await watcher.events(4) == posted
    stream.close()

    worker.running.clear()  # the workers lag behind: what other processes write now is not in the index yet
    await asyncio.sleep(0.1)
    direct = [append(worker.log, f"d{i}") for i in range(5)]  # written by another API process
    assert [e["nid"] for e in await watcher.events(5)] == direct  # handed out live

    resuming = asyncio.create_task(open_frames(client, headers={"Last-Event-ID": str(posted[1]["nid"])}))
    await asyncio.sleep(0.4)
    assert not resuming.done()  # waiting for the index (within CHAINLOOM_PROJECTION_TIMEOUT)
    worker.running.set()
    resumed = await asyncio.wait_for(resuming, 10)
    received = await resumed.events(2 + 5)
    assert [e["nid"] for e in received] == [e["nid"] for e in posted[2:]] + direct
    live = await post(client, aggregate_id="live")
    assert await resumed.events(1) == [live]
    await resumed.quiet(0.3)
    resumed.close()
    watcher.close()


async def test_a_resume_the_index_cannot_serve_in_time_is_refused_with_503(distributed, settings):
    client, worker = distributed
    watcher = await open_frames(client)
    worker.running.clear()
    await asyncio.sleep(0.1)
    direct = append(worker.log, "d")
    assert [e["nid"] for e in await watcher.events(1)] == [direct]
    client.server.app[SETTINGS].projection_timeout = 0.3
    status, body = await call(client, "GET", f"/events/stream/{TYPE}", headers={"Last-Event-ID": "0"})
    assert_error(status, body, 503, "did not reach position")
    assert client.server.app[EVENT_HUB].subscriber_count() == 1  # the refused stream left nothing subscribed
    worker.running.set()
    watcher.close()
