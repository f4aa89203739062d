"""The distributed mode loses its broker: a write is stored but cannot be shown, the client gets 503 and
retries with its Idempotency-Key. The retry writes nothing; once the broker is back and the projector
worker has caught up, the retry gets the 201 the write deserved.

API (``CHAINLOOM_PROJECTIONS=kafka``), relay and projector worker run as processes of their own on
PostgreSQL, against a broker of this test's own (stopping the shared one would disturb other tests).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_broker import LocalBroker
from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import healthy, process_env, wait_until

KEY = "Idempotency-Key"


def post(port: int, path: str, body: Any, key: str) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", KEY: key},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def created(settings: Settings, name: str) -> list[dict]:
    log = EventLog(settings.event_store_env())
    try:
        return [e for e in log.read(after=0, limit=1_000_000)
                if e["event_type"] == "backend.created" and e["data"]["name"] == name]
    finally:
        log.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("store_kind", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_retry_during_a_broker_outage_writes_once_and_gets_the_success(
    settings: Settings, private_broker: LocalBroker, topic_prefix: str, processes
):
    settings = settings.model_copy(update={"kafka_bootstrap": private_broker.bootstrap, "kafka_topic_prefix": topic_prefix})
    env = process_env(settings, CHAINLOOM_PROJECTION_TIMEOUT="2")
    worker = processes("project", env=env)
    relay = processes("relay", env=env)
    api = processes("serve", env=process_env(
        settings, CHAINLOOM_PROJECTIONS="kafka", CHAINLOOM_KAFKA_RELAY_IN_SERVE="false",
        CHAINLOOM_PROJECTION_TIMEOUT="2", CHAINLOOM_WORKERS="1",
    ))

    def up() -> bool:
        for process in (api, worker, relay):
            process.assert_running()
        return healthy(api.port)

    wait_until(up, 90, "the API, the relay and the projector worker to start", interval=0.1)
    status, answer, _ = post(api.port, "/backends", {"name": "before", "baseUrl": "http://before", "type": "ollama"},
                             str(uuid.uuid4()))
    assert status == 201, answer

    private_broker.stop()
    key = str(uuid.uuid4())
    body = {"name": "during", "baseUrl": "http://during", "type": "ollama"}
    status, answer, headers = post(api.port, "/backends", body, key)
    assert status == 503 and headers["Retry-After"] == "1", answer
    assert len(created(settings, "during")) == 1  # stored, though not shown
    status, answer, headers = post(api.port, "/backends", body, key)
    assert status == 503 and headers["Retry-After"] == "1", answer
    assert "was stored" in answer["error"]["message"]
    assert len(created(settings, "during")) == 1  # the retry wrote nothing

    private_broker.start()
    while True:  # retry as told (Retry-After), until the relay and the worker have caught up
        status, answer, headers = post(api.port, "/backends", body, key)
        if status != 503:
            break
        time.sleep(0.5)
    assert status == 201, answer
    assert headers["Idempotent-Replayed"] == "true"
    (stored,) = created(settings, "during")
    assert answer["id"] == stored["aggregate_id"] and answer["name"] == "during"
    # Without the key, the same request is a new one, refused: its name is taken by the first attempt.
    status, answer, _ = post(api.port, "/backends", body, str(uuid.uuid4()))
    assert status == 409, answer
    for process in (api, worker, relay):
        process.assert_running()
