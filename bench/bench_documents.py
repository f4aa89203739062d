"""Documents figures: upload throughput and memory, indexing throughput, and /search over 100,000 chunks.

    .venv/bin/python bench/bench_documents.py               # SQLite only
    bench/run bench/bench_documents.py                      # SQLite and a durable throwaway PostgreSQL

``chainloom serve`` runs with one worker process (so its memory is one process's), against a fake Ollama in
its own process holding the default task and embedding models (tests/fakes/llm.py's document models:
keywords are words of the text, embeddings hashed bags of words of 768 dimensions, answered at once).

- ``upload``: ``POST /files`` of text files of 1 MiB (one after another) and 50 MiB, streamed from disk by the
  client; MB/s of file content. ``memory``: the service's resident memory (every process of its group)
  sampled every 10 ms during one 100 MiB upload, minus before it.
- ``index``: uploads leased and indexed as a worker does, 64 chunks of 512 characters per ``POST /index``
  (a keyword prompt and an embedding per chunk, then one decision), one and four workers at once.
- ``search``: 100,000 chunks (768 dimensions) written to the log before the service starts (as
  ``file_chunks.chunk_indexed`` events, what ``POST /index`` records), projected by the service at start-up
  into the ``chunks`` table and lancedb, which builds its IVF index in the background; then ``GET
  /search`` one after another. The split comes from the answer's ``Server-Timing``: ``models`` (the
  question check and the embedding, the fake's answers), ``vectors`` (the lancedb look-up) and ``rows``
  (the read store); "excluding the models" is the answer's latency minus ``models``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from bench.harness import service, url_process  # noqa: E402
from chainloom.commands.base import SYSTEM, CommandRunner, Decision  # noqa: E402
from chainloom.domain.file_chunks import FileChunks, IndexedChunk, chunk_id, pack_vector  # noqa: E402
from chainloom.infra.bootstrap import open_resources  # noqa: E402
from chainloom.infra.logwriter import LogWriter  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from tests.fakes.llm import word_vector  # noqa: E402

DIMS = 768
MIB = 1024 * 1024
SEARCH_CHUNKS = 100_000
CHUNKS_PER_FILE = 500
TEXT_JOBS = ["vectorize_text/plain; charset=utf-8"]
# The fake Ollama with the default models answering as document models, in 768 dimensions.
FAKE = """
import asyncio, sys
from tests.fakes.llm import FakeOllama, _Discard
from chainloom.infra.settings import Settings

async def main():
    fake = FakeOllama()
    fake.use_document_models(int(sys.argv[1]))
    for field in ("task_model", "embed_model"):
        fake.add_model(Settings.model_fields[field].default)
    async with fake:
        print(fake.url, flush=True)
        fake.requests = _Discard()
        await asyncio.Event().wait()

asyncio.run(main())
"""
WORDS = (
    "river mountain forest bread flour yeast oven star galaxy planet orbit engine piston fuel market price"
    " trade ledger invoice contract court judge law music guitar chord rhythm garden tomato soil seed rain"
    " cloud storm ocean wave ship harbor train station ticket city bridge tower castle king queen army"
).split()


def _json(base: str, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def group_the_fake(base: str, fake_url: str) -> None:
    """A backend on the fake in the tasks and embedding groups; returns once both models are routable."""
    backend = _json(base, "POST", "/backends", {"name": "fake-docs", "baseUrl": fake_url, "type": "ollama"})
    for group in ("internal_tasks_group", "internal_embed_group"):
        _json(base, "POST", f"/backend-affinity/{group}/backends/{backend['id']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pulled = {
            p["name"]: p for s in _json(base, "GET", "/state") if s["id"] == backend["id"] for p in s.get("pulledModels") or []
        }
        if len(pulled) >= 2 and all(p.get("canPrompt") or p.get("canEmbed") for p in pulled.values()):
            return
        time.sleep(0.2)
    raise RuntimeError("the reconciler never showed the fake holding the document models")


def group_rss(group: int) -> int:
    """Resident bytes of every process in a process group."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def sentence(rng: random.Random, words: int = 80) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@contextmanager
def text_file(size: int, rng: random.Random) -> Iterator[Path]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        block = (sentence(rng, 200) + "\n") * 64
        written = 0
        while written < size:
            piece = block[: size - written]
            handle.write(piece)
            written += len(piece)
    try:
        yield Path(handle.name)
    finally:
        os.unlink(handle.name)


