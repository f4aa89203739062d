"""The vector read model on SQLite and PostgreSQL: chunks in SQL, embeddings in lancedb, from the log alone.

Chunks are written to the log as the index records them (no model is called), projected by a runner, and
checked in both stores: the nearest chunks by L2, a file's re-index replacing its chunks, a cleared file
leaving no vector behind. A batch applied again after its transaction rolled back (the vectors were
written already) ends where applying it once does; a rebuild writes a new generation equal to the live one,
swaps it in with the SQL tables and drops the old one.
"""

from __future__ import annotations

import math
import uuid

import pytest

from chainloom.domain.file_chunks import FileChunks, IndexedChunk, chunk_id, pack_vector
from chainloom.infra.eventlog import EventLog
from chainloom.infra import vectors as vector_store
from chainloom.infra.readstore import open_read_store
from chainloom.infra.vectors import VectorRow, VectorStore, table_name
from chainloom.projections.rebuild import rebuild
from chainloom.projections.runner import ProjectionRunner
from chainloom.projections.vectors import VectorsProjector


def unit(*values: float) -> bytes:
    norm = math.sqrt(sum(v * v for v in values))
    return pack_vector([v / norm for v in values])


def chunks_of(file_id: str, *vectors: bytes, text: str = "text") -> list[IndexedChunk]:
    return [
        IndexedChunk(chunk_id(file_id, i), i, f"{text} {i}", f"kw{i}, {text}", "embed-model", vector)
        for i, vector in enumerate(vectors)
    ]


