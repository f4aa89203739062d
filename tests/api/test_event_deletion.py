"""DELETE /events/type: erased from the log and every read model, audited, internal events refused."""

import json
import time

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.timefmt import format_ns
from chainloom.projections.rebuild import rebuild
from tests.api.helpers import assert_error, call, create_backend

EVER = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
MINUTE = 60 * 10**9


async def post(client, **fields) -> dict:
    body = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user", "aggregate_id": "u", "version": 1}
    status, event = await call(client, "POST", "/events", body | fields)
    assert status == 201, event
    return event


def log_events(settings) -> list[dict]:
    log = EventLog(settings.event_store_env())
    try:
        return log.read(0, 100_000)
    finally:
        log.close()


async def listed(client, event_type: str) -> list[dict]:
    status, events = await call(client, "GET", "/events/type", params={"event_type": event_type} | EVER)
    return events


async def test_matching_events_are_erased_everywhere_and_the_deletion_audited(client, settings, service_for):
    old = await post(client, aggregate_id="old", created_at=format_ns(time.time_ns() - 8 * MINUTE), data={"email": "gone@x"})
    recent = [await post(client, aggregate_id=f"r{i}", data={"email": "gone@x"}) for i in range(3)]
    other_type = await post(client, event_type="user.deleted", data={"email": "kept@x"})
    window = {"from": format_ns(time.time_ns() - 5 * MINUTE), "to": format_ns(time.time_ns())}
    status, body = await call(client, "DELETE", "/events/type", params={"event_type": "user.created"} | window)
    assert (status, body) == (200, "events deleted")

    assert await listed(client, "user.created") == [old]
    assert await listed(client, "user.deleted") == [other_type]
    in_log = log_events(settings)
    assert {e["nid"] for e in recent}.isdisjoint(e["nid"] for e in in_log)
    assert old["nid"] in {e["nid"] for e in in_log}
    [audit] = await listed(client, "event_deletion.recorded")
    assert audit["event_source"] == "chainloom" and audit["nid"] > max(e["nid"] for e in recent)
    assert audit["data"] == {"eventType": "user.created", "fromTime": window["from"], "toTime": window["to"],
                             "upToNid": audit["data"]["upToNid"], "count": 3}
    assert "gone@x" not in json.dumps(audit)
    assert audit["metadata"]["actor"] == "anonymous"

    # positions are never handed out again; rebuilt read models agree with the live ones
    after = await post(client, aggregate_id="after")
    assert after["nid"] > audit["nid"]
    await client.close()
    rebuild(settings)
    async with service_for(settings) as again:
        assert await listed(again, "user.created") == [after, old]
        assert await listed(again, "event_deletion.recorded") == [audit]


async def test_aggregate_events_cannot_be_deleted(client, settings):
    await create_backend(client, "keep-me")
    status, body = await call(client, "DELETE", "/events/type", params={"event_type": "backend.created"} | EVER)
    assert_error(status, body, 403, "cannot be deleted")
    assert len(await listed(client, "backend.created")) == 1
    status, backends = await call(client, "GET", "/backends")
    assert [b["name"] for b in backends] == ["keep-me"]
    assert await listed(client, "event_deletion.recorded") == []
    # a window without any of them deletes nothing and says so
    status, body = await call(client, "DELETE", "/events/type", params={"event_type": "backend.created",
                              "from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"})
    assert (status, body) == (200, "events deleted")
    [audit] = await listed(client, "event_deletion.recorded")
    assert audit["data"]["count"] == 0


async def test_raw_payloads_can_be_erased_too(client):
    await call(client, "POST", "/mappings", {"path": "/h", "eventType": "t", "eventSource": "s", "aggregateType": "a",
                                             "aggregateIDField": "id", "version": 1})
    status, answer = await call(client, "POST", "/ingest", {"id": "person-1", "name": "Ada"}, params={"path": "/h"})
    assert status == 201
    status, [raw] = await call(client, "GET", "/raw-events")
    status, body = await call(client, "DELETE", "/events/type", params={"event_type": "t"} | EVER)
    assert status == 200
    status, raws = await call(client, "GET", "/raw-events", params=EVER)
    assert raws == [raw]  # deleting mapped events leaves raw events alone
    status, body = await call(client, "DELETE", "/events/type", params={"event_type": "raw_event.received"} | EVER)
    assert status == 200
    status, raws = await call(client, "GET", "/raw-events", params=EVER)
    assert raws == []
    status, body = await call(client, "POST", "/replay", params={"nid": str(raw["nid"])} | EVER)
    assert_error(status, body, 404, "raw event not found")


@pytest.mark.parametrize(
    "params, fragment",
    [
        (EVER, "event_type is required"),
        ({"event_type": "x", "to": EVER["to"]}, "'from' is required"),
        ({"event_type": "x", "from": EVER["from"]}, "'to' is required"),
        ({"event_type": "x", "from": "2000-01-01", "to": EVER["to"]}, "invalid 'from' time format"),
        ({"event_type": "x", "from": EVER["to"], "to": EVER["from"]}, "cannot be after 'to'"),
    ],
)
async def test_deletion_parameters_are_all_required(client, params, fragment):
    await post(client, event_type="x")
    status, body = await call(client, "DELETE", "/events/type", params=params)
    assert_error(status, body, 422, fragment)
    assert len(await listed(client, "x")) == 1
