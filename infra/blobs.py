"""Where uploaded content lives: a content-addressed blob store, by sha256, beside the log (never in it).

One protocol, two stores, chosen by ``CHAINLOOM_BLOB_STORE``:

- ``DirectoryBlobs`` (``directory``, the default): files ``<root>/<hh>/<hash>``
  (``hh`` the hash's first two hex digits) under ``CHAINLOOM_BLOB_DIR``
  (default ``<data_dir>/blobs``; shared storage when API processes run on several
  machines). An upload is written to a temporary file under ``<root>/tmp`` while
  it is hashed, synced, then renamed into place — or, when that content is
  already there, the existing file is just touched and the copy dropped.
- ``DatabaseBlobs`` (``database``, PostgreSQL only): rows of up to 1 MiB in
  ``blob_chunks`` and one row per blob in ``blobs``, in the log's database (with
  its synchronous commits: the log says the content exists). An upload is stored
  under a staging key as it arrives (``blob_uploads`` has when it last wrote a
  row), then given its hash in one transaction — refused if any of its rows
  were swept meanwhile.

Every method blocks: call them through the blocking pool. Writing is a
``BlobWriter`` one feeds chunks (``write``), then ``finish`` → (hash, size), or
``abort``; reading a ``BlobReader`` giving the content chunk by chunk. Nothing
holds a whole upload in memory.

**Removal.** A blob is shared by every file with the same content, so it is
removed only when no live file names its hash any more: the command layer
asks the files read model *after* the delete decision is stored (and seen),
then calls ``remove``. That leaves a small race: an upload of the same content
may have finished writing (the blob touched) while its file's event is not yet
stored or projected, so the read model does not show it yet. ``remove`` therefore
spares a blob touched within ``grace`` seconds (``REMOVAL_GRACE``, ten minutes,
far longer than an upload takes from ``finish`` to its projected event), and
takes it out of place before looking at its time, so a concurrent touch either
lands before the look (and the blob stays) or finds it gone (and writes it
anew). The price: a blob freed within the grace period (and the content of an
upload that was refused after it was written) is left in place — an orphan for
a while, never a missing blob.

**The sweep.** Those orphans, and uploads a process abandoned (it died
mid-upload, or stalled a whole grace period), are collected by the blob sweeper (``projections.blob_sweeper``):
one process of all (the singleton lock ``blobs``), every
``CHAINLOOM_BLOB_SWEEP_INTERVAL`` seconds, drops the uploads not written to
within the grace (``clear_uploads``), lists the blobs not touched within it
(``stale``), waits until the files read model has reached the log's head (so an
event stored before the listing — and a blob is listed only when its last
upload finished a whole grace period before — is seen), asks it which of them
a live file still names, and removes the rest with ``remove`` and the same grace,
so a blob touched since the listing stays. The same race as above, the same
answer: an upload whose file's event is stored more than the grace after the
upload finished (never, in practice) could lose its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, Protocol

from chainloom.domain.errors import NotFound
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.settings import Settings

# A blob touched this recently is never removed (see the module's docstring).
REMOVAL_GRACE = 600.0
# Upload leftovers (a process died mid-upload) older than this are swept when a store is opened (the blob
# sweeper sweeps those not written to within REMOVAL_GRACE).
STALE_UPLOAD = 24 * 3600.0
# Hashes per page when the database store lists its stale blobs.
STALE_PAGE = 1000
READ_CHUNK = 256 * 1024
ROW_BYTES = 1024 * 1024
CONTENT_MISSING = "libdb: not found: the file's content is missing from the blob store"

RunBlocking = Callable[..., Awaitable[Any]]


class BlobWriter(Protocol):
    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> tuple[str, int]:
        """Store what was written under its hash; (sha256 hex, size)."""

    def abort(self) -> None:
        """Drop what was written (idempotent; nothing after ``finish``)."""


class BlobReader(Protocol):
    size: int

    def read(self) -> bytes:
        """The next chunk; ``b""`` at the end."""

    def close(self) -> None: ...


class Blobs(Protocol):
    def ensure(self) -> None:
        """Create what the store needs, and sweep upload leftovers."""

    def writer(self) -> BlobWriter: ...

    def open(self, digest: str) -> BlobReader:
        """The blob's content; ``NotFound`` when there is none."""

    def exists(self, digest: str) -> bool: ...

    def remove(self, digest: str, grace: float = REMOVAL_GRACE) -> bool:
        """Remove the blob unless it was touched within ``grace`` seconds; whether it was removed."""

    def stale(self, older_than: float) -> Iterator[str]:
        """The hashes of the blobs not touched within ``older_than`` seconds (lazily: a page at a time)."""

    def clear_uploads(self, older_than: float) -> int:
        """Drop the unfinished uploads not written to within ``older_than`` seconds; how many."""


