"""Read-your-writes and invariants under concurrent writers, on SQLite and PostgreSQL."""

import asyncio

from aiohttp import ClientSession

from tests.api.helpers import call, create_group


async def test_every_client_sees_its_own_write_at_once(client):
    base = str(client.make_url("/"))

    async def one_client(i: int) -> None:
        async with ClientSession(base_url=base) as session:
            async with session.post("/backends", json={"name": f"b{i}", "baseUrl": f"http://b{i}", "type": "ollama"}) as r:
                assert r.status == 201
                backend = await r.json()
            async with session.get(f"/backends/{backend['id']}") as r:
                assert r.status == 200
            async with session.get("/backends", params={"limit": "1000"}) as r:
                assert backend["id"] in [b["id"] for b in await r.json()]
            async with session.post(f"/backend-affinity/internal_chat_group/backends/{backend['id']}") as r:
                assert r.status == 201
            async with session.get(f"/backend-affinity/{backend['id']}/groups") as r:
                assert [g["id"] for g in await r.json()] == ["internal_chat_group"]

    await asyncio.gather(*(one_client(i) for i in range(24)))
    status, members = await call(client, "GET", "/backend-affinity/internal_chat_group/backends")
    assert len(members) == 24


async def test_concurrent_claims_of_one_name_let_exactly_one_win(client):
    results = await asyncio.gather(
        *(call(client, "POST", "/backends", {"name": "same", "baseUrl": f"http://u{i}", "type": "ollama"}) for i in range(12))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 11, results
    status, backends = await call(client, "GET", "/backends")
    assert [b["name"] for b in backends] == ["same"]


async def test_concurrent_assignments_to_one_group_all_land(client):
    group = await create_group(client)
    backends = [(await call(client, "POST", "/backends", {"name": f"n{i}", "baseUrl": f"http://n{i}", "type": "vllm"}))[1] for i in range(10)]
    results = await asyncio.gather(
        *(call(client, "POST", f"/backend-affinity/{group['id']}/backends/{b['id']}") for b in backends)
    )
    assert {status for status, _ in results} == {201}
    status, members = await call(client, "GET", f"/backend-affinity/{group['id']}/backends")
    assert {m["id"] for m in members} == {b["id"] for b in backends}


async def test_deleting_a_group_records_the_removal_of_each_assignment(client, settings):
    from chainloom.infra.eventlog import EventLog

    group = await create_group(client, "doomed")
    _, backend = await call(client, "POST", "/backends", {"name": "x", "baseUrl": "http://x", "type": "ollama"})
    await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    await call(client, "POST", f"/model-affinity/{group['id']}/models/phi3:3.8b")
    status, models = await call(client, "GET", f"/model-affinity/{group['id']}/models")
    assert status == 200
    # phi3 is seeded with a UUID id, so the assignment by name referenced nothing
    assert models == []
    _, seeded = await call(client, "GET", "/model-affinity/internal_chat_group/models")
    await call(client, "POST", f"/model-affinity/{group['id']}/models/{seeded[0]['id']}")
    await call(client, "DELETE", f"/groups/{group['id']}")

    log = EventLog(settings.event_store_env())
    try:
        events = [e for e in log.read(0, 10_000) if e["aggregate_id"] == group["id"]]
    finally:
        log.close()
    assert [e["event_type"] for e in events] == [
        "group.created",
        "group.backend_assigned",
        "group.model_assigned",
        "group.backend_removed",
        "group.model_removed",
        "group.deleted",
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
    nids = [e["nid"] for e in events]
    assert nids == sorted(nids)