async def upload(session: aiohttp.ClientSession, path: Path, name: str) -> dict:
    with path.open("rb") as content:
        form = aiohttp.FormData()
        form.add_field("file", content, filename=name, content_type="text/plain")
        form.add_field("name", name)
        async with session.post("/files", data=form) as response:
            answer = await response.json()
            assert response.status == 201, answer
            return answer


async def uploads(base: str, group: int) -> None:
    rng = random.Random(1)
    async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=600)) as session:
        for size_mib, count in ((1, 30), (50, 3)):
            with text_file(size_mib * MIB, rng) as path:
                await upload(session, path, f"warm-{size_mib}.txt")
                took = []
                for i in range(count):
                    started = time.perf_counter()
                    await upload(session, path, f"f{size_mib}-{i}.txt")
                    took.append(time.perf_counter() - started)
            rate = size_mib * count / sum(took)
            print(f"upload {size_mib:>3} MiB files, one at a time      {rate:8.1f} MB/s   p50 {statistics.median(took) * 1000:8.1f} ms per file")
        with text_file(100 * MIB, rng) as path:
            before = group_rss(group)
            peak = before
            task = asyncio.ensure_future(upload(session, path, "hundred.txt"))
            while not task.done():
                peak = max(peak, group_rss(group))
                await asyncio.sleep(0.01)
            await task
            print(f"upload 100 MiB: resident memory before {before / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB (+{(peak - before) / MIB:.1f} MiB)")


async def indexing(base: str, jobs_per_worker: int = 6) -> None:
    rng = random.Random(2)
    async with aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(worker: int, i: int) -> int:
            form = aiohttp.FormData()
            form.add_field("file", sentence(rng).encode(), filename=f"idx-{worker}-{i}-{time.time_ns()}.txt")
            async with session.post("/files", data=form) as response:
                assert response.status == 201, await response.text()
            lease = {"leaserId": f"bench-{worker}", "leaseDuration": "60s", "jobTypes": TEXT_JOBS}
            async with session.post("/leases", json=lease) as response:
                job = await response.json()
                assert response.status == 201, job
            chunks = [sentence(rng, 85)[:512] for _ in range(64)]
            body = {"id": job["entityId"], "chunks": chunks, "replace": True, "jobId": job["id"], "leaserId": f"bench-{worker}"}
            async with session.post("/index", json=body) as response:
                assert response.status == 200, await response.text()
            return len(chunks)

        # Leave no job of earlier uploads for the leasers: lease them all away.
        while True:
            async with session.post("/leases", json={"leaserId": "drain", "leaseDuration": "1h", "jobTypes": TEXT_JOBS}) as response:
                if response.status == 404:
                    break
        for workers in (1, 4):
            started = time.perf_counter()
            counts = await asyncio.gather(*(_worker(one, w, jobs_per_worker) for w in range(workers)))
            took = time.perf_counter() - started
            print(f"index 64-chunk files, {workers} worker(s)          {sum(counts) / took:8.0f} chunks/s   ({sum(counts)} chunks in {took:.1f} s)")


async def _worker(one, worker: int, jobs: int) -> int:
    return sum([await one(worker, i) for i in range(jobs)])


