"""``GET /search`` and ``GET /keywords``: the vector read model, asked through the default models.

A search (platform notes §8.2, with their recommendations): the default task
model is asked whether ``q`` is a question — strictly ``yes`` or ``no`` — and a
question is rewritten into a keyword query in its own words; each query tried
(``triedQuery``: ``q``, and the rewrite) that is not empty is embedded with the
default embedding model and looked up by L2 distance among the chunks of the
live generation (``projections.vectors``). Hits are joined to their chunk rows
(a vector without one is skipped: it is a write not yet committed, or one rolled
back), reduced to one per file — its nearest chunk — and answered nearest
first, at most ``topk`` files. ``expand=files`` adds each file's record as the
reference stored it (``fileMeta``), and leaves out a hit whose file is gone.

Nothing is written: a search has no side effects (the reference deleted keyword
records as it expanded files, and failed on the next search that met them).

Each query looks up ``topk * OVERFETCH`` chunks, so that files with many
matching chunks do not crowd the others out of the ``topk`` files answered (the
reference looked up ``topk`` chunks and answered fewer files when some shared a
file). ``radius`` and ``epsilon`` apply only when both are given: then no hit
farther than ``radius`` (when positive) is answered; ``epsilon`` tunes the
reference's approximate search and has nothing to tune in an exact one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns
from chainloom.infra.vectors import Hit, VectorStore
from chainloom.queries.cache import ReadCache, RememberedQueries
from chainloom.queries.files import FileRow
from chainloom.queries.pagination import Page

Json = dict[str, Any]

DEFAULT_TOPK = 10
MAX_TOPK = 1000
OVERFETCH = 4
# The reference's defaults (Vald's search configuration), reported for what they are: not applied.
DEFAULT_RADIUS = 0.03
DEFAULT_EPSILON = 0.001
_BATCH = 500

QUESTION_PROMPT = (
    "Is the following text a question? Answer with yes or no only, nothing else.\n\nText:\n{query}"
)
REWRITE_PROMPT = (
    "Rewrite the following question as a short search query of keywords, using the question's own words. "
    "Answer with the search query only.\n\nQuestion:\n{query}"
)


class Models(Protocol):
    """``commands.execution.ExecutionService``: the default task and embedding models."""

    async def prompt(self, prompt: str, model_name: str | None = None, provider_type: str | None = None) -> str: ...

    async def embed(self, text: str, model_name: str | None = None, provider_type: str | None = None) -> list[float]: ...


class FileLookup(Protocol):
    """``queries.files.FileQueries``."""

    async def files_by_ids(self, ids: Iterable[str]) -> dict[str, FileRow]: ...


@dataclass(frozen=True)
class SearchRequest:
    query: str
    topk: int = DEFAULT_TOPK
    radius: float | None = None
    epsilon: float | None = None
    expand_files: bool = False

    @property
    def max_distance(self) -> float | None:
        """The radius, when it applies (both it and epsilon given, and positive)."""
        if self.radius is None or self.epsilon is None or self.radius <= 0:
            return None
        return self.radius


def is_yes(answer: str) -> bool:
    """The model said yes — and nothing else (strict: "Yes." counts, "yes, but" does not)."""
    return answer.strip().strip(".!\"'`").strip().lower() == "yes"


def raw_file_record(row: FileRow) -> Json:
    """A file as the reference's records table had it (``fileMeta`` of ``expand=files``): its blob is the
    content's sha256 (the blob store is content-addressed), ``meta`` the blob's metadata as base64 JSON."""
    meta = {"specVersion": "1.0", "hash": row.hash, "size": row.size, "fileId": row.id}
    return {
        "id": row.id,
        "type": row.content_type,
        "meta": base64.b64encode(json.dumps(meta, separators=(",", ":")).encode()).decode("ascii"),
        "isFolder": row.is_folder,
        "blobsId": row.hash,
        "createdAt": format_ns(row.created_at_ns),
        "updatedAt": format_ns(row.updated_at_ns),
    }


def _generation(row: Row) -> str:
    return str(row["generation"])


def _keywords(row: Row) -> str:
    return str(row["keywords"])


class SearchQueries(RememberedQueries):
    namespace = "vectors"

    def __init__(
        self,
        store: ReadStore,
        run_blocking: Callable[..., Awaitable[Any]],
        vectors: VectorStore,
        models: Models,
        files: FileLookup,
        cache: ReadCache | None = None,
    ) -> None:
        super().__init__(store, run_blocking, cache)
        self._vectors = vectors
        self._models = models
        self._files = files

    async def generation(self) -> str | None:
        """The live generation of vectors (None before the first chunk was indexed). Read each time, never
        remembered: a rebuild swaps it in without moving the read models' position."""
        rows = await self._run_blocking(self._store.query, "SELECT generation FROM vector_generation WHERE id = 1")
        return _generation(rows[0]) if rows else None

    async def tried_queries(self, query: str) -> list[str]:
        """``[q]``, or ``[q, rewritten]`` when the task model says ``q`` is a question."""
        tried = [query]
        if query.strip() and is_yes(await self._models.prompt(QUESTION_PROMPT.format(query=query))):
            rewritten = await self._models.prompt(REWRITE_PROMPT.format(query=query))
            tried.append(" ".join(rewritten.split()))
        return tried

    async def search(self, request: SearchRequest, took: dict[str, float] | None = None) -> Json:
        """The answer of ``GET /search``; ``took``, when given, gets the seconds spent asking the models
        (``models``), looking up the vectors (``vectors``) and reading the read store (``rows``)."""
        split = took if took is not None else {}
        started = time.perf_counter()
        generation = await self.generation()
        split["rows"] = time.perf_counter() - started
        started = time.perf_counter()
        tried = await self.tried_queries(request.query)
        searched = [query for query in tried if query.strip()] if generation is not None else []
        vectors = await asyncio.gather(*(self._models.embed(query) for query in searched))
        split["models"] = time.perf_counter() - started
        started = time.perf_counter()
        hits: list[Hit] = []
        if generation is not None:
            k = min(request.topk * OVERFETCH, MAX_TOPK * OVERFETCH)
            # The query and its rewrite are looked up side by side (each in a thread of the pool).
            for found in await asyncio.gather(
                *(self._run_blocking(self._vectors.search, generation, vector, k, request.max_distance) for vector in vectors)
            ):
                hits += found
        split["vectors"] = time.perf_counter() - started
        started = time.perf_counter()
        results = await self._results(hits, request)
        split["rows"] += time.perf_counter() - started
        return {"results": results, "triedQuery": tried}

    async def _results(self, hits: Sequence[Hit], request: SearchRequest) -> list[Json]:
        chunks = await self._chunk_rows({hit.chunk_id for hit in hits})
        nearest: dict[str, tuple[Hit, Row]] = {}
        for hit in sorted(hits, key=lambda h: (h.distance, h.chunk_id)):
            row = chunks.get(hit.chunk_id)
            if row is None or row["file_id"] in nearest:
                continue  # a vector without its row (not committed, or rolled back), or a farther chunk of a file
            nearest[row["file_id"]] = (hit, row)
        chosen = list(nearest.items())
        files: Mapping[str, FileRow] = {}
        if request.expand_files:
            files = await self._files.files_by_ids(file_id for file_id, _ in chosen)
            chosen = [(file_id, found) for file_id, found in chosen if file_id in files]
        return [
            {
                "id": file_id,
                "type": row["resource_type"],
                "distance": hit.distance,
                "chunkId": hit.chunk_id,
                "fileMeta": raw_file_record(files[file_id]) if request.expand_files else None,
            }
            for file_id, (hit, row) in chosen[: request.topk]
        ]

    async def _chunk_rows(self, chunk_ids: Iterable[str]) -> dict[str, Row]:
        wanted = sorted(chunk_ids)
        found: dict[str, Row] = {}
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            marks = ", ".join("?" for _ in batch)
            rows = await self._run_blocking(
                self._store.query,
                f"SELECT chunk_id, file_id, resource_type FROM chunks WHERE chunk_id IN ({marks})",
                batch,
            )
            found.update((row["chunk_id"], row) for row in rows)
        return found

    async def keywords(self, page: Page) -> list[str]:
        """The keywords of every chunk (one comma-separated text each, none empty), newest first."""
        return await self._rows(
            _keywords,
            "SELECT keywords FROM chunks WHERE keywords <> '' AND created_at_ns < ?"
            " ORDER BY created_at_ns DESC, chunk_id LIMIT ?",
            page.before_ns,
            page.limit,
        )
