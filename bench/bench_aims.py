"""Every throughput and latency aim of the multi-process issue, measured against ``chainloom serve`` as users
start it (one worker per core), on SQLite and on PostgreSQL, each figure printed next to its aim.

    .venv/bin/python bench/bench_aims.py                    # SQLite only
    bench/run bench/bench_aims.py                           # SQLite and a durable throwaway PostgreSQL

- ``POST /backends``, ``POST /events`` and ``/ingest`` (512 B), ``GET /backends?limit=20`` and ``GET /groups``:
  wrk, 16 connections, co-located with the service on the same cores; req/s and p99.
- a batch client: ``POST /events`` over 64 keep-alive connections; events/s.
- projection lag at 1,000 writes/s: ``POST /events`` sent open-loop at a fixed rate (each request at its
  scheduled time, however long the ones before it take, so a stall is not hidden). An answer comes only once
  the event is in the read models (read-your-writes), so the time from sending to the answer bounds the lag
  from commit to read model from above; its p99 is printed.
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

from bench.bench_catalog import CREATE  # noqa: E402
from bench.bench_events import APPEND, INGEST, MAPPING, PAYLOAD_BYTES  # noqa: E402
from bench.bench_workers import ready_workers, workers_service  # noqa: E402
from bench.harness import Timings, wrk  # noqa: E402

SECONDS = 10


def aim(line: str, rate: float, at_least: float, p99_ms: float | None = None, p99_at_most: float = 50.0) -> str:
    met = rate >= at_least and (p99_ms is None or p99_ms <= p99_at_most)
    wanted = f"aim ≥ {at_least:,.0f}/s" + (f", p99 ≤ {p99_at_most:.0f} ms" if p99_ms is not None else "")
    return f"{line}   [{wanted}: {'met' if met else 'NOT met'}]"


def create_mapping(base: str) -> None:
    request = urllib.request.Request(
        base + "/mappings", data=json.dumps(MAPPING).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=30).read()


async def paced_writes(base: str, rate: float, seconds: float) -> Timings:
    """``POST /events`` at ``rate`` per second, each sent at its scheduled time; latency from that time."""
    timings = Timings()
    data = {"note": "x" * (PAYLOAD_BYTES - 40)}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:

        async def one(i: int, due: float) -> None:
            body = {
                "event_type": "bench.paced", "event_source": "bench", "aggregate_type": "order",
                "aggregate_id": f"p-{i}", "version": 1, "data": data,
            }
            async with session.post("/events", json=body) as response:
                await response.read()
                if response.status != 201:
                    raise RuntimeError(f"POST /events answered {response.status}")
            timings.latencies.append(time.perf_counter() - due)

        total = int(rate * seconds)
        start = time.perf_counter() + 0.1
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        timings.elapsed = time.perf_counter() - start
    return timings


def run(base: str, seconds: float) -> None:
    create_mapping(base)
    for label, script, unit, target in (
        ("POST /backends", CREATE, "cmd", 1500),
        ("POST /events (512 B data)", APPEND, "ev", 3000),
        ("POST /ingest (512 B payload)", INGEST, "ev", 2000),
        ("GET /backends?limit=20", 'wrk.path = "/backends?limit=20"', "req", 5000),
        ("GET /groups", 'wrk.path = "/groups"', "req", 9000),
    ):
        result = wrk(base, script, seconds=seconds)
        print(aim(result.line(label, unit), result.rate, target, result.p99_ms), flush=True)
    batch = wrk(base, APPEND, seconds=seconds, connections=64)
    print(aim(batch.line("POST /events, 64 connections", "ev"), batch.rate, 5000), flush=True)
    paced = asyncio.run(paced_writes(base, 1000, seconds))
    lag = paced.percentile(99)
    print(
        f"{'paced 1,000 POST /events/s: sent→answered':<38} {paced.rate:9.0f} ev/s   p50 {paced.percentile(50):7.2f} ms"
        f"   p99 {lag:7.2f} ms   [bounds commit→read model lag; aim p99 < 20 ms: {'met' if lag < 20 else 'NOT met'}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of each run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CHAINLOOM_WORKERS (default: cores)")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL of a throwaway database (emptied first)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}, CHAINLOOM_WORKERS={args.workers} ({os.cpu_count()} cores), wrk co-located, {args.seconds:g} s per run")
        with workers_service(url, args.workers) as base:
            ready_workers(base, args.workers, timeout=60)
            run(base, args.seconds)


if __name__ == "__main__":
    main()
