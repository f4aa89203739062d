"""Trigger dispatch is exactly once per (event, function) across a kill -9 of the dispatching process in
the middle of a burst (``chainloom serve`` with two workers; the other worker takes the dispatch over)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import aiohttp
import pytest

from chainloom.infra.settings import Settings
from tests.integration.serve_process import call, fresh_connections, log_events, ready_workers, sole_holder

BURST = 240
# Each execution takes a few milliseconds, so the dispatcher has a backlog when it is killed.
SCRIPT = (
    "function seen(event) { var t = Date.now(); while (Date.now() - t < 8) {}"
    " sendEvent('burst.seen', {n: event.data.n}); return {n: event.data.n}; }"
)


async def _post(session: aiohttp.ClientSession, n: int) -> bool:
    event = {"event_type": "burst", "event_source": "tests", "aggregate_type": "b", "aggregate_id": str(n), "version": 1, "data": {"n": n}}
    try:
        answer = await call(session, "POST", "/events", event)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False  # in flight on the killed worker: it may or may not be in the log
    assert answer.status == 201, answer.body
    return True


@pytest.mark.timeout(150)
async def test_dispatch_is_exactly_once_across_a_kill_of_its_holder(store_kind: str, settings: Settings, serve):
    service = serve(settings, workers=2, CHAINLOOM_TRIGGER_WAIT="0", CHAINLOOM_SANDBOX_WORKERS="2")
    async with fresh_connections(service.base) as session:
        workers = await ready_workers(session, 2)
        holder = await sole_holder(session, set(workers), "triggers")
        answer = await call(session, "POST", "/functions", {"name": "seen", "scriptType": "goja", "script": SCRIPT})
        assert answer.status == 201, answer.body
        trigger = {"name": "on-burst", "listenFor": {"type": "burst"}, "type": "function", "function": "seen"}
        assert (await call(session, "POST", "/event-triggers", trigger)).status == 201

        queue = iter(range(BURST))

        async def writer() -> None:
            for n in queue:
                await _post(session, n)

        writers = [asyncio.create_task(writer()) for _ in range(6)]
        # Kill the holder once it has dispatched part of the burst (and has a backlog).
        deadline = time.monotonic() + 30
        while sum(1 for e in log_events(settings) if e["event_type"] == "trigger.fired") < 20:
            assert time.monotonic() < deadline, "nothing was dispatched within 30 s"
            await asyncio.sleep(0.05)
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.gather(*writers)

        # Every event of the burst in the log is dispatched once, by the worker that took over.
        sources: list[dict] = []
        while True:
            events = log_events(settings)
            sources = [e for e in events if e["event_type"] == "burst"]
            fired = [e for e in events if e["event_type"] == "trigger.fired"]
            if len(fired) >= len(sources) or time.monotonic() - killed_at > 60:
                break
            await asyncio.sleep(0.2)
        print(f"{store_kind}: {len(sources)} events dispatched {time.monotonic() - killed_at:.1f} s after the kill")

    assert len(sources) >= BURST - 6, f"only {len(sources)} of the burst were appended"
    per_event = Counter(e["data"]["eventNid"] for e in fired)
    assert sorted(per_event) == sorted(e["nid"] for e in sources), "an event was not dispatched, or another was"
    assert set(per_event.values()) == {1}, [nid for nid, count in per_event.items() if count > 1]
    assert all(e["data"]["outcome"] == "succeeded" for e in fired), [e["data"] for e in fired if e["data"]["outcome"] != "succeeded"][:3]
    emitted = Counter(e["data"]["n"] for e in events if e["event_type"] == "burst.seen")
    assert emitted == Counter(e["data"]["n"] for e in sources), "an emitted event is missing or doubled"
    # each record names exactly the event its execution emitted
    by_id = {e["id"]: e for e in events if e["event_type"] == "burst.seen"}
    for record in fired:
        [emitted_id] = record["data"]["emitted"]
        assert by_id[emitted_id]["data"]["n"] == record["data"]["result"]["n"]
