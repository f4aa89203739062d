"""Event source figures: /ingest and POST /events with 512-byte payloads; SSE delivery latency.

    .venv/bin/python bench/bench_events.py                  # SQLite only
    bench/run bench/bench_events.py                         # SQLite and a durable throwaway PostgreSQL

The service runs as its own process (as users run it); the load and the SSE
subscribers live in this process, over loopback HTTP, so both share the
machine's cores. SSE latency is measured from just before an event is POSTed
to when each subscriber has read its frame (it includes this process parsing
every subscriber's stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Timings, service, wrk  # noqa: E402

PAYLOAD_BYTES = 512
MAPPING = {
    "path": "/bench/hook",
    "eventType": "bench.hooked",
    "eventSource": "bench",
    "aggregateType": "order",
    "aggregateIDField": "order.id",
    "metadataMapping": {"customer": "order.customer", "trace": "headers.X-Trace-Id"},
    "version": 1,
}


# wrk scripts: each request carries a distinct order id and exactly PAYLOAD_BYTES of JSON.
PAD = f"""
counter = 0
function padded(head, tail)
  return head .. string.rep("x", {PAYLOAD_BYTES} - #head - #tail) .. tail
end
function order()
  counter = counter + 1
  return '{{"order":{{"id":"o-' .. counter .. '","customer":"c-' .. (counter % 97) .. '","total":' .. counter .. '.5}},"note":"'
end
"""

INGEST = PAD + """
request = function()
  local body = padded(order(), '"}')
  return wrk.format("POST", "/ingest?path=/bench/hook",
    {["Content-Type"] = "application/json", ["X-Trace-Id"] = "t" .. counter}, body)
end
"""

APPEND = PAD + """
request = function()
  local data = padded(order(), '"}')
  local body = '{"event_type":"bench.appended","event_source":"bench","aggregate_type":"order",'
    .. '"aggregate_id":"o-' .. counter .. '","version":1,"data":' .. data .. '}'
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"}, body)
end
"""


def throughput(base: str, seconds: float) -> None:
    request = urllib.request.Request(
        base + "/mappings", data=json.dumps(MAPPING).encode(), headers={"Content-Type": "application/json"}
    )
    assert urllib.request.urlopen(request).status == 201
    print(wrk(base, INGEST, seconds=seconds).line("POST /ingest (512 B payload)", "ev"))
    print(wrk(base, APPEND, seconds=seconds).line("POST /events (512 B data)", "ev"))


async def sse_latency(base: str, subscribers: int, events: int, interval: float) -> Timings:
    """p50/p99 of the delay between POSTing an event and each subscriber reading it."""
    event_type = f"bench.live.{subscribers}"
    sent: dict[str, float] = {}
    timings = Timings()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        ready = 0
        all_ready = asyncio.Event()

        async def subscriber() -> None:
            nonlocal ready
            async with session.get(f"/events/stream/{event_type}") as response:
                assert response.status == 200
                await response.content.readline()  # the greeting: subscribed
                ready += 1
                if ready == subscribers:
                    all_ready.set()
                seen = 0
                while seen < events:
                    line = await response.content.readline()
                    if line.startswith(b"data: "):
                        received = time.perf_counter()
                        event = json.loads(line[6:])
                        timings.latencies.append(received - sent[event["aggregate_id"]])
                        seen += 1

        tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
        await asyncio.wait_for(all_ready.wait(), 120)
        started = time.perf_counter()
        for i in range(events):
            key = f"e{i}"
            sent[key] = time.perf_counter()
            body = {"event_type": event_type, "event_source": "bench", "aggregate_type": "tick",
                    "aggregate_id": key, "version": 1, "data": {"i": i}}
            async with session.post("/events", json=body) as r:
                assert r.status == 201
            await asyncio.sleep(interval)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        timings.elapsed = time.perf_counter() - started
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6, help="length of each throughput run")
    parser.add_argument("--sse-events", type=int, default=40, help="events streamed per SSE run")
    parser.add_argument("--sse-interval", type=float, default=0.05, help="seconds between streamed events")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: wrk, 16 connections, {args.seconds:g} s per run")
        with service(url) as base:
            throughput(base, args.seconds)
    print(f"== SSE delivery (SQLite; {args.sse_events} events, one every {args.sse_interval * 1000:.0f} ms)")
    with service("") as base:
        for subscribers in (100, 1000):
            timings = asyncio.run(sse_latency(base, subscribers, args.sse_events, args.sse_interval))
            print(timings.line(f"SSE, {subscribers} subscribers", "frame"))


if __name__ == "__main__":
    main()
