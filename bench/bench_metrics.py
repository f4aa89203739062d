"""What ``/metrics`` costs: request throughput with ``CHAINLOOM_METRICS`` off and on, and the time of one scrape.

    .venv/bin/python bench/bench_metrics.py                  # SQLite only
    bench/run bench/bench_metrics.py                         # SQLite and a durable throwaway PostgreSQL

Two services run side by side (``chainloom serve`` with its default workers), one
with metrics off and one with them on; wrk loads them in turn, round after round,
so both see the same machine (other load on it shifts both alike), and with
each of them started first in turn. The figure is
the median of the rounds' rates and the difference between them (aim: under 3 %),
and — steadier on a shared machine — the service's own CPU time per request (its
processes' utime + stime over a run, divided by the requests answered). The
counting middleware is also timed alone, in a worker's multiprocess mode.
On PostgreSQL (one database) the two run one after the other instead.
Then the service with metrics gets many backends (one ``chainloom_backend_up``
series each) and is scraped repeatedly: the time of one scrape with that many
series, as Prometheus would see it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_events import APPEND  # noqa: E402
from bench.harness import service, wrk  # noqa: E402

LOADS = {
    "GET /groups": 'wrk.path = "/groups"',
    "POST /events (512 B data)": APPEND,
}
QUIET = {"CHAINLOOM_RECONCILER": "false", "CHAINLOOM_TELEGRAM_BOTS": "false"}


Figures = dict[str, dict[str, list[float]]]  # load → "off"/"on" (and "off cpu"/"on cpu") → per-round values


def measure(off: str, on: str, seconds: float, rounds: int, figures: Figures) -> None:
    """Rounds of wrk runs against the two services in turn; rates and service CPU per request into ``figures``."""
    for label, lua in LOADS.items():
        got = figures.setdefault(label, {"off": [], "on": [], "off cpu": [], "on cpu": []})
        wrk(off, lua, seconds=1)  # warm both up (connections, caches, the first appends)
        wrk(on, lua, seconds=1)
        for round_ in range(rounds):
            order = [("off", off), ("on", on)] if round_ % 2 == 0 else [("on", on), ("off", off)]
            for name, base in order:
                before = service_cpu(base)
                result = wrk(base, lua, seconds=seconds)
                assert not result.failures, f"{label} with metrics {name}: {result.failures} failed"
                got[name].append(result.rate)
                got[f"{name} cpu"].append((service_cpu(base) - before) / result.requests)


def report(figures: Figures) -> None:
    for label, got in figures.items():
        off_rate, on_rate = statistics.median(got["off"]), statistics.median(got["on"])
        cost = (off_rate - on_rate) / off_rate * 100
        spread = " / ".join(f"{a:.0f}:{b:.0f}" for a, b in zip(got["off"], got["on"]))
        print(f"{label:<28} off {off_rate:8.0f} req/s   on {on_rate:8.0f} req/s   cost {cost:+5.1f} %   (rounds off:on {spread})")
        off_cpu, on_cpu = statistics.median(got["off cpu"]) * 1e6, statistics.median(got["on cpu"]) * 1e6
        print(
            f"{'':<28} service CPU per request: off {off_cpu:6.0f} µs   on {on_cpu:6.0f} µs   cost {(on_cpu - off_cpu) / off_cpu * 100:+5.1f} %"
        )


def service_cpu(base: str) -> float:
    """CPU seconds the service on ``base`` has used so far: its parent and workers (found by their port)."""
    port = f"CHAINLOOM_PORT={base.rsplit(':', 1)[1]}".encode()
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"chainloom.infra.cli" not in (entry / "cmdline").read_bytes() or port not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def middleware_cost(calls: int = 100_000) -> None:
    """The request-counting middleware alone, as a worker runs it (multiprocess mode), against a trivial handler."""
    import subprocess

    code = f"""
