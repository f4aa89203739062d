"""The log's hash chain (infra/seals.py): sealing and `audit verify` rates, the sealer's cost on appends, its lag.

    .venv/bin/python bench/bench_seals.py                   # SQLite only
    bench/run bench/bench_seals.py                          # SQLite and a durable throwaway PostgreSQL

1. Sealing and verifying: a log of ``--events`` external events (512 B of data, as bench_events.py posts)
   is written directly, then sealed from scratch (``seals.seal_through``: the sealer catching up) and
   verified (``seals.verify``, what ``chainloom audit verify`` runs) — once with integer-only data (the
   canonical form through orjson) and once with a float in each event (through ``json``, the definition).
2. The cost on appends, in the store: one thread appends ``--group`` events per commit (``EventLog.insert``,
   as the log writer commits a group of commands) for ``--seconds``, with a sealer thread following (a
   step every ``projections.sealer.GATHER`` seconds, as the service's sealer under load) and without;
   alternated ``--runs`` times.
3. The cost on appends through the service: ``POST /events`` under wrk (16 connections) against
   ``chainloom serve`` with CHAINLOOM_SEALER on and off, alternated ``--runs`` times; during every run
   ``GET /log/digest`` is sampled every 50 ms: the sealer's lag in events (head − sealed
   position), and in time at the run's append rate.

The service runs as its own process; everything else runs in this one. Figures only, no asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_events import APPEND  # noqa: E402
from bench.harness import service, wrk  # noqa: E402
from chainloom.domain.eventsource.events import ExternalEvent  # noqa: E402
from chainloom.infra import seals  # noqa: E402
from chainloom.infra.eventlog import EventLog  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from chainloom.projections.sealer import GATHER  # noqa: E402

NOTE = "x" * 430  # ~512 B of data with the order


def event(log: EventLog, n: int, with_float: bool):
    total: float | int = n + 0.5 if with_float else n
    data = {"order": {"id": f"o-{n}", "customer": f"c-{n % 97}", "total": total}, "note": NOTE}
    external = ExternalEvent(str(uuid.uuid4()), time.time_ns(), "bench.appended", "bench", "order", f"o-{n}", 1, data)
    return log.mapper.to_stored_external(external)


def fresh_log(url: str, directory: str) -> EventLog:
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
    settings = Settings(data_dir=Path(directory), database_url=url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    seals.ensure(log)
    return log


def seal_and_verify(url: str, events: int, with_float: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-seals-") as directory:
        log = fresh_log(url, directory)
        try:
            for start in range(0, events, 1000):
                log.insert([event(log, n, with_float) for n in range(start, min(events, start + 1000))])
            kind = "a float in each" if with_float else "integers only"
            started, cpu = time.perf_counter(), time.process_time()
            seals.seal_through(log, log.head())
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"   seal from scratch ({kind:<16})   {events / took:9,.0f} ev/s   ({events} events in {took:.2f} s;"
                  f" {cpu / events * 1e6:.1f} µs CPU per event here)")
            started, cpu = time.perf_counter(), time.process_time()
            report = seals.verify(log)
            took, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert report.intact and report.verified == events, report
            print(f"   audit verify      ({kind:<16})   {events / took:9,.0f} ev/s   ({events} events in {took:.2f} s;"
                  f" {cpu / events * 1e6:.1f} µs CPU per event here)")
        finally:
            log.close()


def appends_in_store(url: str, seconds: float, group: int, sealer: bool) -> tuple[float, int]:
    """Appends/s of one thread appending ``group`` events per commit; with a sealer thread following, or
    none. Also the largest lag (events) seen by the sealer at its looks."""
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-seals-") as directory:
        log = fresh_log(url, directory)
        stop = threading.Event()
        lags: list[int] = []

        def follow() -> None:
            while not stop.is_set():
                reached, more = seals.seal(log)
                lags.append(log.head() - reached)
                if not more:
                    stop.wait(GATHER)

        thread = threading.Thread(target=follow, daemon=True)
        if sealer:
            thread.start()
        appended = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            log.insert([event(log, appended + i, False) for i in range(group)])
            appended += group
        took = time.perf_counter() - started
        stop.set()
        if sealer:
            thread.join()
        log.close()
    return appended / took, max(lags, default=0)


def sample_digest(base: str, stop: threading.Event, samples: list[tuple[float, int, int]]) -> None:
    while not stop.is_set():
        with urllib.request.urlopen(base + "/log/digest", timeout=5) as response:
            digest = json.loads(response.read())
        samples.append((time.monotonic(), digest["head"], digest["position"]))
        stop.wait(0.05)


def lag_figures(samples: list[tuple[float, int, int]], rate: float) -> str:
    """The sealer's lag in events (head − sealed position, read together by the service), and as time at
    the run's append rate (the client's clock is no good for it: a loaded service answers late)."""
    events = sorted(head - position for _, head, position in samples)
    if not events:
        return "no samples"
    p50, p99, top = statistics.median(events), events[int(0.99 * (len(events) - 1))], events[-1]
    return (
        f"sealer's lag: p50 {p50:.0f}, p99 {p99}, max {top} events = {p50 / rate * 1000:.0f} / {p99 / rate * 1000:.0f}"
        f" / {top / rate * 1000:.0f} ms at {rate:,.0f} ev/s ({len(samples)} samples, every 50 ms)"
    )


def through_service(url: str, seconds: float, runs: int) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(runs):
        for sealer in (False, True):
            if url:
                fresh_log(url, tempfile.gettempdir()).close()  # an empty database: no backlog to seal first
            with service(url, CHAINLOOM_SEALER="true" if sealer else "false") as base:
                stop = threading.Event()
                samples: list[tuple[float, int, int]] = []
                sampler = threading.Thread(target=sample_digest, args=(base, stop, samples), daemon=True)
                sampler.start()  # with the sealer off too: both runs carry the same extra requests
                result = wrk(base, APPEND, seconds=seconds)
                stop.set()
                sampler.join()
                rates[sealer].append(result.rate)
                print("   " + result.line(f"POST /events, sealer {'on' if sealer else 'off'}", "ev"))
                if sealer:
                    print(f"      {lag_figures(samples, result.rate)}")
    on, off = statistics.mean(rates[True]), statistics.mean(rates[False])
    print(f"   => sealer on {on:,.0f} ev/s vs off {off:,.0f} ev/s: cost {(off - on) / off * 100:+.1f} %")


def in_store(url: str, args: argparse.Namespace) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.runs):
        for sealer in (False, True):
            rate, lag = appends_in_store(url, args.seconds, args.group, sealer)
            rates[sealer].append(rate)
            lagged = f" (sealer's largest lag at its looks: {lag} events)" if sealer else ""
            label = f"appends in the store, {args.group} per commit, sealer {'on ' if sealer else 'off'}"
            print(f"   {label:<52} {rate:9,.0f} ev/s{lagged}")
    on, off = statistics.mean(rates[True]), statistics.mean(rates[False])
    print(f"   => sealer on {on:,.0f} ev/s vs off {off:,.0f} ev/s: cost {(off - on) / off * 100:+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000, help="events sealed and verified")
    parser.add_argument("--seconds", type=float, default=6, help="length of each append run")
    parser.add_argument("--runs", type=int, default=2, help="alternations of sealer off/on")
    parser.add_argument("--group", type=int, default=20, help="events per commit in the store")
    parser.add_argument(
        "--only", choices=["rates", "store", "service"], help="only sealing and verify rates, the runs in the store,"
        " or the runs through chainloom serve"
    )
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}")
        if args.only in (None, "rates"):
            for with_float in (False, True):
                seal_and_verify(url, args.events, with_float)
        if args.only in (None, "store"):
            in_store(url, args)
        if args.only in (None, "service"):
            through_service(url, args.seconds, args.runs)


if __name__ == "__main__":
    main()
