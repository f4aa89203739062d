"""Projector workers: read models kept from Kafka, in processes of their own (``chainloom project``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.infra.settings import Settings
from chainloom.projections.registry import all_projectors
from tests.conftest import POSTGRES_URL
from tests.integration.kafka.conftest import healthy, process_env, wait_until
from chainloom.web.app import create_app


def read_models(settings: Settings) -> dict[str, list[str]]:
    """Every row of every read model, in a comparable form; and where each projector is."""
    store, factory = open_read_store(settings.read_store_env())
    try:
        tables: dict[str, list[str]] = {}
        for projector in all_projectors():
            for table in projector.tables:
                rows = store.query(f"SELECT * FROM {table}")
                tables[table] = sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)
        return tables
    finally:
        factory.close()


def positions(settings: Settings) -> dict[str, int]:
    if not settings.uses_postgres and not settings.data_dir.exists():
        return {}
    store, factory = open_read_store(settings.read_store_env())
    try:
        names = [p.name for p in all_projectors()]
        with store.transaction(commit=False) as cursor:
            return store.positions(cursor, names)
    except Exception:  # the worker has not created its tables yet
        return {}
    finally:
        factory.close()


def head(settings: Settings) -> int:
    log = EventLog(settings.event_store_env())
    try:
        return log.head()
    finally:
        log.close()


@pytest.fixture
def worker_settings(kafka_settings: Settings, tmp_path: Path):
    """A read store of the worker's own: another SQLite directory, or another PostgreSQL database."""
    if not kafka_settings.uses_postgres:
        yield kafka_settings.model_copy(update={"data_dir": tmp_path / "worker"})
        return
    name = f"worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield kafka_settings.model_copy(update={"database_url": url})
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _exercise_catalog(client: TestClient) -> None:
    """A bit of everything the catalog records: creations, updates, deletions, assignments."""
    backends = []
    for i in range(6):
        response = await client.post("/backends", json={"name": f"b{i}", "baseUrl": f"http://h{i}:11434", "type": "ollama"})
        assert response.status == 201, await response.text()
        backends.append((await response.json())["id"])
    assert (await client.put(f"/backends/{backends[0]}", json={"name": "b0x", "baseUrl": "http://h0:1", "type": "vllm"})).status == 200
    assert (await client.delete(f"/backends/{backends[5]}")).status == 200
    models = []
    for i in range(3):
        response = await client.post("/models", json={"model": f"m{i}:latest", "contextLength": 2048 * (i + 1), "canChat": True})
        assert response.status == 201, await response.text()
        models.append((await response.json())["id"])
    group = await client.post("/groups", json={"name": "workers", "purposeType": "Internal Tasks"})
    assert group.status == 201, await group.text()
    group_id = (await group.json())["id"]
    for backend_id in backends[:3]:
        response = await client.post(f"/backend-affinity/{group_id}/backends/{backend_id}")
        assert response.status in (200, 201), await response.text()
    response = await client.post(f"/model-affinity/{group_id}/models/{models[0]}")
    assert response.status in (200, 201), await response.text()
    assert (await client.delete(f"/backend-affinity/{group_id}/backends/{backends[1]}")).status in (200, 204)


@pytest.mark.timeout(120)
async def test_late_worker_catches_up_and_equals_the_embedded_read_models(
    kafka_settings: Settings, worker_settings: Settings, processes
):
    async with TestClient(TestServer(create_app(kafka_settings))) as client:
        await _exercise_catalog(client)
    embedded = read_models(kafka_settings)
    last = head(kafka_settings)
    assert sum(len(rows) for rows in embedded.values()) > 10

    # The worker starts after everything was written: it reads the topic from the start.
    worker = processes("project", env=process_env(worker_settings))
    names = [p.name for p in all_projectors()]

    def caught_up() -> bool:
        worker.assert_running()
        reached = positions(worker_settings)
        return bool(reached) and all(reached.get(name, 0) >= last for name in names)

    wait_until(caught_up, 60, "the projector worker to reach the log's head", interval=0.2)
    assert read_models(worker_settings) == embedded


def _request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.timeout(120)
def test_read_your_writes_when_api_and_projector_worker_are_separate_processes(kafka_settings: Settings, processes):
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = processes("project", env=process_env(kafka_settings))
    api = processes("serve", env=process_env(kafka_settings, CHAINLOOM_PROJECTIONS="kafka", CHAINLOOM_PROJECTION_TIMEOUT="5"))

    def up() -> bool:
        api.assert_running()
        worker.assert_running()
        return healthy(api.port)

    wait_until(up, 60, "the API to start (its start-up writes wait for the worker)", interval=0.1)

    for i in range(15):
        status, created = _request(api.port, "POST", "/backends", {"name": f"ryw{i}", "baseUrl": f"http://r{i}", "type": "ollama"})
        assert status == 201, created
        # Read right after the write: the API waited until the worker had projected it.
        status, got = _request(api.port, "GET", f"/backends/{created['id']}")
        assert status == 200, got
        assert got["name"] == f"ryw{i}"
        status, updated = _request(api.port, "PUT", f"/backends/{created['id']}", {"name": f"ryw{i}-b", "baseUrl": f"http://r{i}", "type": "vllm"})
        assert status == 200, updated
        status, listed = _request(api.port, "GET", "/backends?limit=100")
        assert status == 200
        assert {"id": created["id"], "name": f"ryw{i}-b"}.items() <= next(b for b in listed if b["id"] == created["id"]).items()

    # The API does not project by itself: without a worker, a write cannot be read back in time.
    worker.kill()
    started = time.monotonic()
    status, error = _request(api.port, "POST", "/backends", {"name": "late", "baseUrl": "http://late", "type": "ollama"})
    assert status == 503, error
    assert time.monotonic() - started >= 4.5
    # A new worker of the group picks up where the killed one was; the write becomes visible.
    processes("project", env=process_env(kafka_settings))
    status, listed = _request(api.port, "GET", "/backends?limit=100")

    def visible() -> bool:
        return any(b["name"] == "late" for b in _request(api.port, "GET", "/backends?limit=100")[1])

    wait_until(visible, 40, "a new worker to take over the group and project the write", interval=0.1)
