"""Distributed mode (log + Kafka + projector workers): write latency, and fail-over after kill -9.

    .venv/bin/python bench/bench_failover.py                      # SQLite; starts its own broker
    bench/run bench/bench_failover.py                             # SQLite and a durable throwaway PostgreSQL
    .venv/bin/python bench/bench_failover.py --bootstrap 127.0.0.1:9092 --postgres postgresql://…/db  # running services

For each store it prints:

- ``POST /events`` (512 B of data) latency, p50 and p99, one request at a time over one
  kept-alive connection, through ``chainloom serve`` (one worker process):
  embedded (the API projects), and distributed (``CHAINLOOM_PROJECTIONS=kafka``: the write
  goes log → relay → Kafka → projector worker → read models before it is answered), with
  the relay inside the API process and as a ``chainloom relay`` process of its own;
- projector worker fail-over: two ``chainloom project`` processes, one active and one
  standing by; kill -9 of the active one (at a random moment of the standby's lock retries)
  → the first event appended after the kill is in the read models (the standby projected
  it). Median of a few kills, alternating;
- relay fail-over: two ``chainloom relay`` processes; kill -9 of the active one (likewise)
  → the first event appended after the kill is on the topic (the standby published it).

The events of the fail-over trials are appended straight to the log from this process.
Every process, and this one, share the machine's cores. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import psycopg  # noqa: E402

from chainloom.domain.backends import Backend  # noqa: E402
from chainloom.infra.eventlog import EventLog  # noqa: E402
from chainloom.infra.kafka_broker import LocalBroker  # noqa: E402
from chainloom.infra.readstore import open_read_store  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from chainloom.projections.registry import all_projectors  # noqa: E402
from bench.harness import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = "x" * 512


# -- processes ------------------------------------------------------------------------


class Proc:
    """A ``chainloom`` command in a session of its own; its output goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "chainloom.infra.cli", *args], cwd=ROOT, env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.args} exited:\n{self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args} did not log {text!r} within {timeout:g}s:\n{self.output()[-2000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)


@contextmanager
def processes() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str], log_dir: Path) -> Proc:
        proc = Proc(list(args), env, log_dir / f"{args[0]}-{len(started)}.log")
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINLOOM_")}
    env.update({
        "CHAINLOOM_DATA_DIR": str(settings.data_dir), "CHAINLOOM_DATABASE_URL": settings.database_url,
        "CHAINLOOM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CHAINLOOM_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CHAINLOOM_LOG_LEVEL": "WARNING", "CHAINLOOM_WORKERS": "1", "CHAINLOOM_API_TOKEN": "",
        "CHAINLOOM_HOST": "127.0.0.1",
    })
    env.update(extra)
    return env


