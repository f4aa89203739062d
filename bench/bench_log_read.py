"""The log by position: how fast ``GET /log`` pages, a filtered scan and a ``/log/stream`` catch-up read it.

    .venv/bin/python bench/bench_log_read.py                      # SQLite
    bench/run bench/bench_log_read.py                             # and a durable throwaway PostgreSQL
    .venv/bin/python bench/bench_log_read.py --postgres URL       # … on a PostgreSQL of yours (emptied!)

A log of ``--events`` external events of about 500 bytes is written (one in ``RARE_EVERY`` of another
type), then read:

- in this process, through ``infra.log_reader.read_log``: unfiltered pages of 1000, and a filtered scan for
  the rare type (``scan_limit`` 10,000 per call, as ``GET /log`` does): events looked at per second;
- through a real ``chainloom serve`` on that store: ``GET /log?limit=1000`` from 0 to the head, the same
  with ``type=<rare>`` (every request one bounded scan, following ``next``), and an SSE client of
  ``/log/stream`` catching up from 0 to the head.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import service  # noqa: E402
from chainloom.domain.eventsource.events import ExternalEvent  # noqa: E402
from chainloom.infra.eventlog import EventLog  # noqa: E402
from chainloom.infra.log_reader import LogFilter, read_log  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402

RARE_EVERY = 100
WRITE_BATCH = 5_000


def fill(log: EventLog, count: int) -> None:
    now = time.time_ns()
    for start in range(0, count, WRITE_BATCH):
        batch = []
        for i in range(start, min(start + WRITE_BATCH, count)):
            event = ExternalEvent(
                id=str(uuid.uuid4()), created_at_ns=now + i,
                event_type="invoice.sent" if i % RARE_EVERY == 0 else "order.placed", event_source="shop",
                aggregate_type="order", aggregate_id=f"o-{i}", version=1,
                data={"order": {"id": f"o-{i}", "customer": f"c-{i % 97}", "total": i + 0.5}, "note": "x" * 330},
                metadata={"actor": f"u{i % 7}"},
            )  # fmt: skip
            batch.append(log.mapper.to_stored_external(event))
        log.insert(batch)


def in_process(log: EventLog, label: str) -> None:
    head = log.head()
    started, after, count = time.perf_counter(), 0, 0
    while after < head:
        events, after = read_log(log, after, 1000)
        count += len(events)
    seconds = time.perf_counter() - started
    print(f"{label}: read_log, pages of 1000          {count / seconds:>10,.0f} events/s  ({count:,} in {seconds:.2f} s)")
    started, after, found, calls = time.perf_counter(), 0, 0, 0
    while after < head:
        events, after = read_log(log, after, 1000, LogFilter(type_prefix="invoice."))
        found += len(events)
        calls += 1
    seconds = time.perf_counter() - started
    print(
        f"{label}: read_log, filtered scan          {head / seconds:>10,.0f} events looked at/s"
        f"  ({found:,} found in {calls} calls, {seconds:.2f} s)"
    )


async def over_http(base: str, head: int, label: str) -> None:
    async with aiohttp.ClientSession(base_url=base) as session:
        for name, params in (("GET /log?limit=1000", {}), ("GET /log?type=invoice.", {"type": "invoice."})):
            started, after, count, requests = time.perf_counter(), 0, 0, 0
            while after < head:
                async with session.get("/log", params={"after": str(after), "limit": "1000", **params}) as response:
                    page = await response.json()
                count += len(page["events"])
                after = page["next"]
                requests += 1
            seconds = time.perf_counter() - started
            print(
                f"{label}: {name:<28} {head / seconds:>10,.0f} events/s  ({count:,} answered, {requests} requests,"
                f" {seconds:.2f} s)"
            )
        started, frames = time.perf_counter(), 0
        async with session.get("/log/stream", params={"after": "0"}) as response:
            async for line in response.content:
                if line.startswith(b"id: "):
                    frames += 1
                    if int(line[4:]) >= head:
                        break
        seconds = time.perf_counter() - started
        print(f"{label}: GET /log/stream catch-up        {frames / seconds:>10,.0f} events/s  ({frames:,} in {seconds:.2f} s)")


def run(settings: Settings, events: int, label: str, database_url: str, data_dir: str | None) -> None:
    log = EventLog(settings.event_store_env())
    started = time.perf_counter()
    fill(log, events)
    print(f"{label}: log of {log.head():,} events written in {time.perf_counter() - started:.1f} s")
    in_process(log, label)
    head = log.head()
    log.close()
    with service(database_url, data_dir, CHAINLOOM_RECONCILER="false", CHAINLOOM_WORKERS="1") as base:
        asyncio.run(over_http(base, head, label))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (emptied!)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-log-") as scratch:
        run(Settings(data_dir=Path(scratch), database_url=""), args.events, "SQLite", "", scratch)
    if args.postgres:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
        with tempfile.TemporaryDirectory(prefix="chainloom-bench-log-pg-") as scratch:
            run(Settings(data_dir=Path(scratch), database_url=args.postgres), args.events, "PostgreSQL", args.postgres, None)


if __name__ == "__main__":
    main()
