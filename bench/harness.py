"""Shared benchmark plumbing: start the real service as its own process, drive it, print figures."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def service(database_url: str = "", **env: str) -> Iterator[str]:
    """Run ``chainloom serve`` on a fresh data directory; yields its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-") as data_dir:
        process_env = dict(
            os.environ,
            CHAINLOOM_DATA_DIR=data_dir,
            CHAINLOOM_DATABASE_URL=database_url,
            CHAINLOOM_PORT=str(port),
            CHAINLOOM_HOST="127.0.0.1",
            CHAINLOOM_LOG_LEVEL="WARNING",
            **env,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "serve"], cwd=ROOT, env=process_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base, process)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_up(base: str, process: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("service did not come up")


@dataclass
class Timings:
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self, label: str, unit: str = "req") -> str:
        return (
            f"{label:<38} {self.rate:9.0f} {unit}/s   p50 {self.percentile(50):7.2f} ms   "
            f"p99 {self.percentile(99):7.2f} ms   (n={len(self.latencies)}, mean {statistics.fmean(self.latencies) * 1000:.2f} ms)"
        )


async def drive(
    workers: int, per_worker: int, step: Callable[[aiohttp.ClientSession, int, int], Awaitable[int]], base: str
) -> Timings:
    """Run ``step(session, worker, i)`` ``per_worker`` times in each of ``workers`` concurrent workers.

    ``step`` returns how many operations it performed (each recorded with the step's latency).
    """
    timings = Timings()
    connector = aiohttp.TCPConnector(limit=workers)

    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:

        async def worker(w: int) -> None:
            for i in range(per_worker):
                started = time.perf_counter()
                operations = await step(session, w, i)
                took = time.perf_counter() - started
                timings.latencies.extend([took / operations] * operations)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        timings.elapsed = time.perf_counter() - started
    return timings
