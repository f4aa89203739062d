"""Resuming from the hub's side: how far it has been fed, subscribing from a position, the catch-up then live."""

import asyncio

import pytest

from chainloom.web.sse import TOO_SLOW, EventHub, Resume, follow, subscribe_from


def event(nid: int, event_type: str = "a.b") -> dict:
    return {"id": f"e{nid}", "nid": nid, "event_type": event_type, "event_source": "s", "aggregate_type": "a", "data": {}}


def ids(chunk: bytes) -> list[int]:
    return [int(line[4:]) for line in chunk.decode().splitlines() if line.startswith("id: ")]


def test_the_hub_knows_how_far_it_was_fed_and_a_subscription_starts_there():
    hub = EventHub(queue_size=10)
    hub.publish([event(3), event(5, "c.d")])
    assert hub.position == 5  # every event counts, whatever its type
    hub.publish([], position=9)  # passed over while nobody listened
    assert hub.subscribe("a.b").after == 9
    hub.publish([event(2)])  # never backwards
    assert hub.position == 9


async def test_uniqueness_claims_are_not_offered():
    hub = EventHub(queue_size=10)
    subscription = hub.subscribe("unique_value.claimed")
    claim = event(1, "unique_value.claimed") | {"aggregate_type": "unique_value", "event_source": "chainloom"}
    hub.publish([claim])
    assert hub.position == 1
    assert await subscription.take(0.01) == []


async def test_subscribing_from_a_position_waits_for_the_index_and_unsubscribes_when_that_fails():
    hub = EventHub(queue_size=10)
    hub.publish([], position=7)
    waited: list[int] = []

    async def reached(position: int) -> None:
        waited.append(position)

    await subscribe_from(hub, "a.b", 3, reached)
    assert waited == [7]  # the hub's position, not the client's
    await subscribe_from(hub, "a.b", None, reached)
    assert waited == [7]  # no resume: nothing to wait for

    async def behind(position: int) -> None:
        raise TimeoutError("the index is behind")

    with pytest.raises(TimeoutError):
        await subscribe_from(hub, "a.b", 3, behind)
    assert hub.subscriber_count("a.b") == 2


async def test_the_catch_up_comes_in_pages_then_live_frames_it_already_sent_are_left_out():
    hub = EventHub(queue_size=3)
    subscription = hub.subscribe("a.b")
    stored = [event(n) for n in range(1, 11)]
    pages: list[tuple[int, int]] = []

    async def read_after(nid: int, limit: int) -> list[dict]:
        pages.append((nid, limit))
        if nid == 6:
            hub.publish([event(11)])  # written while the catch-up runs (the index may have it too)
            stored.append(event(11))
        return [e for e in stored if e["nid"] > nid][:limit]

    chunks = follow(subscription, Resume(2, read_after, page_size=4), interval=0.01)
    received = []
    while len(received) < 9:
        received += ids(await anext(chunks))
    assert received == list(range(3, 12))
    assert pages == [(2, 4), (6, 4), (10, 4)]
    hub.publish([event(11), event(12)])  # 11 again (sent from the index already), then 12
    chunk = await anext(chunks)
    assert ids(chunk) == [12]
    await chunks.aclose()


async def test_a_live_buffer_that_overflows_during_the_catch_up_ends_the_stream():
    hub = EventHub(queue_size=2)
    subscription = hub.subscribe("a.b")

    async def read_after(nid: int, limit: int) -> list[dict]:
        hub.publish([event(100 + nid), event(101 + nid), event(102 + nid)])  # more than the buffer
        return [event(nid + 1)]

    chunks = [chunk async for chunk in follow(subscription, Resume(0, read_after, page_size=1), interval=0.01)]
    assert [ids(c) for c in chunks] == [[1], []] and chunks[-1] == TOO_SLOW


async def test_a_closed_subscription_ends_the_body():
    hub = EventHub(queue_size=2)
    subscription = hub.subscribe("a.b")
    chunks = follow(subscription, None, interval=5)
    waiting = asyncio.create_task(anext(chunks))
    await asyncio.sleep(0.01)
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)