# -- a directory -----------------------------------------------------------------------------------


class DirectoryBlobs:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._staging = self.root / "tmp"

    def path_of(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def ensure(self) -> None:
        self._staging.mkdir(parents=True, exist_ok=True)
        self.clear_uploads(STALE_UPLOAD)

    def clear_uploads(self, older_than: float) -> int:
        # An upload's file is written at every chunk: an old one is a writer that died (or stalled that long,
        # whose finish then fails: its file is gone).
        cutoff = time.time() - older_than
        cleared = 0
        try:
            leftovers = list(self._staging.iterdir())
        except FileNotFoundError:
            return 0
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    cleared += 1
        return cleared

    def stale(self, older_than: float) -> Iterator[str]:
        cutoff = time.time() - older_than
        try:
            shards = sorted(entry.path for entry in os.scandir(self.root) if len(entry.name) == 2 and entry.is_dir())
        except FileNotFoundError:
            return
        for shard in shards:
            try:
                entries = list(os.scandir(shard))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not _is_digest(entry.name):  # a blob being removed (``<hash>.removing-…``) is not listed
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        yield entry.name

    def writer(self) -> BlobWriter:
        return _FileWriter(self)

    def open(self, digest: str) -> BlobReader:
        if not _is_digest(digest):
            raise NotFound(CONTENT_MISSING)
        try:
            handle = open(self.path_of(digest), "rb")
        except FileNotFoundError:
            raise NotFound(CONTENT_MISSING) from None
        return _FileReader(handle)

    def exists(self, digest: str) -> bool:
        return _is_digest(digest) and self.path_of(digest).is_file()

    def remove(self, digest: str, grace: float = REMOVAL_GRACE) -> bool:
        if not _is_digest(digest):
            return False
        path = self.path_of(digest)
        # Out of place first, then look: a writer touching it meanwhile touched what is looked at.
        aside = path.with_name(f"{digest}.removing-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if time.time() - aside.stat().st_mtime < grace:
            os.rename(aside, path)  # a writer that put it back meanwhile put the same bytes
            return False
        aside.unlink()
        return True

    def place(self, temporary: Path, digest: str) -> None:
        """Put a synced upload in place: touch what is there already, else rename it in."""
        target = self.path_of(digest)
        try:
            os.utime(target)
        except FileNotFoundError:
            target.parent.mkdir(exist_ok=True)
            os.replace(temporary, target)
            _sync_directory(target.parent)
        else:
            temporary.unlink(missing_ok=True)  # (swept meanwhile: it stalled a whole grace period; the blob is there)

    def new_upload(self) -> tuple[IO[bytes], Path]:
        self._staging.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=self._staging, prefix="upload-", delete=False)
        return handle, Path(handle.name)


class _FileWriter:
    def __init__(self, blobs: DirectoryBlobs) -> None:
        self._blobs = blobs
        self._handle, self._path = blobs.new_upload()
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._handle.write(chunk)
        self._size += len(chunk)

    def finish(self) -> tuple[str, int]:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        digest = self._hash.hexdigest()
        self._blobs.place(self._path, digest)
        self._done = True
        return digest, self._size

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class _FileReader:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    def read(self) -> bytes:
        return self._handle.read(READ_CHUNK)

    def close(self) -> None:
        self._handle.close()


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _is_digest(digest: str) -> bool:
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


# -- the database ----------------------------------------------------------------------------------


class Database(Protocol):
    """The log's database (``infra.eventlog.EventLog``): transactions and tables kept beside the log."""

    def transaction(self, *, commit: bool = True) -> AbstractContextManager[SqlCursor]: ...

    def ensure_tables(self, statements: Sequence[str]) -> None: ...


_STAGING = "upload:"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, size BIGINT NOT NULL, touched_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blob_chunks ("
    " blob TEXT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (blob, seq))",
    # When each unfinished upload last stored a row (its staging key's rows are in blob_chunks).
    "CREATE TABLE IF NOT EXISTS blob_uploads (staging TEXT PRIMARY KEY, written_at DOUBLE PRECISION NOT NULL)",
)


def _staging_key(started: float) -> str:
    """``upload:<start time, fixed width>:<random>``: staging keys sort by when they started."""
    return f"{_STAGING}{int(started):012d}:{uuid.uuid4().hex}"


class DatabaseBlobs:
    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock

    def ensure(self) -> None:
        self._database.ensure_tables(_SCHEMA)
        self.clear_uploads(STALE_UPLOAD)
        # Also by when they started: rows staged before blob_uploads existed have no row there.
        cutoff = _staging_key(self._clock() - STALE_UPLOAD)
        with self._database.transaction() as cursor:
            cursor.execute("DELETE FROM blob_chunks WHERE blob LIKE ? AND blob < ?", (_STAGING + "%", cutoff))

    def clear_uploads(self, older_than: float) -> int:
        # One statement: an upload writing a row meanwhile either kept its entry fresh (and keeps its rows) or
        # lost its earlier rows with it (and its finish is refused, never stored short).
        with self._database.transaction() as cursor:
            cursor.execute(
                "WITH gone AS (DELETE FROM blob_uploads WHERE written_at < ? RETURNING staging),"
                " rows AS (DELETE FROM blob_chunks WHERE blob IN (SELECT staging FROM gone) RETURNING 1)"
                " SELECT (SELECT COUNT(*) FROM gone) AS uploads, (SELECT COUNT(*) FROM rows) AS chunks",
                (self._clock() - older_than,),
            )
            row = cursor.fetchone()
        return 0 if row is None else int(row["uploads"])

    def stale(self, older_than: float) -> Iterator[str]:
        cutoff = self._clock() - older_than
        after = ""
        while True:
            with self._database.transaction(commit=False) as cursor:
                cursor.execute(
                    "SELECT hash FROM blobs WHERE touched_at < ? AND hash > ? ORDER BY hash LIMIT ?",
                    (cutoff, after, STALE_PAGE),
                )
                page = [row["hash"] for row in cursor.fetchall()]
            yield from page
            if len(page) < STALE_PAGE:
                return
            after = page[-1]

    def writer(self) -> BlobWriter:
        return _RowWriter(self._database, _staging_key(self._clock()), self._clock)

    def open(self, digest: str) -> BlobReader:
        with self._database.transaction(commit=False) as cursor:
            cursor.execute("SELECT size FROM blobs WHERE hash = ?", (digest,))
            row = cursor.fetchone()
        if row is None:
            raise NotFound(CONTENT_MISSING)
        return _RowReader(self._database, digest, int(row["size"]))

    def exists(self, digest: str) -> bool:
        with self._database.transaction(commit=False) as cursor:
            cursor.execute("SELECT 1 AS found FROM blobs WHERE hash = ?", (digest,))
            return cursor.fetchone() is not None

    def remove(self, digest: str, grace: float = REMOVAL_GRACE) -> bool:
        with self._database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM blobs WHERE hash = ? AND touched_at < ? RETURNING hash", (digest, self._clock() - grace)
            )
            if cursor.fetchone() is None:
                return False
            cursor.execute("DELETE FROM blob_chunks WHERE blob = ?", (digest,))
        return True


