"""Server-Sent Events: the in-process fan-out of new log events, and the one SSE response writer.

Whatever feeds the log's new events in this process (the projection runner,
or in the distributed mode the live follower of projections/live.py) hands
them to ``EventHub.publish`` on the event loop, with the log position it has
passed. Each subscriber has a bounded buffer; a subscriber that falls that far
behind is dropped — its stream ends with a comment saying so — rather than
silently missing events. Each event is encoded once, whatever the number of
subscribers, as a frame carrying its log position as the SSE ``id``.

A client that reconnects with that id (``Last-Event-ID``) resumes without a
gap or a duplicate. The stream subscribes first, so every event published from
then on is buffered; it waits until the read model that lists events
(``event_index``) has reached the position the hub had passed when it
subscribed — everything before that was published to others and is only in
the index — and catches up from the index in pages; then it forwards the
buffered and live frames past the last id it sent. The wait matters in the
distributed mode, where the hub follows the log directly while the index is
kept by projector workers that may lag behind it.

``GET /log/stream`` (``web/log.py``) subscribes to the whole log instead of a
type (``EventHub.subscribe_all``), taking what its filter accepts, and catches
up from the log itself, which needs no wait: the hub hands out only events
already in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from contextlib import aclosing
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE
from chainloom.domain.uniqueness import BOOKKEEPING_AGGREGATE_TYPES
from chainloom.infra.version import node_instance_id
from chainloom.web.middleware import NODE_HEADER, REQUEST_ID, REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "Access-Control-Allow-Origin": "*",
    "X-Accel-Buffering": "no",
}


async def open_stream(request: web.Request) -> web.StreamResponse:
    """A Server-Sent Events answer, prepared (its headers sent) — with the request id and node the middleware
    would add only after the handler returned."""
    response = web.StreamResponse(
        headers={**SSE_HEADERS, REQUEST_ID_HEADER: request.get(REQUEST_ID, ""), NODE_HEADER: node_instance_id()}
    )
    await response.prepare(request)
    return response
# How often an idle stream checks that its client is still there.
_CHECK_INTERVAL = 1.0
# Events read from the index per catch-up query (independent of the live buffer's size).
CATCH_UP_PAGE = 500
TOO_SLOW = b": too slow: events were dropped; reconnect and catch up\n\n"

Event = dict[str, Any]
# Events of the stream's type after a log position, in log order, at most ``limit`` of them.
ReadAfter = Callable[[int, int], Awaitable[list[Event]]]


class Frame(NamedTuple):
    nid: int
    data: bytes


def encode(event: Event) -> Frame:
    """One SSE frame: ``id: <nid>`` (what a client resumes from) and ``data: <event JSON>``."""
    data = json.dumps(event, separators=(",", ":")).encode()
    return Frame(event["nid"], b"id: %d\ndata: %s\n\n" % (event["nid"], data))


def is_public(event: Event) -> bool:
    """Chainloom's bookkeeping (uniqueness claims) stays out of the public event API, streams included."""
    bookkeeping = event.get("aggregate_type") in BOOKKEEPING_AGGREGATE_TYPES
    return not (bookkeeping and event.get("event_source") == INTERNAL_EVENT_SOURCE)


class Subscription:
    def __init__(self, topic: str | None, limit: int, after: int, accepts: Callable[[Event], bool] = is_public) -> None:
        self.topic = topic  # None: every event of the log (``EventHub.subscribe_all``)
        self.accepts = accepts  # which of its topic's events it takes (live and caught up)
        # Every event of the topic past this log position is offered here; those before it are in the
        # log (and, once the read models have reached it, in the event index) but were not offered.
        self.after = after
        self._frames: deque[Frame] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, frame: Frame) -> None:
        if self.closed or self.overflowed:
            return
        if len(self._frames) >= self._limit:
            self.overflowed = True
        else:
            self._frames.append(frame)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self, timeout: float) -> list[Frame]:
        """Every frame waiting, after at most ``timeout`` seconds (none if nothing came)."""
        if not self._frames and not (self.closed or self.overflowed):
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        frames = list(self._frames)
        self._frames.clear()
        self._ready.clear()
        return frames


