"""Shared benchmark plumbing: start the real service as its own process, drive it, print figures."""

from __future__ import annotations

import asyncio
import os
import signal
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


@contextmanager
def url_process(args: list[str], *, quiet: bool = False) -> Iterator[str]:
    """A process (a fake provider of tests/fakes/llm.py) that prints its base URL on its first line and then
    serves until terminated; yields that URL. ``quiet``: its stderr is not shown."""
    stderr = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def service(database_url: str = "", data_dir: str | None = None, **env: str) -> Iterator[str]:
    """Run ``chainloom serve`` on a fresh data directory (or on ``data_dir``, prepared by the caller); yields
    its base URL once it answers.

    Its output goes to a file (a pipe nobody reads could stall it); it runs in a session of its own,
    and at the end nothing of it — the parent or any worker process — outlives the run.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-") as fresh_dir:
        data_dir = data_dir or fresh_dir
        process_env = dict(
            os.environ,
            CHAINLOOM_DATA_DIR=data_dir,
            CHAINLOOM_DATABASE_URL=database_url,
            CHAINLOOM_PORT=str(port),
            CHAINLOOM_HOST="127.0.0.1",
            CHAINLOOM_LOG_LEVEL="WARNING",
            **env,
        )
        log_path = Path(data_dir) / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "chainloom.infra.cli", "serve"], cwd=ROOT, env=process_env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base, process, log_path)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if process.returncode not in (0, -signal.SIGKILL):
                print(f"   (serve exited {process.returncode}: {log_path.read_text(errors='replace')[-1000:]})")


def _wait_until_up(base: str, process: subprocess.Popen, log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited: {log_path.read_text(errors='replace')[-2000:]}")
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


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int  # non-2xx answers and socket errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def line(self, label: str, unit: str = "req") -> str:
        failed = f", {self.failures} FAILED" if self.failures else ""
        return (
            f"{label:<38} {self.rate:9.0f} {unit}/s   p50 {self.p50_ms:7.2f} ms   p99 {self.p99_ms:7.2f} ms"
            f"   (n={self.requests}{failed})"
        )


def wrk(base: str, lua: str, *, seconds: float = 5, connections: int = 16) -> WrkResult:
    """Load the service with wrk (a C load generator, so the client takes little of the machine).

    ``lua`` is a wrk script (its ``request`` function builds each request).
    """
    import re
    import shutil

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian package 'wrk'; bench/run installs it)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name, base],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(script.name)

    def latency(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests, took = re.search(r"(\d+) requests in ([\d.]+)(?:s|ms)", out).groups()
    failures = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failures += sum(int(n) for n in errors.groups())
    seconds_taken = float(took) / (1000 if re.search(r"requests in [\d.]+ms", out) else 1)
    return WrkResult(int(requests), seconds_taken, latency("50"), latency("99"), failures)
