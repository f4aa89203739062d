"""Idempotency-Key on POST and PUT, on SQLite and PostgreSQL through real HTTP: a retry is applied once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.web.keys import PROJECTIONS
from tests.api.helpers import assert_error, call

KEY = "Idempotency-Key"


async def keyed(client: TestClient, method: str, path: str, body: Any, key: str, **headers: str):
    """(status, JSON body, response headers) of a request sent with ``key``."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with client.request(
        method, path, data=data, headers={"Content-Type": "application/json", KEY: key, **headers}
    ) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None), response.headers


def logged(settings: Settings, event_type: str) -> list[dict[str, Any]]:
    """The events of a type in the log itself (not a read model)."""
    log = EventLog(settings.event_store_env())
    try:
        return [e for e in log.read(after=0, limit=1_000_000) if e["event_type"] == event_type]
    finally:
        log.close()


def backend(name: str) -> dict[str, str]:
    return {"name": name, "baseUrl": f"http://{name}:11434", "type": "ollama"}


# -- retries get the first answer and write nothing ------------------------------------------


async def test_a_retried_create_gets_the_first_answer_and_writes_once(client, settings):
    key = str(uuid.uuid4())
    first = await keyed(client, "POST", "/backends", backend("b1"), key)
    second = await keyed(client, "POST", "/backends", backend("b1"), key)
    assert first[0] == second[0] == 201, (first, second)
    assert first[1] == second[1]
    assert second[2]["Content-Type"] == first[2]["Content-Type"] == "application/json; charset=utf-8"
    assert second[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first[2]
    assert second[2]["X-Request-ID"] != first[2]["X-Request-ID"]  # the retry's own request id
    created = await asyncio.to_thread(logged, settings, "backend.created")
    assert [e["aggregate_id"] for e in created] == [first[1]["id"]]
    status, listed = await call(client, "GET", "/backends")
    assert status == 200 and [b["id"] for b in listed] == [first[1]["id"]]


async def test_a_retried_event_is_appended_once(client, settings):
    event = {"event_type": "order.placed", "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o-1",
             "version": 1, "data": {"total": 42}}
    key = "order-o-1-attempt"
    first = await keyed(client, "POST", "/events", event, key)
    second = await keyed(client, "POST", "/events", event, key)
    assert first[0] == second[0] == 201 and first[1] == second[1], (first, second)
    # Without the key the same request is another event (its id is assigned anew).
    third = await keyed(client, "POST", "/events", event, "another-key")
    assert third[0] == 201 and third[1]["id"] != first[1]["id"]
    assert len(await asyncio.to_thread(logged, settings, "order.placed")) == 2


async def test_a_refusal_is_replayed_too(client, settings):
    """A 4xx answer is the request's answer: its retry gets it again, even when it would now succeed."""
    key = str(uuid.uuid4())
    status, body, _ = await keyed(client, "PUT", "/backends/missing", backend("b1"), key)
    assert_error(status, body, 404)
    again = await keyed(client, "PUT", "/backends/missing", backend("b1"), key)
    assert (again[0], again[1]) == (status, body) and again[2]["Idempotent-Replayed"] == "true"


async def test_puts_and_other_posts_take_a_key(client, settings):
    key = str(uuid.uuid4())
    status, created, _ = await keyed(client, "POST", "/backends", backend("b1"), key)
    assert status == 201
    put_key = str(uuid.uuid4())
    first = await keyed(client, "PUT", f"/backends/{created['id']}", backend("b2"), put_key)
    second = await keyed(client, "PUT", f"/backends/{created['id']}", backend("b2"), put_key)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert len(await asyncio.to_thread(logged, settings, "backend.updated")) == 1
    group_key = str(uuid.uuid4())
    first = await keyed(client, "POST", "/groups", {"name": "g", "purposeType": "chat"}, group_key)
    second = await keyed(client, "POST", "/groups", {"name": "g", "purposeType": "chat"}, group_key)
    assert first[0] == second[0] == 201 and first[1] == second[1]


async def test_without_a_key_a_repeated_request_is_a_new_request(client):
    first = await call(client, "POST", "/backends", backend("b1"))
    second = await call(client, "POST", "/backends", backend("b1"))
    assert first[0] == 201
    assert_error(*second, 409)


# -- a key with another request, bad keys ----------------------------------------------------


MAPPING = {"path": "/hooks/a", "eventType": "a.b", "eventSource": "s", "aggregateType": "t", "aggregateIDField": "id",
           "version": 1}


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/mappings", MAPPING | {"version": 2}),  # another body
        ("POST", "/mappings?x=1", MAPPING),  # another path (its query string included)
        ("PUT", "/mapping", MAPPING),  # another method and path
    ],
)
async def test_a_key_used_for_another_request_is_refused(client, settings, method, path, body):
    key = str(uuid.uuid4())
    assert (await keyed(client, "POST", "/mappings", MAPPING, key))[0] == 201
    status, answer, _ = await keyed(client, method, path, body, key)
    assert_error(status, answer, 422, KEY)
    assert answer["error"]["param"] == KEY
    assert len(await asyncio.to_thread(logged, settings, "mapping.created")) == 1
    assert await asyncio.to_thread(logged, settings, "mapping.updated") == []


