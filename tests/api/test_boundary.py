"""The log's boundary: nothing a store cannot hold gets in, nothing too large, and a refusal writes nothing.

Every case reproduces a request that once was stored and then answered 500,
stopped a projector, or behaved differently on SQLite and PostgreSQL. Each runs
on both stores; after every refusal the log's head must not have moved.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from chainloom.infra.eventlog import EventLog
from tests.api.helpers import assert_error, call
from tests.conftest import make_settings

SURROGATE = "\ud800"
# A lone surrogate written as CESU-8 bytes: Python's JSON reader decodes it to one.
CESU8 = b"\xed\xa0\x80"


def _json(value) -> bytes:
    """JSON as a client sends it: a lone surrogate goes out as the escape \\ud800 (valid JSON)."""
    return json.dumps(value).encode()


async def head(settings) -> int:
    def read() -> int:
        log = EventLog(settings.event_store_env())
        try:
            return log.head()
        finally:
            log.close()

    return await asyncio.to_thread(read)


async def refused(client, settings, method, path, body=None, *, status=422, param=None, **kwargs) -> dict:
    """The request is refused with ``status`` in the error envelope, and the log did not move."""
    before = await head(settings)
    data = body if body is None or isinstance(body, bytes) else _json(body)
    got, answer = await call(client, method, path, data, **kwargs)
    assert_error(got, answer, status)
    if param is not None:
        assert answer["error"].get("param") == param, answer
    assert await head(settings) == before
    return answer


MAPPING = {"path": "/hooks/x", "eventType": "x.happened", "eventSource": "x.test", "aggregateType": "x", "aggregateIDField": "id", "version": 1}
EVENT = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user", "aggregate_id": "u-1", "version": 1}


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/groups", {"name": "ok", "purposeType": SURROGATE}, "purposeType"),
        ("/groups", {"name": f"a{SURROGATE}b"}, "name"),
        ("/backends", {"name": "b", "baseUrl": f"http://h/{SURROGATE}", "type": "ollama"}, "baseUrl"),
        ("/models", {"model": f"m{SURROGATE}", "contextLength": 8}, "model"),
        ("/mappings", MAPPING | {"path": f"/h{SURROGATE}"}, "path"),
        ("/mappings", MAPPING | {"eventType": f"t{SURROGATE}"}, "eventType"),
        ("/mappings", MAPPING | {"metadataMapping": {"k": f"v{SURROGATE}"}}, "metadataMapping.k"),
        ("/mappings", MAPPING | {"aggregateIDField": SURROGATE}, "aggregateIDField"),
        ("/events", EVENT | {"data": {"k": SURROGATE}}, "data.k"),
        ("/events", EVENT | {"metadata": {SURROGATE: 1}}, None),
        ("/events", EVENT | {"data": [{"deep": ["x", f"y{SURROGATE}"]}]}, "data[0].deep[1]"),
        ("/raw-events", {"path": "/p", "payload": {"k": SURROGATE}}, "payload.k"),
        ("/groups", {"name": "a\x00b"}, "name"),
        ("/events", EVENT | {"aggregate_id": "a\x00b"}, "aggregate_id"),
        ("/events", EVENT | {"data": {"k": "nul \x00 inside"}}, "data.k"),
    ],
)
async def test_text_no_store_can_hold_is_refused_before_anything_is_written(client, settings, path, body, param):
    answer = await refused(client, settings, "POST", path, body, param=param)
    json.dumps(answer)  # the error body is JSON, even where it quotes the value
    # the service goes on as before: a write right after is stored and read back at once
    status, group = await call(client, "POST", "/groups", {"name": "after", "purposeType": "p"})
    assert status == 201, group
    status, groups = await call(client, "GET", "/groups")
    assert "after" in [g["name"] for g in groups]


async def test_cesu8_bytes_are_refused_like_the_surrogate_they_encode(client, settings):
    await refused(client, settings, "POST", "/groups", b'{"name":"' + CESU8 + b'"}', param="name")
    await refused(client, settings, "POST", "/events", _json(EVENT)[:-1] + b',"data":{"k":"' + CESU8 + b'"}}', param="data.k")


async def test_webhook_payloads_and_headers_are_checked_before_the_raw_event_is_kept(client, settings):
    status, _ = await call(client, "POST", "/mappings", MAPPING)
    assert status == 201
    answer = await refused(client, settings, "POST", "/ingest", _json({"id": "1", "k": SURROGATE}), params={"path": "/hooks/x"})
    assert answer["error"]["param"] == "payload.k"
    await refused(client, settings, "POST", "/ingest", b'{"id":"1","k":"' + CESU8 + b'"}', params={"path": "/hooks/x"})
    # header bytes that are not UTF-8: aiohttp hands them over as surrogate escapes
    before = await head(settings)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = b'{"id":"1"}'
    writer.write(
        b"POST /ingest?path=/hooks/x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"X-Odd: a\xff\xfeb\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    assert b" 422 " in status_line, response
    envelope = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert envelope["error"]["param"].startswith("headers.X-Odd")
    assert await head(settings) == before
    # a clean delivery still goes through
    status, event = await call(client, "POST", "/ingest", b'{"id":"1"}', params={"path": "/hooks/x"})
    assert status == 201, event


async def test_raw_events_and_event_queries_keep_answering(client, settings):
    """Once refused, nothing can make the read side answer 500 (it used to, until the event was erased)."""
    await refused(client, settings, "POST", "/events", EVENT | {"event_type": f"t{SURROGATE}"}, param="event_type")
    for path, params in [
        ("/raw-events", {}),
        ("/events/type", {"event_type": "user.created"}),
        ("/events/source", {"event_type": "user.created", "event_source": "auth"}),
        ("/events/aggregate", {"event_type": "user.created", "aggregate_type": "user", "aggregate_id": "u-1"}),
        ("/events/types", {}),
    ]:
        status, body = await call(client, "GET", path, params=params)
        assert status == 200, (path, body)


@pytest.mark.parametrize(
    "path, params, param",
    [
        ("/group-by-name/a%00b", None, "name"),
        ("/groups/x%00", None, "id"),
        ("/events/type", {"event_type": "a\x00b"}, "event_type"),
        ("/mapping", {"path": "/p\x00"}, "path"),
    ],
)
async def test_url_values_are_checked_alike_on_both_stores(client, settings, path, params, param):
    status, body = await call(client, "GET", path, params=params)
    assert_error(status, body, 422)
    assert body["error"]["param"] == param


async def test_the_same_refusal_for_a_put_and_a_delete(client, settings):
    status, group = await call(client, "POST", "/groups", {"name": "g", "purposeType": "p"})
    assert status == 201
    await refused(client, settings, "PUT", f"/groups/{group['id']}", {"name": "g", "purposeType": f"{SURROGATE}"}, param="purposeType")
    await refused(client, settings, "DELETE", "/groups/a%00b", param="id")
    status, again = await call(client, "GET", f"/groups/{group['id']}")
    assert again["purposeType"] == "p"


# -- size ----------------------------------------------------------------------------------


@pytest.fixture
async def small_events(store_kind, tmp_path, service_for):
    """A service whose events are limited to 4 KiB (the default is 1 MiB), on both stores."""
    from tests.conftest import POSTGRES_URL, TEST_SECRETS_KEY, reset_postgres

    if store_kind == "postgres":
        reset_postgres(POSTGRES_URL)
    settings = make_settings(store_kind, tmp_path / "data", max_event_bytes=4096, secrets_key=TEST_SECRETS_KEY)
    async with service_for(settings) as client:
        yield client, settings


async def test_events_over_the_limit_are_413_and_not_stored(small_events):
    client, settings = small_events
    # a body over the limit is refused from its Content-Length, before it is read
    await refused(client, settings, "POST", "/events", EVENT | {"data": {"k": "x" * 5000}}, status=413)
    # a body just under the limit whose event (with its envelope) is over it
    body = EVENT | {"data": {"k": ""}}
    body["data"]["k"] = "x" * (4096 - len(_json(body)) - 10)
    assert len(_json(body)) < 4096
    answer = await refused(client, settings, "POST", "/events", body, status=413)
    assert "4096" in answer["error"]["message"]
    await refused(client, settings, "POST", "/raw-events", {"path": "/p", "payload": {"k": "x" * 5000}}, status=413)
    await refused(client, settings, "POST", "/groups", {"name": "x" * 5000}, status=413)
    # a chunked body without Content-Length is cut off once it passes the limit
    async def chunks():
        for _ in range(10):
            yield b" " * 1024
    before = await head(settings)
    async with client.post("/events", data=chunks(), headers={"Content-Type": "application/json"}) as response:
        assert_error(response.status, await response.json(), 413)
    assert await head(settings) == before
    status, event = await call(client, "POST", "/events", EVENT | {"data": {"k": "small"}})
    assert status == 201 and event["data"] == {"k": "small"}


async def test_a_mapped_event_over_the_limit_is_413_and_the_raw_payload_is_kept(small_events):
    """Raw webhook payloads keep their own limit (CHAINLOOM_INGEST_MAX_BYTES): kept for /replay."""
    client, settings = small_events
    status, _ = await call(client, "POST", "/mappings", MAPPING)
    assert status == 201
    before = await head(settings)
    status, answer = await call(client, "POST", "/ingest", _json({"id": "1", "blob": "x" * 6000}), params={"path": "/hooks/x"})
    assert_error(status, answer, 413)
    assert await head(settings) == before + 1  # the raw event alone
    status, raws = await call(client, "GET", "/raw-events")
    assert [r["payload"]["id"] for r in raws] == ["1"]
    status, events = await call(client, "GET", "/events/type", params={"event_type": "x.happened"})
    assert events == []


async def test_a_large_event_is_stored_whole_but_not_echoed_whole(client):
    data = {"k": "x" * 100_000}
    status, event = await call(client, "POST", "/events", EVENT | {"data": data})
    assert status == 201 and "data" not in event and event["nid"] > 0 and event["event_type"] == "user.created"
    status, stored = await call(client, "GET", "/events/type", params={"event_type": "user.created"})
    assert stored[0]["data"] == data


# -- auth, version -------------------------------------------------------------------------


async def test_bearer_tokens_are_accepted_wherever_the_api_key_is(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, api_token="s3cret-token")
    async with service_for(settings) as client:
        status, _ = await call(client, "GET", "/groups", headers={"Authorization": "Bearer s3cret-token"})
        assert status == 200
        status, _ = await call(client, "POST", "/groups", {"name": "via-bearer"}, headers={"Authorization": "bearer s3cret-token"})
        assert status == 201
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LXRva2Vu"}, {"Authorization": "s3cret-token"}):
            status, body = await call(client, "GET", "/groups", headers=headers)
            assert_error(status, body, 401)
        # Two credentials that disagree are refused, whichever is right; the same key twice, or a proxy's Basic
        # credentials beside the key, are not a conflict.
        for headers in ({"X-API-Key": "s3cret-token", "Authorization": "Bearer wrong"}, {"X-API-Key": "wrong", "Authorization": "Bearer s3cret-token"}):
            status, body = await call(client, "GET", "/groups", headers=headers)
            assert_error(status, body, 401)
            assert "conflicting credentials" in body["error"]["message"], body
        for headers in ({"X-API-Key": "s3cret-token", "Authorization": "Bearer s3cret-token"}, {"X-API-Key": "s3cret-token", "Authorization": "Basic dXNlcjpwdw=="}):
            assert (await call(client, "GET", "/groups", headers=headers))[0] == 200, headers


@pytest.mark.in_process(reason="expects two answers from one node; each worker is a node of its own")
async def test_version_names_the_node_and_the_tenancy(client, settings):
    status, first = await call(client, "GET", "/version")
    status, second = await call(client, "GET", "/version")
    assert status == 200
    assert first["version"] and first["tenancy"] == str(settings.tenancy)
    assert first["nodeInstanceID"] == second["nodeInstanceID"] and len(first["nodeInstanceID"]) >= 16