def seed_chunks(settings: Settings, total: int) -> float:
    """``total`` indexed chunks written to the log (as POST /index records them); the seconds it took."""
    rng = random.Random(3)
    started = time.perf_counter()

    async def write() -> None:
        with open_resources(settings, read_store=False) as resources:
            writer = LogWriter(resources.log)

            async def nothing(position: int | None) -> None:
                return None

            runner = CommandRunner(writer, nothing)
            try:
                for file_number in range(total // CHUNKS_PER_FILE):
                    file_id = f"bench-file-{file_number}"
                    chunks = []
                    for i in range(CHUNKS_PER_FILE):
                        text = sentence(rng, 60)
                        chunks.append(
                            IndexedChunk(chunk_id(file_id, i), i, text, "", "nomic-embed-text:latest", pack_vector(word_vector(text, DIMS)))
                        )

                    def decide(log: Any, chunks: list[IndexedChunk] = chunks, file_id: str = file_id) -> Decision[None]:
                        aggregate = FileChunks.start(file_id)
                        aggregate.index(chunks)
                        return Decision(None, [aggregate])

                    await runner.run(decide, SYSTEM)
            finally:
                await asyncio.to_thread(writer.close)

    asyncio.run(write())
    return time.perf_counter() - started


def wait_for_vectors(data_dir: Path, base: str, total: int) -> tuple[float, float]:
    """Seconds until /ready (the chunks projected), then until lancedb's table holds its IVF index."""
    import lancedb

    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.2)
    projected = time.perf_counter() - started
    db = lancedb.connect(data_dir / "vectors")
    deadline = time.monotonic() + 900
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        # Settled: every row in the index, and no new table version (compaction, re-training) for 5 s.
        for name in db.list_tables().tables:
            table = db.open_table(name)
            indices = list(table.list_indices())
            if table.count_rows() < total or not indices:
                continue
            stats = table.index_stats(indices[0].name)
            state = (table.version, stats.num_indexed_rows)
            if state != last:
                last, still_since = state, time.monotonic()
            elif stats.num_unindexed_rows == 0 and time.monotonic() - still_since >= 5:
                return projected, time.perf_counter() - started - projected - 5
        time.sleep(0.5)
    raise RuntimeError("lancedb never indexed the table")


async def searches(base: str, rounds: int = 300) -> None:
    rng = random.Random(4)
    total, models, vectors, rows = [], [], [], []
    async with aiohttp.ClientSession(base_url=base) as session:
        for i in range(rounds + 20):
            words = " ".join(rng.choice(WORDS) for _ in range(4))
            query = f"where is the {words}?" if i % 2 else words
            started = time.perf_counter()
            async with session.get("/search", params={"q": query, "topk": "10"}) as response:
                answer = await response.json()
                assert response.status == 200 and answer["results"], answer
                timing = dict(
                    (part.split(";dur=")[0].strip(), float(part.split(";dur=")[1]))
                    for part in response.headers["Server-Timing"].split(",")
                )
            took = (time.perf_counter() - started) * 1000
            if i < 20:
                continue  # warm-up
            total.append(took)
            models.append(timing["models"])
            vectors.append(timing["vectors"])
            rows.append(timing["rows"])
    without = [t - m for t, m in zip(total, models)]

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    print(f"GET /search over {SEARCH_CHUNKS:,} chunks ({rounds} queries, half of them questions: 2-3 model calls each)")
    for label, values in (("whole answer", total), ("excluding the models", without), ("  of which vectors (lancedb)", vectors),
                          ("  of which rows (read store)", rows), ("the models (fake, local)", models)):
        print(f"  {label:<34} p50 {p(values, 50):7.2f} ms   p99 {p(values, 99):7.2f} ms")


def run(database_url: str) -> None:
    store = "PostgreSQL" if database_url else "SQLite"
    print(f"== {store} ==")
    env = {"CHAINLOOM_WORKERS": "1", "CHAINLOOM_RECONCILE_INTERVAL": "0.5", "CHAINLOOM_LEASE_REAPER": "false"}
    with url_process([sys.executable, "-c", FAKE, str(DIMS)]) as fake_url:
        with service(database_url, **env) as base:
            group_the_fake(base, fake_url)
            group = os.getpgid(_json(base, "GET", "/ready")["pid"])
            asyncio.run(uploads(base, group))
            asyncio.run(indexing(base))
        with tempfile.TemporaryDirectory(prefix="chainloom-bench-search-") as data_dir:
            if database_url:
                _reset_postgres(database_url)
            settings = Settings(data_dir=Path(data_dir), database_url=database_url)
            seeded = seed_chunks(settings, SEARCH_CHUNKS)
            print(f"seed: {SEARCH_CHUNKS:,} chunk events written in {seeded:.1f} s")
            with service(database_url, data_dir=data_dir, **env) as base:
                projected, indexed = wait_for_vectors(Path(data_dir), base, SEARCH_CHUNKS)
                print(f"start-up projection of the chunks: {projected:.1f} s; vector table indexed and compacted {indexed:.1f} s later")
                group_the_fake(base, fake_url)
                asyncio.run(searches(base))


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="", help="also run on this PostgreSQL database (emptied first)")
    args = parser.parse_args()
    run("")
    if args.postgres:
        _reset_postgres(args.postgres)
        run(args.postgres)


if __name__ == "__main__":
    main()
