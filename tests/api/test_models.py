"""/models on SQLite and PostgreSQL through real HTTP."""

import uuid

from chainloom.infra.settings import Settings
from tests.api.helpers import assert_error, call, declare_model


async def test_default_models_are_seeded_with_deterministic_ids(client, settings: Settings):
    status, models = await call(client, "GET", "/models")
    assert status == 200
    by_name = {m["model"]: m for m in models}
    assert set(by_name) == {"nomic-embed-text:latest", "phi3:3.8b"}
    embed, task = by_name["nomic-embed-text:latest"], by_name["phi3:3.8b"]
    assert embed["id"] == str(uuid.uuid5(settings.tenancy, "nomic-embed-text:latest"))
    assert (embed["canEmbed"], embed["canChat"], embed["contextLength"]) == (True, False, 2048)
    # TASK_MODEL == CHAT_MODEL: one model, both capabilities
    assert (task["canPrompt"], task["canChat"], task["canEmbed"]) == (True, True, False)
    for group, model in [
        ("internal_embed_group", embed),
        ("internal_tasks_group", task),
        ("internal_chat_group", task),
    ]:
        status, members = await call(client, "GET", f"/model-affinity/{group}/models")
        assert [m["id"] for m in members] == [model["id"]]


async def test_declare_get_list(client):
    created = await declare_model(client, "smollm2:135m", 1024, canChat=True, canPrompt=True)
    assert created["id"] == "smollm2:135m"
    assert (created["canChat"], created["canPrompt"], created["canEmbed"], created["canStream"]) == (True, True, False, False)
    status, models = await call(client, "GET", "/models")
    assert models[0] == created


async def test_validation(client):
    for payload, expected, fragment in [
        ({"contextLength": 10, "canChat": True}, 400, "serverops: bad request invalid model data: model name is required"),
        ({"model": "m", "canChat": True}, 400, "context length is required"),
        ({"model": "m", "contextLength": 10}, 400, "capabilities are required"),
        ({"model": "m", "contextLength": -5, "canChat": True}, 422, "context length"),
        ({"model": "m", "contextLength": "10", "canChat": True}, 422, "contextLength"),
        ({"model": "m", "contextLength": 10.5, "canChat": True}, 422, "contextLength"),
        ({"model": "m", "contextLength": 10, "canChat": "yes"}, 422, "canChat"),
    ]:
        status, body = await call(client, "POST", "/models", payload)
        assert_error(status, body, expected, fragment)


async def test_duplicate_names_conflict(client):
    await declare_model(client, "m1")
    status, body = await call(client, "POST", "/models", {"model": "m1", "contextLength": 5, "canEmbed": True})
    assert_error(status, body, 409, "unique constraint violation")
    # a seeded model (UUID id) also owns its name
    status, body = await call(client, "POST", "/models", {"model": "phi3:3.8b", "contextLength": 5, "canEmbed": True})
    assert_error(status, body, 409)


async def test_list_paginates(client):
    for i in range(4):
        await declare_model(client, f"m{i}")
    status, page = await call(client, "GET", "/models", params={"limit": "2"})
    assert [m["model"] for m in page] == ["m3", "m2"]
    status, page = await call(client, "GET", "/models", params={"limit": "2", "cursor": page[-1]["createdAt"]})
    assert [m["model"] for m in page] == ["m1", "m0"]
    for params, expected, fragment in [
        ({"limit": "0"}, 422, "limit must be positive"),
        ({"limit": "-1"}, 422, "limit must be positive"),
        ({"limit": "5000"}, 400, "limit exceeds maximum allowed value"),
        ({"limit": "1.5"}, 422, "invalid limit format"),
    ]:
        status, body = await call(client, "GET", "/models", params=params)
        assert_error(status, body, expected, fragment)


async def test_update_can_rename_but_keeps_the_id(client):
    await declare_model(client, "m1", 100, canChat=True)
    status, updated = await call(client, "PUT", "/models/m1", {"model": "m1-renamed", "contextLength": 200, "canEmbed": True})
    assert status == 200
    assert (updated["id"], updated["model"], updated["contextLength"], updated["canEmbed"], updated["canChat"]) == (
        "m1", "m1-renamed", 200, True, False
    )
    # the new name is taken, the old one free
    status, body = await call(client, "POST", "/models", {"model": "m1-renamed", "contextLength": 5, "canChat": True})
    assert_error(status, body, 409)


async def test_update_errors(client):
    await declare_model(client, "m1")
    await declare_model(client, "m2")
    status, body = await call(client, "PUT", "/models/m1", {"id": "m2", "model": "m1", "contextLength": 5, "canChat": True})
    assert_error(status, body, 422, "ID in payload does not match URL")
    status, body = await call(client, "PUT", "/models/m1", {"model": "m2", "contextLength": 5, "canChat": True})
    assert_error(status, body, 409)
    status, body = await call(client, "PUT", "/models/nope", {"model": "x", "contextLength": 5, "canChat": True})
    assert_error(status, body, 404)
    status, body = await call(client, "PUT", "/models/m1", {"model": "m1", "contextLength": 5})
    assert_error(status, body, 400, "capabilities are required")


async def test_delete_by_name_cascades_and_allows_redeclaring(client):
    await declare_model(client, "m1")
    assert await call(client, "POST", "/model-affinity/internal_tasks_group/models/m1") == (200, "model assigned")
    assert await call(client, "DELETE", "/models/m1?purge=true") == (200, "model removed")
    assert await call(client, "GET", "/model-affinity/m1/groups") == (200, [])
    status, members = await call(client, "GET", "/model-affinity/internal_tasks_group/models")
    assert "m1" not in [m["id"] for m in members]
    status, body = await call(client, "DELETE", "/models/m1")
    assert_error(status, body, 404)
    again = await declare_model(client, "m1", 4096, canEmbed=True)
    assert (again["contextLength"], again["canEmbed"], again["canChat"]) == (4096, True, False)


async def test_seeded_models_are_deleted_by_name_and_the_embedding_model_is_protected(client):
    status, body = await call(client, "DELETE", "/models/nomic-embed-text:latest?purge=true")
    assert_error(status, body, 403, "serverops: immutable model")
    assert await call(client, "DELETE", "/models/phi3:3.8b") == (200, "model removed")
    status, members = await call(client, "GET", "/model-affinity/internal_chat_group/models")
    assert members == []


async def test_model_names_with_slashes(client):
    await declare_model(client, "library/llama3:8b")
    status, body = await call(client, "PUT", "/models/library/llama3:8b", {"model": "library/llama3:8b", "contextLength": 9, "canChat": True})
    assert status == 200 and body["contextLength"] == 9
    assert await call(client, "DELETE", "/models/library/llama3:8b") == (200, "model removed")