class EventHub:
    """Subscribers by event type, and to the whole log; ``publish`` is the listener of whatever follows the
    log here."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()  # GET /log/stream: each takes what its filter accepts
        # The log position up to which events were handed to ``publish`` (or passed over while
        # nobody listened): a new subscription gets every event after it.
        self.position = 0

    def subscribe(self, event_type: str) -> Subscription:
        subscription = Subscription(event_type, self._queue_size, self.position)
        self._subscribers.setdefault(event_type, set()).add(subscription)
        return subscription

    def subscribe_all(self, accepts: Callable[[Event], bool]) -> Subscription:
        """Every event of the log that ``accepts`` takes, bookkeeping included (no topic: no event type can
        be mistaken for this subscription)."""
        subscription = Subscription(None, self._queue_size, self.position, accepts)
        self._everything.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.topic is None:
            self._everything.discard(subscription)
            return
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.topic]

    def subscriber_count(self, event_type: str | None = None) -> int:
        """(Also called from the live follower's worker thread: copies before iterating.)"""
        if event_type is not None:
            return len(self._subscribers.get(event_type, ()))
        return sum(len(s) for s in list(self._subscribers.values())) + len(self._everything)

    def publish(self, events: Iterable[Event], position: int | None = None) -> None:
        """Offer new events of the log, in log order; ``position``: how far the publisher has read
        (past the last event when it passed over events nobody was subscribed to)."""
        for event in events:
            self.position = max(self.position, event["nid"])
            frame: Frame | None = None
            subscribers = self._subscribers.get(event["event_type"])
            if subscribers and is_public(event):
                frame = encode(event)
                for subscription in subscribers:
                    subscription.offer(frame)
            for subscription in self._everything:
                if subscription.accepts(event):
                    frame = frame or encode(event)
                    subscription.offer(frame)
        if position is not None:
            self.position = max(self.position, position)

    def close(self) -> None:
        """End every stream (service shutdown)."""
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()
        for subscription in self._everything:
            subscription.close()


async def subscribe_from(
    hub: EventHub,
    event_type: str,
    after: int | None,
    index_reached: Callable[[int], Awaitable[None]],
    head: Callable[[], Awaitable[int]] | None = None,
) -> Subscription:
    """Subscribe; when resuming (``after`` is a position), first make sure the event index has reached
    every event the hub handed out before this subscription (``index_reached(position)`` returns once
    it has, or raises), so a catch-up from the index and the live frames leave no gap between them.

    A new stream (no ``after``) gets the events written after it was asked for: the hub may not have
    been handed all that came before yet (a worker's hub follows writes made through other workers a
    moment later), so ``head()`` — the log's head now — is its floor too."""
    floor = await head() if head is not None and after is None else 0
    subscription = hub.subscribe(event_type)
    subscription.after = max(subscription.after, floor)
    if after is not None:
        try:
            await index_reached(subscription.after)
        except BaseException:
            hub.unsubscribe(subscription)
            raise
    return subscription


@dataclass(frozen=True)
class Resume:
    """Where a reconnecting client left off, and how to read what it missed."""

    after: int  # the Last-Event-ID: the position of the last event the client received
    read_after: ReadAfter
    page_size: int | None = None  # CATCH_UP_PAGE when None


async def follow(
    subscription: Subscription, resume: Resume | None, interval: float
) -> AsyncGenerator[bytes, None]:
    """The stream's body after its greeting: the missed events (``resume``), then live ones, each once,
    in log order. Yields ``b""`` after ``interval`` seconds without anything new (time to ping or to
    check the client is still there); ends when the subscription is closed or falls too far behind
    (the last chunk then being the "too slow" comment)."""
    last = subscription.after  # live frames are those after it (a resume's catch-up starts earlier)
    if resume is not None:
        last = resume.after
        page_size = resume.page_size or CATCH_UP_PAGE
        while True:
            events = await resume.read_after(last, page_size)
            chunk = b"".join(encode(event).data for event in events if subscription.accepts(event))
            if chunk:
                yield chunk
            if subscription.overflowed:
                # Live frames were dropped while catching up: end; the client resumes from what it got.
                yield TOO_SLOW
                return
            if events:
                last = events[-1]["nid"]
            if len(events) < page_size or subscription.closed:
                break
    while True:
        frames = await subscription.take(interval)
        fresh = [frame for frame in frames if frame.nid > last]
        if fresh:
            last = fresh[-1].nid
            yield b"".join(frame.data for frame in fresh)
        if subscription.overflowed:
            yield TOO_SLOW
            return
        if subscription.closed:
            return
        if not frames:
            yield b""


async def stream(
    request: web.Request,
    subscription: Subscription,
    greeting: str,
    keepalive: float,
    unsubscribe: Callable[[Subscription], None],
    headers: Mapping[str, str] | None = None,
    resume: Resume | None = None,
) -> web.StreamResponse:
    """Answer with an SSE stream of the subscription's frames until the client leaves.

    Starts with a comment (``: <greeting>``), so the headers are flushed at once,
    then what ``resume`` says the client missed; ``: ping`` comments keep idle
    connections open. The subscription is released however the stream ends.
    A client that goes away is not an error: the stream just ends.
    """
    response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    interval = min(keepalive, _CHECK_INTERVAL)
    try:
        await response.prepare(request)
        await response.write(f": {greeting}\n\n".encode())
        idle = 0.0
        async with aclosing(follow(subscription, resume, interval)) as chunks:
            async for chunk in chunks:
                if chunk:
                    await response.write(chunk)
                    idle = 0.0
                    continue
                if request.transport is None or request.transport.is_closing():
                    break
                idle += interval
                if idle >= keepalive:
                    await response.write(b": ping\n\n")
                    idle = 0.0
    except ConnectionError:
        logger.debug("SSE client of %s went away", subscription.topic or "the log")
    finally:
        unsubscribe(subscription)
    return response
