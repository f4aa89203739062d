"""Fixtures of the Kafka tests: a real broker, a topic prefix per test, chainloom processes.

The broker comes from ``CHAINLOOM_TEST_KAFKA_BOOTSTRAP`` (``scripts/test`` starts
one with ``infra/kafka_broker``). Without it these tests are skipped — unless
``CHAINLOOM_TEST_REQUIRE_KAFKA=1`` (set by ``scripts/test`` and CI), when they
fail instead, so CI can never pass without a broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from chainloom.infra.kafka_broker import LocalBroker, free_port
from chainloom.infra.kafka_log import decode
from chainloom.infra.settings import Settings
from tests.integration.serve_process import process_env  # noqa: F401  (the kafka tests' process environment)

KAFKA_BOOTSTRAP = os.environ.get("CHAINLOOM_TEST_KAFKA_BOOTSTRAP", "")
REQUIRE_KAFKA = os.environ.get("CHAINLOOM_TEST_REQUIRE_KAFKA") == "1"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def kafka_bootstrap() -> str:
    if not KAFKA_BOOTSTRAP:
        if REQUIRE_KAFKA:
            pytest.fail("CHAINLOOM_TEST_KAFKA_BOOTSTRAP is not set but the Kafka tests are required")
        pytest.skip("no Kafka broker (set CHAINLOOM_TEST_KAFKA_BOOTSTRAP or run scripts/test)")
    return KAFKA_BOOTSTRAP


@pytest.fixture
def topic_prefix() -> str:
    """Topics of their own for each test, on the shared broker."""
    return f"test{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_settings(settings: Settings, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    """The store-parametrized settings, with Kafka configured (relay in the API process)."""
    return settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap, "kafka_topic_prefix": topic_prefix})


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, which it may stop, kill and restart."""
    if not KAFKA_BOOTSTRAP and not REQUIRE_KAFKA:
        pytest.skip("no Kafka broker (run scripts/test)")
    broker = LocalBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


# -- reading the topic ------------------------------------------------------------


def read_topic(
    bootstrap: str,
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60.0,
    records: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Every event on the topic from its start, read until ``done(events)`` (or fail after ``timeout``)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    partition = TopicPartition(topic, 0)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while partition.partition not in (consumer.partitions_for_topic(topic) or ()):
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic} did not appear within {timeout:g}s")
            time.sleep(0.1)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        while not done(events):
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout:g}s, {len(events)} events on {topic}; not done")
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    if records is not None:
                        records.append(record)
                    events.append(decode(record.value))
    finally:
        consumer.close()
    return events


def without_duplicates(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """What docs/kafka.md tells a consumer to do: skip an event whose nid is not above the last one kept.

    Checks on the way that every skipped event is an exact copy of one kept before it
    (recognisable by its id). Returns the kept events and the number of duplicates.
    """
    kept: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    last = 0
    duplicates = 0
    for event in events:
        if event["nid"] > last:
            kept.append(event)
            by_id[event["id"]] = event
            last = event["nid"]
        else:
            duplicates += 1
            assert event["id"] in by_id, f"an event below the high-water mark was never seen: {event}"
            assert by_id[event["id"]] == event, f"a duplicate differs from its first copy: {event}"
    return kept, duplicates


def assert_order_per_aggregate(events: list[dict[str, Any]]) -> None:
    """chainloom's own events of each aggregate come in version order (external ones state their own versions)."""
    versions: dict[tuple[str, str], int] = {}
    for event in events:
        if event["event_source"] != "chainloom":
            continue
        key = (event["aggregate_type"], event["aggregate_id"])
        assert event["version"] > versions.get(key, 0), f"out of order for {key}: {event}"
        versions[key] = event["version"]


# -- chainloom processes ------------------------------------------------------------




class Process:
    """A ``chainloom`` command in a process of its own; its output goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> Process:
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "chainloom.infra.cli", *self.args],
                env=self.env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_running(self) -> None:
        assert self.popen is not None and self.popen.poll() is None, f"{self.args} exited:\n{self.output()[-3000:]}"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``chainloom`` commands; every one is killed when the test ends."""
    started: list[Process] = []

    def start(*args: str, env: dict[str, str]) -> Process:
        process = Process(list(args), env, tmp_path / f"{args[0]}-{len(started)}.log")
        if args[0] == "serve":
            process.port = int(env.get("CHAINLOOM_PORT") or free_port())
            process.env = {**env, "CHAINLOOM_PORT": str(process.port), "CHAINLOOM_HOST": "127.0.0.1"}
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.kill()


def healthy(port: int) -> bool:
    """Whether a ``chainloom serve`` on this port answers /health."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
