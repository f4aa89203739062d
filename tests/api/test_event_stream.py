"""GET /events/stream/{eventType}: live SSE, in log order, many subscribers, cleaned up on disconnect."""

import asyncio
import json

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from tests.api.helpers import call
from tests.conftest import make_settings
from tests.integration.serve_process import ServiceClient
from chainloom.web.app import create_app
from chainloom.web.keys import EVENT_HUB


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sse_keepalive": 0.2})


async def post(client, event_type: str = "order.placed", **fields) -> dict:
    body = {"event_type": event_type, "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o", "version": 1}
    status, event = await call(client, "POST", "/events", body | fields)
    assert status == 201, event
    return event


class Stream:
    """An SSE client: data frames decoded, comments kept apart."""

    def __init__(self, response) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next_event(self, timeout: float = 5.0) -> dict:
        while True:
            line = (await asyncio.wait_for(self.response.content.readline(), timeout)).decode()
            if line.startswith("data: "):
                return json.loads(line[6:])
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line == "":
                raise EOFError("stream ended")


async def open_stream(client, event_type: str = "order.placed") -> Stream:
    response = await client.get(f"/events/stream/{event_type}", headers={"X-Request-ID": "sse-1"})
    assert response.status == 200 and response.headers["X-Request-ID"] == "sse-1"
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    first = await asyncio.wait_for(response.content.readline(), 5)  # subscribed once this arrives
    assert first.decode().startswith(f": connected to event stream for type: {event_type}")
    return Stream(response)


async def eventually(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def streams_ended(client: ServiceClient, event_type: str) -> int:
    """How many streams of ``event_type`` a served service (CHAINLOOM_TEST_WORKERS, logging at INFO) has
    ended, releasing their subscriptions: their lines in its access log, written once the handler returned.
    (Its EventHubs live in the worker processes; in this process the tests count the hub's subscribers.)"""
    path = f"GET /events/stream/{event_type} "
    return sum(1 for r in client.service.log_records() if r.name == "aiohttp.access" and path in r.message)


async def test_new_events_of_the_type_arrive_in_log_order_with_id_and_nid(client):
    before = await post(client)  # before subscribing: not replayed
    stream = await open_stream(client)
    posted = []
    for i in range(5):
        posted.append(await post(client, aggregate_id=f"o{i}", data={"i": i}))
        await post(client, event_type="order.cancelled", aggregate_id=f"o{i}")  # another type: not sent
    received = [await stream.next_event() for _ in posted]
    assert received == posted  # complete, as stored: real id and nid, defaults filled in
    assert [e["nid"] for e in received] == sorted(e["nid"] for e in received)
    assert before["nid"] not in {e["nid"] for e in received}
    stream.response.close()


async def test_ingested_and_internal_events_are_streamed_too(client):
    ingested = await open_stream(client, "hook.received")
    internal = await open_stream(client, "backend.created")
    await call(client, "POST", "/mappings", {"path": "/h", "eventType": "hook.received", "eventSource": "s",
                                             "aggregateType": "a", "aggregateIDField": "id", "version": 1})
    status, answer = await call(client, "POST", "/ingest", {"id": "x-1"}, params={"path": "/h"})
    event = await ingested.next_event()
    assert event["aggregate_id"] == "x-1" and event["nid"] == answer["nid"] and event["id"] == answer["id"]
    assert event["nid"] == answer["raw_nid"] + 1 and event["id"].startswith("evt_")
    status, backend = await call(client, "POST", "/backends", {"name": "b", "baseUrl": "http://b", "type": "ollama"})
    event = await internal.next_event()
    assert event["aggregate_id"] == backend["id"] and event["event_source"] == "chainloom"
    ingested.response.close()
    internal.response.close()


async def test_many_subscribers_each_get_every_event_and_idle_streams_get_pings(service_for, settings):
    """(Served by several workers, the subscribers are spread over them: each gets every event all the same.)"""
    async with service_for(settings, log_level="INFO") as client, ClientSession(base_url=str(client.make_url("/"))) as session:
        streams = await asyncio.gather(*(open_stream(session) for _ in range(40)))
        hub = None if isinstance(client, ServiceClient) else client.server.app[EVENT_HUB]
        if hub is not None:
            assert hub.subscriber_count("order.placed") == 40
        posted = [await post(client, aggregate_id=f"o{i}") for i in range(3)]
        for stream in streams:
            assert [await stream.next_event() for _ in posted] == posted
        await asyncio.sleep(0.5)
        late = await post(client, aggregate_id="late")
        assert await streams[0].next_event() == late
        assert "ping" in streams[0].comments  # keep-alive comments while idle
        for stream in streams:
            stream.response.close()
        if hub is not None:
            await eventually(lambda: hub.subscriber_count() == 0)
        else:
            await eventually(lambda: streams_ended(client, "order.placed") == 40)


async def test_a_client_that_goes_away_is_unsubscribed(service_for, settings):
    async with service_for(settings, log_level="INFO") as client:
        hub = None if isinstance(client, ServiceClient) else client.server.app[EVENT_HUB]
        stream = await open_stream(client)
        other = await open_stream(client, "other.type")
        if hub is not None:
            assert hub.subscriber_count() == 2
        stream.response.close()
        if hub is not None:
            await eventually(lambda: hub.subscriber_count("order.placed") == 0)
            assert hub.subscriber_count("other.type") == 1
        else:  # its stream ended, the other's did not
            await eventually(lambda: streams_ended(client, "order.placed") == 1)
            assert streams_ended(client, "other.type") == 0
        await post(client)  # nobody listens to it any more: nothing breaks
        event = await post(client, "other.type")
        assert await other.next_event() == event
        other.response.close()


@pytest.mark.in_process(
    reason="closes the in-process EventHub (client.server.app[EVENT_HUB]) itself, as the service's shutdown does first"
)
async def test_closing_the_hub_ends_open_streams(tmp_path):
    """What the service does on shutdown (before it waits for its handlers), so it need not wait for clients."""
    async with TestClient(TestServer(create_app(make_settings("sqlite", tmp_path, sse_keepalive=30)))) as client:
        hub = client.server.app[EVENT_HUB]
        stream = await open_stream(client)
        hub.close()
        with pytest.raises(EOFError):
            await stream.next_event(timeout=2)  # ended at once, not at the next keep-alive
        await eventually(lambda: hub.subscriber_count() == 0)
