"""The relay is a singleton job of ``chainloom serve``'s workers: kill -9 its holder, the log still reaches Kafka whole.

Two workers (``CHAINLOOM_WORKERS=2``) on SQLite and on PostgreSQL, Kafka
configured: exactly one worker reports holding ``kafka-relay`` on /ready. While
clients append events through both workers, that worker is killed; another
takes the relay over (the survivor, or the worker the parent restarts) and
every acknowledged event reaches the topic, in log order, with duplicates only
as docs/kafka.md allows (copies of the one chunk the dead relay had published
but not yet tracked).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import assert_order_per_aggregate, read_topic, without_duplicates
from tests.integration.serve_process import (
    Service,
    call,
    fresh_connections,
    log_events,
    ready_workers,
    serve_env,
    sole_holder,
    start_service,
)


@pytest.fixture
def service(kafka_settings: Settings, tmp_path: Path) -> Iterator[Service]:
    started = start_service(serve_env(kafka_settings, 2), tmp_path / "serve.log")
    yield started
    started.shut_down()


@pytest.mark.timeout(150)
async def test_killing_the_relay_holder_loses_no_acknowledged_event(store_kind: str, kafka_settings: Settings, service: Service):
    acknowledged: list[int] = []  # nids of the events whose POST was answered 201
    refused: list[str] = []
    stop = asyncio.Event()

    async with fresh_connections(service.base) as session:
        workers = await ready_workers(session, 2)
        holder = await sole_holder(session, set(workers), "kafka-relay")

        async def append(number: int) -> None:
            i = 0
            while not stop.is_set():
                body = {"event_type": "mp.relayed", "event_source": "mp", "aggregate_type": "order",
                        "aggregate_id": f"o-{number}-{i}", "version": 1, "data": {"writer": number, "i": i}}
                i += 1
                try:
                    answer = await call(session, "POST", "/events", body)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    await asyncio.sleep(0.05)  # in flight on the killed worker: not acknowledged
                    continue
                if answer.status == 201:
                    acknowledged.append(answer.body["nid"])
                else:
                    refused.append(f"{answer.status} {answer.body}")

        appenders = [asyncio.create_task(append(number)) for number in range(4)]
        try:
            deadline = time.monotonic() + 30
            while len(acknowledged) < 200:
                assert time.monotonic() < deadline, f"only {len(acknowledged)} events acknowledged in 30 s"
                await asyncio.sleep(0.02)
            os.kill(holder, signal.SIGKILL)
            killed_at = time.monotonic()
            acknowledged_at_kill = len(acknowledged)

            # Another worker takes the relay over: the survivor, or the one the parent restarts.
            taken_over = None
            while taken_over is None:
                assert time.monotonic() - killed_at < 30, "no worker took the relay over within 30 s"
                try:
                    answer = await call(session, "GET", "/ready")
                except aiohttp.ClientError:
                    answer = None
                if answer is not None and answer.status == 200 and "kafka-relay" in answer.body["holds"] and answer.body["pid"] != holder:
                    taken_over = time.monotonic() - killed_at
                await asyncio.sleep(0.02)
            print(f"{store_kind}: kill -9 of the relay's holder -> another worker holds it after {taken_over * 1000:.0f} ms")

            deadline = time.monotonic() + 30
            while len(acknowledged) < acknowledged_at_kill + 200:
                assert time.monotonic() < deadline, f"{len(acknowledged) - acknowledged_at_kill} acknowledged since the kill"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*appenders)

        restarted = await ready_workers(session, 2)  # the parent replaced the killed worker
        assert holder not in restarted, restarted
        await sole_holder(session, set(restarted), "kafka-relay")

    assert refused == [], refused[:5]
    expected = log_events(kafka_settings)
    events = read_topic(
        kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic,
        lambda got: bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"], timeout=60,
    )
    kept, duplicates = without_duplicates(events)
    assert kept == expected, "the topic is not the log: lost or reordered events"
    assert set(acknowledged) <= {e["nid"] for e in kept}
    assert_order_per_aggregate(kept)
    # Copies of at most the chunk the killed relay had published but not tracked (docs/kafka.md).
    assert duplicates <= 1000, duplicates
    print(f"{store_kind}: {len(acknowledged)} events acknowledged, {len(expected)} in the log, {duplicates} duplicates")