import asyncio, time
import chainloom.web.app
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from chainloom.infra import metrics
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.domain.groups import AffinityGroup
directory = metrics.enable_multiprocess()
try:
    from chainloom.web.metrics import _counting
    instruments = metrics.Instruments(None)
    count = _counting(instruments)
    app = web.Application()
    app.router.add_get("/groups/{{id}}", lambda request: None)
    answer = web.Response()
    async def handler(request):
        return answer
    async def main():
        request = make_mocked_request("GET", "/groups/abc", app=app)
        request._match_info = await app.router.resolve(request)
        started = time.process_time()
        for _ in range({calls}):
            await handler(request)
        bare = time.process_time() - started
        started = time.process_time()
        for _ in range({calls}):
            await count(request, handler)
        return (time.process_time() - started - bare) / {calls}
    request = asyncio.run(main())
    stored = [EnvelopeMapper().to_stored_event(e) for e in AffinityGroup.create("g-1", "g", "testing").collect_events()]
    started = time.process_time()
    for _ in range({calls}):
        instruments.appended(stored)
    event = (time.process_time() - started) / {calls} / len(stored)
    print(f"{{request * 1e6:.1f}} {{event * 1e6:.1f}}")
finally:
    metrics.disable_multiprocess(directory)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    print(f"counting (a worker, multiprocess mode): {out[0]} µs CPU per request, {out[1]} µs per appended event")


def alone(base: str, lua: str, seconds: float, rounds: int) -> float:
    """The median rate of ``rounds`` runs against one service (after a warm-up)."""
    wrk(base, lua, seconds=1)
    return statistics.median(wrk(base, lua, seconds=seconds).rate for _ in range(rounds))


async def scrape_time(base: str, backends: int, scrapes: int) -> None:
    async with aiohttp.ClientSession(base_url=base) as session:
        semaphore = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with semaphore:
                body = {"name": f"bench-{i}", "baseUrl": f"http://bench-{i}:11434", "type": "ollama"}
                async with session.post("/backends", json=body) as response:
                    assert response.status == 201, await response.text()

        await asyncio.gather(*(create(i) for i in range(backends)))
        took: list[float] = []
        series = size = 0
        for _ in range(scrapes):
            started = time.perf_counter()
            async with session.get("/metrics") as response:
                text = await response.text()
            took.append(time.perf_counter() - started)
            series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            size = len(text)
    took.sort()
    print(
        f"one scrape, {series} series ({size / 1024:.0f} KiB)      p50 {took[len(took) // 2] * 1000:7.2f} ms"
        f"   max {took[-1] * 1000:7.2f} ms   (n={scrapes}, {backends} backends)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs of runs per load")
    parser.add_argument("--backends", type=int, default=500, help="backends (series) made before the scrapes")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    middleware_cost()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: wrk, 16 connections, {args.seconds:g} s per run, {args.rounds} rounds; {os.cpu_count()} cores")
        if not url:
            # Measured: of two identical services, the one started second used some 10-15 % more CPU per request
            # here (whatever the cause), so each order of starting them is run and the rounds pooled.
            figures: Figures = {}
            for first in ("false", "true"):
                second = "true" if first == "false" else "false"
                with service(url, CHAINLOOM_METRICS=first, **QUIET) as a, service(url, CHAINLOOM_METRICS=second, **QUIET) as b:
                    off, on = (a, b) if first == "false" else (b, a)
                    measure(off, on, args.seconds, args.rounds, figures)
                    if first == "true":
                        asyncio.run(scrape_time(on, args.backends, args.scrapes))
            report(figures)
            continue
        # One database: two services on it would be two API processes of one deployment (one projecting for both).
        rates = {}
        for metrics in ("false", "true"):
            with service(url, CHAINLOOM_METRICS=metrics, **QUIET) as base:
                rates[metrics] = {label: alone(base, lua, args.seconds, args.rounds) for label, lua in LOADS.items()}
                if metrics == "true":
                    asyncio.run(scrape_time(base, args.backends, args.scrapes))
        for label in LOADS:
            off_rate, on_rate = rates["false"][label], rates["true"][label]
            print(f"{label:<28} off {off_rate:8.0f} req/s   on {on_rate:8.0f} req/s   cost {(off_rate - on_rate) / off_rate * 100:+5.1f} %")


if __name__ == "__main__":
    main()
