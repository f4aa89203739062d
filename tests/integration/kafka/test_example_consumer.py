"""The example consumer of docs/kafka.md reads the log the relay published, once and in order."""

from __future__ import annotations

import json
import subprocess
import sys

from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import PROJECT_ROOT
from chainloom.web.app import create_app


async def test_example_consumer_replays_the_log(kafka_settings: Settings):
    async with TestClient(TestServer(create_app(kafka_settings))) as client:
        for i in range(3):
            response = await client.post("/backends", json={"name": f"c{i}", "baseUrl": f"http://c{i}", "type": "vllm"})
            assert response.status == 201
    log = EventLog(kafka_settings.event_store_env())
    try:
        expected = log.read(after=0, limit=100_000)
    finally:
        log.close()

    result = subprocess.run(
        [sys.executable, "examples/kafka_consumer.py", "--bootstrap", kafka_settings.kafka_bootstrap,
         "--prefix", kafka_settings.kafka_topic_prefix, "--from-beginning",
         "--max-events", str(len(expected)), "--idle-timeout", "20"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["nid"], line["id"], line["event_type"]) for line in lines] == [
        (e["nid"], e["id"], e["event_type"]) for e in expected
    ]
    assert lines[-1]["key"] == f"{expected[-1]['aggregate_type']}:{expected[-1]['aggregate_id']}"
    assert [line["data"] for line in lines] == [e["data"] for e in expected]
