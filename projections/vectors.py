"""Read model of indexed chunks (``vectors``): their rows in SQL, their embeddings in lancedb.

``chunks`` holds one row per live chunk (text, keywords, model, dimensions), for
``/keywords`` and for joining search hits to their files; the embeddings go to
the vector store (``infra.vectors``), under the *generation* the one-row table
``vector_generation`` names. Both follow ``file_chunks.chunk_indexed`` and
``file_chunks.cleared`` events, which carry everything — so a rebuild restores
the vectors without calling a model.

lancedb is not in the read store's transaction. The handlers write the SQL rows
and buffer the vector changes (the last change of each chunk wins); ``flush``
writes them once the projector's events of a batch are applied, before the
batch's position is tracked. Upserts and deletes by chunk id are idempotent, so
a batch applied again after its transaction rolled back writes the same state.
A search never shows a vector without its row: hits are joined to ``chunks``.

A rebuild (``projections.rebuild``) builds this projector aside under a suffix:
its own ``vector_generation_<suffix>`` table names a new generation, written
aside as well; swapping the SQL tables in swaps the pointer, and with it the
live vectors. Generations no pointer names are dropped (``tidy``: at start-up
and after a rebuild), under the projection lock, so never one a batch writes.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Sequence

from chainloom.domain.file_chunks import FileChunks
from chainloom.infra.readstore import ReadStore, SqlCursor
from chainloom.infra.timefmt import parse_ns
from chainloom.infra.vectors import VectorRow, VectorStore
from chainloom.projections.base import Event, Projector, TemplatedCursor, on

logger = logging.getLogger(__name__)

GENERATION_TABLE = "vector_generation"
# The pointer tables there may be (live, and a rebuild's aside); not their indexes (PostgreSQL's ``…_pkey``).
_POINTER = re.compile(rf"^{GENERATION_TABLE}(_[a-z0-9]+)*$")
_INDEX = re.compile(r"_pkey[0-9]*$")
_BATCH = 500  # ids per IN (…)


def new_generation() -> str:
    return "v" + uuid.uuid4().hex[:16]


def _marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


class NoVectorStore(RuntimeError):
    """The projector was made without a vector directory (``all_projectors()`` without settings)."""


class VectorsProjector(Projector):
    name = "vectors"
    tables = ("chunks", GENERATION_TABLE)
    schema = (
        "CREATE TABLE IF NOT EXISTS {chunks} ("
        " chunk_id TEXT PRIMARY KEY, file_id TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL,"
        " keywords TEXT NOT NULL, model TEXT NOT NULL, resource_type TEXT NOT NULL, dims INTEGER NOT NULL,"
        " created_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {chunks_file} ON {chunks} (file_id, idx)",
        "CREATE INDEX IF NOT EXISTS {chunks_created} ON {chunks} (created_at_ns)",
        "CREATE TABLE IF NOT EXISTS {vector_generation} (id INTEGER PRIMARY KEY, generation TEXT NOT NULL)",
    )

    def __init__(self, suffix: str = "", vectors: VectorStore | None = None) -> None:
        super().__init__(suffix)
        self.vectors = vectors
        # (dims, chunk id) → the row to upsert, or None to delete; written by ``flush``.
        self._pending: dict[tuple[int, str], VectorRow | None] = {}

    def aside(self, suffix: str) -> VectorsProjector:
        return type(self)(suffix, self.vectors)

    def _store(self) -> VectorStore:
        if self.vectors is None:
            raise NoVectorStore("the vectors projector has no vector directory (all_projectors() without settings)")
        return self.vectors

    # -- handlers --------------------------------------------------------------------------

    @on(FileChunks.ChunkIndexed)
    def chunk_indexed(self, cursor: TemplatedCursor, event: Event) -> None:
        self._store()
        data = event["data"]
        file_id = event["aggregate_id"]
        embedding = base64.b64decode(data["embedding"])
        dims = len(embedding) // 4
        cursor.execute("DELETE FROM {chunks} WHERE chunk_id = ?", (data["chunkId"],))
        cursor.execute(
            "INSERT INTO {chunks} (chunk_id, file_id, idx, text, keywords, model, resource_type, dims, created_at_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                data["chunkId"],
                file_id,
                data["index"],
                data["text"],
                data["keywords"],
                data["model"],
                data["resourceType"],
                dims,
                parse_ns(event["created_at"]),
            ),
        )
        self._pending[(dims, data["chunkId"])] = VectorRow(data["chunkId"], file_id, embedding)

    @on(FileChunks.Cleared)
    def cleared(self, cursor: TemplatedCursor, event: Event) -> None:
        self._store()
        file_id = event["aggregate_id"]
        chunk_ids: Sequence[str] = event["data"]["chunkIds"]
        for start in range(0, len(chunk_ids), _BATCH):
            batch = list(chunk_ids[start : start + _BATCH])
            where = f"file_id = ? AND chunk_id IN ({_marks(len(batch))})"
            cursor.execute(f"SELECT chunk_id, dims FROM {{chunks}} WHERE {where}", (file_id, *batch))
            for row in cursor.fetchall():
                self._pending[(row["dims"], row["chunk_id"])] = None
            cursor.execute(f"DELETE FROM {{chunks}} WHERE {where}", (file_id, *batch))

    # -- lancedb -------------------------------------------------------------------------------

    def generation(self, cursor: SqlCursor | TemplatedCursor) -> str:
        """The generation this projector's vectors are written to (made at its first write)."""
        templated = self.templated(cursor)
        templated.execute("SELECT generation FROM {vector_generation} WHERE id = 1")
        row = templated.fetchone()
        if row is not None:
            return str(row["generation"])
        generation = new_generation()
        templated.execute("INSERT INTO {vector_generation} (id, generation) VALUES (1, ?)", (generation,))
        return generation

    def flush(self, cursor: SqlCursor | TemplatedCursor) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        store = self._store()
        generation = self.generation(cursor)
        by_dims: dict[int, tuple[list[VectorRow], list[str]]] = {}
        for (dims, chunk_id), row in pending.items():
            upserts, deletes = by_dims.setdefault(dims, ([], []))
            if row is None:
                deletes.append(chunk_id)
            else:
                upserts.append(row)
        for dims, (upserts, deletes) in sorted(by_dims.items()):
            store.write(generation, dims, upserts, deletes)

    def discard(self) -> None:
        self._pending = {}

    def tidy(self, store: ReadStore) -> None:
        if self.vectors is None:
            return
        try:
            with store.transaction() as cursor:
                store.lock_projections(cursor)  # no batch is half-way: every generation in use is named
                generations: set[str] = set()
                for table in sorted(store.relations(cursor)):
                    if _POINTER.match(table) and not _INDEX.search(table):
                        cursor.execute(f"SELECT generation FROM {table}")
                        generations.update(row["generation"] for row in cursor.fetchall())
                dropped = self.vectors.drop_other_generations(generations)
            if dropped:
                logger.info("dropped vector tables no read model names: %s", ", ".join(dropped))
        except Exception:
            logger.exception("could not drop the vector tables no read model names (tried again at the next start)")
