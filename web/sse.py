"""Server-Sent Events: the in-process fan-out of new log events, and the one SSE response writer.

The projection runner hands every batch of newly applied events to
``EventHub.publish`` (on the event loop). Each subscriber has a bounded
buffer; a subscriber that falls that far behind is dropped — its stream ends
with a comment saying so — rather than silently missing events, so a client
knows to reconnect and catch up through ``GET /events/type``. Each event is
encoded once, whatever the number of subscribers.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "Access-Control-Allow-Origin": "*",
    "X-Accel-Buffering": "no",
}
# How often an idle stream checks that its client is still there.
_CHECK_INTERVAL = 1.0


class Subscription:
    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self._frames: deque[bytes] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, frame: bytes) -> None:
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

    async def take(self, timeout: float) -> list[bytes]:
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
    """Subscribers by event type; ``publish`` is the projection runner's listener."""

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}

    def subscribe(self, event_type: str) -> Subscription:
        subscription = Subscription(event_type, self._queue_size)
        self._subscribers.setdefault(event_type, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.topic]

    def subscriber_count(self, event_type: str | None = None) -> int:
        if event_type is not None:
            return len(self._subscribers.get(event_type, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            subscribers = self._subscribers.get(event["event_type"])
            if subscribers:
                frame = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
                for subscription in subscribers:
                    subscription.offer(frame)

    def close(self) -> None:
        """End every stream (service shutdown)."""
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()


async def stream(
    request: web.Request,
    subscription: Subscription,
    greeting: str,
    keepalive: float,
    unsubscribe: Callable[[Subscription], None],
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with an SSE stream of the subscription's frames until the client leaves.

    Starts with a comment (``: <greeting>``), so the headers are flushed at once;
    ``: ping`` comments keep idle connections open. The subscription is
    released however the stream ends.
    """
    response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    try:
        await response.prepare(request)
        await response.write(f": {greeting}\n\n".encode())
        idle = 0.0
        while True:
            frames = await subscription.take(min(keepalive, _CHECK_INTERVAL))
            if frames:
                await response.write(b"".join(frames))
                idle = 0.0
            if subscription.overflowed:
                await response.write(b": too slow: events were dropped; reconnect and catch up\n\n")
                break
            if subscription.closed or request.transport is None or request.transport.is_closing():
                break
            if not frames:
                idle += min(keepalive, _CHECK_INTERVAL)
                if idle >= keepalive:
                    await response.write(b": ping\n\n")
                    idle = 0.0
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-write
    finally:
        unsubscribe(subscription)
    return response
