"""Trigger dispatch figures: events through a function that emits one event per input, end to end.

    .venv/bin/python bench/bench_triggers.py                # SQLite only
    bench/run bench/bench_triggers.py                       # SQLite and a durable throwaway PostgreSQL

``POST /events`` answers once the triggers of its event ran (spec §4.4): with a trigger on its type, an
answer means append → dispatch → the function ran in the sandbox → its emitted event and the
``trigger.fired`` record appended → both projected. So wrk's rate on a listened type is executions per
second end to end, and its latency minus that of an unlistened type is what an execution adds.
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

ECHO = "function echo(event) { sendEvent('bench.echoed', {n: event.data.n}); return {n: event.data.n}; }"


def events_of(event_type: str) -> str:
    return f"""
counter = 0
request = function()
  counter = counter + 1
  local body = '{{"event_type":"{event_type}","event_source":"bench","aggregate_type":"order",'
    .. '"aggregate_id":"o-' .. counter .. '","version":1,"data":{{"n":' .. counter .. '}}}}'
  return wrk.format("POST", "/events", {{["Content-Type"] = "application/json"}}, body)
end
"""


def post(base: str, path: str, body: dict) -> None:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(request).status == 201


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6, help="length of each run")
    parser.add_argument("--connections", type=int, default=16, help="the loaded run's connections (also: 1)")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: wrk, {args.connections} connections, {args.seconds:g} s per run ({os.cpu_count()} cores)")
        with service(url) as base:
            post(base, "/functions", {"name": "echo", "scriptType": "goja", "script": ECHO})
            post(base, "/event-triggers", {"name": "on-order", "listenFor": {"type": "bench.order"}, "type": "function", "function": "echo"})
            for connections in (1, args.connections):
                plain = wrk(base, events_of("bench.plain"), seconds=args.seconds, connections=connections)
                print(plain.line(f"POST /events, no trigger, c={connections}", "ev"))
                triggered = wrk(base, events_of("bench.order"), seconds=args.seconds, connections=connections)
                print(triggered.line(f"POST /events, function emits one, c={connections}", "exec"))
                print(
                    f"{'  added by the execution':<38} p50 {triggered.p50_ms - plain.p50_ms:+7.2f} ms"
                    f"   p99 {triggered.p99_ms - plain.p99_ms:+7.2f} ms"
                )


if __name__ == "__main__":
    main()
