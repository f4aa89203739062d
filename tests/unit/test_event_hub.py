"""The live fan-out: per-type subscribers, one encoding per event, bounded buffers."""

import asyncio
import json

from chainloom.web.sse import EventHub


def event(nid: int, event_type: str = "a.b") -> dict:
    return {"id": f"e{nid}", "nid": nid, "event_type": event_type, "data": {}}


async def test_subscribers_get_the_frames_of_their_type_in_order():
    hub = EventHub(queue_size=10)
    first, second, other = hub.subscribe("a.b"), hub.subscribe("a.b"), hub.subscribe("c.d")
    hub.publish([event(1), event(2, "c.d"), event(3)])
    for subscription in (first, second):
        frames = await subscription.take(0.1)
        assert [json.loads(f.data.split(b"\ndata: ")[1]) for f in frames] == [event(1), event(3)]
        assert [f.nid for f in frames] == [1, 3]
        assert all(f.data.startswith(b"id: %d\ndata: " % f.nid) and f.data.endswith(b"\n\n") for f in frames)
    assert [json.loads(f.data.split(b"\ndata: ")[1]) for f in await other.take(0.1)] == [event(2, "c.d")]
    assert await first.take(0.01) == []  # nothing new: an empty take after the timeout


async def test_a_subscriber_that_falls_behind_is_marked_and_stops_buffering():
    hub = EventHub(queue_size=2)
    slow = hub.subscribe("a.b")
    hub.publish([event(1), event(2), event(3), event(4)])
    assert slow.overflowed
    assert len(await slow.take(0.1)) == 2  # what fitted is still handed over, then the stream ends


async def test_take_wakes_up_when_an_event_is_published():
    hub = EventHub(queue_size=10)
    subscription = hub.subscribe("a.b")
    waiting = asyncio.create_task(subscription.take(5))
    await asyncio.sleep(0.01)
    hub.publish([event(7)])
    assert len(await asyncio.wait_for(waiting, 1)) == 1


def test_unsubscribing_and_counting():
    hub = EventHub(queue_size=10)
    a, b = hub.subscribe("x"), hub.subscribe("y")
    assert (hub.subscriber_count(), hub.subscriber_count("x")) == (2, 1)
    hub.unsubscribe(a)
    hub.unsubscribe(a)  # twice is harmless
    assert (hub.subscriber_count(), hub.subscriber_count("x")) == (1, 0)
    hub.close()
    assert b.closed
