"""Webhook ingest, raw events and replay, on SQLite and PostgreSQL through real HTTP."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.timefmt import format_ns, parse_ns
from tests.api.helpers import assert_error, call
from tests.conftest import TEST_SECRETS_KEY, make_settings

GITHUB = {
    "path": "/hooks/github",
    "eventType": "github.event",
    "eventSource": "github.com",
    "aggregateType": "github.repo",
    "aggregateIDField": "repository.full_name",
    "eventTypeField": 'headers["X-GitHub-Event"]',
    "metadataMapping": {
        "delivery": "headers.x-github-delivery",
        "sender": "sender.login",
        "first_commit": "commits[0].id",
        "commit_ids": "commits[*].id",
        "size": "size",
        "forced": "forced",
        "missing": "nowhere.at.all",
    },
    "version": 1,
}
PUSH = {
    "ref": "refs/heads/main",
    "size": 2,
    "forced": False,
    "repository": {"full_name": "octo/hello", "id": 1296269},
    "sender": {"login": "octocat"},
    "commits": [{"id": "c1", "message": "one"}, {"id": "c2", "message": "two"}],
}
HEADERS = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-42", "X-API-Key": "never-kept"}


@pytest.fixture
def settings(keyed_settings):
    return keyed_settings


async def map_path(client, **changes) -> dict:
    status, body = await call(client, "POST", "/mappings", GITHUB | changes)
    assert status == 201, body
    return body


async def ingest(client, payload, path="/hooks/github", headers=None) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await call(client, "POST", "/ingest", data, params={"path": path}, headers=headers or {})


async def events_of(client, event_type: str) -> list[dict]:
    status, events = await call(client, "GET", "/events/type", params={"event_type": event_type})
    assert status == 200
    return events


async def raw_events(client) -> list[dict]:
    status, raws = await call(client, "GET", "/raw-events")
    assert status == 200
    return raws


# -- ingest ------------------------------------------------------------------------------


async def test_a_webhook_is_kept_raw_and_mapped_to_an_event(client):
    await map_path(client)
    before = time.time_ns()
    status, answer = await ingest(client, PUSH, headers=HEADERS)
    assert status == 201, answer
    [raw] = await raw_events(client)
    assert raw["id"] == f"evt_{parse_ns(raw['received_at'])}" and before <= parse_ns(raw["received_at"]) <= time.time_ns()
    assert (raw["path"], raw["payload"]) == ("/hooks/github", PUSH) and raw["nid"] > 0
    assert raw["headers"]["X-GitHub-Event"] == "push" and "X-API-Key" not in raw["headers"]
    [event] = await events_of(client, "push")
    assert event["nid"] > raw["nid"] and event["id"].startswith("evt_") and event["id"] != raw["id"]
    assert (event["event_source"], event["aggregate_type"], event["aggregate_id"]) == ("github.com", "github.repo", "octo/hello")
    assert event["version"] == 1 and event["data"] == PUSH and event["created_at"] == raw["received_at"]
    assert event["metadata"] == {
        "delivery": "d-42", "sender": "octocat", "first_commit": "c1", "commit_ids": "c1", "size": 2, "forced": False,
    }
    # the answer is the contract's event, with what clients of the reference read from the raw event
    assert answer == event | {"path": raw["path"], "received_at": raw["received_at"], "payload": raw["payload"],
                              "headers": raw["headers"], "raw_id": raw["id"], "raw_nid": raw["nid"]}


async def test_non_string_values_are_written_as_the_reference_writes_them(client):
    await map_path(client, aggregateIDField="repository.id", eventTypeField="forced", eventSourceField="size",
                   aggregateTypeField="commits")
    status, raw = await ingest(client, PUSH, headers=HEADERS)
    assert status == 201, raw
    [event] = await events_of(client, "false")
    assert (event["aggregate_id"], event["event_source"]) == ("1.296269e+06", "2")
    assert event["aggregate_type"] == "[map[id:c1 message:one] map[id:c2 message:two]]"


async def test_the_version_and_the_event_id_can_come_from_the_payload(client):
    await map_path(client, eventTypeField="", versionField="size", eventIDField="headers.X-GitHub-Delivery")
    status, raw = await ingest(client, PUSH, headers=HEADERS)
    assert status == 201
    [event] = await events_of(client, "github.event")
    assert (event["id"], event["version"]) == ("d-42", 2)
    # the same delivery again: the raw payload is kept, the event is a repeat (409)
    status, body = await ingest(client, PUSH, headers=HEADERS)
    assert_error(status, body, 409, "'d-42' is already recorded")
    assert len(await raw_events(client)) == 2 and len(await events_of(client, "github.event")) == 1


async def test_a_missing_field_is_422_naming_it_and_replay_after_a_fix_recovers_it(client):
    await map_path(client, aggregateIDField="repository.name")
    status, body = await ingest(client, PUSH, headers=HEADERS)
    assert_error(status, body, 422, "aggregate ID field 'repository.name' not found in payload")
    assert body["error"]["message"].startswith("failed to ingest event: failed to apply mapping for path /hooks/github:")
    [raw] = await raw_events(client)  # kept
    assert await events_of(client, "push") == []
    window = {"from": format_ns(parse_ns(raw["received_at"]) - 1), "to": format_ns(time.time_ns())}
    status, body = await call(client, "POST", "/replay", params={"nid": str(raw["nid"])} | window)
    assert_error(status, body, 422, f"failed to apply mapping to raw event (nid={raw['nid']}, path=/hooks/github)")

    status, fixed = await call(client, "PUT", "/mapping", GITHUB, params={"path": "/hooks/github"})
    assert status == 200
    status, body = await call(client, "POST", "/replay", params={"nid": str(raw["nid"])} | window)
    assert (status, body) == (202, "event replayed")
    [event] = await events_of(client, "push")  # headers kept with the raw event are looked up again
    assert event["aggregate_id"] == "octo/hello" and event["metadata"]["delivery"] == "d-42"
    status, body = await call(client, "POST", "/replay", params={"nid": str(raw["nid"])} | window)
    assert status == 202  # a replay is a new event each time
    assert len(await events_of(client, "push")) == 2 and await raw_events(client) == [raw]


async def test_an_unknown_mapping_is_404_with_the_raw_event_kept(client):
    status, body = await ingest(client, PUSH, path="/hooks/unmapped")
    assert_error(status, body, 404, "failed to get mapping for path /hooks/unmapped: mapping not found")
    [raw] = await raw_events(client)
    assert raw["path"] == "/hooks/unmapped"
    await map_path(client, path="/hooks/unmapped", eventTypeField="")
    window = {"from": "2000-01-01T00:00:00Z", "to": format_ns(time.time_ns())}
    status, body = await call(client, "POST", "/replay", params={"nid": str(raw["nid"])} | window)
    assert status == 202
    assert [e["aggregate_id"] for e in await events_of(client, "github.event")] == ["octo/hello"]


async def test_an_aggregate_id_that_resolves_to_empty_fails_at_append(client):
    await map_path(client, eventTypeField="")
    status, body = await ingest(client, PUSH | {"repository": {"full_name": ""}})
    assert_error(status, body, 422, "failed to ingest event: failed to append event: missing required field: aggregate_id is required")
    assert len(await raw_events(client)) == 1


DEEP = b'{"a":' * 200 + b"1" + b"}" * 200
VERY_DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'"text"', b"null", b'{"a": NaN}', DEEP, VERY_DEEP])
async def test_bodies_that_are_not_one_json_object_are_422_and_not_kept(client, body):
    await map_path(client)
    status, answer = await ingest(client, body)
    assert_error(status, answer, 422, "invalid JSON payload")
    assert await raw_events(client) == []


async def test_the_path_is_required_and_content_type_is_ignored(client):
    status, body = await call(client, "POST", "/ingest", json.dumps(PUSH).encode())
    assert_error(status, body, 400, "path query parameter is required")
    await map_path(client, eventTypeField="")
    status, body = await ingest(client, PUSH, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 201


async def test_bodies_over_the_limit_are_413(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, ingest_max_bytes=64)
    async with service_for(settings) as client:
        await call(client, "POST", "/mappings", GITHUB | {"eventTypeField": ""})
        big = json.dumps({"repository": {"full_name": "x" * 100}}).encode()
        status, body = await call(client, "POST", "/ingest", big, params={"path": "/hooks/github"})
        assert_error(status, body, 413)

        async def chunked():  # no Content-Length: the limit holds while reading
            for _ in range(4):
                yield b" " * 30
            yield big

        async with client.post("/ingest", params={"path": "/hooks/github"}, data=chunked()) as response:
            assert response.status == 413
        small = json.dumps({"repository": {"full_name": "x"}}).encode()
        status, body = await call(client, "POST", "/ingest", small, params={"path": "/hooks/github"})
        assert status == 201
        status, raws = await call(client, "GET", "/raw-events")
        assert [r["payload"] for r in raws] == [{"repository": {"full_name": "x"}}]


# -- signatures --------------------------------------------------------------------------


def signed(secret: str, body: bytes) -> dict:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def test_signed_webhooks_are_verified_and_mismatches_refused_and_recorded(client, settings):
    await map_path(client, eventTypeField="", signatureScheme="hmac-sha256", signatureSecret="It's a Secret to Everybody")
    body = json.dumps(PUSH).encode()
    status, answer = await ingest(client, body, headers=signed("It's a Secret to Everybody", body))
    assert status == 201, answer
    [raw] = await raw_events(client)
    for headers, reason in [
        ({}, "missing webhook signature"),
        (signed("wrong secret", body), "invalid webhook signature"),
        (signed("It's a Secret to Everybody", body + b" "), "invalid webhook signature"),
    ]:
        status, answer = await ingest(client, body, headers=headers)
        assert_error(status, answer, 401, reason)
    assert await raw_events(client) == [raw]  # refused deliveries are not kept
    assert len(await events_of(client, "github.event")) == 1
    rejections = await events_of(client, "webhook_delivery.rejected")
    assert len(rejections) == 3 and {r["data"]["path"] for r in rejections} == {"/hooks/github"}
    assert rejections[0]["data"]["bodySha256"] == hashlib.sha256(body).hexdigest()
    assert "payload" not in rejections[0]["data"]
    log = EventLog(settings.event_store_env())
    try:
        stored = b"".join(n.state for n in log.recorder.select_notifications(start=1, limit=10_000))
    finally:
        log.close()
    assert b"It's a Secret to Everybody" not in stored


async def test_standard_webhooks_signatures_are_verified(client):
    key = b"0123456789abcdef0123456789abcdef"
    await map_path(client, eventTypeField="", signatureScheme="standard-webhooks",
                   signatureSecret="whsec_" + base64.b64encode(key).decode())
    body = json.dumps(PUSH).encode()
    now = str(int(time.time()))
    mac = hmac.new(key, f"msg_1.{now}.".encode() + body, hashlib.sha256).digest()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": now, "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    status, raw = await ingest(client, body, headers=headers)
    assert status == 201, raw
    stale = headers | {"webhook-timestamp": str(int(time.time()) - 600)}
    status, answer = await ingest(client, body, headers=stale)
    assert_error(status, answer, 401, "tolerance")


# -- raw events --------------------------------------------------------------------------


async def test_raw_events_can_be_posted_listed_and_read(client):
    two_days_ago = format_ns(time.time_ns() - 2 * 86_400 * 10**9)
    status, old = await call(client, "POST", "/raw-events", {"id": "r-old", "received_at": two_days_ago, "path": "/p", "payload": {"a": 1}})
    assert status == 201 and old == {"id": "r-old", "nid": old["nid"], "received_at": two_days_ago, "path": "/p", "payload": {"a": 1}}
    status, new = await call(client, "POST", "/raw-events", {"path": "/p", "payload": {"b": 2}, "headers": {"X-A": "1"}, "nid": 5})
    assert status == 201 and new["headers"] == {"X-A": "1"} and len(new["id"]) == 36 and new["nid"] > old["nid"]
    assert await raw_events(client) == [new]  # the default window is the last 24 h
    status, listed = await call(client, "GET", "/raw-events", params={"from": "2000-01-01T00:00:00Z", "limit": "1"})
    assert listed == [new]
    status, listed = await call(client, "GET", "/raw-events", params={"from": "2000-01-01T00:00:00Z"})
    assert listed == [new, old]
    status, listed = await call(client, "GET", "/raw-events", params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"})
    assert listed == [new, old]  # bounds beyond what times can hold are clamped
    window = {"from": "2000-01-01T00:00:00Z", "to": format_ns(time.time_ns())}
    status, one = await call(client, "GET", f"/raw-events/{old['nid']}", params=window)
    assert one == old
    status, body = await call(client, "GET", f"/raw-events/{old['nid']}", params=window | {"from": format_ns(time.time_ns() - 86_400 * 10**9)})
    assert_error(status, body, 404, "raw event not found")
    status, body = await call(client, "POST", "/raw-events", {"id": "r-old", "path": "/q", "payload": {}})
    assert_error(status, body, 409)
    # nothing is mapped or appended for a posted raw event
    status, types = await call(client, "GET", "/events/types")
    assert [t for t in types if not t.startswith(("group.", "model.", "unique_value.", "taskchain."))] == ["raw_event.received"]


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"payload": {}}, 422, "missing required field: path is required"),
        ({"path": "/p"}, 422, "missing required field: payload is required"),
        ({"path": "/p", "payload": None}, 422, "payload is required"),
        ({"path": "/p", "payload": [1]}, 422, "payload"),
        ({"path": "/p", "payload": {}, "headers": {"a": 1}}, 422, "headers"),
        ({"path": "/p", "payload": {}, "received_at": "today"}, 422, "received_at"),
        ({"path": "/p", "payload": {}, "received_at": "2300-01-01T00:00:00Z"}, 422, "between the years"),
        ({"path": "/p", "payload": {}, "id": "x" * 300}, 422, "id longer than"),
    ],
)
async def test_invalid_raw_events_are_422(client, body, status, fragment):
    response_status, answer = await call(client, "POST", "/raw-events", body)
    assert_error(response_status, answer, status, fragment)


@pytest.mark.parametrize(
    "nid, params, fragment",
    [
        ("abc", {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, "invalid nid format, must be integer"),
        ("1", {"to": "2100-01-01T00:00:00Z"}, "'from' query parameter is required"),
        ("1", {"from": "2000-01-01T00:00:00Z"}, "'to' query parameter is required"),
        ("1", {"from": "2000-01-01", "to": "2100-01-01T00:00:00Z"}, "invalid 'from' time format"),
        ("1", {"from": "2100-01-01T00:00:00Z", "to": "2000-01-01T00:00:00Z"}, "'from' cannot be after 'to'"),
    ],
)
async def test_bad_raw_event_lookups_are_422(client, nid, params, fragment):
    status, body = await call(client, "GET", f"/raw-events/{nid}", params=params)
    assert_error(status, body, 422, fragment)


async def test_raw_event_lists_refuse_bad_parameters_and_unknown_nids_are_404(client):
    status, body = await call(client, "GET", "/raw-events", params={"limit": "1001"})
    assert_error(status, body, 422, "limit cannot exceed 1000")
    status, body = await call(client, "GET", "/raw-events", params={"from": "2100-01-01T00:00:00Z"})
    assert_error(status, body, 422, "'from' cannot be after 'to'")
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    status, body = await call(client, "GET", "/raw-events/999999", params=window)
    assert_error(status, body, 404, "not found: raw event not found")
    status, body = await call(client, "GET", "/raw-events/1", params=window)  # the log's first event is no raw event
    assert_error(status, body, 404)
    assert await raw_events(client) == []


# -- replay --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, status, fragment",
    [
        ({"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 400, "nid query parameter is required"),
        ({"nid": "12abc", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 422, "invalid nid format: expected integer"),
        ({"nid": "1", "to": "2100-01-01T00:00:00Z"}, 400, "from query parameter is required"),
        ({"nid": "1", "from": "yesterday", "to": "2100-01-01T00:00:00Z"}, 422, "invalid from time format"),
        ({"nid": "1", "from": "2000-01-01T00:00:00Z"}, 400, "to query parameter is required"),
        ({"nid": "1", "from": "2000-01-01T00:00:00Z", "to": "soon"}, 422, "invalid to time format"),
        ({"nid": "1", "from": "2100-01-01T00:00:00Z", "to": "2000-01-01T00:00:00Z"}, 400, "'from' cannot be after 'to'"),
        ({"nid": "999999", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 404, "failed to get raw event (nid=999999)"),
        ({"nid": "1", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 404, "raw event not found"),
        ({"nid": "0", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}, 404, "raw event not found"),
    ],
)
async def test_replay_refuses_what_it_cannot_replay(client, params, status, fragment):
    response_status, body = await call(client, "POST", "/replay", params=params)
    assert_error(response_status, body, status, fragment)


async def test_replay_needs_the_raw_event_in_the_window_and_a_mapping(client):
    await map_path(client, eventTypeField="")
    status, answer = await ingest(client, PUSH)
    assert status == 201
    raw = {"nid": answer["raw_nid"], "received_at": answer["received_at"]}
    received = parse_ns(raw["received_at"])
    outside = {"nid": str(raw["nid"]), "from": format_ns(received + 1), "to": format_ns(received + 10**9)}
    status, body = await call(client, "POST", "/replay", params=outside)
    assert_error(status, body, 404, "raw event not found")
    await call(client, "DELETE", "/mapping", params={"path": "/hooks/github"})
    inside = outside | {"from": raw["received_at"], "to": raw["received_at"]}  # inclusive
    status, body = await call(client, "POST", "/replay", params=inside)
    assert_error(status, body, 404, "failed to get mapping for path /hooks/github: mapping not found")
    assert len(await events_of(client, "github.event")) == 1


async def test_a_mapping_changed_through_another_process_applies_after_sync(client, settings, service_for):
    """Two service instances on one store: the second sees the first's change at once after POST /sync."""
    await map_path(client, eventTypeField="")
    async with service_for(settings) as other:
        status, raw = await ingest(other, PUSH)
        assert status == 201
        status, _ = await call(client, "PUT", "/mapping", GITHUB | {"eventTypeField": "", "eventType": "github.changed"},
                               params={"path": "/hooks/github"})
        assert status == 200
        status, body = await call(other, "POST", "/sync")
        assert (status, body) == (200, "mappings synchronized")
        status, raw = await ingest(other, PUSH)
        assert status == 201
    assert len(await events_of(client, "github.changed")) == 1


