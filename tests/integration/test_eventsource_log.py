"""The event source on the one log: how external events are stored, rebuilds, restarts."""

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.projections.eventsource import EventSourceProjector
from chainloom.projections.rebuild import rebuild
from tests.api.helpers import call, create_backend
from chainloom.web.app import create_app

EVER = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
MAPPING = {"path": "/h", "eventType": "hook.in", "eventSource": "hooks", "aggregateType": "thing",
           "aggregateIDField": "id", "metadataMapping": {"n": "n"}, "version": 1}


async def fill(client) -> None:
    await create_backend(client, "b-1")
    await call(client, "POST", "/mappings", MAPPING)
    for i in range(3):
        await call(client, "POST", "/ingest", {"id": f"t{i}", "n": i}, params={"path": "/h"})
    await call(client, "POST", "/ingest", {"no_id": True}, params={"path": "/h"})  # raw kept, not mapped
    for i in range(4):
        await call(client, "POST", "/events", {"event_type": "user.created", "aggregate_type": "user",
                                                "aggregate_id": f"u{i}", "version": 1, "id": f"e{i}"})
    await call(client, "POST", "/raw-events", {"path": "/elsewhere", "payload": {"x": 1}})
    await call(client, "DELETE", "/events/type", params={"event_type": "hook.in"} | EVER)
    await call(client, "POST", "/replay", params={"nid": "1", **EVER})  # refused: not a raw event


async def snapshot(client) -> dict:
    status, types = await call(client, "GET", "/events/types", params=EVER)
    events = {}
    for event_type in types:
        status, events[event_type] = await call(client, "GET", "/events/type", params={"event_type": event_type, "limit": "1000"} | EVER)
    status, raws = await call(client, "GET", "/raw-events", params=EVER)
    status, mappings = await call(client, "GET", "/mappings")
    return {"types": types, "events": events, "raw": raws, "mappings": mappings}


async def test_external_events_share_the_log_each_in_a_stream_of_its_own(client, settings):
    await fill(client)
    log = EventLog(settings.event_store_env())
    try:
        notifications = log.recorder.select_notifications(start=1, limit=10_000)
    finally:
        log.close()
    external = [n for n in notifications if n.originator_id.startswith("event:")]
    assert len(external) == 4 and {n.originator_version for n in external} == {1}
    assert len({n.originator_id for n in external}) == 4
    assert [json.loads(n.state)["id"] for n in external] == ["e0", "e1", "e2", "e3"]
    positions = [n.id for n in notifications]
    assert positions == sorted(positions)  # one order for internal and external events
    kinds = {n.originator_id.split(":", 1)[0] for n in notifications}
    assert {"backend", "mapping", "raw_event", "event", "event_deletion"} <= kinds


async def test_rebuilt_read_models_equal_the_live_ones(client, settings):
    await fill(client)
    live = await snapshot(client)
    assert live["events"]["user.created"] and len(live["raw"]) == 5 and "hook.in" not in live["types"]
    await client.close()
    rebuild(settings, ["eventsource"])
    async with TestClient(TestServer(create_app(settings))) as again:
        assert await snapshot(again) == live


async def test_after_a_restart_streams_get_only_new_events(client, settings):
    """Even when a read model starts from position 0 again (a new projector), old events are not streamed."""
    await fill(client)
    await client.close()
    store, factory = open_read_store(settings.read_store_env())
    try:
        with store.transaction() as cursor:
            EventSourceProjector().drop(cursor)
            store.reset(cursor, "eventsource")
    finally:
        factory.close()
    async with TestClient(TestServer(create_app(settings))) as again:
        response = await again.get("/events/stream/user.created")
        await response.content.readline()
        status, new = await call(again, "POST", "/events", {"event_type": "user.created", "aggregate_type": "user",
                                                            "aggregate_id": "late", "version": 1})
        while True:
            line = await asyncio.wait_for(response.content.readline(), 5)
            if line.startswith(b"data: "):
                break
        assert json.loads(line[6:]) == new
        response.close()
