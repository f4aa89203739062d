"""The vector index: lancedb tables in ``CHAINLOOM_VECTOR_DIR`` (default ``<data_dir>/vectors``).

Rows are ``(chunk_id, file_id, vector float32[dims])``, one table per
*generation* and embedding dimension, named ``<generation>_d<dims>``: a model
with another dimension gets a table of its own, and a rebuild of the vector
read model (``projections.vectors``) writes a new generation aside, which its
pointer row in the read store makes live when the rebuild swaps the tables in.
Tables no pointer names any more are dropped (``drop_other_generations``).

Writes are upserts by chunk id (``merge_insert``) and deletes by chunk id, so
writing the same change twice leaves what writing it once did — the projector
relies on it: a batch whose SQL transaction rolled back after its vectors were
written is applied again. Searches are exact k-NN by L2 distance; the distance
answered is the Euclidean one (lancedb's ``l2`` is its square), in ascending order.

Every connection checks for versions other processes committed on each read
(``read_consistency_interval`` 0): a search in one API process sees what the
projecting process wrote the moment its batch is done, which read-your-writes
needs; the check costs one small read of the table's latest manifest.

Maintenance happens in a background thread of the writing process, never in a
projection batch: after ``OPTIMIZE_EVERY_WRITES`` commits to a table, or
``OPTIMIZE_EVERY_ROWS`` rows written, it is compacted (every commit adds a small
file and deletion file; the search reads them all) and old versions older than
``KEEP_VERSIONS_FOR`` are pruned (a reader in another process may still be on
one). Once a table holds ``INDEX_MIN_ROWS`` rows, it gets an IVF-flat index of
about sqrt(rows) partitions, of which a search probes ``PROBES`` (exact distances
inside them; approximate overall: a near chunk in an unprobed partition is
missed). ``optimize`` folds later rows into it, rows not yet in it are searched
exhaustively, and once the table has grown ``REINDEX_GROWTH`` times since the
index was trained it is trained again. At 100 000 rows of 768 dimensions on two
cores an exhaustive search takes about 175 ms, 12 probes of ~316 about 10 ms
(bench/bench_documents.py).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

# Commits to a table (or rows written to it) after which it is compacted in the background.
OPTIMIZE_EVERY_WRITES = 64
OPTIMIZE_EVERY_ROWS = 20_000
# Rows from which a table is searched through an IVF index rather than exhaustively.
INDEX_MIN_ROWS = 25_000
# Versions older than this are pruned when a table is optimized (readers elsewhere may still read one).
KEEP_VERSIONS_FOR = timedelta(minutes=10)
# An index is trained again once its table has grown this many times over since it was last trained.
REINDEX_GROWTH = 2
# Partitions probed per search when a table has an index (of about sqrt(rows)).
PROBES = 12
_TABLE = re.compile(r"^(?P<generation>[A-Za-z0-9]+)_d(?P<dims>[0-9]+)$")
_IN_LIST = 500  # ids per IN (…) of a delete


@dataclass(frozen=True)
class VectorRow:
    chunk_id: str
    file_id: str
    embedding: bytes  # float32, little-endian


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    file_id: str
    distance: float  # Euclidean


def table_name(generation: str, dims: int) -> str:
    return f"{generation}_d{dims}"


def _schema(dims: int) -> pa.Schema:
    import pyarrow as pa  # with lancedb, when first needed: a process that never stores a vector never loads them

    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("file_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dims), nullable=False),
        ]
    )


def _quoted(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


class VectorStore:
    """The lancedb directory of one process; blocking (call it through the thread pool)."""

    def __init__(self, directory: Path, *, maintain: bool = True) -> None:
        """``maintain``: compact and index tables in the background as they grow (off in tests that count
        versions)."""
        self.directory = Path(directory)
        self._maintain = maintain
        self._lock = threading.Lock()
        self._db: Any = None
        self._tables: dict[str, Any] = {}
        self._written: dict[str, tuple[int, int]] = {}  # table → (commits, rows) since it was last optimized
        self._due: set[str] = set()
        self._trained_for: dict[str, int] = {}  # table → rows its index's partitions were chosen for
        self._worker: threading.Thread | None = None

    # -- connection and tables ---------------------------------------------------------

    def _connection(self) -> Any:
        with self._lock:
            if self._db is None:
                # Imported here, not with the module: lancedb starts a runtime of its own, which a process that
                # forks its workers (``chainloom serve``) must not have started before forking.
                import lancedb

                self.directory.mkdir(parents=True, exist_ok=True)
                self._db = lancedb.connect(self.directory, read_consistency_interval=timedelta(0))
            return self._db

    def table_names(self) -> list[str]:
        if not self.directory.is_dir() or not any(self.directory.iterdir()):
            return []  # nothing written yet: no need to start lancedb (a second of a process's start-up)
        db = self._connection()
        names: list[str] = []
        token = None
        while True:
            page = db.list_tables(page_token=token)
            names += page.tables
            token = page.page_token
            if not token:
                return names

    def _open(self, name: str) -> Any | None:
        """The table ``name``, or None when there is none."""
        with self._lock:
            table = self._tables.get(name)
        if table is not None:
            return table
        try:
            table = self._connection().open_table(name)
        except (ValueError, FileNotFoundError):
            return None
        with self._lock:
            return self._tables.setdefault(name, table)

    def _create(self, name: str, dims: int) -> Any:
        table = self._open(name)
        if table is None:
            table = self._connection().create_table(name, schema=_schema(dims), exist_ok=True)
            with self._lock:
                table = self._tables.setdefault(name, table)
        return table

    def _forget(self, name: str) -> None:
        with self._lock:
            self._tables.pop(name, None)
            self._written.pop(name, None)

    # -- writing -----------------------------------------------------------------------

    def write(self, generation: str, dims: int, upserts: Sequence[VectorRow], deletes: Sequence[str]) -> None:
        """Delete the chunks ``deletes``, then upsert ``upserts`` (``dims`` floats each) by chunk id."""
        if not upserts and not deletes:
            return
        name = table_name(generation, dims)
        if not upserts:
            table = self._open(name)
            if table is None:
                return  # nothing to delete from
        else:
            table = self._create(name, dims)
        commits = 0
        for start in range(0, len(deletes), _IN_LIST):
            table.delete(f"chunk_id IN ({_quoted(deletes[start : start + _IN_LIST])})")
            commits += 1
        if upserts:
            table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(
                self._arrow(upserts, dims)
            )
            commits += 1
        self._wrote(name, commits, len(upserts) + len(deletes))

    @staticmethod
    def _arrow(rows: Sequence[VectorRow], dims: int) -> pa.Table:
        import pyarrow as pa

        for row in rows:
            if len(row.embedding) != 4 * dims:
                raise ValueError(f"chunk {row.chunk_id}: {len(row.embedding) // 4} dimensions in a table of {dims}")
        values = pa.py_buffer(b"".join(row.embedding for row in rows))
        flat = pa.Array.from_buffers(pa.float32(), len(rows) * dims, [None, values])
        return pa.table(
            {
                "chunk_id": pa.array([row.chunk_id for row in rows], pa.string()),
                "file_id": pa.array([row.file_id for row in rows], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dims),
            },
            schema=_schema(dims),
        )

    def drop_other_generations(self, generations: Iterable[str]) -> list[str]:
        """Drop every table of a generation not among ``generations``; the names dropped."""
        keep = set(generations)
        dropped = []
        for name in self.table_names():
            match = _TABLE.match(name)
            if match is not None and match["generation"] in keep:
                continue
            self._forget(name)
            self._connection().drop_table(name, ignore_missing=True)
            dropped.append(name)
        return dropped

    # -- reading -----------------------------------------------------------------------

    def search(self, generation: str, vector: Sequence[float], k: int, max_distance: float | None = None) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` (L2), nearest first; ``max_distance``: none farther."""
        name = table_name(generation, len(vector))
        table = self._open(name)
        if table is None or k <= 0:
            return []
        try:
            query = table.search(list(vector)).distance_type("l2").limit(k).nprobes(PROBES)
            if max_distance is not None:
                query = query.distance_range(upper_bound=max_distance * max_distance)
            found = query.select(["chunk_id", "file_id", "_distance"]).to_arrow()
        except RuntimeError as error:  # dropped since it was opened (a rebuild's old generation)
            if "Not found" not in str(error):
                raise
            self._forget(name)
            return []
        hits = [
            Hit(chunk_id, file_id, math.sqrt(max(squared, 0.0)))
            for chunk_id, file_id, squared in zip(
                found.column("chunk_id").to_pylist(),
                found.column("file_id").to_pylist(),
                found.column("_distance").to_pylist(),
            )
        ]
        hits.sort(key=lambda hit: (hit.distance, hit.chunk_id))
        return hits

    def rows(self, generation: str) -> dict[str, tuple[str, bytes]]:
        """Every row of a generation (all its dimensions): chunk id → (file id, float32 bytes). For checks."""
        found: dict[str, tuple[str, bytes]] = {}
        for name in self.table_names():
            match = _TABLE.match(name)
            if match is None or match["generation"] != generation:
                continue
            table = self._open(name)
            if table is None:
                continue
            data = table.to_arrow()
            vectors = data.column("vector").combine_chunks()
            dims = int(match["dims"])
            flat = vectors.flatten().to_numpy(zero_copy_only=False).astype("<f4").tobytes()
            for i, (chunk_id, file_id) in enumerate(
                zip(data.column("chunk_id").to_pylist(), data.column("file_id").to_pylist())
            ):
                found[chunk_id] = (file_id, flat[i * dims * 4 : (i + 1) * dims * 4])
        return found

    # -- maintenance ---------------------------------------------------------------------

    def _wrote(self, name: str, commits: int, rows: int) -> None:
        if not self._maintain:
            return
        with self._lock:
            done_commits, done_rows = self._written.get(name, (0, 0))
            done_commits, done_rows = done_commits + commits, done_rows + rows
            self._written[name] = (done_commits, done_rows)
            if done_commits < OPTIMIZE_EVERY_WRITES and done_rows < OPTIMIZE_EVERY_ROWS:
                return
            self._written[name] = (0, 0)
            self._due.add(name)
            if self._worker is not None and self._worker.is_alive():
                return
            self._worker = threading.Thread(target=self._maintain_due, name="vector-maintenance", daemon=True)
            self._worker.start()

    def _maintain_due(self) -> None:
        while True:
            with self._lock:
                if not self._due:
                    self._worker = None
                    return
                name = self._due.pop()
            try:
                self.maintain(name)
            except Exception:
                logger.exception("vector table %s: maintenance failed (it is tried again after more writes)", name)

    def maintain(self, name: str) -> None:
        """Compact the table and prune old versions; index it once it is large enough (blocking, slow)."""
        table = self._open(name)
        if table is None:
            return
        table.optimize(cleanup_older_than=KEEP_VERSIONS_FOR)
        rows = table.count_rows()
        indexed = bool(list(table.list_indices()))
        if indexed:
            # Partitions were chosen for the rows of the time (about their square root): once the table has
            # grown past REINDEX_GROWTH times that, each probed partition holds too many rows: train it again.
            trained_for = self._trained_for.setdefault(name, rows)
            if rows < REINDEX_GROWTH * trained_for:
                return
        elif rows < INDEX_MIN_ROWS:
            return
        from lancedb.index import IvfFlat

        partitions = max(1, round(math.sqrt(rows)))
        logger.info("vector table %s: building its IVF index (%d rows, %d partitions)", name, rows, partitions)
        table.create_index("vector", config=IvfFlat(distance_type="l2", num_partitions=partitions), replace=True)
        self._trained_for[name] = rows

    def wait_for_maintenance(self, timeout: float | None = None) -> None:
        """Return once no background maintenance runs (benchmarks, tests)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
