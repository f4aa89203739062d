"""What every route shares: error envelope, 404/405/413, request ids, API token, OpenAPI."""

import pytest

from tests.api.helpers import assert_error, call
from tests.conftest import make_settings


async def test_unknown_route_and_wrong_method(client):
    status, body = await call(client, "GET", "/nowhere")
    assert_error(status, body, 404)
    status, body = await call(client, "POST", "/nowhere")
    assert_error(status, body, 404)
    async with client.request("PATCH", "/groups") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}
        assert_error(response.status, await response.json(), 405, "PATCH")


async def test_request_ids_are_returned_and_honoured(client):
    async with client.get("/groups") as response:
        generated = response.headers["X-Request-ID"]
        assert len(generated) >= 16
    async with client.get("/groups", headers={"X-Request-ID": "trace-42"}) as response:
        assert response.headers["X-Request-ID"] == "trace-42"
    async with client.get("/nowhere", headers={"X-Request-ID": "bad id with spaces"}) as response:
        assert response.headers["X-Request-ID"] != "bad id with spaces"
        assert response.status == 404


async def test_events_carry_the_request_id_and_actor(client, settings):
    from chainloom.infra.eventlog import EventLog

    await call(client, "POST", "/groups", {"name": "traced"}, headers={"X-Request-ID": "req-7"})
    log = EventLog(settings.event_store_env())
    try:
        events = log.read(0, 1000)
    finally:
        log.close()
    created = [e for e in events if e["event_type"] == "group.created" and e["data"]["name"] == "traced"]
    assert len(created) == 1
    assert created[0]["metadata"] == {"actor": "anonymous", "request_id": "req-7", "correlation_id": "req-7"}
    assert created[0]["event_source"] == "chainloom" and created[0]["aggregate_type"] == "group"


async def test_oversized_bodies_are_413(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, max_body_bytes=1024)
    async with service_for(settings) as client:
        status, body = await call(client, "POST", "/groups", {"name": "x" * 4096})
        assert_error(status, body, 413)
        status, groups = await call(client, "GET", "/groups")
        assert len(groups) == 3  # nothing was written


@pytest.fixture
async def guarded(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, api_token="s3cret-token")
    async with service_for(settings) as client:
        yield client


async def test_token_guards_every_route_but_health_and_version(guarded):
    assert (await call(guarded, "GET", "/health"))[0] == 200
    status, body = await call(guarded, "GET", "/version")
    assert status == 200 and body["name"] == "chainloom"
    for headers, fragment in [({}, "missing API key"), ({"X-API-Key": "wrong"}, "invalid API key"), ({"X-API-Key": "s3cret-token-x"}, "invalid")]:
        for method, path in [("GET", "/groups"), ("POST", "/groups"), ("GET", "/openapi.json"), ("GET", "/nowhere")]:
            status, body = await call(guarded, method, path, headers=headers)
            assert_error(status, body, 401, fragment)
    assert (await call(guarded, "GET", "/groups", headers={"X-API-Key": "s3cret-token"}))[0] == 200
    assert (await call(guarded, "GET", "/groups", headers={"X-API-Key": "Bearer s3cret-token"}))[0] == 200
    status, _ = await call(guarded, "POST", "/groups", {"name": "n"}, headers={"X-API-Key": "s3cret-token"})
    assert status == 201


async def test_refused_requests_write_nothing(guarded):
    await call(guarded, "POST", "/groups", {"name": "sneaky"}, headers={"X-API-Key": "nope"})
    status, body = await call(guarded, "GET", "/group-by-name/sneaky", headers={"X-API-Key": "s3cret-token"})
    assert status == 404


async def test_openapi_describes_the_implemented_operations(client):
    status, document = await call(client, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    expected = {
        ("GET", "/groups"), ("POST", "/groups"), ("GET", "/groups/{id}"), ("PUT", "/groups/{id}"), ("DELETE", "/groups/{id}"),
        ("GET", "/group-by-name/{name}"), ("GET", "/group-by-purpose/{purpose}"),
        ("GET", "/backends"), ("POST", "/backends"), ("GET", "/backends/{id}"), ("PUT", "/backends/{id}"),
        ("DELETE", "/backends/{id}"),
        ("GET", "/models"), ("POST", "/models"), ("PUT", "/models/{id}"), ("DELETE", "/models/{id}"),
        ("POST", "/backend-affinity/{groupID}/backends/{backendID}"),
        ("DELETE", "/backend-affinity/{groupID}/backends/{backendID}"),
        ("GET", "/backend-affinity/{groupID}/backends"), ("GET", "/backend-affinity/{backendID}/groups"),
        ("POST", "/model-affinity/{groupID}/models/{modelID}"), ("DELETE", "/model-affinity/{groupID}/models/{modelID}"),
        ("GET", "/model-affinity/{groupID}/models"), ("GET", "/model-affinity/{modelID}/groups"),
        ("GET", "/health"), ("GET", "/version"), ("GET", "/openapi.json"),
    }
    assert expected <= operations
    body_schema = document["paths"]["/backends"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["$ref"].endswith("/BackendBody")
    assert "baseUrl" in document["components"]["schemas"]["BackendBody"]["properties"]