@pytest.fixture
def stores(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    store, factory = open_read_store(settings.read_store_env())
    vectors = VectorStore(settings.vector_directory, maintain=False)
    try:
        yield log, store, vectors
    finally:
        factory.close()
        log.close()


def index(log: EventLog, file_id: str, chunks: list[IndexedChunk]) -> None:
    aggregate = log.get(FileChunks, file_id) or FileChunks.start(file_id)
    aggregate.index(chunks)
    log.save(aggregate)


def clear(log: EventLog, file_id: str) -> None:
    aggregate = log.get(FileChunks, file_id)
    assert aggregate is not None
    aggregate.clear()
    log.save(aggregate)


def snapshot(store, vectors: VectorStore) -> tuple[list[dict], dict[str, tuple[str, bytes]]]:
    rows = store.query("SELECT * FROM chunks ORDER BY chunk_id")
    generation = store.query("SELECT generation FROM vector_generation")
    return rows, vectors.rows(generation[0]["generation"]) if generation else {}


def test_chunks_and_vectors_follow_the_log(stores):
    log, store, vectors = stores
    runner = ProjectionRunner(log, store, [VectorsProjector(vectors=vectors)])
    runner.setup()
    near, far, gone = (str(uuid.uuid4()) for _ in range(3))
    index(log, near, chunks_of(near, unit(1, 0, 0), unit(1, 1, 0)))
    index(log, far, chunks_of(far, unit(0, 0, 1)))
    index(log, gone, chunks_of(gone, unit(1, 0, 0.1)))
    runner.catch_up()
    generation = store.query("SELECT generation FROM vector_generation")[0]["generation"]
    hits = vectors.search(generation, [1.0, 0.0, 0.0], 10)
    assert [h.chunk_id for h in hits] == [chunk_id(near, 0), chunk_id(gone, 0), chunk_id(near, 1), chunk_id(far, 0)]
    assert hits[0].distance == pytest.approx(0.0, abs=1e-6)
    assert hits[-1].distance == pytest.approx(math.sqrt(2), rel=1e-5)  # Euclidean, not its square
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert [h.chunk_id for h in vectors.search(generation, [1.0, 0.0, 0.0], 2, max_distance=0.2)] == [
        chunk_id(near, 0),
        chunk_id(gone, 0),
    ]
    # Re-indexed with one chunk: the second is gone from both stores; cleared: nothing of it is left.
    index(log, near, chunks_of(near, unit(0, 1, 0), text="new"))
    clear(log, gone)
    runner.catch_up()
    rows, stored = snapshot(store, vectors)
    assert [(r["chunk_id"], r["idx"], r["text"], r["dims"]) for r in rows] == sorted(
        [(chunk_id(near, 0), 0, "new 0", 3), (chunk_id(far, 0), 0, "text 0", 3)]
    )
    assert stored == {chunk_id(near, 0): (near, unit(0, 1, 0)), chunk_id(far, 0): (far, unit(0, 0, 1))}
    # Another embedding model, another dimension: a table of its own, searched by the query's dimension.
    other = str(uuid.uuid4())
    index(log, other, chunks_of(other, unit(1, 0, 0, 0, 0)))
    runner.catch_up()
    assert [h.chunk_id for h in vectors.search(generation, [1.0, 0, 0, 0, 0], 5)] == [chunk_id(other, 0)]
    assert sorted(vectors.table_names()) == sorted([table_name(generation, 3), table_name(generation, 5)])


def test_a_batch_applied_again_after_a_rollback_ends_as_once(stores):
    log, store, vectors = stores
    projector = VectorsProjector(vectors=vectors)
    runner = ProjectionRunner(log, store, [projector])
    runner.setup()
    files = [str(uuid.uuid4()) for _ in range(3)]
    index(log, files[0], chunks_of(files[0], unit(1, 0, 0), unit(0, 1, 0)))
    runner.catch_up()
    generation = store.query("SELECT generation FROM vector_generation")[0]["generation"]
    for i, file_id in enumerate(files[1:], 1):
        index(log, file_id, chunks_of(file_id, unit(1, i, 0), unit(0, 1, i)))
    index(log, files[0], chunks_of(files[0], unit(5, 5, 5)))  # replaced
    clear(log, files[1])
    # The batch is applied and its vectors written, then its transaction rolls back (as a lost connection would).
    with store.transaction(commit=False) as cursor:
        runner.apply_batch(cursor)
    assert sorted(vectors.rows(generation)) == sorted([chunk_id(files[0], 0), chunk_id(files[2], 0), chunk_id(files[2], 1)])
    assert len(store.query("SELECT * FROM chunks")) == 2  # the first batch's
    runner.catch_up()
    rows, stored = snapshot(store, vectors)
    assert vectors.table_names() == [table_name(generation, 3)]
    expected = {
        chunk_id(files[0], 0): (files[0], unit(5, 5, 5)),
        chunk_id(files[2], 0): (files[2], unit(1, 2, 0)),
        chunk_id(files[2], 1): (files[2], unit(0, 1, 2)),
    }
    assert stored == expected
    assert [r["chunk_id"] for r in rows] == sorted(expected)


def test_a_rebuild_equals_the_live_vectors_and_drops_the_old_generation(stores, settings):
    log, store, vectors = stores
    runner = ProjectionRunner(log, store, [VectorsProjector(vectors=vectors)])
    runner.setup()
    files = [str(uuid.uuid4()) for _ in range(4)]
    for i, file_id in enumerate(files):
        index(log, file_id, chunks_of(file_id, unit(1, i, 2), unit(i, 1, 0), unit(0, 0, i + 1)))
    index(log, files[1], chunks_of(files[1], unit(7, 1, 1)))
    clear(log, files[2])
    runner.catch_up()
    live_rows, live_vectors = snapshot(store, vectors)
    old = store.query("SELECT generation FROM vector_generation")[0]["generation"]
    assert len(live_vectors) == 3 + 1 + 3

    assert rebuild(settings, ["vectors"]) == log.head()
    rows, rebuilt = snapshot(store, vectors)
    new = store.query("SELECT generation FROM vector_generation")[0]["generation"]
    assert new != old
    assert rows == live_rows and rebuilt == live_vectors
    assert vectors.table_names() == [table_name(new, 3)]  # the old generation is dropped
    # The live runner goes on writing to the swapped-in generation.
    index(log, files[2], chunks_of(files[2], unit(1, 1, 1)))
    runner.catch_up()
    assert chunk_id(files[2], 0) in vectors.rows(new)


def test_generations_no_pointer_names_are_dropped_at_start_up(stores):
    log, store, vectors = stores
    stray = VectorRow("x-0", "x", unit(1, 0))
    vectors.write("vstray", 2, [stray], [])
    projector = VectorsProjector(vectors=vectors)
    ProjectionRunner(log, store, [projector]).setup()
    assert vectors.table_names() == []
    # Without a vector store the projector keeps its SQL tables and touches nothing else.
    ProjectionRunner(log, store, [VectorsProjector()]).setup()


class Tampered:
    """The log as the runner reads it, with the data of one event replaced (a poison event)."""

    def __init__(self, log: EventLog, position: int, data: dict) -> None:
        self._log, self._position, self._data = log, position, data

    def read(self, after: int, limit: int) -> list[dict]:
        events = self._log.read(after, limit)
        return [{**e, "data": self._data} if e["nid"] == self._position else e for e in events]

    def head(self) -> int:
        return self._log.head()


def test_a_poison_event_keeps_the_vectors_before_it_and_none_after(stores):
    log, store, vectors = stores
    before, poisoned, after = (str(uuid.uuid4()) for _ in range(3))
    index(log, before, chunks_of(before, unit(1, 0), unit(0, 1)))
    index(log, poisoned, chunks_of(poisoned, unit(1, 1)))
    position = log.head()
    index(log, after, chunks_of(after, unit(1, 2)))
    runner = ProjectionRunner(Tampered(log, position, {"chunkId": f"{poisoned}-0"}), store, [VectorsProjector(vectors=vectors)])
    runner.setup()
    runner.catch_up()
    assert runner.current_faults()["vectors"].position == position
    rows, stored = snapshot(store, vectors)
    assert [r["chunk_id"] for r in rows] == sorted(stored) == sorted([chunk_id(before, 0), chunk_id(before, 1)])


def test_a_growing_table_is_compacted_and_indexed_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_store, "OPTIMIZE_EVERY_WRITES", 3)
    monkeypatch.setattr(vector_store, "INDEX_MIN_ROWS", 300)
    vectors = VectorStore(tmp_path / "vectors")
    rows = [VectorRow(f"f{i}-0", f"f{i}", unit(*(math.sin((i + 1) * (d + 1)) for d in range(8)))) for i in range(400)]
    for start in range(0, 400, 100):
        vectors.write("vgen", 8, rows[start : start + 100], [])
    vectors.wait_for_maintenance(timeout=60)
    table = vectors._open(table_name("vgen", 8))
    assert list(table.list_indices()) and table.count_rows() == 400
    probe = [math.sin(124 * (d + 1)) for d in range(8)]
    assert vectors.search("vgen", probe, 1)[0].chunk_id == "f123-0"
