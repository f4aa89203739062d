"""Liveness and readiness as clients and orchestrators read them, on both stores.

``/health`` answers 200 while the process runs (an empty body when all is
well, a ``degraded`` report naming faulted projections otherwise, see
tests/integration/test_projection_faults.py); ``/ready`` answers 200 only
while every read model follows the log. Neither needs the API key.
"""

from __future__ import annotations

from chainloom.infra.readstore import Fault, open_read_store
from tests.api.helpers import assert_error, call, ready_status
from tests.conftest import make_settings


async def test_health_is_empty_and_ready_says_ready_when_all_is_well(client):
    response = await client.get("/health")
    assert response.status == 200 and await response.read() == b""
    assert await ready_status(client) == (200, "ready")


async def test_health_and_ready_need_no_api_key(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, api_token="s3cret-token")
    async with service_for(settings) as client:
        assert (await call(client, "GET", "/health")) == (200, None)
        assert (await ready_status(client)) == (200, "ready")
        assert (await call(client, "GET", "/groups"))[0] == 401


async def test_a_fault_recorded_by_another_process_makes_health_degraded_and_ready_503(client, settings):
    store, factory = open_read_store(settings.read_store_env())
    try:
        with store.transaction() as cursor:
            store.lock_projections(cursor)
            store.record_fault(cursor, Fault("eventsource", 7, "e-7", "x.y", "KeyError: 'z'", "2026-01-01T00:00:00Z"))
        status, body = await call(client, "GET", "/health")
        assert status == 200 and body["status"] == "degraded"
        assert body["faulted"] == [{
            "projection": "eventsource", "position": 7, "eventId": "e-7", "eventType": "x.y",
            "error": "KeyError: 'z'", "failedAt": "2026-01-01T00:00:00Z",
        }]
        status, body = await call(client, "GET", "/ready")
        assert_error(status, body, 503, "eventsource stopped at position 7")
        with store.transaction() as cursor:
            store.lock_projections(cursor)
            store.clear_fault(cursor, "eventsource")
        assert await ready_status(client) == (200, "ready")
    finally:
        factory.close()


async def test_system_lists_the_services_and_resource_types_permissions_name(client):
    status, services = await call(client, "GET", "/system/services")
    assert status == 200 and len(services) == len(set(services))
    required = {"chatservice", "fileservice", "telegramservice", "activityservice", "modelservice", "downloadservice",
                "backendservice"}  # fmt: skip
    guarding = {"eventservice", "functionservice", "dispatchservice", "indexservice", "userservice", "accessservice"}
    assert required | guarding <= set(services)
    assert await call(client, "GET", "/api/system/resources") == (200, ["system", "files", "blobs", "chunks"])
