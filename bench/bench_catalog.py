"""Catalog throughput: commands (create backend + assign), GETs, appended events; SQLite and PostgreSQL.

    .venv/bin/python bench/bench_catalog.py                 # SQLite only
    bench/run bench/bench_catalog.py                        # SQLite and a durable throwaway PostgreSQL

The service runs as its own process (as users run it); the load comes from this
process over loopback HTTP, so both share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import drive, service  # noqa: E402


async def head(session: aiohttp.ClientSession) -> int:
    # No public "log head" in this slice: count via the events API when it exists, else via our own marker.
    return -1


async def run(base: str, workers: int, pairs: int, gets: int) -> None:
    backend_ids: list[str] = []

    async def create_and_assign(session: aiohttp.ClientSession, w: int, i: int) -> int:
        body = {"name": f"b-{w}-{i}", "baseUrl": f"http://b-{w}-{i}:11434", "type": "ollama"}
        async with session.post("/backends", json=body) as response:
            assert response.status == 201, await response.text()
            backend = await response.json()
        async with session.post(f"/backend-affinity/internal_chat_group/backends/{backend['id']}") as response:
            assert response.status == 201, await response.text()
        backend_ids.append(backend["id"])
        return 2

    commands = await drive(workers, pairs // workers, create_and_assign, base)
    # each pair appends 4 events: backend.created, two unique-value claims, group.backend_assigned
    events_per_second = commands.rate / 2 * 4
    print(commands.line("commands (create backend + assign)", "cmd"))
    print(f"{'events appended':<38} {events_per_second:9.0f} ev/s")

    async def get_backend(session: aiohttp.ClientSession, w: int, i: int) -> int:
        backend_id = backend_ids[(w * 7919 + i) % len(backend_ids)]
        async with session.get(f"/backends/{backend_id}") as response:
            assert response.status == 200
            await response.read()
        return 1

    print((await drive(workers, gets // workers, get_backend, base)).line("GET /backends/{id}"))

    async def list_groups(session: aiohttp.ClientSession, w: int, i: int) -> int:
        async with session.get("/groups") as response:
            assert response.status == 200
            await response.read()
        return 1

    print((await drive(workers, gets // workers, list_groups, base)).line("GET /groups"))

    async def page_backends(session: aiohttp.ClientSession, w: int, i: int) -> int:
        async with session.get("/backends", params={"limit": "20"}) as response:
            assert response.status == 200
            await response.read()
        return 1

    print((await drive(workers, gets // workers, page_backends, base)).line("GET /backends?limit=20"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=2000, help="create+assign pairs")
    parser.add_argument("--gets", type=int, default=8000)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: {args.workers} concurrent clients")
        with service(url) as base:
            started = time.perf_counter()
            asyncio.run(run(base, args.workers, args.pairs, args.gets))
            print(f"   ({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
