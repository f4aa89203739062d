"""Catalog throughput: commands (create backend, assign it to a group), GETs, events appended.

    bench/run bench/bench_catalog.py        # SQLite and a durable throwaway PostgreSQL
    .venv/bin/python bench/bench_catalog.py # SQLite only

The service runs as its own process, as users run it. The load comes from wrk
(16 connections, one thread) over loopback, so both share the machine's two
cores but the client takes little of them. Each create appends three events
(backend.created and the claims of its name and URL), each assignment one.
GETs are measured twice: repeated reads (served by the read cache while
nothing is written) and reads that each go to the read store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import service, wrk  # noqa: E402

CREATE = """
counter = 0
request = function()
  counter = counter + 1
  local name = "bench-" .. counter
  local body = '{"name":"' .. name .. '","baseUrl":"http://' .. name .. ':11434","type":"ollama"}'
  return wrk.format("POST", "/backends", {["Content-Type"] = "application/json"}, body)
end
"""

ASSIGN = """
ids = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/backend-affinity/internal_chat_group/backends/" .. ids[counter])
end
"""

# A cursor no other request uses: every request misses the read cache and reads SQL.
UNCACHED = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/backends?limit=1&cursor=2030-01-01T00:00:00." .. string.format("%09d", counter) .. "Z")
end
"""

GET = """
ids = {%s}
counter = 0
request = function()
  counter = counter %% #ids + 1
  return wrk.format("GET", "/backends/" .. ids[counter])
end
"""


def all_backend_ids(base: str) -> list[str]:
    ids, cursor = [], ""
    while True:
        url = f"{base}/backends?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = json.load(urllib.request.urlopen(url))
        ids += [b["id"] for b in page]
        if len(page) < 1000:
            return ids
        cursor = page[-1]["createdAt"]


def lua_list(values: list[str]) -> str:
    return ",".join(f'"{v}"' for v in values)


def run(base: str, seconds: float) -> None:
    creates = wrk(base, CREATE, seconds=seconds)
    print(creates.line("POST /backends", "cmd"))
    ids = all_backend_ids(base)
    # assignments run for a shorter time than creates did, so each id is assigned once
    assigns = wrk(base, ASSIGN % lua_list(ids), seconds=max(1, seconds - 2))
    print(assigns.line("POST /backend-affinity/…", "cmd"))
    commands = creates.requests + assigns.requests
    took = creates.seconds + assigns.seconds
    events = 3 * creates.requests + assigns.requests
    print(f"{'commands (create + assign), overall':<38} {commands / took:9.0f} cmd/s")
    print(f"{'events appended':<38} {events / took:9.0f} ev/s")
    # Reads while nothing is written: after the first of each, answered from the read cache.
    print(wrk(base, GET % lua_list(ids[:2000]), seconds=seconds).line("GET /backends/{id}"))
    print(wrk(base, 'wrk.path = "/groups"', seconds=seconds).line("GET /groups"))
    print(wrk(base, 'wrk.path = "/backends?limit=20"', seconds=seconds).line("GET /backends?limit=20"))
    print(wrk(base, UNCACHED, seconds=seconds).line("GET /backends?limit=1&cursor=… (uncached)"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: wrk, 16 connections")
        with service(url) as base:
            run(base, args.seconds)


if __name__ == "__main__":
    main()
