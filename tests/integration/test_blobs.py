"""The blob stores against one contract: a directory (any store), the database (PostgreSQL only).

Content written in chunks is stored under its sha256 and read back in chunks; the same content twice is
one blob (touched again); an aborted upload leaves nothing; a blob is removed only once it was not
touched within the grace period; upload leftovers are swept when the store is opened. The blob sweeper
lists what was not touched within the grace, clears uploads abandoned that long, and — driven one sweep at a
time in a running service — removes exactly the stale content no live file names.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chainloom.domain.errors import NotFound
from chainloom.infra.blobs import ROW_BYTES, STALE_UPLOAD, Blobs, DatabaseBlobs, DirectoryBlobs, open_blobs
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.web.keys import BLOBS
from chainloom.web.system import BLOB_SWEEPER
from tests.api.helpers import call
from tests.api.test_files import create
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres


class Clock:
    """The database store's clock, moved by the test (the directory store reads file times instead)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["directory", pytest.param("database", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path) -> Iterator[tuple[Blobs, Clock]]:
    clock = Clock()
    if request.param == "directory":
        blobs = DirectoryBlobs(tmp_path / "blobs")
        blobs.ensure()
        yield blobs, clock
        return
    if not POSTGRES_URL:
        pytest.skip("the database blob store is PostgreSQL's (set CHAINLOOM_TEST_DATABASE_URL)")
    reset_postgres(POSTGRES_URL)
    log = EventLog(make_settings("postgres", tmp_path / "data").event_store_env())
    try:
        database_blobs = DatabaseBlobs(log, clock)
        database_blobs.ensure()
        yield database_blobs, clock
    finally:
        log.close()


def put(blobs: Blobs, *chunks: bytes) -> tuple[str, int]:
    writer = blobs.writer()
    for chunk in chunks:
        writer.write(chunk)
    return writer.finish()


def read_all(blobs: Blobs, digest: str) -> tuple[bytes, int, int]:
    """The content, its size as the reader says, and how many chunks it came in."""
    reader = blobs.open(digest)
    chunks = []
    try:
        while chunk := reader.read():
            chunks.append(chunk)
    finally:
        reader.close()
    return b"".join(chunks), reader.size, len(chunks)


def age(blobs: Blobs, clock: Clock, digest: str, seconds: float) -> None:
    """Let ``seconds`` pass for ``digest``: the database store's clock moves; a directory's file gets older."""
    if isinstance(blobs, DirectoryBlobs):
        path = blobs.path_of(digest)
        then = path.stat().st_mtime - seconds
        os.utime(path, (then, then))
    else:
        clock.now += seconds


def test_content_is_stored_by_hash_and_read_back_in_chunks(store):
    blobs, _ = store
    content = os.urandom(ROW_BYTES + 300_000)  # more than one database row, several directory reads
    digest, size = put(blobs, content[:100], content[100:ROW_BYTES + 7], content[ROW_BYTES + 7 :])
    assert (digest, size) == (hashlib.sha256(content).hexdigest(), len(content))
    data, reported, chunks = read_all(blobs, digest)
    assert data == content and reported == len(content) and chunks >= 2
    assert blobs.exists(digest) and not blobs.exists(hashlib.sha256(b"other").hexdigest())
    with pytest.raises(NotFound):
        blobs.open(hashlib.sha256(b"other").hexdigest())
    # The same content again is the same blob, touched again.
    age(blobs, store[1], digest, 3600)
    assert put(blobs, content) == (digest, size)
    assert not blobs.remove(digest, grace=600)  # touched just now
    if isinstance(blobs, DirectoryBlobs):
        assert [p.name for p in blobs.root.glob("??/*")] == [digest] and blobs.path_of(digest).parent.name == digest[:2]
        assert not list((blobs.root / "tmp").iterdir())


def test_an_aborted_upload_leaves_nothing(store):
    blobs, _ = store
    writer = blobs.writer()
    writer.write(b"x" * (ROW_BYTES + 1))
    writer.abort()
    writer.abort()
    assert not blobs.exists(hashlib.sha256(b"x" * (ROW_BYTES + 1)).hexdigest())
    if isinstance(blobs, DirectoryBlobs):
        assert not list((blobs.root / "tmp").iterdir())


def test_a_blob_is_removed_only_once_its_grace_period_is_over(store):
    blobs, clock = store
    digest, _ = put(blobs, b"some content")
    assert not blobs.remove(digest, grace=600)
    assert read_all(blobs, digest)[0] == b"some content"
    age(blobs, clock, digest, 601)
    assert blobs.remove(digest, grace=600)
    assert not blobs.exists(digest) and not blobs.remove(digest, grace=600)
    with pytest.raises(NotFound):
        blobs.open(digest)
    # And it can be written again.
    assert put(blobs, b"some content")[0] == digest and blobs.exists(digest)


def test_upload_leftovers_are_swept_when_the_store_opens(store):
    blobs, clock = store
    writer = blobs.writer()
    writer.write(b"y" * (ROW_BYTES + 1))  # a process died here: the upload is neither finished nor aborted
    if isinstance(blobs, DirectoryBlobs):
        for leftover in (blobs.root / "tmp").iterdir():
            then = time.time() - STALE_UPLOAD - 10
            os.utime(leftover, (then, then))
        blobs.ensure()
        assert not list((blobs.root / "tmp").iterdir())
        return
    assert _staged_rows() == 1
    clock.now += STALE_UPLOAD + 10
    blobs.ensure()
    assert _staged_rows() == 0