async def test_a_key_on_a_route_that_does_not_exist_is_not_judged(client):
    key = str(uuid.uuid4())
    assert_error(*(await keyed(client, "PUT", "/backends", backend("b1"), key))[:2], 405)
    assert (await keyed(client, "POST", "/backends", backend("b1"), key))[0] == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_bad_keys_are_refused_and_nothing_is_written(client, settings, key):
    headers = {"Content-Type": "application/json", KEY: key.encode("utf-8").decode("latin-1")}
    async with client.post("/backends", data=json.dumps(backend("b1")), headers=headers) as response:
        status, body = response.status, await response.json()
    assert_error(status, body, 422, KEY)
    assert body["error"]["param"] == KEY
    assert await asyncio.to_thread(logged, settings, "backend.created") == []


async def test_the_longest_key_is_taken(client):
    key = "k" * 255
    first = await keyed(client, "POST", "/backends", backend("b1"), key)
    second = await keyed(client, "POST", "/backends", backend("b1"), key)
    assert first[0] == second[0] == 201 and first[1] == second[1]


async def test_keys_are_scoped_to_the_caller(settings, service_for):
    """With an API key, a webhook sender without it has keys of its own (a key is no one else's)."""
    settings = settings.model_copy(update={"api_token": "secret"})
    async with service_for(settings) as client:
        key = str(uuid.uuid4())
        auth = {"X-API-Key": "secret"}
        status, _, _ = await keyed(client, "POST", "/mappings", MAPPING, key, **auth)
        assert status == 201
        # The same key, unauthenticated, on /ingest: not the caller's key, so not a different request.
        status, body, _ = await keyed(client, "POST", "/ingest?path=/hooks/a", {"id": "1"}, key)
        assert_error(status, body, 401)  # the mapping checks no signature: the key is required


# -- concurrent duplicates ---------------------------------------------------------------------


async def test_concurrent_duplicates_write_once(client, settings):
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(keyed(client, "POST", "/backends", backend("b1"), key) for _ in range(8)))
    statuses = sorted(a[0] for a in answers)
    # Each is the first answer, or — if the first was still running after a whole wait — 409 to retry.
    assert set(statuses) <= {201, 409} and 201 in statuses, [a[:2] for a in answers]
    assert len({json.dumps(a[1]) for a in answers if a[0] == 201}) == 1
    assert len(await asyncio.to_thread(logged, settings, "backend.created")) == 1


# -- the write is stored, the read models are behind -----------------------------------------


@pytest.fixture
async def impatient(settings: Settings, service_for) -> AsyncIterator[TestClient]:
    """A service whose commands wait briefly for the read models."""
    settings = settings.model_copy(update={"projection_timeout": 0.3})
    async with service_for(settings) as test_client:
        yield test_client


async def until_answered(client: TestClient, method: str, path: str, body: Any, key: str):
    """Retry as a client told ``Retry-After`` would, until the answer is not a 503 (bounded by the test timeout)."""
    while True:
        answer = await keyed(client, method, path, body, key)
        if answer[0] != 503:
            return answer
        assert answer[2]["Retry-After"] == "1"
        await asyncio.sleep(0.05)


STOPS_THE_RUNNER = (
    "stops and restarts the in-process projection runner (client.server.app[PROJECTIONS]) so that the read models"
    " stand still; a served service has no way to pause them from outside"
)


