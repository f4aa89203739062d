"""/index, /search and /keywords through real HTTP on SQLite and PostgreSQL, against the fake Ollama's
document models (tests/fakes/llm.py: keywords are words of the text, embeddings bags of words, so texts
that share words are close).

Uploaded files are leased and indexed as a worker does; a question finds the right file, one result per
file, nearest first, with the file's record on ``expand=files``; a re-index replaces the file's chunks, a
deleted file leaves no vector behind, a rebuild of the vectors equals the live ones without asking a model.
Every refusal of the notes (§8) is checked without any model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from chainloom.commands.indexing import keywords_prompt
from chainloom.infra.readstore import open_read_store
from chainloom.infra.settings import Settings
from chainloom.infra.vectors import VectorStore
from chainloom.projections.rebuild import rebuild
from tests.api.test_files import create
from tests.api.helpers import assert_error, call
from tests.fakes.llm import FakeOllama, document_answer

TEXT_JOBS = ["vectorize_text/plain; charset=utf-8"]
DOCUMENTS = {
    "fox.txt": ["The quick brown fox jumps over the lazy dog.", "Foxes are agile hunters of the forest."],
    "bread.txt": ["Bread is baked from flour, water and yeast.", "Sourdough bread rises slowly overnight."],
    "stars.txt": ["Stars are giant balls of burning gas.", "Our sun is a star among billions."],
}
QUESTION = "Where does the brown fox jump?"


@pytest.fixture
def settings(settings):
    """The reconciler looks often, so the fake's models are routable within moments."""
    return settings.model_copy(update={"reconcile_interval": 0.1})


@asynccontextmanager
async def document_models(client: Any, settings: Settings) -> AsyncIterator[FakeOllama]:
    """A fake Ollama holding the default task and embedding models, grouped for both, once /state shows them."""
    async with FakeOllama() as ollama:
        ollama.add_model(settings.task_model)
        ollama.add_model(settings.embed_model)
        ollama.use_document_models()
        status, backend = await call(client, "POST", "/backends", {"name": "docs", "baseUrl": ollama.url, "type": "ollama"})
        assert status == 201, backend
        for group in ("internal_tasks_group", "internal_embed_group"):
            status, body = await call(client, "POST", f"/backend-affinity/{group}/backends/{backend['id']}")
            assert status == 201, body
        for _ in range(200):
            status, states = await call(client, "GET", "/state")
            pulled = {p["name"]: p for s in states if s["id"] == backend["id"] for p in s.get("pulledModels") or []}
            task, embed = pulled.get(settings.task_model), pulled.get(settings.embed_model)
            if task and task["canPrompt"] and embed and embed["canEmbed"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the fake's models never became routable: {states}")
        yield ollama


async def lease(client: Any, leaser: str = "worker-1") -> dict[str, Any]:
    status, job = await call(client, "POST", "/leases", {"leaserId": leaser, "leaseDuration": "60s", "jobTypes": TEXT_JOBS})
    assert status == 201, job
    return job


async def index(client: Any, job: dict[str, Any], chunks: list[str], leaser: str = "worker-1", **extra: Any) -> dict:
    body = {"id": job["entityId"], "chunks": chunks, "replace": False, "jobId": job["id"], "leaserId": leaser, **extra}
    status, answer = await call(client, "POST", "/index", body)
    assert status == 200, answer
    return answer


def vector_state(settings: Settings) -> tuple[list[dict], dict[str, tuple[str, bytes]]]:
    """The chunk rows and the live generation's vectors, as the stores hold them."""
    store, factory = open_read_store(settings.read_store_env())
    try:
        rows = store.query("SELECT * FROM chunks ORDER BY chunk_id")
        generation = store.query("SELECT generation FROM vector_generation")
    finally:
        factory.close()
    vectors = VectorStore(settings.vector_directory, maintain=False)
    return rows, (vectors.rows(generation[0]["generation"]) if generation else {})


def model_calls(fake: FakeOllama) -> int:
    return sum(path in ("/api/generate", "/api/chat", "/api/embeddings", "/api/embed") for _, path, _ in fake.requests)


async def test_indexed_files_are_found_by_a_question(client, settings):
    async with document_models(client, settings) as fake:
        files = {name: await create(client, " ".join(chunks).encode(), name) for name, chunks in DOCUMENTS.items()}
        names = {file["id"]: name for name, file in files.items()}
        for _ in files:
            job = await lease(client)
            chunks = DOCUMENTS[names[job["entityId"]]]
            answer = await index(client, job, chunks)
            assert answer["id"] == job["entityId"]
            assert answer["vectors"] == [f"{job['entityId']}-{i}" for i in range(len(chunks))]
            for chunk, augmented in zip(chunks, answer["augmentedMetadata"]):
                text, keywords = augmented.split("\n\nKeywords: ")
                assert (text, keywords) == (chunk, document_answer(keywords_prompt(chunk)))
        assert await call(client, "GET", "/jobs/in-progress") == (200, [])  # every job completed by its index
        fox, bread = files["fox.txt"]["id"], files["bread.txt"]["id"]

        status, found = await call(client, "GET", "/search", params={"q": QUESTION})
        assert status == 200, found
        assert found["triedQuery"] == [QUESTION, "brown fox jump"]
        results = found["results"]
        assert results[0]["id"] == fox and results[0]["chunkId"] == f"{fox}-0"
        assert len({r["id"] for r in results}) == len(results) == 3  # one per file
        assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)
        assert all(r["type"] == "file" and r["fileMeta"] is None for r in results)
        status, found = await call(client, "GET", "/search", params={"q": "sourdough bread", "topk": "1", "expand": "files"})
        assert found["triedQuery"] == ["sourdough bread"]  # not a question: searched as it is
        [hit] = found["results"]
        assert hit["id"] == bread and hit["chunkId"] == f"{bread}-1"
        record = hit["fileMeta"]
        assert set(record) == {"id", "type", "meta", "isFolder", "blobsId", "createdAt", "updatedAt"}
        assert (record["id"], record["type"], record["isFolder"]) == (bread, "text/plain; charset=utf-8", False)
        meta = json.loads(base64.b64decode(record["meta"]))
        assert meta == {"specVersion": "1.0", "hash": record["blobsId"], "size": files["bread.txt"]["size"], "fileId": bread}
        status, keywords = await call(client, "GET", "/keywords")
        assert status == 200 and len(keywords) == 6 and "quick, brown, jumps, over, lazy" in keywords

        # A rebuild restores the same chunks and vectors from the log, asking no model.
        live = vector_state(settings)
        calls = model_calls(fake)
        await asyncio.to_thread(rebuild, settings, ["vectors"])
        assert vector_state(settings) == live and model_calls(fake) == calls
        status, again = await call(client, "GET", "/search", params={"q": QUESTION})
        assert again["results"] == results
        # Where a search's time went: the models, the vector look-up, the read store.
        async with client.get("/search", params={"q": QUESTION}) as response:
            split = dict(part.strip().split(";dur=") for part in response.headers["Server-Timing"].split(","))
            assert set(split) == {"models", "vectors", "rows"} and all(float(ms) >= 0 for ms in split.values())

        # Changed, the file is indexed again: its chunks are replaced (replace or not).
        status, renamed = await call(client, "PUT", f"/files/{fox}/name", {"name": "cat.txt"})
        assert status == 200, renamed
        answer = await index(client, await lease(client), ["A cat sleeps on the warm windowsill."])
        assert answer["vectors"] == [f"{fox}-0"]
        rows, vectors = vector_state(settings)
        assert [r["chunk_id"] for r in rows if r["file_id"] == fox] == [f"{fox}-0"] == [k for k in vectors if k.startswith(fox)]
        status, found = await call(client, "GET", "/search", params={"q": "sleeping cat on a windowsill", "topk": "1"})
        assert [r["id"] for r in found["results"]] == [fox]

        # Deleted, a file leaves no chunk, keyword or vector behind.
        assert (await call(client, "DELETE", f"/files/{bread}"))[0] == 200
        rows, vectors = vector_state(settings)
        assert bread not in {r["file_id"] for r in rows} | {file_id for file_id, _ in vectors.values()}
        status, found = await call(client, "GET", "/search", params={"q": "sourdough bread", "expand": "files"})
        assert bread not in [r["id"] for r in found["results"]]
        assert len((await call(client, "GET", "/keywords"))[1]) == 3


