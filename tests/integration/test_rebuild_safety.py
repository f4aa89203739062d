"""A rebuild builds aside and swaps in only when complete: failures leave the live read models as they were,
and a rebuild while the service runs and writes ends equal to a fresh rebuild."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.readstore import open_read_store
from chainloom.projections import operator
from chainloom.projections.catalog import CatalogProjector
from chainloom.projections.rebuild import rebuild
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionFailed
from tests.api.helpers import call, create_backend
from tests.integration.test_projection_faults import healthy, inject_poison, until
from tests.integration.test_rebuild_and_restart import make_history
from chainloom.web.app import create_app

TABLES = CatalogProjector.tables + ("raw_events", "event_mappings")


@pytest.fixture
def settings(settings):
    """Without the reconciler: it would record the grouped backends' observed state (their hosts do not
    exist) while the test compares the read models with a rebuild."""
    return settings.model_copy(update={"reconciler": False})


def read_models(settings) -> dict:
    """Every catalog row, the event source's (but the index, which holds envelopes with times), positions, faults."""
    store, factory = open_read_store(settings.read_store_env())
    names = [p.name for p in all_projectors()]
    try:
        with store.transaction(commit=False) as cursor:
            state = {"positions": store.positions(cursor, names), "faults": store.faults(cursor)}
        for table in TABLES:
            state[table] = store.query(f"SELECT * FROM {table} ORDER BY 1, 2")
        state["event_index"] = store.query("SELECT nid, event_type FROM event_index ORDER BY nid")
        state["tables"] = sorted(_table_names(store, settings))
        return state
    finally:
        factory.close()


def _table_names(store, settings) -> list[str]:
    if settings.uses_postgres:
        rows = store.query("SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return [row["name"] for row in rows]


async def populated(settings) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        await make_history(client)


async def test_a_projector_raising_mid_rebuild_leaves_the_live_read_models_untouched(settings, monkeypatch):
    await populated(settings)
    before = read_models(settings)
    assert before["backends"] and not any(name.endswith("_rebuild") for name in before["tables"])

    def broken(self, cursor, event):
        raise RuntimeError("projector bug")

    monkeypatch.setitem(CatalogProjector._handlers, "group.deleted", broken)  # late in the history
    with pytest.raises(ProjectionFailed, match="projector bug"):
        await asyncio.to_thread(rebuild, settings)
    assert read_models(settings) == before  # rows, positions, no fault, no table left aside


async def test_a_poison_event_fails_the_rebuild_until_skipped(client, settings):
    await make_history(client)
    nid = await asyncio.to_thread(inject_poison, settings)

    async def faulted():
        return (await call(client, "GET", "/health"))[1]

    await until(faulted)
    before = read_models(settings)
    with pytest.raises(ProjectionFailed, match=f"catalog_rebuild failed on event {nid}"):
        await asyncio.to_thread(rebuild, settings, ["catalog"])
    assert read_models(settings) == before  # the live models, their positions and the fault stay

    # Skipped once by the operator, the event is skipped by rebuilds too; the rebuild equals live.
    await asyncio.to_thread(operator.skip, settings, "catalog")
    await until(lambda: healthy(client))
    await create_backend(client, "after-skip")
    live = read_models(settings)
    await asyncio.to_thread(rebuild, settings)
    assert read_models(settings) == live


async def test_a_rebuild_while_the_service_writes_equals_a_fresh_rebuild(client, settings):
    await make_history(client)
    names: list[str] = []
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            name = f"concurrent-{len(names)}"
            status, body = await call(client, "POST", "/backends", {"name": name, "baseUrl": f"http://{name}", "type": "ollama"})
            assert status == 201, body
            names.append(name)
            status, body = await call(client, "POST", "/events", {
                "event_type": "user.created", "event_source": "auth", "aggregate_type": "user",
                "aggregate_id": name, "version": 1,
            })
            assert status == 201, body

    writer = asyncio.create_task(write())
    try:
        rebuilds = 0
        while len(names) < 10 or rebuilds < 3:  # rebuilds and writes interleave many times
            await asyncio.to_thread(rebuild, settings)
            rebuilds += 1
            await asyncio.sleep(0.01)  # an operator's rebuilds, not a tight loop starving the writers
    finally:
        stop.set()
        await writer
    # Every write reads back from the swapped-in read models, and the service goes on writing.
    status, backends = await call(client, "GET", "/backends?limit=1000")
    assert status == 200 and set(names) <= {b["name"] for b in backends}
    await create_backend(client, "after-rebuilds")

    async def quiet():
        status, _ = await call(client, "GET", "/ready")
        return status == 200

    await until(quiet)
    live = read_models(settings)
    await asyncio.to_thread(rebuild, settings)
    assert read_models(settings) == live
