"""What several API workers buy: throughput with CHAINLOOM_WORKERS=1 and =2, and the projection fail-over time.

    .venv/bin/python bench/bench_workers.py                 # SQLite only
    bench/run bench/bench_workers.py                        # SQLite and a durable throwaway PostgreSQL

This prints, for one worker and for two, the figures the issue's aims are stated in (wrk,
one thread, 16 connections, co-located with the service on the same cores):
``POST /backends``, ``POST /events`` (512 B of data), ``GET /backends?limit=20``
and ``GET /groups``, each with its p99.

With two workers it then measures fail-over: kill -9 the worker holding the
projection runner (found through ``/ready``) and time until the first write made
after the kill is answered (a 201 means it was projected: read-your-writes) and
read back by name; the median of three kills, each after the parent has
restarted the previous victim. With one worker there is nothing to fail over
to, so that line is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_catalog import CREATE  # noqa: E402
from bench.bench_events import APPEND  # noqa: E402
from bench.harness import service, wrk  # noqa: E402

FAIL_OVER_TRIALS = 3


@contextmanager
def workers_service(database_url: str, workers: int) -> Iterator[str]:
    """``chainloom serve`` with ``workers`` workers on a fresh store, once every worker answers /ready."""
    if database_url:
        _empty_postgres(database_url)  # the runs of one benchmark share the database
    with service(database_url, CHAINLOOM_WORKERS=str(workers), CHAINLOOM_KAFKA_BOOTSTRAP="") as base:
        ready_workers(base, workers, timeout=60)
        yield base


def _empty_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _json(method: str, url: str, body: dict | None = None, timeout: float = 15) -> tuple[int, dict]:
    """One request on a new connection (urllib does not keep connections): the kernel picks the worker."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, {}


def ready_workers(base: str, count: int, timeout: float) -> dict[int, dict]:
    """Ask /ready until ``count`` distinct worker pids answered; their answers by pid."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        try:
            status, body = _json("GET", base + "/ready", timeout=2)
            if status == 200:
                seen[body["pid"]] = body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(seen)} of {count} workers answered /ready within {timeout:g}s")
        time.sleep(0.02)
    return seen


def fail_over_once(base: str, trial: int) -> float:
    """kill -9 the projection runner's holder; seconds until a write made after it is answered and read back."""
    workers = ready_workers(base, 2, timeout=60)
    holders = [pid for pid, ready in workers.items() if "projections" in ready["holds"]]
    if len(holders) != 1:
        raise RuntimeError(f"the projection runner is held by {holders}")
    os.kill(holders[0], signal.SIGKILL)
    killed_at = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        name = f"fail-over-{trial}-{attempt}"
        try:
            created, _ = _json("POST", base + "/groups", {"name": name, "purposeType": "bench"})
            if created == 201 and _json("GET", f"{base}/group-by-name/{name}")[0] == 200:
                took = time.perf_counter() - killed_at
                break
        except OSError:
            pass
        if time.perf_counter() - killed_at > 60:
            raise RuntimeError("no write succeeded within 60 s of the kill")
        time.sleep(0.005)
    # The parent restarts the victim (which can answer no more): the next trial starts from two workers again.
    ready_workers(base, 2, timeout=60)
    return took


def run(base: str, workers: int, seconds: float) -> None:
    print(wrk(base, CREATE, seconds=seconds).line("POST /backends", "cmd"))
    print(wrk(base, APPEND, seconds=seconds).line("POST /events (512 B data)", "ev"))
    print(wrk(base, 'wrk.path = "/backends?limit=20"', seconds=seconds).line("GET /backends?limit=20"))
    print(wrk(base, 'wrk.path = "/groups"', seconds=seconds).line("GET /groups"))
    if workers > 1:
        times = [fail_over_once(base, trial) for trial in range(FAIL_OVER_TRIALS)]
        listed = ", ".join(f"{t * 1000:.0f}" for t in times)
        print(
            f"{'fail-over: kill -9 -> first projected write':<38} {statistics.median(times) * 1000:9.0f} ms median"
            f"   ({listed} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10, help="length of each wrk run")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (comma-separated)")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL of a throwaway database (emptied before each run)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        for workers in (int(n) for n in args.workers.split(",")):
            print(f"== {label}, CHAINLOOM_WORKERS={workers} ({os.cpu_count()} cores): wrk, 16 connections, {args.seconds:g} s per run")
            with workers_service(url, workers) as base:
                run(base, workers, args.seconds)


if __name__ == "__main__":
    main()
