"""/backend-affinity and /model-affinity on SQLite and PostgreSQL through real HTTP."""

from tests.api.helpers import assert_error, call, create_backend, create_group, declare_model


async def test_backend_membership_round_trip(client):
    group = await create_group(client)
    first = await create_backend(client, "first")
    second = await create_backend(client, "second")
    gid = group["id"]
    assert await call(client, "POST", f"/backend-affinity/{gid}/backends/{first['id']}") == (201, "backend assigned")
    assert await call(client, "POST", f"/backend-affinity/{gid}/backends/{second['id']}") == (201, "backend assigned")
    status, members = await call(client, "GET", f"/backend-affinity/{gid}/backends")
    assert status == 200 and members == [second, first]  # newest assignment first, plain backends
    assert await call(client, "GET", f"/backend-affinity/{first['id']}/groups") == (200, [group])

    assert await call(client, "DELETE", f"/backend-affinity/{gid}/backends/{first['id']}") == (200, "backend removed")
    assert await call(client, "GET", f"/backend-affinity/{gid}/backends") == (200, [second])
    status, body = await call(client, "DELETE", f"/backend-affinity/{gid}/backends/{first['id']}")
    assert_error(status, body, 404)


async def test_backend_membership_conflicts(client):
    group = await create_group(client)
    backend = await create_backend(client)
    path = f"/backend-affinity/{group['id']}/backends/{backend['id']}"
    assert (await call(client, "POST", path))[0] == 201
    status, body = await call(client, "POST", path)
    assert_error(status, body, 409, "unique constraint violation")
    status, body = await call(client, "POST", f"/backend-affinity/nope/backends/{backend['id']}")
    assert_error(status, body, 409, "foreign key violation")
    status, body = await call(client, "POST", f"/backend-affinity/{group['id']}/backends/nope")
    assert_error(status, body, 409, "foreign key violation")
    status, body = await call(client, "DELETE", f"/backend-affinity/nope/backends/{backend['id']}")
    assert_error(status, body, 404)


async def test_unknown_ids_list_nothing(client):
    for path in (
        "/backend-affinity/nope/backends",
        "/backend-affinity/nope/groups",
        "/model-affinity/nope/models",
        "/model-affinity/nope/groups",
    ):
        assert await call(client, "GET", path) == (200, [])


async def test_model_membership_round_trip(client):
    group = await create_group(client)
    model = await declare_model(client, "m1")
    gid = group["id"]
    assert await call(client, "POST", f"/model-affinity/{gid}/models/m1") == (200, "model assigned")
    assert await call(client, "GET", f"/model-affinity/{gid}/models") == (200, [model])
    assert await call(client, "GET", "/model-affinity/m1/groups") == (200, [group])
    status, body = await call(client, "POST", f"/model-affinity/{gid}/models/m1")
    assert_error(status, body, 409)
    assert await call(client, "DELETE", f"/model-affinity/{gid}/models/m1") == (200, "model removed")
    status, body = await call(client, "DELETE", f"/model-affinity/{gid}/models/m1")
    assert_error(status, body, 404)
    status, body = await call(client, "POST", f"/model-affinity/{gid}/models/nope")
    assert_error(status, body, 409, "foreign key violation")
    status, body = await call(client, "POST", "/model-affinity/nope/models/m1")
    assert_error(status, body, 409, "foreign key violation")


async def test_the_embedding_group_keeps_its_models_but_takes_backends(client):
    status, members = await call(client, "GET", "/model-affinity/internal_embed_group/models")
    embed_id = members[0]["id"]
    status, body = await call(client, "DELETE", f"/model-affinity/internal_embed_group/models/{embed_id}")
    assert_error(status, body, 403, "serverops: immutable group")
    await declare_model(client, "extra")
    assert await call(client, "POST", "/model-affinity/internal_embed_group/models/extra") == (200, "model assigned")
    backend = await create_backend(client)
    path = f"/backend-affinity/internal_embed_group/backends/{backend['id']}"
    assert await call(client, "POST", path) == (201, "backend assigned")
    assert await call(client, "DELETE", path) == (200, "backend removed")


async def test_deleting_a_group_removes_its_memberships(client):
    group = await create_group(client)
    backend = await create_backend(client)
    await declare_model(client, "m1")
    await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    await call(client, "POST", f"/model-affinity/{group['id']}/models/m1")
    assert await call(client, "DELETE", f"/groups/{group['id']}") == (200, "deleted")
    assert await call(client, "GET", f"/backend-affinity/{backend['id']}/groups") == (200, [])
    assert await call(client, "GET", "/model-affinity/m1/groups") == (200, [])
    assert await call(client, "GET", f"/backend-affinity/{group['id']}/backends") == (200, [])