def fresh_settings(tmp: Path, name: str, url: str, bootstrap: str) -> Settings:
    """A new data directory (or an emptied database) and a topic prefix of its own."""
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
    data_dir = tmp / f"{name}-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir(parents=True)
    return Settings(data_dir=data_dir, database_url=url, kafka_bootstrap=bootstrap,
                    kafka_topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- write latency --------------------------------------------------------------------


async def post_events(base: str, count: int, warm_up: int) -> list[float]:
    """Latencies (ms) of ``count`` POST /events, one at a time, after ``warm_up`` unmeasured ones."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
        for i in range(warm_up + count):
            body = {"event_type": "bench.appended", "event_source": "bench", "aggregate_type": "order",
                    "aggregate_id": f"o-{uuid.uuid4().hex}", "version": 1, "data": {"i": i, "pad": PAYLOAD}}
            started = time.perf_counter()
            async with session.post("/events", json=body) as response:
                await response.read()
                if response.status != 201:
                    raise RuntimeError(f"POST /events answered {response.status}: {await response.text()}")
            if i >= warm_up:
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def wait_up(base: str, proc: Proc, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"serve exited:\n{proc.output()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {timeout:g}s:\n{proc.output()[-2000:]}") from None
            time.sleep(0.1)


def write_latency(label: str, tmp: Path, url: str, bootstrap: str, mode: str, count: int) -> None:
    settings = fresh_settings(tmp, mode, url, bootstrap)
    port = free_port()
    with processes() as start:
        if mode == "embedded":
            api = start("serve", env=env_of(settings, CHAINLOOM_PORT=str(port), CHAINLOOM_KAFKA_BOOTSTRAP=""),
                        log_dir=settings.data_dir)
        else:
            start("project", env=env_of(settings), log_dir=settings.data_dir)
            if mode == "relay apart":
                start("relay", env=env_of(settings), log_dir=settings.data_dir)
            api = start("serve", env=env_of(settings, CHAINLOOM_PORT=str(port), CHAINLOOM_PROJECTIONS="kafka",
                                            CHAINLOOM_KAFKA_RELAY_IN_SERVE=str(mode == "relay in API").lower(),
                                            CHAINLOOM_PROJECTION_TIMEOUT="30"),
                        log_dir=settings.data_dir)
        base = f"http://127.0.0.1:{port}"
        wait_up(base, api)
        latencies = asyncio.run(post_events(base, count, warm_up=30))
    print(f"{label}: POST /events, {mode:<14} p50 {percentile(latencies, 50):6.1f} ms   p99 {percentile(latencies, 99):6.1f} ms"
          f"   mean {statistics.fmean(latencies):6.1f} ms   (n={len(latencies)}, one at a time)")


# -- fail-over --------------------------------------------------------------------------


def append_one(log: EventLog) -> int:
    key = str(uuid.uuid4())
    position = log.save(Backend.create(key, f"b-{key}", f"http://{key}", "ollama"))
    assert position is not None
    return position


def kill_trials(
    trials: int,
    active: Proc,
    start_standby: Callable[[], Proc],
    standing_by: str,
    append: Callable[[], int],
    seen: Callable[[int], float],
) -> list[float]:
    """``trials`` times: start a standby (it logs ``standing_by``), kill -9 the active process at a random
    moment, append, and time until ``seen(position)`` (the time the standby's work shows it); the standby
    is the next trial's active process. Seconds from each kill."""
    times = []
    for _ in range(trials):
        standby = start_standby()
        standby.wait_for_line(standing_by)
        seen(append())
        time.sleep(random.uniform(0, 1))  # a kill at any moment of the standby's lock retries
        active.kill()
        killed_at = time.perf_counter()
        times.append(seen(append()) - killed_at)
        active = standby
    return times


def projector_failover(label: str, tmp: Path, url: str, bootstrap: str, trials: int) -> None:
    settings = fresh_settings(tmp, "projector-failover", url, bootstrap)
    names = [p.name for p in all_projectors()]
    log = EventLog(settings.event_store_env())
    worker_env = env_of(settings, CHAINLOOM_LOG_LEVEL="INFO")
    times: list[float] = []
    with processes() as start:
        start("relay", env=env_of(settings), log_dir=settings.data_dir)
        active = start("project", env=worker_env, log_dir=settings.data_dir)
        active.wait_for_line("projector worker: active")
        store, factory = open_read_store(settings.read_store_env())
        try:
            def reached() -> int:
                with store.transaction(commit=False) as cursor:
                    return min(store.positions(cursor, names).values())

            def projected(position: int, timeout: float = 60) -> float:
                deadline = time.monotonic() + timeout
                while reached() < position:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"position {position} not projected within {timeout:g}s")
                    time.sleep(0.005)
                return time.perf_counter()

            projected(append_one(log))
            times = kill_trials(
                trials, active, lambda: start("project", env=worker_env, log_dir=settings.data_dir),
                "projector worker: standing by", lambda: append_one(log), projected,
            )
        finally:
            factory.close()
            log.close()
    listed = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(f"{label}: projector worker fail-over, kill -9 -> first event projected by the standby:"
          f" median {statistics.median(times) * 1000:.0f} ms ({listed} ms)")


def relay_failover(label: str, tmp: Path, url: str, bootstrap: str, trials: int) -> None:
    from kafka import KafkaConsumer, TopicPartition

    settings = fresh_settings(tmp, "relay-failover", url, bootstrap)
    log = EventLog(settings.event_store_env())
    relay_env = env_of(settings, CHAINLOOM_LOG_LEVEL="INFO")
    times: list[float] = []
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    partition = TopicPartition(settings.kafka_events_topic, 0)
    try:
        with processes() as start:
            active = start("relay", env=relay_env, log_dir=settings.data_dir)
            active.wait_for_line("kafka relay: publishing")
            append_one(log)
            while 0 not in (consumer.partitions_for_topic(partition.topic) or ()):
                time.sleep(0.05)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            consumer.position(partition)  # resolved now, before the events the trials wait for are appended

            def published(position: int, timeout: float = 60) -> float:
                deadline = time.monotonic() + timeout
                while True:
                    for records in consumer.poll(timeout_ms=20).values():
                        for record in records:
                            if int(dict(record.headers)["nid"]) >= position:
                                return time.perf_counter()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"position {position} not on the topic within {timeout:g}s")

            times = kill_trials(
                trials, active, lambda: start("relay", env=relay_env, log_dir=settings.data_dir),
                "kafka relay: standing by", lambda: append_one(log), published,
            )
    finally:
        consumer.close()
        log.close()
    listed = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(f"{label}: relay fail-over, kill -9 -> first event published by the standby:"
          f" median {statistics.median(times) * 1000:.0f} ms ({listed} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", help="PostgreSQL URL of a throwaway database (bench/run passes one; it is emptied)")
    parser.add_argument("--bootstrap", help="a running broker; default: start one (infra/kafka_broker)")
    parser.add_argument("--writes", type=int, default=300, help="POST /events measured per configuration")
    parser.add_argument("--trials", type=int, default=3, help="kills per fail-over figure")
    parser.add_argument("--only", choices=["latency", "failover"], help="run only one part")
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True, help="run on SQLite too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chainloom-bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        broker = None
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = LocalBroker(tmp / "broker")
            bootstrap = broker.start()
            print(f"Kafka broker on {bootstrap} (infra/kafka_broker)")
        try:
            stores = ([("SQLite", "")] if args.sqlite else []) + ([("PostgreSQL", args.postgres)] if args.postgres else [])
            for label, url in stores:
                if args.only != "failover":
                    for mode in ("embedded", "relay in API", "relay apart"):
                        write_latency(label, tmp, url, bootstrap, mode, args.writes)
                if args.only != "latency":
                    projector_failover(label, tmp, url, bootstrap, args.trials)
                    relay_failover(label, tmp, url, bootstrap, args.trials)
        finally:
            if broker is not None:
                broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