class _RowWriter:
    def __init__(self, database: Database, staging: str, clock: Callable[[], float]) -> None:
        self._database = database
        self._staging = staging
        self._clock = clock
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._rows = 0
        self._size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        self._buffer += chunk
        while len(self._buffer) >= ROW_BYTES:
            self._store_row(bytes(self._buffer[:ROW_BYTES]))
            del self._buffer[:ROW_BYTES]

    def _store_row(self, data: bytes) -> None:
        with self._database.transaction() as cursor:
            cursor.execute("INSERT INTO blob_chunks (blob, seq, data) VALUES (?, ?, ?)", (self._staging, self._rows, data))
            cursor.execute(
                "INSERT INTO blob_uploads (staging, written_at) VALUES (?, ?)"
                " ON CONFLICT (staging) DO UPDATE SET written_at = EXCLUDED.written_at",
                (self._staging, self._clock()),
            )
        self._rows += 1

    def finish(self) -> tuple[str, int]:
        if self._buffer:
            self._store_row(bytes(self._buffer))
            self._buffer.clear()
        digest = self._hash.hexdigest()
        with self._database.transaction() as cursor:
            now = self._clock()
            cursor.execute(
                "INSERT INTO blobs (hash, size, touched_at) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING RETURNING hash",
                (digest, self._size, now),
            )
            if cursor.fetchone() is None:
                cursor.execute("UPDATE blobs SET touched_at = ? WHERE hash = ? RETURNING hash", (now, digest))
                if cursor.fetchone() is not None:  # there already: just touched
                    self._drop(cursor)
                    self._done = True
                    return digest, self._size
                # Removed between the two statements: ours takes its place.
                cursor.execute("INSERT INTO blobs (hash, size, touched_at) VALUES (?, ?, ?)", (digest, self._size, now))
            cursor.execute(
                "WITH moved AS (UPDATE blob_chunks SET blob = ? WHERE blob = ? RETURNING 1) SELECT COUNT(*) AS n FROM moved",
                (digest, self._staging),
            )
            moved = cursor.fetchone()
            if moved is None or int(moved["n"]) != self._rows:  # the sweeper took it for abandoned: roll back
                raise RuntimeError("libdb: the upload stalled so long that its staged content was swept")
            cursor.execute("DELETE FROM blob_uploads WHERE staging = ?", (self._staging,))
        self._done = True
        return digest, self._size

    def _drop(self, cursor: SqlCursor) -> None:
        cursor.execute("DELETE FROM blob_chunks WHERE blob = ?", (self._staging,))
        cursor.execute("DELETE FROM blob_uploads WHERE staging = ?", (self._staging,))

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer.clear()
        if self._rows:
            with self._database.transaction() as cursor:
                self._drop(cursor)