@pytest.mark.in_process(reason=STOPS_THE_RUNNER)
async def test_a_retry_after_the_read_models_were_behind_writes_nothing_and_gets_the_success(impatient, settings):
    runner = impatient.server.app[PROJECTIONS]
    await runner.stop()  # the read models stand still: the write is stored, not shown
    key = str(uuid.uuid4())
    status, body, headers = await keyed(impatient, "POST", "/backends", backend("b1"), key)
    assert_error(status, body, 503, "did not reach")
    assert headers["Retry-After"] == "1"
    # Retried while they still stand still: nothing is written again, and the client is told to come back.
    status, body, headers = await keyed(impatient, "POST", "/backends", backend("b1"), key)
    assert_error(status, body, 503, "stored")
    created = await asyncio.to_thread(logged, settings, "backend.created")
    assert len(created) == 1
    await runner.start()
    status, answer, headers = await until_answered(impatient, "POST", "/backends", backend("b1"), key)
    assert status == 201, answer
    assert answer["id"] == created[0]["aggregate_id"] and answer["name"] == "b1"
    assert headers["Idempotent-Replayed"] == "true"
    assert len(await asyncio.to_thread(logged, settings, "backend.created")) == 1
    # Without the key, a client that retried would have been refused: the name is taken by its first try.
    assert_error(*(await call(impatient, "POST", "/backends", backend("b1"))), 409)


@pytest.mark.in_process(reason=STOPS_THE_RUNNER)
async def test_an_event_retried_after_the_read_models_were_behind_is_appended_once(impatient, settings):
    runner = impatient.server.app[PROJECTIONS]
    await runner.stop()
    event = {"event_type": "order.placed", "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o-9",
             "version": 1}
    key = str(uuid.uuid4())
    status, body, _ = await keyed(impatient, "POST", "/events", event, key)
    assert_error(status, body, 503)
    await runner.start()
    status, answer, _ = await until_answered(impatient, "POST", "/events", event, key)
    assert status == 201 and answer["aggregate_id"] == "o-9"
    logged_events = await asyncio.to_thread(logged, settings, "order.placed")
    assert [e["id"] for e in logged_events] == [answer["id"]]


# -- one X-Request-ID on two requests, the window, the description ---------------------------


async def test_two_keyed_requests_with_one_request_id_are_kept_apart(client, settings):
    """Events carry the request id: two requests sent with the same X-Request-ID still write under their own keys."""
    keys = [str(uuid.uuid4()), str(uuid.uuid4())]
    names = ["b1", "b2"]
    first = await asyncio.gather(*(
        keyed(client, "POST", "/backends", backend(name), key, **{"X-Request-ID": "same-id"})
        for name, key in zip(names, keys)
    ))
    again = await asyncio.gather(*(keyed(client, "POST", "/backends", backend(n), k) for n, k in zip(names, keys)))
    assert [a[0] for a in first] == [a[0] for a in again] == [201, 201]
    assert [a[1] for a in first] == [a[1] for a in again]
    assert len(await asyncio.to_thread(logged, settings, "backend.created")) == 2


async def test_a_key_past_its_window_is_forgotten(settings, service_for):
    settings = settings.model_copy(update={"idempotency_window": 1e-6})
    async with service_for(settings) as client:
        key = str(uuid.uuid4())
        assert (await keyed(client, "POST", "/backends", backend("b1"), key))[0] == 201
        status, body, _ = await keyed(client, "POST", "/backends", backend("b1"), key)
        assert_error(status, body, 409, "b1")  # run again: the name is taken by the first request


async def test_every_post_and_put_documents_the_key(client):
    status, document = await call(client, "GET", "/openapi.json")
    assert status == 200
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    # Routes whose requests or answers carry a password or a token ignore the key (nothing of them is kept).
    unkeyed = {
        ("/register", "post"), ("/login", "post"), ("/token_refresh", "post"), ("/users", "post"), ("/users/{id}", "put"),
        ("/ui/login", "post"), ("/ui/register", "post"), ("/ui/logout", "post"), ("/ui/token_refresh", "post"),
        # Uploads stream to the blob store as they arrive: no body is held to fingerprint it.
        ("/files", "post"), ("/files/{id}", "put"),
        # A Telegram frontend's body carries its bot token.
        ("/telegram-frontends", "post"), ("/telegram-frontends/{id}", "put"),
    }  # fmt: skip
    keyed_operations = [(p, m, op) for p, m, op in operations if m in ("post", "put") and (p, m) not in unkeyed]
    assert keyed_operations
    for path, method, operation in operations:
        if (path, method) in unkeyed:
            assert KEY not in [p["name"] for p in operation.get("parameters", [])], (path, method)
    assert unkeyed <= {(path, method) for path, method, _ in operations}
    for path, method, operation in keyed_operations:
        (header,) = [p for p in operation["parameters"] if p["name"] == KEY]
        assert header["in"] == "header" and not header["required"] and header["schema"]["maxLength"] == 255
        assert {"409", "422"} <= set(operation["responses"]), (path, method)
    for path, method, operation in operations:
        if method not in ("post", "put"):
            assert KEY not in [p["name"] for p in operation.get("parameters", [])], (path, method)