async def test_with_an_api_token_a_verified_signature_stands_in_for_the_key(tmp_path, service_for):
    """GitHub cannot send X-API-Key: a signed delivery gets in on its signature, anything else is refused."""
    secret = "It's a Secret to Everybody"
    settings = make_settings(
        "sqlite", tmp_path, api_token="t0ken", secrets_key=TEST_SECRETS_KEY
    )
    key = {"X-API-Key": "t0ken"}
    async with service_for(settings) as client:
        signed_mapping = GITHUB | {"eventTypeField": "", "signatureScheme": "hmac-sha256", "signatureSecret": secret}
        status, _ = await call(client, "POST", "/mappings", signed_mapping, headers=key)
        assert status == 201
        unsigned = GITHUB | {"path": "/hooks/unsigned", "eventTypeField": ""}
        assert (await call(client, "POST", "/mappings", unsigned, headers=key))[0] == 201
        body = json.dumps(PUSH).encode()

        status, answer = await ingest(client, body, headers=signed(secret, body))
        assert status == 201 and answer["aggregate_id"] == "octo/hello"

        status, error = await ingest(client, body, headers=signed("wrong", body))
        assert_error(status, error, 401, "invalid webhook signature")
        status, error = await ingest(client, body, path="/hooks/unsigned")
        assert_error(status, error, 401, "missing API key")
        status, error = await ingest(client, body, path="/hooks/nowhere")
        assert_error(status, error, 401, "missing API key")
        status, error = await ingest(client, body, headers=signed(secret, body) | {"X-API-Key": "wrong"})
        assert_error(status, error, 401, "invalid API key")
        # only the signed delivery was kept; the key still opens everything else
        status, raws = await call(client, "GET", "/raw-events", headers=key)
        assert status == 200 and [r["path"] for r in raws] == ["/hooks/github"]
        status, _ = await call(client, "GET", "/raw-events")
        assert status == 401
        assert (await ingest(client, body, path="/hooks/unsigned", headers=key))[0] == 201
        # A sender's own bearer token beside the key is the sender's, not a second credential of ours.
        sender = key | {"Authorization": "Bearer the-senders-own"}
        assert (await ingest(client, body, path="/hooks/unsigned", headers=sender))[0] == 201