def _staged_rows() -> int:
    with psycopg.connect(POSTGRES_URL) as connection:
        row = connection.execute("SELECT COUNT(*) FROM blob_chunks WHERE blob LIKE 'upload:%'").fetchone()
    assert row is not None
    return int(row[0])


def test_the_database_store_needs_postgresql(tmp_path: Path):
    settings = make_settings("sqlite", tmp_path / "data", blob_store="database")
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_blobs(settings, None)  # type: ignore[arg-type]
    assert isinstance(open_blobs(make_settings("sqlite", tmp_path / "data"), None), DirectoryBlobs)  # type: ignore[arg-type]


# -- the sweep -------------------------------------------------------------------------------------


def age_uploads(blobs: Blobs, clock: Clock, seconds: float) -> None:
    """Let ``seconds`` pass for the unfinished uploads (a directory's staged files get older)."""
    if isinstance(blobs, DirectoryBlobs):
        for leftover in (blobs.root / "tmp").iterdir():
            then = leftover.stat().st_mtime - seconds
            os.utime(leftover, (then, then))
    else:
        clock.now += seconds


def test_the_stale_blobs_are_those_not_touched_within_the_grace(store):
    blobs, clock = store
    old = [put(blobs, f"old {i}".encode())[0] for i in range(3)]
    for digest in old:
        age(blobs, clock, digest, 601)
    fresh, _ = put(blobs, b"fresh")
    touched_again, _ = put(blobs, b"old 0")  # the same content again: touched now
    assert touched_again == old[0]
    assert sorted(blobs.stale(600)) == sorted(old[1:]) and fresh not in old
    if isinstance(blobs, DirectoryBlobs):  # a blob being removed (set aside) is not listed
        os.rename(blobs.path_of(old[1]), blobs.path_of(old[1]).with_name(f"{old[1]}.removing-x"))
        assert list(blobs.stale(600)) == [old[2]]


def test_uploads_abandoned_for_the_grace_are_cleared_and_a_stalled_one_is_never_stored_short(store):
    blobs, clock = store
    abandoned = blobs.writer()
    abandoned.write(b"a" * (ROW_BYTES + 1))  # its process died here
    age_uploads(blobs, clock, 601)
    writing = blobs.writer()
    writing.write(b"w" * (ROW_BYTES + 1))  # still writing
    assert blobs.clear_uploads(600) == 1
    assert blobs.clear_uploads(600) == 0
    digest, size = writing.finish()
    assert read_all(blobs, digest)[:2] == (b"w" * (ROW_BYTES + 1), ROW_BYTES + 1)
    # One that stalls a whole grace period loses what it staged: its finish fails rather than store it short.
    stalled = blobs.writer()
    stalled.write(b"s" * (ROW_BYTES + 1))
    age_uploads(blobs, clock, 601)
    assert blobs.clear_uploads(600) == 1
    stalled.write(b"s")
    with pytest.raises((RuntimeError, FileNotFoundError)):
        stalled.finish()
    stalled.abort()
    assert not blobs.exists(hashlib.sha256(b"s" * (ROW_BYTES + 2)).hexdigest())
    if isinstance(blobs, DirectoryBlobs):
        assert not list((blobs.root / "tmp").iterdir())
    else:
        assert _staged_rows() == 0


async def test_one_sweep_removes_the_stale_content_no_file_names(service_for, settings: Settings):
    """The service's sweeper (the directory store; the database one on PostgreSQL), one sweep driven by hand."""
    if settings.uses_postgres:
        settings = settings.model_copy(update={"blob_store": "database"})
    async with service_for(settings) as client:
        sweeper, store = client.server.app[BLOB_SWEEPER], client.server.app[BLOBS].blobs
        deadline = time.monotonic() + 5
        while sweeper.cycles < 1:  # its first sweep, at start-up (the next is an interval away)
            assert time.monotonic() < deadline, "the sweeper did not sweep at start-up"
            await asyncio.sleep(0.01)
        assert sweeper.holding and "blobs" in (await call(client, "GET", "/ready"))[1]["holds"]
        kept = await create(client, b"still named", "kept.txt")
        freed = await create(client, b"freed within the grace", "freed.txt")
        assert (await call(client, "DELETE", f"/files/{freed['id']}"))[0] == 200  # too fresh to be removed: stays
        store.writer().write(b"a" * (ROW_BYTES + 1))  # its process died mid-upload
        kept_hash, freed_hash, fresh_hash = (sha256(c) for c in (b"still named", b"freed within the grace", b"fresh"))
        assert store.exists(freed_hash)
        _age_everything(settings, store)
        fresh = await create(client, b"fresh", "fresh.txt")
        assert (await call(client, "DELETE", f"/files/{fresh['id']}"))[0] == 200  # freed, but touched just now

        swept = await sweeper.sweep_once()
        assert swept.removed == [freed_hash] and swept.uploads == 1
        assert not store.exists(freed_hash) and store.exists(kept_hash) and store.exists(fresh_hash)
        async with client.get(f"/files/{kept['id']}/download") as response:
            assert response.status == 200 and await response.read() == b"still named"
        assert (await sweeper.sweep_once()).removed == []


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _age_everything(settings: Settings, store: Blobs) -> None:
    """Every blob and unfinished upload an hour older."""
    if isinstance(store, DirectoryBlobs):
        for path in [*settings.blob_directory.glob("??/*"), *(settings.blob_directory / "tmp").iterdir()]:
            then = path.stat().st_mtime - 3600
            os.utime(path, (then, then))
        return
    with psycopg.connect(POSTGRES_URL) as connection:
        connection.execute("UPDATE blobs SET touched_at = touched_at - 3600")
        connection.execute("UPDATE blob_uploads SET written_at = written_at - 3600")
