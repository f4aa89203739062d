"""Rebuilt read models equal the live ones; the service restarts on its log; start-up seeding is idempotent."""

import asyncio
import os
import subprocess
import sys

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.projections.catalog import CatalogProjector
from chainloom.projections.rebuild import rebuild
from tests.api.helpers import call, create_backend, create_group, declare_model
from chainloom.web.app import create_app


@pytest.fixture
def settings(settings):
    """Without the reconciler: it would record the grouped backends' observed state (their hosts do not
    exist) while the test compares the read models with a rebuild."""
    return settings.model_copy(update={"reconciler": False})


def snapshot(settings) -> dict[str, list[dict]]:
    store, factory = open_read_store(settings.read_store_env())
    try:
        return {table: store.query(f"SELECT * FROM {table} ORDER BY 1, 2") for table in CatalogProjector.tables}
    finally:
        factory.close()


def log_head(settings) -> int:
    log = EventLog(settings.event_store_env())
    try:
        return log.head()
    finally:
        log.close()


async def make_history(client) -> None:
    """A history with creations, updates, renames, cascades and re-declarations."""
    backends = [await create_backend(client, f"b{i}") for i in range(4)]
    groups = [await create_group(client, f"g{i}", "p") for i in range(3)]
    for i in range(3):
        await declare_model(client, f"m{i}")
    for backend in backends:
        for group in groups[:2]:
            await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backend['id']}")
    for group in groups:
        await call(client, "POST", f"/model-affinity/{group['id']}/models/m0")
    await call(client, "PUT", f"/backends/{backends[0]['id']}", {"name": "renamed", "baseUrl": "http://r", "type": "vllm"})
    await call(client, "PUT", "/models/m1", {"model": "m1-new", "contextLength": 77, "canEmbed": True})
    await call(client, "PUT", f"/groups/{groups[2]['id']}", {"name": "g2-new", "purposeType": "q"})
    await call(client, "DELETE", f"/backends/{backends[1]['id']}")
    await call(client, "DELETE", f"/groups/{groups[0]['id']}")
    await call(client, "DELETE", "/models/m2")
    await declare_model(client, "m2", 9, canStream=True)
    await call(client, "DELETE", f"/model-affinity/{groups[1]['id']}/models/m0")


async def test_rebuild_from_zero_equals_the_live_read_models(client, settings):
    await make_history(client)
    live = snapshot(settings)
    assert len(live["backends"]) == 3 and len(live["group_backends"]) == 3

    position = await asyncio.to_thread(rebuild, settings)
    assert position == log_head(settings)
    assert snapshot(settings) == live
    # the service goes on serving from the rebuilt tables
    status, groups = await call(client, "GET", "/groups")
    assert status == 200 and "g2-new" in [g["name"] for g in groups]


def test_rebuild_command_line(settings, tmp_path):
    async def populate():
        async with TestClient(TestServer(create_app(settings))) as client:
            await make_history(client)
        return snapshot(settings)

    live = asyncio.run(populate())
    env = dict(os.environ, CHAINLOOM_DATA_DIR=str(settings.data_dir), CHAINLOOM_DATABASE_URL=settings.database_url)
    done = subprocess.run(
        [sys.executable, "-m", "chainloom.infra.cli", "projections", "rebuild", "catalog"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"rebuilt up to position {log_head(settings)}" in done.stdout
    assert "rebuilding catalog" in done.stderr  # the progress bar
    assert snapshot(settings) == live

    unknown = subprocess.run(
        [sys.executable, "-m", "chainloom.infra.cli", "projections", "rebuild", "nope"], env=env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "unknown projection" in unknown.stderr


async def test_restart_keeps_state_and_seeds_nothing_twice(settings):
    async with TestClient(TestServer(create_app(settings))) as client:
        backend = await create_backend(client)
        _, groups_before = await call(client, "GET", "/groups")
    head = log_head(settings)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert await call(client, "GET", "/groups") == (200, groups_before)
        assert (await call(client, "GET", f"/backends/{backend['id']}"))[0] == 200
    assert log_head(settings) == head


async def test_deleted_internal_groups_come_back_at_start_up(settings):
    async with TestClient(TestServer(create_app(settings))) as client:
        assert await call(client, "DELETE", "/groups/internal_tasks_group") == (200, "deleted")
    async with TestClient(TestServer(create_app(settings))) as client:
        status, group = await call(client, "GET", "/groups/internal_tasks_group")
        assert status == 200 and group["name"] == "Tasks"
        status, models = await call(client, "GET", "/model-affinity/internal_tasks_group/models")
        assert [m["model"] for m in models] == ["phi3:3.8b"]


async def test_start_up_refuses_a_context_length_that_contradicts_the_log(settings):
    async with TestClient(TestServer(create_app(settings))):
        pass
    changed = settings.model_copy(update={"embed_model_context_length": 4096})
    with pytest.raises(Exception, match="context length"):
        async with TestClient(TestServer(create_app(changed))):
            pass
