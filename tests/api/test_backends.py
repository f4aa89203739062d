"""/backends on SQLite and PostgreSQL through real HTTP."""

import uuid

from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call, create_backend


async def test_create_get_and_list(client):
    created = await create_backend(client, "ollama-production", "http://ollama-prod.internal:11434")
    uuid.UUID(created["id"])
    assert {k: created[k] for k in ("name", "baseUrl", "type")} == {
        "name": "ollama-production",
        "baseUrl": "http://ollama-prod.internal:11434",
        "type": "ollama",
    }
    assert created["createdAt"] == created["updatedAt"]

    status, details = await call(client, "GET", f"/backends/{created['id']}")
    assert status == 200
    assert details == created | {"models": [], "pulledModels": []}
    assert await call(client, "GET", "/backends") == (200, [details])


async def test_body_id_is_ignored_and_vllm_is_accepted(client):
    status, body = await call(client, "POST", "/backends", {"id": "mine", "name": "v", "baseUrl": "http://v", "type": "vllm"})
    assert status == 201 and body["id"] != "mine" and body["type"] == "vllm"


async def test_validation(client):
    for payload, fragment in [
        ({"baseUrl": "http://x", "type": "ollama"}, "invalid backend data: name is required"),
        ({"name": "x", "type": "ollama"}, "invalid backend data: baseURL is required"),
        ({"name": "x", "baseUrl": "http://x"}, "invalid backend data: Type is required to be ollama or vllm"),
        ({"name": "x", "baseUrl": "http://x", "type": "openai"}, "Type is required to be ollama or vllm"),
        ({"name": "x", "baseUrl": 7, "type": "ollama"}, "baseUrl"),
    ]:
        status, body = await call(client, "POST", "/backends", payload)
        assert_error(status, body, 422, fragment)
    assert await call(client, "GET", "/backends") == (200, [])


async def test_name_and_base_url_are_unique(client):
    await create_backend(client, "a", "http://a")
    status, body = await call(client, "POST", "/backends", {"name": "a", "baseUrl": "http://other", "type": "ollama"})
    assert_error(status, body, 409, "unique constraint violation")
    status, body = await call(client, "POST", "/backends", {"name": "other", "baseUrl": "http://a", "type": "ollama"})
    assert_error(status, body, 409, "unique constraint violation")
    status, backends = await call(client, "GET", "/backends")
    assert [b["name"] for b in backends] == ["a"]


async def test_list_paginates_newest_first(client):
    for i in range(5):
        await create_backend(client, f"b{i}")
    status, first = await call(client, "GET", "/backends", params={"limit": "3"})
    assert [b["name"] for b in first] == ["b4", "b3", "b2"]
    status, rest = await call(client, "GET", "/backends", params={"limit": "3", "cursor": first[-1]["createdAt"]})
    assert [b["name"] for b in rest] == ["b1", "b0"]
    for params, expected in [({"limit": "1001"}, 400), ({"limit": "abc"}, 422), ({"cursor": "2025-01-01"}, 422)]:
        status, body = await call(client, "GET", "/backends", params=params)
        assert_error(status, body, expected)


async def test_get_unknown(client):
    status, body = await call(client, "GET", "/backends/nope")
    assert_error(status, body, 404, "not found")


async def test_update_returns_the_stored_row(client):
    backend = await create_backend(client, "a", "http://a")
    status, updated = await call(
        client, "PUT", f"/backends/{backend['id']}", {"id": "ignored", "name": "b", "baseUrl": "http://b", "type": "vllm"}
    )
    assert status == 200
    assert (updated["id"], updated["name"], updated["baseUrl"], updated["type"]) == (backend["id"], "b", "http://b", "vllm")
    assert updated["createdAt"] == backend["createdAt"]
    assert parse_ns(updated["updatedAt"]) > parse_ns(backend["updatedAt"])
    # the old name and URL are free again
    await create_backend(client, "a", "http://a")


async def test_update_errors(client):
    a = await create_backend(client, "a")
    await create_backend(client, "b")
    status, body = await call(client, "PUT", f"/backends/{a['id']}", {"name": "b", "baseUrl": "http://new", "type": "ollama"})
    assert_error(status, body, 409)
    status, body = await call(client, "PUT", f"/backends/{a['id']}", {"name": "a", "baseUrl": "http://a", "type": "gemini"})
    assert_error(status, body, 422, "Type is required")
    status, body = await call(client, "PUT", "/backends/nope", {"name": "c", "baseUrl": "http://c", "type": "ollama"})
    assert_error(status, body, 404)
    assert (await call(client, "GET", f"/backends/{a['id']}"))[1]["name"] == "a"


async def test_delete_cascades_group_assignments(client):
    backend = await create_backend(client)
    for group in ("internal_embed_group", "internal_chat_group"):
        assert await call(client, "POST", f"/backend-affinity/{group}/backends/{backend['id']}") == (201, "backend assigned")
    assert await call(client, "DELETE", f"/backends/{backend['id']}") == (200, "backend removed")
    assert await call(client, "GET", f"/backend-affinity/{backend['id']}/groups") == (200, [])
    assert await call(client, "GET", "/backend-affinity/internal_chat_group/backends") == (200, [])
    status, body = await call(client, "GET", f"/backends/{backend['id']}")
    assert_error(status, body, 404)
    status, body = await call(client, "DELETE", f"/backends/{backend['id']}")
    assert_error(status, body, 404)
    # name and URL are free again, and the groups accept a new backend
    again = await create_backend(client)
    assert await call(client, "POST", f"/backend-affinity/internal_chat_group/backends/{again['id']}") == (201, "backend assigned")


async def test_cursors_far_in_the_future_or_past_are_bounds_not_errors(client):
    backend = await create_backend(client)
    status, page = await call(client, "GET", "/backends", params={"cursor": "9999-12-31T23:59:59.999999999Z"})
    assert status == 200 and [b["id"] for b in page] == [backend["id"]]
    assert await call(client, "GET", "/backends", params={"cursor": "0001-01-01T00:00:00Z"}) == (200, [])
