"""GET /events/stream/{eventType}: frames carry ``id: <nid>``; a client reconnecting with ``Last-Event-ID``
(header, or ``lastEventId``/``last_event_id``) gets every event of its type after it, then live ones —
no gap, no duplicate — however many were written meanwhile and while it reconnects."""

import asyncio
import json

import pytest

from chainloom.web import sse
from tests.api.helpers import assert_error, call
from tests.integration.serve_process import ServiceClient
from chainloom.web.keys import EVENT_HUB, EVENTSOURCE_QUERIES


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sse_keepalive": 0.2})


@pytest.fixture
async def small_buffer_client(settings, service_for):
    """A service whose subscribers buffer at most 5 live events."""
    async with service_for(settings.model_copy(update={"sse_queue_size": 5})) as client:
        yield client


async def post(client, event_type: str = "order.placed", **fields) -> dict:
    body = {"event_type": event_type, "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o", "version": 1}
    status, event = await call(client, "POST", "/events", body | fields)
    assert status == 201, event
    return event


class Frames:
    """An SSE client that keeps each frame's ``id`` with its event."""

    def __init__(self, response) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> tuple[int, dict]:
        """The next frame's id and event, within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await self._next()

    async def _next(self) -> tuple[int, dict]:
        fields: dict[str, str] = {}
        while True:
            line = (await self.response.content.readline()).decode()
            if line == "":
                raise EOFError("stream ended")
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line == "":
                if "data" in fields:
                    return int(fields["id"]), json.loads(fields["data"])
            else:
                name, _, value = line.partition(": ")
                fields[name] = value

    async def events(self, count: int, timeout: float = 10.0) -> list[dict]:
        received = []
        for _ in range(count):
            frame_id, event = await self.next(timeout)
            assert frame_id == event["nid"]
            received.append(event)
        return received

    async def quiet(self, seconds: float = 0.5) -> None:
        """Nothing more arrives for a while (pings aside)."""
        with pytest.raises(TimeoutError):
            await self.next(timeout=seconds)

    def close(self) -> None:
        self.response.close()


async def open_frames(client, event_type: str = "order.placed", **kwargs) -> Frames:
    response = await client.get(f"/events/stream/{event_type}", **kwargs)
    assert response.status == 200, await response.text()
    first = await asyncio.wait_for(response.content.readline(), 5)  # subscribed once this arrives
    assert first.decode().startswith(f": connected to event stream for type: {event_type}")
    return Frames(response)


async def test_each_frame_carries_the_events_nid_as_its_id(client):
    stream = await open_frames(client)
    posted = [await post(client, aggregate_id=f"o{i}") for i in range(3)]
    line = await asyncio.wait_for(stream.response.content.readline(), 5)
    while line == b"\n" or line.startswith(b":"):  # the end of the greeting comment; keep-alive comments
        line = await asyncio.wait_for(stream.response.content.readline(), 5)
    assert line == f"id: {posted[0]['nid']}\n".encode()  # the id first, then the data, then a blank line
    assert (await stream.response.content.readline()).startswith(b"data: {")
    assert await stream.response.content.readline() == b"\n"
    assert await stream.events(2) == posted[1:]
    stream.close()


@pytest.mark.parametrize("how", ["header", "lastEventId", "last_event_id"])
async def test_a_client_resumes_after_a_write_burst_without_gap_or_duplicate(client, how):
    stream = await open_frames(client)
    first = [await post(client, aggregate_id=f"a{i}") for i in range(4)]
    seen = await stream.events(2)
    assert seen == first[:2]
    stream.close()
    last_id = seen[-1]["nid"]

    # Written while the client is away: of its type and of others.
    burst = []
    for i in range(30):
        burst.append(await post(client, aggregate_id=f"b{i}"))
        await post(client, event_type="order.cancelled", aggregate_id=f"b{i}")

    # Still written while it reconnects and catches up.
    async def keep_writing() -> list[dict]:
        written = []
        for i in range(20):
            written.append(await post(client, aggregate_id=f"c{i}"))
            await asyncio.sleep(0.005)
        return written

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.02)
    if how == "header":
        resumed = await open_frames(client, headers={"Last-Event-ID": str(last_id)})
    else:
        resumed = await open_frames(client, params={how: str(last_id)})
    during = await writer
    expected = first[2:] + burst + during
    received = await resumed.events(len(expected))
    assert [e["nid"] for e in received] == [e["nid"] for e in expected]  # in nid order, none missing or repeated
    assert received == expected  # as stored
    await resumed.quiet(0.4)
    live = await post(client, aggregate_id="live")
    assert await resumed.events(1) == [live]
    resumed.close()


@pytest.mark.in_process(reason="makes the catch-up's pages short by patching sse.CATCH_UP_PAGE in this process")
async def test_a_catch_up_longer_than_the_live_buffer_is_paged(small_buffer_client, monkeypatch):
    client = small_buffer_client
    monkeypatch.setattr(sse, "CATCH_UP_PAGE", 7)  # several pages, each longer than the buffer (5)
    posted = [await post(client, aggregate_id=f"o{i}") for i in range(40)]
    stream = await open_frames(client, headers={"Last-Event-ID": "0"})
    assert await stream.events(40) == posted
    live = [await post(client, aggregate_id=f"l{i}") for i in range(3)]
    assert await stream.events(3) == live
    await stream.quiet(0.3)
    stream.close()


async def test_resuming_from_the_last_event_or_beyond_sends_only_live_events(client):
    posted = [await post(client, aggregate_id=f"o{i}") for i in range(3)]
    at_end = await open_frames(client, headers={"Last-Event-ID": str(posted[-1]["nid"])})
    beyond = await open_frames(client, params={"lastEventId": str(posted[-1]["nid"] + 1000)})
    await at_end.quiet(0.3)
    live = await post(client, aggregate_id="live")
    assert await at_end.events(1) == [live]
    await beyond.quiet(0.3)  # a position past the head: events up to it count as received
    at_end.close()
    beyond.close()


@pytest.mark.in_process(
    reason="holds the catch-up query of the in-process app (client.server.app[EVENTSOURCE_QUERIES]) while live"
    " writes pile up, and patches sse.CATCH_UP_PAGE in this process"
)
async def test_a_live_buffer_overflowing_during_the_catch_up_ends_the_stream_and_a_reconnect_completes_it(
    small_buffer_client, monkeypatch
):
    client = small_buffer_client
    posted = [await post(client, aggregate_id=f"o{i}") for i in range(12)]
    entered = asyncio.Event()
    release = asyncio.Event()
    queries = client.server.app[EVENTSOURCE_QUERIES]
    original = queries.events_of_type_after

    async def slow_catch_up(event_type, after, limit):  # the real query, held until live writes pile up
        entered.set()
        await release.wait()
        return await original(event_type, after, limit)

    monkeypatch.setattr(queries, "events_of_type_after", slow_catch_up)
    monkeypatch.setattr(sse, "CATCH_UP_PAGE", 4)
    opening = asyncio.create_task(open_frames(client, headers={"Last-Event-ID": "0"}))
    await asyncio.wait_for(entered.wait(), 5)
    piled = [await post(client, aggregate_id=f"p{i}") for i in range(8)]  # more than the buffer (5)
    release.set()
    stream = await opening
    received = await stream.events(4)  # the first page went out, then the stream ended
    assert received == posted[:4]
    with pytest.raises(EOFError):
        await stream.next()
    assert any("too slow" in comment for comment in stream.comments)
    monkeypatch.setattr(queries, "events_of_type_after", original)
    again = await open_frames(client, headers={"Last-Event-ID": str(received[-1]["nid"])})
    assert await again.events(16) == posted[4:] + piled
    await again.quiet(0.3)
    again.close()


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"headers": {"Last-Event-ID": "abc"}}, "Last-Event-ID"),
        ({"headers": {"Last-Event-ID": "-1"}}, "Last-Event-ID"),
        ({"headers": {"Last-Event-ID": "1.5"}}, "Last-Event-ID"),
        ({"headers": {"Last-Event-ID": "99999999999999999999"}}, "Last-Event-ID"),
        ({"params": {"lastEventId": "x1"}}, "lastEventId"),
        ({"params": {"last_event_id": " 3"}}, "last_event_id"),
    ],
)
async def test_an_invalid_last_event_id_is_refused(client, kwargs, param):
    status, body = await call(client, "GET", "/events/stream/order.placed", **kwargs)
    assert_error(status, body, 422, "non-negative integer")
    assert body["error"]["param"] == param
    if not isinstance(client, ServiceClient):  # (a served service's hubs are in its worker processes)
        assert client.server.app[EVENT_HUB].subscriber_count() == 0  # nothing left subscribed
