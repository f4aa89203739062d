"""/groups, /group-by-name, /group-by-purpose, on SQLite and PostgreSQL through real HTTP."""

import uuid

from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call, create_group


async def test_start_up_seeds_the_three_internal_groups_newest_first(client):
    status, groups = await call(client, "GET", "/groups")
    assert status == 200
    assert [(g["id"], g["name"], g["purposeType"]) for g in groups] == [
        ("internal_chat_group", "Chat", "Internal Chat"),
        ("internal_tasks_group", "Tasks", "Internal Tasks"),
        ("internal_embed_group", "Embedder", "Internal Embeddings"),
    ]
    for group in groups:
        assert group["createdAt"].endswith("Z") and parse_ns(group["updatedAt"]) >= parse_ns(group["createdAt"])


async def test_create_then_get_by_id_name_and_purpose(client):
    created = await create_group(client, "production-chat", "chat")
    uuid.UUID(created["id"])
    assert (created["name"], created["purposeType"]) == ("production-chat", "chat")

    assert await call(client, "GET", f"/groups/{created['id']}") == (200, created)
    assert await call(client, "GET", "/group-by-name/production-chat") == (200, created)
    assert await call(client, "GET", "/group-by-purpose/chat") == (200, [created])
    status, groups = await call(client, "GET", "/groups")
    assert groups[0] == created


async def test_server_set_fields_in_the_body_are_ignored_and_names_match_case_insensitively(client):
    status, body = await call(
        client, "POST", "/groups", {"ID": "mine", "NAME": "g", "purposetype": "p", "createdAt": "1999-01-01T00:00:00Z"}
    )
    assert status == 201
    assert body["id"] != "mine" and body["name"] == "g" and body["purposeType"] == "p"
    assert not body["createdAt"].startswith("1999")


async def test_duplicate_names_conflict_even_when_empty(client):
    await create_group(client, "dup")
    status, body = await call(client, "POST", "/groups", {"name": "dup"})
    assert_error(status, body, 409, "unique constraint violation")
    await create_group(client, "", "")
    status, body = await call(client, "POST", "/groups", {"name": ""})
    assert_error(status, body, 409)


async def test_bad_bodies_are_4xx_and_change_nothing(client):
    _, before = await call(client, "GET", "/groups")
    for raw, expected in [
        (b"{not json", 422),
        (b"", 422),
        (b"[1, 2]", 422),
        (b'{"name": 5}', 422),
        (b'{"name": "x", "purposeType": null}', 422),
    ]:
        status, body = await call(client, "POST", "/groups", raw)
        assert_error(status, body, expected)
    status, body = await call(client, "POST", "/groups", "name=x", headers={"Content-Type": "text/plain"})
    assert_error(status, body, 415)
    assert await call(client, "GET", "/groups") == (200, before)


async def test_wrong_type_names_the_field(client):
    status, body = await call(client, "POST", "/groups", {"name": ["a"]})
    assert_error(status, body, 422, "name")
    assert body["error"]["param"] == "name"


async def test_update_replaces_name_and_purpose(client):
    group = await create_group(client, "before", "p1")
    status, updated = await call(client, "PUT", f"/groups/{group['id']}", {"name": "after"})
    assert status == 200
    assert (updated["id"], updated["name"], updated["purposeType"]) == (group["id"], "after", "")
    assert updated["createdAt"] == group["createdAt"]
    assert parse_ns(updated["updatedAt"]) > parse_ns(group["updatedAt"])
    assert await call(client, "GET", f"/groups/{group['id']}") == (200, updated)
    status, body = await call(client, "GET", "/group-by-name/before")
    assert_error(status, body, 404)
    # the old name is free again
    await create_group(client, "before")


async def test_update_errors(client):
    a = await create_group(client, "a")
    await create_group(client, "b")
    status, body = await call(client, "PUT", f"/groups/{a['id']}", {"name": "b"})
    assert_error(status, body, 409, "unique constraint violation")
    status, body = await call(client, "PUT", "/groups/nope", {"name": "c"})
    assert_error(status, body, 404)
    status, body = await call(client, "PUT", "/groups/internal_embed_group", {"name": "c"})
    assert_error(status, body, 403, "immutable")
    status, body = await call(client, "PUT", f"/groups/{a['id']}", b"{")
    assert_error(status, body, 422)


async def test_the_tasks_and_chat_groups_are_mutable(client):
    status, body = await call(client, "PUT", "/groups/internal_tasks_group", {"name": "Tasks", "purposeType": "Other"})
    assert status == 200 and body["purposeType"] == "Other"


async def test_delete(client):
    group = await create_group(client, "gone")
    assert await call(client, "DELETE", f"/groups/{group['id']}") == (200, "deleted")
    for path in (f"/groups/{group['id']}", "/group-by-name/gone"):
        status, body = await call(client, "GET", path)
        assert_error(status, body, 404, "not found")
    status, body = await call(client, "DELETE", f"/groups/{group['id']}")
    assert_error(status, body, 404)
    status, body = await call(client, "DELETE", "/groups/internal_embed_group")
    assert_error(status, body, 403, "affinity group internal_embed_group is immutable")


async def test_group_by_purpose_paginates_newest_first(client):
    made = [await create_group(client, f"g{i}", "pool") for i in range(5)]
    await create_group(client, "other", "not-pool")
    status, first = await call(client, "GET", "/group-by-purpose/pool?limit=2")
    assert status == 200 and [g["name"] for g in first] == ["g4", "g3"]
    status, second = await call(client, "GET", "/group-by-purpose/pool", params={"limit": "2", "cursor": first[-1]["createdAt"]})
    assert [g["name"] for g in second] == ["g2", "g1"]
    status, third = await call(client, "GET", "/group-by-purpose/pool", params={"limit": "2", "cursor": second[-1]["createdAt"]})
    assert [g["name"] for g in third] == ["g0"] and third[0] == made[0]
    assert await call(client, "GET", "/group-by-purpose/nothing-here") == (200, [])


async def test_group_by_purpose_with_spaces_in_the_value(client):
    created = await create_group(client, "spaced", "Internal Tasks Extra")
    assert await call(client, "GET", "/group-by-purpose/Internal%20Tasks%20Extra") == (200, [created])


async def test_group_by_purpose_bad_limits_and_cursors(client):
    for params, expected, fragment in [
        ({"limit": "x"}, 422, "invalid limit format"),
        ({"limit": "0"}, 422, "limit must be positive"),
        ({"limit": "1001"}, 400, "limit exceeds maximum"),
        ({"cursor": "yesterday"}, 422, "invalid cursor format"),
    ]:
        status, body = await call(client, "GET", "/group-by-purpose/pool", params=params)
        assert_error(status, body, expected, fragment)
