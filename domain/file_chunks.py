"""A file's indexed chunks as data on the log: text, keywords and embedding, so the vectors are a projection.

``FileChunks`` (aggregate ``file_chunks``, key = the file's id) holds the ids of
the file's live chunks. Indexing records one ``file_chunks.chunk_indexed`` per
chunk with everything the search needs — the chunk's text, the keywords the task
model gave it, the embedding model's name and the embedding itself (float32
little-endian, base64 in the event) — so ``projections rebuild`` restores the
vector table without calling a model. Indexing a file that already has chunks
replaces them (``file_chunks.cleared`` first, in the same decision), and deleting
the file clears them in the file's own delete decision: no vector outlives its file.

Chunk ids are ``<fileId>-<index>`` (the reference's vector ids).
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate


def chunk_id(file_id: str, index: int) -> str:
    """The id of a file's ``index``-th chunk: ``<fileId>-<index>``."""
    return f"{file_id}-{index}"


def pack_vector(values: Sequence[float]) -> bytes:
    """An embedding as the log keeps it: float32, little-endian."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_vector(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


@dataclass(frozen=True)
class IndexedChunk:
    """One chunk as indexed: ``embedding`` is the vector as float32 little-endian bytes."""

    chunk_id: str
    index: int
    text: str
    keywords: str
    model: str
    embedding: bytes
    resource_type: str = "file"


class FileChunks(Aggregate):
    aggregate_type = "file_chunks"

    class Started(Aggregate.Created):
        """The file got its first chunks (indexed in the same decision)."""

    class ChunkIndexed(Aggregate.Event):
        """One chunk of the file indexed; ``embedding`` is base64 of float32 little-endian."""

        chunk_id: str
        index: int
        text: str
        keywords: str
        model: str
        resource_type: str
        embedding: str

    class Cleared(Aggregate.Event):
        """Every chunk the file had is gone (re-indexed, or the file deleted)."""

        chunk_ids: list[str]

    @classmethod
    def start(cls, file_id: str) -> FileChunks:
        return cls._create(cls.Started, id=cls.stream_id(file_id))

    @event(Started)
    def __init__(self) -> None:
        self.chunk_ids: list[str] = []

    def index(self, chunks: Sequence[IndexedChunk]) -> None:
        """Replace the file's chunks by ``chunks`` (a clear first when it has any)."""
        self.clear()
        for chunk in chunks:
            self._index_chunk(
                chunk_id=chunk.chunk_id,
                index=chunk.index,
                text=chunk.text,
                keywords=chunk.keywords,
                model=chunk.model,
                resource_type=chunk.resource_type,
                embedding=base64.b64encode(chunk.embedding).decode("ascii"),
            )

    def clear(self) -> None:
        """Remove every chunk (no event when there is none)."""
        if self.chunk_ids:
            self._clear(chunk_ids=list(self.chunk_ids))

    @event(ChunkIndexed)
    def _index_chunk(
        self, chunk_id: str, index: int, text: str, keywords: str, model: str, resource_type: str, embedding: str
    ) -> None:
        self.chunk_ids = [*self.chunk_ids, chunk_id]

    @event(Cleared)
    def _clear(self, chunk_ids: list[str]) -> None:
        self.chunk_ids = []
