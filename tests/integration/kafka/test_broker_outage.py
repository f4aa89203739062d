"""The broker goes away and comes back while clients write: nothing they were told was written is lost."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_broker import LocalBroker
from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import (
    assert_order_per_aggregate,
    healthy,
    process_env,
    read_topic,
    wait_until,
    without_duplicates,
)


class HttpWriter(threading.Thread):
    """Creates backends through the API one after another; keeps the ids the API acknowledged (201)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            body = json.dumps({"name": f"w{i}", "baseUrl": f"http://w{i}", "type": "ollama"}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/backends", data=body, method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    self.acknowledged.append(json.loads(response.read())["id"])
            except (urllib.error.URLError, OSError) as error:
                self.failures.append(str(error))
            time.sleep(0.01)

    def count(self) -> int:
        return len(self.acknowledged)


@pytest.mark.timeout(240)
def test_broker_stopped_and_killed_while_clients_write(
    settings: Settings, private_broker: LocalBroker, topic_prefix: str, processes
):
    settings = settings.model_copy(update={"kafka_bootstrap": private_broker.bootstrap, "kafka_topic_prefix": topic_prefix})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api = processes("serve", env=process_env(settings))  # embedded projections; the relay runs in the API
    wait_until(lambda: api.assert_running() or healthy(api.port), 60, "the API to start", interval=0.1)

    writer = HttpWriter(api.port)
    writer.start()
    try:
        for outage in (private_broker.stop, private_broker.kill):
            before = writer.count()
            wait_until(lambda: writer.count() >= before + 40, 60, "writes with the broker up")
            outage()
            down_at = writer.count()
            # The API goes on acknowledging writes while Kafka is away: the log is the truth.
            wait_until(lambda: writer.count() >= down_at + 40, 60, "writes with the broker down")
            private_broker.start()
            up_at = writer.count()
            wait_until(lambda: writer.count() >= up_at + 40, 60, "writes after the broker came back")
    finally:
        writer.stop.set()
        writer.join(60)
    assert not writer.failures, writer.failures[:3]
    api.assert_running()

    log = EventLog(settings.event_store_env())
    try:
        expected = log.read(after=0, limit=1_000_000)
    finally:
        log.close()
    events = read_topic(
        private_broker.bootstrap, settings.kafka_events_topic,
        lambda got: bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"], timeout=90,
    )
    kept, duplicates = without_duplicates(events)
    assert kept == expected
    assert_order_per_aggregate(kept)
    created = {e["aggregate_id"] for e in kept if e["event_type"] == "backend.created"}
    assert set(writer.acknowledged) <= created
    print(f"{writer.count()} writes acknowledged across a stop and a kill of the broker; {duplicates} duplicates")
