"""The relay publishes the log to Kafka: every event once, in log order, resuming after crashes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.domain.backends import Backend
from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_log import header, record_key
from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import (
    assert_order_per_aggregate,
    process_env,
    read_topic,
    without_duplicates,
)
from tests.integration.serve_process import log_events
from chainloom.web.app import create_app




async def test_every_event_arrives_once_in_log_order(kafka_settings: Settings):
    async with TestClient(TestServer(create_app(kafka_settings))) as client:
        backend_ids = []
        for i in range(5):
            response = await client.post("/backends", json={"name": f"b{i}", "baseUrl": f"http://h{i}", "type": "ollama"})
            assert response.status == 201, await response.text()
            backend_ids.append((await response.json())["id"])
        response = await client.put(
            f"/backends/{backend_ids[0]}", json={"name": "renamed", "baseUrl": "http://h0", "type": "vllm"}
        )
        assert response.status == 200, await response.text()
        assert (await client.delete(f"/backends/{backend_ids[1]}")).status == 200
        group = await client.post("/groups", json={"name": "g", "purposeType": "Internal Tasks"})
        assert group.status == 201, await group.text()
        # Events clients append (the same aggregate and version twice is allowed for them).
        for data in ({"email": "a@b.c"}, {"email": "d@e.f"}):
            external = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user",
                        "aggregate_id": "u-1", "version": 1, "data": data}
            response = await client.post("/events", json=external)
            assert response.status == 201, await response.text()

    expected = log_events(kafka_settings)
    records: list = []
    events = read_topic(
        kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic,
        lambda got: len(got) >= len(expected), records=records,
    )
    # Exactly once, in the log's order (so in order per aggregate), and nothing more arrives.
    assert events == expected
    assert_order_per_aggregate(events)
    assert {e["event_type"] for e in events} >= {
        "backend.created", "backend.updated", "backend.deleted", "group.created", "user.created"
    }
    assert [e["data"] for e in events if e["event_source"] == "auth"] == [{"email": "a@b.c"}, {"email": "d@e.f"}]
    for record, event in zip(records, events, strict=True):
        assert record.key == f"{event['aggregate_type']}:{event['aggregate_id']}".encode() == record_key(event)
        assert header(record.headers, "nid") == str(event["nid"]).encode()
        assert header(record.headers, "event_id") == event["id"].encode()
        assert header(record.headers, "event_type") == event["event_type"].encode()
        assert header(record.headers, "event_source") == event["event_source"].encode()
        assert header(record.headers, "content-type") == b"application/json"
        assert record.partition == 0


class Appender(threading.Thread):
    """Appends events to the log in tens, ``pause`` seconds apart: backends created, then updated in turns."""

    def __init__(self, settings: Settings, backends: int, updates: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.pause = pause
        self.backends = backends
        self.updates = updates
        self.appended = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        log = EventLog(self.settings.event_store_env())
        try:
            ids = [str(uuid.uuid4()) for _ in range(self.backends)]
            for start in range(0, len(ids), 10):
                batch = [Backend.create(i, f"n-{i}", f"http://{i}", "ollama") for i in ids[start:start + 10]]
                log.save(*batch)
                self.appended += len(batch)
                time.sleep(self.pause)
            for round_ in range(self.updates):
                for start in range(0, len(ids), 10):
                    batch = []
                    for backend_id in ids[start:start + 10]:
                        backend = log.get(Backend, backend_id)
                        backend.update(f"n-{backend_id}-{round_}", f"http://{backend_id}", "vllm")
                        batch.append(backend)
                    log.save(*batch)
                    self.appended += len(batch)
                    time.sleep(self.pause)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            log.close()


@pytest.mark.timeout(180)
def test_relay_killed_mid_stream_loses_nothing(kafka_settings: Settings, processes):
    """kill -9 the relay while thousands of events are appended; the restarted relay completes the topic."""
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = process_env(kafka_settings)
    relay = processes("relay", env=env)
    appender = Appender(kafka_settings, backends=500, updates=5, pause=0.02)  # 3,000 events in ~6 s+
    appender.start()

    topic = kafka_settings.kafka_events_topic
    kills = []
    for published in (600, 1400, 2200):
        read_topic(kafka_settings.kafka_bootstrap, topic, lambda got: len(got) >= published, timeout=60)
        relay.assert_running()
        relay.kill()
        kills.append(appender.appended)
        time.sleep(0.3)  # the log grows while no relay runs
        relay = processes("relay", env=env)
    appender.join(120)
    assert appender.error is None, appender.error
    assert appender.appended == 3000
    assert 0 < kills[0] and kills[-1] < 3000, f"the relay was not killed mid-stream: {kills}"

    expected = log_events(kafka_settings)
    assert len(expected) == 3000

    def complete(got: list[dict]) -> bool:
        return bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"]

    events = read_topic(kafka_settings.kafka_bootstrap, topic, complete, timeout=90)
    kept, duplicates = without_duplicates(events)
    assert kept == expected  # nothing lost, nothing reordered
    assert_order_per_aggregate(kept)
    # Duplicates are copies of one chunk at most (published, not yet tracked, when killed).
    assert duplicates <= 3 * 1000
    print(f"relay killed after {kills} appends; {duplicates} duplicates on the topic")


@pytest.mark.timeout(180)
def test_one_relay_publishes_and_a_standby_takes_over(kafka_settings: Settings, processes):
    """Two relays on one log: one publishes (no copies from the other), and when it dies the other goes on."""
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = process_env(kafka_settings)
    relays = [processes("relay", env=env), processes("relay", env=env)]
    appender = Appender(kafka_settings, backends=200, updates=4, pause=0.02)  # 1,000 events
    appender.start()
    topic = kafka_settings.kafka_events_topic
    both_running = read_topic(kafka_settings.kafka_bootstrap, topic, lambda got: len(got) >= 300, timeout=60)
    for relay in relays:
        relay.assert_running()
    assert without_duplicates(both_running)[1] == 0, "both relays published"
    relays[0].kill()  # the active one or the standby: either way the log must get through
    appender.join(120)
    assert appender.error is None, appender.error

    expected = log_events(kafka_settings)
    events = read_topic(
        kafka_settings.kafka_bootstrap, topic,
        lambda got: bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"], timeout=90,
    )
    kept, duplicates = without_duplicates(events)
    assert kept == expected
    assert duplicates <= 1000  # at most the chunk the killed relay had not tracked; never a second stream