class _RowReader:
    def __init__(self, database: Database, digest: str, size: int) -> None:
        self._database = database
        self._digest = digest
        self._next = 0
        self.size = size

    def read(self) -> bytes:
        with self._database.transaction(commit=False) as cursor:
            cursor.execute("SELECT data FROM blob_chunks WHERE blob = ? AND seq = ?", (self._digest, self._next))
            row = cursor.fetchone()
        if row is None:
            return b""
        self._next += 1
        return bytes(row["data"])

    def close(self) -> None:
        pass


# -- by configuration --------------------------------------------------------------------------------


def open_blobs(settings: Settings, database: Database) -> Blobs:
    """The configured store, ready (blocking): a directory, or the log's database (PostgreSQL only)."""
    blobs: Blobs
    if settings.blob_store == "database":
        if not settings.uses_postgres:
            raise ValueError("CHAINLOOM_BLOB_STORE=database keeps content in PostgreSQL: set CHAINLOOM_DATABASE_URL to one")
        blobs = DatabaseBlobs(database)
    else:
        blobs = DirectoryBlobs(settings.blob_directory)
    blobs.ensure()
    return blobs


# -- for the event loop ------------------------------------------------------------------------------


class AsyncBlobWriter:
    def __init__(self, writer: BlobWriter, run_blocking: RunBlocking) -> None:
        self._writer = writer
        self._run_blocking = run_blocking

    async def write(self, chunk: bytes) -> None:
        await self._run_blocking(self._writer.write, chunk)

    async def finish(self) -> tuple[str, int]:
        result: tuple[str, int] = await self._run_blocking(self._writer.finish)
        return result

    async def abort(self) -> None:
        await self._run_blocking(self._writer.abort)


class AsyncBlobReader:
    def __init__(self, reader: BlobReader, run_blocking: RunBlocking) -> None:
        self._reader = reader
        self._run_blocking = run_blocking
        self.size = reader.size

    async def read(self) -> bytes:
        chunk: bytes = await self._run_blocking(self._reader.read)
        return chunk

    async def close(self) -> None:
        await self._run_blocking(self._reader.close)


class BlobStore:
    """The blob store as the event loop uses it: every call runs in the blocking pool, one chunk at a time."""

    def __init__(self, blobs: Blobs, run_blocking: RunBlocking) -> None:
        self.blobs = blobs
        self._run_blocking = run_blocking

    async def writer(self) -> AsyncBlobWriter:
        return AsyncBlobWriter(await self._run_blocking(self.blobs.writer), self._run_blocking)

    async def open(self, digest: str) -> AsyncBlobReader:
        """The blob's content; ``NotFound`` when there is none."""
        return AsyncBlobReader(await self._run_blocking(self.blobs.open, digest), self._run_blocking)

    async def remove(self, digest: str, grace: float = REMOVAL_GRACE) -> bool:
        removed: bool = await self._run_blocking(self.blobs.remove, digest, grace)
        return removed

    async def clear_uploads(self, older_than: float) -> int:
        cleared: int = await self._run_blocking(self.blobs.clear_uploads, older_than)
        return cleared

    async def stale(self, older_than: float, batch: int) -> AsyncIterator[list[str]]:
        """The hashes of the blobs not touched within ``older_than`` seconds, ``batch`` at a time."""
        hashes = await self._run_blocking(self.blobs.stale, older_than)
        while page := await self._run_blocking(_take, hashes, batch):
            yield page


def _take(hashes: Iterator[str], count: int) -> list[str]:
    return list(itertools.islice(hashes, count))
