"""What a function run costs in the sandbox: runs/s and per-run latency, pool size 1 and 2.

    .venv/bin/python bench/bench_sandbox.py
    .venv/bin/python bench/bench_sandbox.py --runs 5000

In this process, on uvloop as the service runs, through ``SandboxPool`` with real worker processes:

1. **Trivial**: ``function f(e) { return {ok: true, nid: e.nid} }`` — a fresh QuickJS context, the prelude,
   the event, the call and the frames to and from the worker.
2. **sendEvent**: the same plus one host call (a host that answers at once): two more frames.

``size`` callers run back to back (each waits for its run): the pool at full load. Then runs one at a
time, 2 ms apart, as a trigger fires now and then: a worker makes the next run's context while it waits,
so such a run does not pay for it. Last, the cost of a worker start (the first run of a pool) and of
replacing a worker killed at the timeout.

Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Timings  # noqa: E402
from chainloom.infra.sandbox import Limits, Run, SandboxPool, event_object  # noqa: E402

EVENT = event_object(
    {
        "id": "e-1", "nid": 1, "created_at": "2025-03-01T10:04:05Z", "event_type": "user.created",
        "event_source": "signup", "aggregate_id": "u-1", "aggregate_type": "user", "version": 1,
        "data": {"email": "ada@example.com", "name": "Ada"}, "metadata": {},
    }
)  # fmt: skip
TRIVIAL = "function f(e) { return {ok: true, nid: e.nid} }"
SEND_EVENT = 'function f(e) { var r = sendEvent("user.audited", {user: e.aggregateID}); return {ok: r.success} }'


async def host(name: str, arguments: list[Any]) -> Any:
    return {"success": True, "event_id": "func-gen-1"}


async def measure(pool: SandboxPool, script: str, runs: int, pause: float = 0.0) -> Timings:
    timings = Timings()
    run = Run("f", script, EVENT)

    async def caller(count: int) -> None:
        for _ in range(count):
            if pause:
                await asyncio.sleep(pause)
            started = time.perf_counter()
            outcome = await pool.run(run, host)
            timings.latencies.append(time.perf_counter() - started)
            assert outcome.ok, outcome.error

    started = time.perf_counter()
    await asyncio.gather(*(caller(runs // pool.size) for _ in range(pool.size)))
    timings.elapsed = time.perf_counter() - started
    return timings


async def main(runs: int) -> None:
    for size in (1, 2):
        pool = SandboxPool(size)
        try:
            await measure(pool, TRIVIAL, 20 * size)  # start the workers, warm up
            for label, script in (("trivial", TRIVIAL), ("sendEvent", SEND_EVENT)):
                print((await measure(pool, script, runs)).line(f"{label}, pool size {size}", unit="run"))
        finally:
            await pool.close()

    pool = SandboxPool(1)
    try:
        for label, script in (("trivial", TRIVIAL), ("sendEvent", SEND_EVENT)):
            timings = await measure(pool, script, max(runs // 4, 100), pause=0.002)
            print(f"{label + ', one at a time':<38} {'':>13}   p50 {timings.percentile(50):7.2f} ms   "
                  f"p99 {timings.percentile(99):7.2f} ms   (n={len(timings.latencies)})")
    finally:
        await pool.close()

    starts = []
    for _ in range(10):
        pool = SandboxPool(1)
        started = time.perf_counter()
        await pool.run(Run("f", TRIVIAL, EVENT), host)
        starts.append((time.perf_counter() - started) * 1000)
        await pool.close()
    print(f"{'first run of a pool (worker start)':<38} median {sorted(starts)[len(starts) // 2]:7.2f} ms")

    pool = SandboxPool(1, Limits(timeout=0.05))
    try:
        await pool.run(Run("f", TRIVIAL, EVENT), host)
        replaced = []
        for _ in range(10):
            await pool.run(Run("f", "for (;;) {}", EVENT), host)
            started = time.perf_counter()
            await pool.run(Run("f", TRIVIAL, EVENT), host)
            replaced.append((time.perf_counter() - started) * 1000)
        print(f"{'run after a timeout (worker replaced)':<38} median {sorted(replaced)[len(replaced) // 2]:7.2f} ms")
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--postgres", help="ignored (bench/run passes it to every benchmark)")
    uvloop.run(main(parser.parse_args().runs))
