"""/files on SQLite and PostgreSQL: multipart uploads streamed to the blob store, sniffed types, the size
limits, metadata, downloads with their headers, rename and move with their conflicts, content replaced,
deletion with its content, jobs and chunks — every error of the notes (§6), under /api too; and no byte
of a file on the log."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from chainloom.domain.file_chunks import FileChunks, IndexedChunk
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.web.files import go_quote
from tests.api.helpers import assert_error, call
from tests.integration.serve_process import log_events

TEXT = b"The quick brown fox jumps over the lazy dog.\n"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
FILE_KEYS = {"id", "path", "name", "contentType", "size", "parentId", "ParentId", "createdAt", "updatedAt"}


def form(content: bytes | None, filename: str = "a.txt", **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    if content is not None:
        data.add_field("file", content, filename=filename, content_type="application/octet-stream")
    return data


async def upload(client: Any, content: bytes | None, filename: str = "a.txt", method: str = "POST", path: str = "/files", **fields: str) -> tuple[int, Any]:
    async with client.request(method, path, data=form(content, filename, **fields)) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)


async def create(client: Any, content: bytes = TEXT, filename: str = "a.txt", **fields: str) -> dict[str, Any]:
    status, body = await upload(client, content, filename, **fields)
    assert status == 201, body
    return body


async def folder(client: Any, name: str, parent_id: str = "") -> dict[str, Any]:
    status, body = await call(client, "POST", "/folders", {"name": name, "parentId": parent_id})
    assert status == 201, body
    return body


async def pending_jobs(client: Any) -> list[dict[str, Any]]:
    status, jobs = await call(client, "GET", "/jobs/pending")
    assert status == 200, jobs
    return jobs


def blob_path(settings: Settings, digest: str) -> Path:
    return settings.blob_directory / digest[:2] / digest


def age_blobs(settings: Settings) -> None:
    """Make every blob older than the removal grace period (a fresh one is kept: see infra/blobs.py)."""
    long_ago = time.time() - 3600
    for path in settings.blob_directory.glob("??/*"):
        os.utime(path, (long_ago, long_ago))


def hashes_on_log(settings: Settings) -> dict[str, str]:
    return {e["aggregate_id"]: e["data"]["hash"] for e in log_events(settings) if e["event_type"] in ("file.created", "file.content_replaced")}


# -- uploads, metadata, downloads -------------------------------------------------------------------------


async def test_an_upload_is_sniffed_stored_by_hash_downloaded_and_queued_but_never_on_the_log(client, settings):
    created = await create(client, TEXT, "notes.txt")
    assert set(created) == FILE_KEYS
    assert (created["name"], created["path"], created["size"]) == ("notes.txt", "notes.txt", len(TEXT))
    assert (created["contentType"], created["parentId"], created["ParentId"]) == ("text/plain; charset=utf-8", "", "")
    assert await call(client, "GET", f"/files/{created['id']}") == (200, created)
    # The client's type is ignored; the sniffed one is kept; `name` wins over the file name.
    pdf = await create(client, PDF, "upload.bin", name="report.pdf")
    assert (pdf["name"], pdf["contentType"]) == ("report.pdf", "application/pdf")
    # A file name with directories keeps its last element (Go's filepath.Base).
    assert (await create(client, b"x", "dir/sub/base.txt"))["name"] == "base.txt"

    jobs = {job["entityId"]: job for job in await pending_jobs(client)}
    job = jobs[created["id"]]
    assert (job["taskType"], job["operation"], job["subject"], job["entityType"], job["payload"]) == (
        "vectorize_text/plain; charset=utf-8", "create", "file", "file", "e30="
    )
    assert jobs[pdf["id"]]["taskType"] == "vectorize_application/pdf"

    async with client.get(f"/files/{created['id']}/download") as response:
        assert response.status == 200 and await response.read() == TEXT
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Length"] == str(len(TEXT))
        assert response.headers["Content-Disposition"] == 'attachment; filename="notes.txt"'
    async with client.get(f"/files/{created['id']}/download", params={"skip": "true"}) as response:
        assert response.status == 200 and "Content-Disposition" not in response.headers
    async with client.get(f"/files/{created['id']}/download", params={"skip": "1"}) as response:
        assert "Content-Disposition" in response.headers

    # The content is in the blob store by its sha256; the log has the hash and size, never a byte.
    digest = hashes_on_log(settings)[created["id"]]
    assert blob_path(settings, digest).read_bytes() == TEXT
    log = json.dumps(log_events(settings))
    assert "quick brown fox" not in log and "%PDF" not in log


async def test_upload_errors_are_the_notes(client):
    async with client.post("/files", data={"name": "x"}) as response:  # urlencoded
        assert_error(response.status, await response.json(), 415, "request Content-Type isn't multipart/form-data")
    assert_error(*await upload(client, None, name="x"), 400, "http: no such file")
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=zz"):  # no boundary; not a multipart body
        async with client.post("/files", data=b"garbage", headers={"Content-Type": content_type}) as response:
            assert response.status == 400, await response.text()
    # A part whose headers do not parse (a control character in them, as Schemathesis once sent).
    bad_part = b'--zz\r\nContent-Disposition: form-data; name="\x03C"\r\n\r\nx\r\n--zz--\r\n'
    async with client.post("/files", data=bad_part, headers={"Content-Type": "multipart/form-data; boundary=zz"}) as response:
        assert_error(response.status, await response.json(), 400, "invalid multipart body")
    assert_error(*await upload(client, b""), 400, "serverops: file cannot be empty")
    assert_error(*await upload(client, TEXT, name="a/b.txt"), 422, "filename is not allowed to contain /")
    assert_error(*await upload(client, b"  <html><body>hi</body></html>"), 422, 'content type "text/html; charset=utf-8" is not allowed')
    assert_error(*await upload(client, b"\x89PNG\r\n\x1a\n" + b"\x00" * 600), 422, 'content type "image/png" is not allowed')
    assert_error(*await upload(client, TEXT, parentid="no-such-folder"), 404, "libdb: not found")
    await create(client, TEXT, "same.txt")
    assert_error(*await upload(client, TEXT, "same.txt"), 409, "unique constraint violation")
    # Two uploads of one name at once: one is stored.
    statuses = sorted(status for status, _ in await asyncio.gather(*(upload(client, TEXT, "race.txt") for _ in range(3))))
    assert statuses == [201, 409, 409]
    # The older platform's surface: flat errors, its statuses.
    async with client.post("/api/files", data={"name": "x"}) as response:
        assert response.status == 415 and "content-type isn't multipart/form-data" in (await response.json())["error"].lower()
    status, body = await upload(client, b"", path="/api/files")
    assert status == 400 and body == {"error": "serverops: file cannot be empty"}
    # Nothing of the refused uploads was stored.
    status, listed = await call(client, "GET", "/files")
    assert status == 200 and [row["name"] for row in listed] == ["race.txt", "same.txt"]


def multipart_body(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body made by hand: (field name, file name or None, content) per part."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def test_the_upload_body_and_file_count_limits(service_for, settings):
    limited = settings.model_copy(update={"max_upload_bytes": 1024, "file_limit": 2})
    async with service_for(limited) as client:
        await create(client, b"a" * 1024, "full.txt")
        assert_error(*await upload(client, b"a" * 1025, "over.txt"), 413, "serverops: file size limit exceeded")
        assert_error(*await upload(client, b"a" * 20_000, "way-over.txt"), 413, "request body too large (limit 11264 bytes)")
        status, body = await upload(client, b"a" * 1025, "over.txt", path="/api/files")
        assert status == 413 and "file size limit exceeded" in body["error"]
        # Without a Content-Length (chunked), the body is counted as it streams in: cut off past the allowance.
        boundary = "xYzBoundary"
        raw = multipart_body(boundary, ("padding", None, b"z" * 20_000), ("file", "late.txt", b"hello"))

        async def chunked():
            for start in range(0, len(raw), 4096):
                yield raw[start : start + 4096]

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        async with client.post("/files", data=chunked(), headers=headers) as response:
            assert_error(response.status, await response.json(), 413, "request body too large")
        status, listed = await call(client, "GET", "/files")
        assert [row["name"] for row in listed] == ["full.txt"]
        await folder(client, "second")
        assert_error(*await upload(client, TEXT, "third.txt"), 422, "file limit reached")
        assert_error(*await call(client, "POST", "/folders", {"name": "third"}), 422, "file limit reached")
    assert len(list(limited.blob_directory.glob("??/*"))) == 1  # nothing of the refused uploads stayed
    assert not list((limited.blob_directory / "tmp").iterdir())


async def test_a_files_content_is_replaced_and_its_old_blob_removed_when_no_file_shares_it(client, settings):
    created = await create(client, TEXT, "doc.txt")
    before = hashes_on_log(settings)[created["id"]]
    age_blobs(settings)
    status, replaced = await upload(client, PDF, "ignored.pdf", method="PUT", path=f"/files/{created['id']}", name="nope")
    assert status == 200, replaced
    assert (replaced["name"], replaced["contentType"], replaced["size"]) == ("doc.txt", "application/pdf", len(PDF))
    assert replaced["updatedAt"] > created["updatedAt"]
    after = hashes_on_log(settings)[created["id"]]
    assert not blob_path(settings, before).exists() and blob_path(settings, after).read_bytes() == PDF
    operations = [job["operation"] for job in await pending_jobs(client) if job["entityId"] == created["id"]]
    assert sorted(operations) == ["create", "update"]
    assert_error(*await upload(client, TEXT, method="PUT", path="/files/unknown"), 404, "libdb: not found")
    assert_error(*await upload(client, b"", method="PUT", path=f"/files/{created['id']}"), 400, "file cannot be empty")


# -- rename, move, paths -------------------------------------------------------------------------------------


async def test_rename_and_move_with_paths_and_their_conflicts(client):
    docs = await folder(client, "docs")
    deep = await folder(client, "a/b", docs["id"])  # a name with '/' shows verbatim in the path
    file = await create(client, TEXT, "x.txt", parentid=deep["id"])
    assert (file["path"], file["parentId"]) == ("docs/a/b/x.txt", deep["id"])

    status, renamed = await call(client, "PUT", f"/files/{file['id']}/name", {"name": "y/z.txt"})
    assert status == 200 and renamed["path"] == "docs/a/b/y/z.txt" and renamed["name"] == "y/z.txt"
    assert_error(*await call(client, "PUT", f"/files/{file['id']}/name", {"name": ""}), 422, "missing 'name' in request body")
    assert_error(*await call(client, "PUT", f"/files/{docs['id']}/name", {"name": "n"}), 422, "target is a folder")
    assert_error(*await call(client, "PUT", "/files/unknown/name", {"name": "n"}), 404, "not found")
    await create(client, TEXT, "taken.txt", parentid=deep["id"])
    assert_error(*await call(client, "PUT", f"/files/{file['id']}/name", {"name": "taken.txt"}), 409, "unique constraint violation")

    status, moved = await call(client, "PUT", f"/files/{file['id']}/move", {"newParentId": docs["id"]})
    assert status == 200 and (moved["path"], moved["parentId"]) == ("docs/y/z.txt", docs["id"])
    status, moved = await call(client, "PUT", f"/files/{file['id']}/move", {"newParentId": ""})
    assert status == 200 and (moved["path"], moved["parentId"]) == ("y/z.txt", "")
    await create(client, TEXT, "y.txt", parentid=docs["id"])
    other = await create(client, TEXT, "y.txt")
    assert_error(
        *await call(client, "PUT", f"/files/{other['id']}/move", {"newParentId": docs["id"]}),
        409,
        "an item named 'y.txt' already exists in the target folder",
    )
    assert_error(*await call(client, "PUT", f"/files/{other['id']}/move", {"newParentId": "nowhere"}), 404, "target folder 'nowhere'")
    assert_error(*await call(client, "PUT", f"/files/{other['id']}/move", {"newParentId": file["id"]}), 422, "is not a folder")
    assert_error(*await call(client, "PUT", "/files/unknown/move", {"newParentId": ""}), 404, "not found")
    assert_error(*await call(client, "PUT", f"/files/{other['id']}/move", {}), 422, "newParentId")

    operations = sorted(job["operation"] for job in await pending_jobs(client) if job["entityId"] == file["id"])
    assert operations == ["create", "move", "move", "rename"]
    # Moving a folder changes the paths below it.
    status, _ = await call(client, "PUT", f"/folders/{deep['id']}/move", {"newParentId": ""})
    assert status == 200
    assert (await call(client, "GET", f"/files/{file['id']}"))[1]["path"] == "y/z.txt"
    status, taken = await call(client, "GET", "/files", params={"path": "a/b/taken.txt"})
    assert status == 404  # "a/b" is one name: the raw value splits into "a", "b"
    status, listed = await call(client, "GET", "/files", params={"path": "docs"})
    assert status == 200 and sorted(row["path"] for row in listed) == ["docs/y.txt"]


async def test_listing_by_path(client):
    docs = await folder(client, "docs")
    sub = await folder(client, "sub", docs["id"])
    inner = await create(client, TEXT, "inner.txt", parentid=sub["id"])
    await create(client, TEXT, "top.txt")
    status, root = await call(client, "GET", "/files")
    assert status == 200 and sorted((row["name"], row["contentType"], row["size"]) for row in root) == [
        ("docs", "", 0), ("top.txt", "text/plain; charset=utf-8", len(TEXT))
    ]
    assert all(set(row) == FILE_KEYS for row in root)
    for path in ("docs/sub", "/docs/sub/"):
        status, listed = await call(client, "GET", "/files", params={"path": path})
        assert status == 200 and [row["id"] for row in listed] == [inner["id"]]
        assert listed[0]["path"] == "docs/sub/inner.txt"
    status, listed = await call(client, "GET", "/files", params={"path": "docs/sub/inner.txt"})
    assert [row["id"] for row in listed] == [inner["id"]]
    for unknown in ("nope", "docs/nope", "top.txt/below"):
        assert_error(*await call(client, "GET", "/files", params={"path": unknown}), 404, "unable to resolve path")
    assert (await call(client, "GET", "/files", params={"path": ""}))[1] == root
    status, body = await call(client, "GET", "/api/files", params={"path": "nope"})
    assert status == 404 and "unable to resolve path" in body["error"]
    assert_error(*await call(client, "GET", f"/files/{docs['id']}"), 404, "not found")  # a folder is no file


# -- deletion -------------------------------------------------------------------------------------------------


async def test_a_deleted_file_takes_its_jobs_chunks_and_unshared_content_with_it(client, settings):
    shared_a = await create(client, TEXT, "a.txt")
    shared_b = await create(client, TEXT, "b.txt")
    alone = await create(client, PDF, "c.pdf")
    # Chunks indexed for the file (as the index does it), written to the log beside the service.
    log = EventLog(settings.event_store_env())
    try:
        chunks = FileChunks.start(alone["id"])
        chunks.index([IndexedChunk(f"{alone['id']}-0", 0, "text", "k", "m", b"\x00" * 8)])
        log.save(chunks)
    finally:
        log.close()
    hashes = hashes_on_log(settings)
    age_blobs(settings)

    for file in (shared_a, alone):
        assert await call(client, "DELETE", f"/files/{file['id']}") == (200, {"message": "file removed"})
        assert_error(*await call(client, "GET", f"/files/{file['id']}"), 404, "not found")
    assert_error(*await call(client, "DELETE", f"/files/{alone['id']}"), 404, "not found")
    assert blob_path(settings, hashes[shared_b["id"]]).exists()  # b still names it
    assert not blob_path(settings, hashes[alone["id"]]).exists()
    assert {job["entityId"] for job in await pending_jobs(client)} == {shared_b["id"]}
    events = log_events(settings)
    assert [e["data"]["chunkIds"] for e in events if e["event_type"] == "file_chunks.cleared"] == [[f"{alone['id']}-0"]]
    assert sum(e["event_type"] == "job.purged" for e in events) == 2
    # A fresh blob is spared (an upload of the same content may count on it): deleting b keeps it a while.
    fresh = await create(client, b"fresh content", "fresh.txt")
    assert await call(client, "DELETE", f"/files/{fresh['id']}") == (200, {"message": "file removed"})
    assert blob_path(settings, hashes_on_log(settings)[fresh["id"]]).exists()


def test_go_quote_is_strconv_quote():
    assert go_quote('docs/a "b".txt') == '"docs/a \\"b\\".txt"'
    assert go_quote("tab\there\\") == '"tab\\there\\\\"'
    assert go_quote("ünï ✓") == '"ünï ✓"'
    assert go_quote("\x00\x7f\u200b\U000e0001") == '"\\x00\\x7f\\u200b\\U000e0001"'
