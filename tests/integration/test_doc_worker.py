"""``chainloom worker`` end to end through the real service: uploads → jobs → the worker → /index → /search.

The service answers over real HTTP (the ``client`` fixture) with a fake Ollama (tests/fakes/llm.py: its
embeddings bring texts that share words close) grouped for tasks and embeddings; the worker talks to it
through the HTTP contract only, as it would from another machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chainloom.domain.identity import SERVER, Grant, Permission
from chainloom.infra.doc_worker import ApiError, DocumentWorker, Tally, WorkerConfig
from chainloom.infra.settings import Settings
from chainloom.infra.tokens import Tokens
from tests.api.helpers import call
from tests.api.identity_helpers import FAST_HASHES, claims_of
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres
from tests.fakes.llm import FakeOllama
from tests.unit.test_chunker import pdf_of

FOX = (
    "The quick brown fox jumps over the lazy dog near the river bank. " * 12
)  # 780 characters: two chunks
PDF_WORDS = "Quarterly revenue grew strongly in the northern sales region"
SECRET = "a-test-secret-of-32-characters!!"
API_KEY = "service-key-for-tests"
WORKER = {"worker_user_email": "worker@x.io", "worker_user_password": "w-pw", "worker_user_account_id": "worker-acct"}


@pytest.fixture
def settings(settings):
    """Reconcile often (the fake backend is seen within moments); a job failing once is parked."""
    return settings.model_copy(update={"reconcile_interval": 0.1, "job_max_failures": 1})


@pytest.fixture
async def ollama(client, settings) -> AsyncIterator[FakeOllama]:
    """A fake Ollama holding the task and the embedding model, grouped for both and seen by the reconciler."""
    async with FakeOllama() as fake:
        await serve_models(client, fake, settings)
        yield fake


async def serve_models(client, fake: FakeOllama, settings: Settings, headers: dict[str, str] | None = None) -> None:
    fake.use_document_models()
    fake.add_model(settings.task_model)
    fake.add_model(settings.embed_model)
    backend = {"name": "ollama-1", "baseUrl": fake.url, "type": "ollama"}
    status, created = await call(client, "POST", "/backends", backend, headers=dict(headers or {}))
    assert status == 201, created
    for group in ("internal_tasks_group", "internal_embed_group"):
        path = f"/backend-affinity/{group}/backends/{created['id']}"
        status, body = await call(client, "POST", path, headers=dict(headers or {}))
        assert status == 201, body
    for _ in range(200):  # until the reconciler has seen both models, the embedding one able to embed
        status, states = await call(client, "GET", "/state", headers=dict(headers or {}))
        assert status == 200, states
        held = {m["name"]: m for state in states if state["id"] == created["id"] for m in state["pulledModels"]}
        if settings.task_model in held and held.get(settings.embed_model, {}).get("canEmbed"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/state never showed the fake's models: {states}")


async def upload(client, name: str, data: bytes, **kwargs) -> dict:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name)
    async with client.post("/files", data=form, **kwargs) as response:
        body = await response.json()
        assert response.status == 201, body
        return body


async def search(client, q: str, **kwargs) -> list[str]:
    status, body = await call(client, "GET", "/search", params={"q": q, "topk": "5"}, **kwargs)
    assert status == 200, body
    return [hit["id"] for hit in body["results"]]


def worker_for(client, base: str = "/", **config) -> DocumentWorker:
    settings = {"leaser_id": "test-worker", "idle_seconds": 0, "error_backoff_seconds": 0, **config}
    return DocumentWorker(WorkerConfig(api_base_url=str(client.make_url(base)), **settings))


async def test_the_worker_indexes_text_and_pdf_files_and_parks_what_it_cannot_read(client, ollama):
    text = await upload(client, "fox.txt", FOX.encode())
    pdf = await upload(client, "report.pdf", pdf_of(PDF_WORDS, "page two"))
    broken = await upload(client, "broken.pdf", b"%PDF-1.4\n this is no PDF at all")
    await upload(client, "scan.pdf", pdf_of(""))  # no text: nothing to index, the job is done all the same
    async with worker_for(client) as worker:
        assert await worker.run_until_idle() == Tally(done=3, failed=1, chunks=3)
    assert (await search(client, "quick brown fox lazy dog"))[0] == text["id"]
    assert (await search(client, "quarterly revenue northern region"))[0] == pdf["id"]
    for listing in ("/jobs/pending", "/jobs/in-progress"):
        assert await call(client, "GET", listing) == (200, [])
    status, parked = await call(client, "GET", "/jobs/parked")
    assert status == 200 and [job["entityId"] for job in parked] == [broken["id"]], parked
    assert parked[0]["lastError"].startswith("cannot read the PDF: "), parked

    # a change of content is a job of its own ("update": the chunks replace the old ones)
    form = aiohttp.FormData()
    form.add_field("file", b"Completely different words about sailing boats and harbour winds", filename="x")
    async with client.put(f"/files/{text['id']}", data=form) as response:
        assert response.status == 200, await response.text()
    async with worker_for(client, "/api", worker_type="plaintext") as worker:
        assert await worker.run_until_idle() == Tally(done=1, failed=0, chunks=1)
    assert (await search(client, "sailing boats harbour winds"))[0] == text["id"]


async def test_with_security_on_the_worker_signs_in_and_again_when_its_token_expired(store_kind, tmp_path, service_for):
    if store_kind == "postgres":
        reset_postgres(POSTGRES_URL)
    settings = make_settings(
        store_kind, tmp_path / "data", security_enabled=True, jwt_secret=SECRET, api_token=API_KEY,
        reconcile_interval=0.1, **FAST_HASHES, **WORKER,
    )  # fmt: skip
    admin = {"headers": {"X-API-Key": API_KEY}}
    async with service_for(settings) as client, FakeOllama() as fake:
        await serve_models(client, fake, settings, admin["headers"])
        text = await upload(client, "fox.txt", FOX.encode(), **admin)

        async with worker_for(client, "/api") as anonymous:  # no credentials: the service refuses it
            with pytest.raises(ApiError, match="POST /leases answered 400: invalid token claims"):
                await anonymous.run_until_idle()

        worker = worker_for(client, "/api", email=WORKER["worker_user_email"], password=WORKER["worker_user_password"])
        grants = [Grant("g", "worker-acct", SERVER, "system", Permission.MANAGE, "", "")]
        expired, _ = Tokens(SECRET.encode(), 60, clock=lambda: time.time() - 3600).issue("worker-acct", grants)
        tokens = Tokens(SECRET.encode(), 60, clock=time.time)
        worker.token = expired  # as if signed in an hour ago: 400 "token is expired", signed in again
        async with worker:
            assert await worker.run_until_idle() == Tally(done=1, failed=0, chunks=2)
            assert worker.token != expired
            # a token close to its expiry is refreshed by the service on the way (its cookie): taken, no sign-in
            worker.token = soon = tokens.issue("worker-acct", grants)[0]
            assert await worker.run_until_idle() == Tally(done=1, failed=0, chunks=2)
            slid, before = claims_of(worker.token), claims_of(soon)
            assert slid["exp"] > before["exp"] and slid["permissions"] == before["permissions"]  # not signed in anew
        assert (await search(client, "quick brown fox", **admin))[0] == text["id"]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)  # about the process, not the store
async def test_chainloom_worker_runs_from_the_environment_until_signalled(client, ollama, tmp_path):
    """The sub-command as an operator runs it: settings from the reference's variables (CHAINLOOM_ ones win,
    options win over both), a log line per job, SIGTERM stops it."""
    text = await upload(client, "fox.txt", FOX.encode())
    env = {
        **os.environ,
        "API_BASE_URL": "http://127.0.0.1:9/api",  # the CHAINLOOM_ variable wins
        "CHAINLOOM_API_BASE_URL": str(client.make_url("/api")),
        "WORKER_LEASER_ID": "env-worker",
        "WORKER_TYPE": "pdf",  # the option wins
        "WORKER_LEASE_DURATION_SECONDS": "30",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chainloom.infra.cli", "worker", "--type", "plaintext", "--idle", "0.05",
        env=env, stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while "no work: 1 jobs done, 0 failed, 2 chunks indexed" not in (lines[-1] if lines else ""):
                line = (await process.stderr.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = (await process.stderr.read()).decode()
            assert await process.wait() == 0, "".join(lines) + rest
    finally:
        if process.returncode is None:
            process.kill()
    log = "".join(lines) + rest
    assert "worker env-worker against " + str(client.make_url("/api")) in log
    assert f"(create of file {text['id']}, text/plain; charset=utf-8): 2 chunks indexed" in log
    assert "stopping once the job in hand is done" in log and "worker stopped: 1 jobs done" in log
    assert (await search(client, "quick brown fox"))[0] == text["id"]
