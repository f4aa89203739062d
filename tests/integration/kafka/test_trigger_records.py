"""What trigger dispatch appends — ``trigger.fired`` records and the events scripts emit — reaches Kafka
like every other event of the log."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from tests.integration.kafka.conftest import read_topic


async def test_trigger_records_and_emitted_events_are_relayed(kafka_settings: Settings):
    async with TestClient(TestServer(create_app(kafka_settings))) as client:
        script = "function greet(e) { sendEvent('greeted', {who: e.data.who}); return {greeted: e.data.who}; }"
        response = await client.post("/functions", json={"name": "greet", "scriptType": "goja", "script": script})
        assert response.status == 201, await response.text()
        trigger = {"name": "on-hello", "listenFor": {"type": "hello"}, "type": "function", "function": "greet"}
        assert (await client.post("/event-triggers", json=trigger)).status == 201
        event = {"event_type": "hello", "event_source": "tests", "aggregate_type": "a", "aggregate_id": "1", "version": 1,
                 "data": {"who": "kafka"}}
        response = await client.post("/events", json=event)
        assert response.status == 201 and response.headers["X-Chainloom-Triggers"] == "done"
        hello = await response.json()

    def done(events: list[dict]) -> bool:
        return {"trigger.fired", "greeted"} <= {e["event_type"] for e in events}

    events = read_topic(kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic, done)
    [fired] = [e for e in events if e["event_type"] == "trigger.fired"]
    [greeted] = [e for e in events if e["event_type"] == "greeted"]
    assert fired["data"]["eventNid"] == hello["nid"] and fired["data"]["result"] == {"greeted": "kafka"}
    assert fired["data"]["emitted"] == [greeted["id"]] and greeted["data"] == {"who": "kafka"}
    nids = [e["nid"] for e in events]
    assert nids == sorted(nids) and hello["nid"] < greeted["nid"] < fired["nid"]
