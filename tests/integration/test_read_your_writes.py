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
