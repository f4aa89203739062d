"""Live events when projections run elsewhere (distributed mode): a follower of the log for SSE only."""

import asyncio
import json

import pytest
from eventsourcing.persistence import StoredEvent

from chainloom.infra.blocking import BlockingPool
from chainloom.infra.eventlog import EventLog
from chainloom.projections.live import LiveLog


def append(log: EventLog, name: str) -> int:
    envelope = {"id": name, "created_at": "2025-05-01T10:00:00Z", "event_type": "t", "event_source": "s",
                "aggregate_type": "a", "aggregate_id": name, "version": 1, "data": {}, "metadata": {}}
    return log.insert([StoredEvent(f"event:{name}", 1, "t", json.dumps(envelope).encode())])[0]


@pytest.fixture
async def log(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    yield log
    log.close()


async def test_new_events_reach_the_listener_and_old_or_unwatched_ones_do_not(log):
    pool = BlockingPool(2)
    received: list[dict] = []
    subscribers = 1
    append(log, "before-start")
    live = LiveLog(log, pool.run, lambda events, position: received.extend(events), lambda: subscribers, poll=0.02)
    live.start()
    try:
        await asyncio.sleep(0.1)
        first = append(log, "first")  # written by "another process": found by polling
        await asyncio.wait_for(_until(lambda: received), 5)
        assert [e["nid"] for e in received] == [first]
        subscribers = 0
        append(log, "nobody-listens")
        await asyncio.sleep(0.1)
        subscribers = 1
        await asyncio.sleep(0.1)
        second = append(log, "second")
        live.poke()
        await asyncio.wait_for(_until(lambda: len(received) == 2), 5)
        assert [e["id"] for e in received] == ["first", "second"] and received[1]["nid"] == second
    finally:
        await live.stop()
        pool.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