async def test_the_refusals_of_the_notes(client):
    file = await create(client, b"Some plain text to index.", "a.txt")
    job = await lease(client)
    body = {"id": file["id"], "chunks": ["Some plain text"], "replace": False, "jobId": job["id"], "leaserId": "worker-1"}
    for missing in ("jobId", "leaserId"):
        assert_error(*await call(client, "POST", "/index", {**body, missing: ""}), 400, "serverops: missing parameter")
        status, flat = await call(client, "POST", "/api/index", {k: v for k, v in body.items() if k != missing})
        assert status == 400 and "serverops: missing parameter" in flat["error"]
    assert_error(*await call(client, "POST", "/index", {**body, "jobId": str(uuid.uuid4())}), 404, "not found")
    assert_error(*await call(client, "POST", "/index", {**body, "leaserId": "worker-2"}), 422, "job is not leased by this leaser")
    status, flat = await call(client, "POST", "/api/index", {**body, "leaserId": "worker-2"})
    assert (status, flat) == (422, {"error": "job is not leased by this leaser"})
    # No model to ask: refused, nothing recorded, the job still leased by its worker.
    assert_error(*await call(client, "POST", "/index", body), 422, "no model matched")
    assert [j["id"] for j in (await call(client, "GET", "/jobs/in-progress"))[1]] == [job["id"]]
    assert await call(client, "GET", "/keywords") == (200, [])
    # Done otherwise, the job is no longer leased: 404.
    assert (await call(client, "PATCH", f"/jobs/{job['id']}/done", {"leaserId": "worker-1"}))[0] == 204
    assert_error(*await call(client, "POST", "/index", body), 404, "not found")

    for params in ({"topk": "ten"}, {"radius": "far", "epsilon": "0.1"}, {"epsilon": "nan"}, {"radius": "1e999"}):
        assert_error(*await call(client, "GET", "/search", params={"q": "text", **params}), 400, "invalid")
    assert await call(client, "GET", "/search", params={"topk": "-3"}) == (200, {"results": [], "triedQuery": [""]})
    assert_error(*await call(client, "GET", "/search", params={"q": "text"}), 422, "no model matched")
    assert_error(*await call(client, "GET", "/keywords", params={"cursor": "yesterday"}), 400, "invalid cursor parameter")
