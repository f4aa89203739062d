"""Routes of files and folders: ``/files`` (multipart uploads, listings, downloads, rename, move) and ``/folders``.

Behaviour and messages are the older platform's (``spec/platform.md`` §6), statuses the root's (REC where
the notes give one: 404 for a missing file or target, 409 for a name clash, 400 for moving a folder into
itself or below itself).

**Uploads** (``POST /files``, ``PUT /files/{id}``) are ``multipart/form-data`` (else 415). The ``file`` part
is streamed chunk by chunk into the blob store while it is hashed (never the whole body in memory), its
type sniffed from its first 512 bytes (``domain.content_types``: what the client says is ignored), and
refused as soon as it passes ``CHAINLOOM_MAX_UPLOAD_BYTES`` (413 ``serverops: file size limit exceeded``);
a body that says or turns out to be more than that plus 10 KiB is cut off (413 ``request body too
large``). An upload is not kept for ``Idempotency-Key`` (its body is not fingerprinted: it would be
read whole first). A create takes ``name`` (default: the upload's file name, without directories) and
``parentid`` (``""``: the root); a replace keeps both.

**Downloads** stream the content as ``application/octet-stream`` with ``X-Content-Type-Options: nosniff``,
the stored size as ``Content-Length`` and ``Content-Disposition: attachment; filename="<path>"`` (the path
quoted as Go quotes strings) unless ``skip=true``.

Who may: the service checks are ``web.authz``'s; the resource checks of §2.7 are made here
(``check_resource`` on the file or folder, and on the target folder of a move), and a new file or
folder gives its creator ``manage`` on it when the caller is a user.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from chainloom.domain.content_types import SNIFF_LENGTH, ensure_allowed, sniff
from chainloom.domain.documents import EMPTY_FILE, MAX_NAME_BYTES, ROOT, Content
from chainloom.domain.errors import BadRequest, TooLarge, Unprocessable
from chainloom.domain.identity import Permission
from chainloom.infra.blobs import AsyncBlobWriter
from chainloom.web.authz import IDENTITY, check_resource
from chainloom.web.bodies import json_response, with_body
from chainloom.web.errors import UnsupportedMediaType
from chainloom.web.idempotency import unkeyed
from chainloom.web.keys import BLOBS, FILE_COMMANDS, FILE_QUERIES, SETTINGS
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, request_body, responds
from chainloom.web.schemas import Answer

routes = web.RouteTableDef()

FILES = "files"  # the resource type of files and folders
NOT_MULTIPART = "invalid request format (not multipart): request Content-Type isn't multipart/form-data"
NO_FILE = "http: no such file"
FILE_TOO_LARGE = "serverops: file size limit exceeded"
# How much a multipart body may carry besides the file (the reference's allowance).
BODY_ALLOWANCE = 10 * 1024
# Read from the body at once; and the most a form field other than the file may hold.
_CHUNK = 256 * 1024
_MAX_FIELD_BYTES = 64 * 1024
_NAME: JsonDict = {"minLength": 1, "maxLength": MAX_NAME_BYTES}


# -- bodies and query strings ------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class NameBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["name"]})

    name: str = Field("", description="Empty: 422. May contain '/'.", json_schema_extra=_NAME)


class MoveBody(_Body):
    new_parent_id: str = Field(alias="newParentId", description='The target folder; "" is the root (required: 422 without).')


class FolderBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["name"]})

    name: str = Field("", description="Empty: 422. May contain '/'.", json_schema_extra=_NAME)
    parent_id: str = Field("", alias="parentId", description='The folder to create it in; "" or absent: the root.')


class UploadForm(BaseModel):
    """The multipart/form-data body of an upload (documentation: ``_receive`` reads the parts as they stream)."""

    model_config = ConfigDict(json_schema_extra={"required": ["file"]})

    file: bytes = Field(description="The content; its type is sniffed (text/plain, application/json, application/pdf).")
    name: str | None = Field(None, description="Create only: the name (default: the upload's file name); no '/'.")
    parentid: str | None = Field(None, description='Create only: the folder; "" or absent: the root.')


class FilesQuery(BaseModel):
    path: str | None = Field(
        None, description="A folder (its children) or a file (itself), by names from the root joined with '/'."
    )


class DownloadQuery(BaseModel):
    skip: str | None = Field(None, description="`true`: no Content-Disposition header.")


# -- answers -----------------------------------------------------------------------------------------------


class FileAnswer(Answer):
    """``queries.files.FileRow.file_json`` (folders in listings too: no type, size 0)."""

    id: str
    path: str = Field(description="Names from the root joined with '/', without a leading slash.")
    name: str
    content_type: str = Field(alias="contentType")
    size: int
    parent_id: str = Field(alias="parentId", description='"" at the root.')
    parent_id_reference: str = Field(alias="ParentId", description="The same as `parentId` (the reference's key).")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class FolderAnswer(Answer):
    """``queries.files.FileRow.folder_json``."""

    id: str
    path: str
    name: str
    parent_id: str | None = Field(None, alias="parentId", description="Left out at the root.")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class Removed(Answer):
    message: str


# -- uploads -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upload:
    content: Content
    filename: str
    fields: dict[str, str]


def body_too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body too large (limit {limit} bytes)")


def go_base(path: str) -> str:
    """Go's ``filepath.Base`` (what the reference's multipart reader makes of an upload's file name)."""
    if not path:
        return ""
    path = path.rstrip("/")
    return path.rsplit("/", 1)[-1] if path else "/"


async def _receive(request: web.Request, wanted: frozenset[str]) -> _Upload:
    """Stream the ``file`` part of a multipart body into the blob store; the form fields ``wanted`` beside it."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(NOT_MULTIPART)
    limit = request.app[SETTINGS].max_upload_bytes
    body_limit = limit + BODY_ALLOWANCE
    if request.content_length is not None and request.content_length > body_limit:
        raise body_too_large(body_limit)
    writer: AsyncBlobWriter | None = None
    try:
        try:
            reader = await request.multipart()
            received = _Received(limit, body_limit)
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("invalid multipart body: nested multipart parts are not taken")
                if part.name == "file" and part.filename and writer is None:
                    writer = await request.app[BLOBS].writer()
                    await received.file(part, writer)
                elif part.name in wanted and part.name not in received.fields:
                    await received.field(part)
                else:
                    await received.skip(part)
        except (ValueError, AssertionError) as error:  # what aiohttp's parser raises on a malformed body
            raise BadRequest(f"invalid multipart body: {error}") from None
        except BadHttpMessage as error:  # a part's malformed headers
            raise BadRequest(f"invalid multipart body: {error.message}") from None
        if writer is None:
            raise BadRequest(NO_FILE, param="file")
        digest, size = await writer.finish()
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise
    return _Upload(Content(digest, size, received.content_type), go_base(received.filename), received.fields)


class _Received:
    """What a multipart body brought so far, counted against the limits."""

    def __init__(self, limit: int, body_limit: int) -> None:
        self._limit = limit
        self._body_limit = body_limit
        self._read = 0
        self.fields: dict[str, str] = {}
        self.filename = ""
        self.content_type = ""

    def _count(self, chunk: bytes) -> None:
        self._read += len(chunk)
        if self._read > self._body_limit:
            raise body_too_large(self._body_limit)

    async def file(self, part: BodyPartReader, writer: AsyncBlobWriter) -> None:
        self.filename = part.filename or ""
        head = bytearray()
        size = 0
        while chunk := await part.read_chunk(_CHUNK):
            self._count(chunk)
            size += len(chunk)
            if size > self._limit:
                raise TooLarge(FILE_TOO_LARGE, param="file")
            if len(head) < SNIFF_LENGTH:
                head += chunk[: SNIFF_LENGTH - len(head)]
                if len(head) == SNIFF_LENGTH:  # known now: refuse before storing the rest
                    ensure_allowed(sniff(bytes(head)))
            await writer.write(chunk)
        self.content_type = sniff(bytes(head))
        ensure_allowed(self.content_type)
        if size == 0:
            raise BadRequest(EMPTY_FILE, param="file")

    async def field(self, part: BodyPartReader) -> None:
        name = part.name or ""
        value = bytearray()
        while chunk := await part.read_chunk(_CHUNK):
            self._count(chunk)
            value += chunk
            if len(value) > _MAX_FIELD_BYTES:
                raise Unprocessable(f"form field '{name}' is longer than {_MAX_FIELD_BYTES} bytes", param=name)
        try:
            self.fields[name] = value.decode()
        except UnicodeDecodeError:
            raise Unprocessable(f"form field '{name}' is not UTF-8 text", param=name) from None

    async def skip(self, part: BodyPartReader) -> None:
        while chunk := await part.read_chunk(_CHUNK):
            self._count(chunk)


# -- helpers -------------------------------------------------------------------------------------------------


def _caller(request: web.Request) -> str | None:
    """The calling user's subject (None: the API key, or security off)."""
    claims = request.get(IDENTITY)
    return claims.subject if claims is not None else None


def go_quote(text: str) -> str:
    """``text`` as Go's ``strconv.Quote`` writes it: in double quotes, ``"`` and ``\\`` escaped, printable
    characters as they are, the others as ``\\n``, ``\\x..``, ``\\u....`` or ``\\U........``."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    out = ['"']
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char == " " or (char.isprintable() and unicodedata.category(char)[0] in "LMNPS"):
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


async def _file_answer(request: web.Request, file_id: str, status: int = 200) -> web.Response:
    return json_response((await request.app[FILE_QUERIES].file(file_id)).file_json(), status)


async def _folder_answer(request: web.Request, folder_id: str, status: int = 200) -> web.Response:
    return json_response((await request.app[FILE_QUERIES].folder(folder_id)).folder_json(), status)


async def _check_target(request: web.Request, target_id: str) -> None:
    """Edit on the folder a node moves into (the root is no resource)."""
    if target_id != ROOT:
        await check_resource(request, FILES, target_id, Permission.EDIT)


# -- files ---------------------------------------------------------------------------------------------------


@routes.post("/files")
@unkeyed
@request_body(UploadForm, media_type="multipart/form-data")
@responds(201, FileAnswer)
@fails(400, 404, 409, 413, 415, 422)
async def create_file(request: web.Request) -> web.Response:
    """Creates a file from a multipart/form-data upload: its `file` part, and optional `name` and `parentid`.

    The name defaults to the upload's file name and may not contain '/' (422); `parentid` "" or absent is the
    root, an unknown one 404; a name taken in the folder 409. The type is sniffed from the content: only
    text/plain, application/json and application/pdf are kept (else 422). No `file` part, or an empty one, is
    400; a file over the upload limit 413; a body that is not multipart 415. Enqueues a vectorize job."""
    commands = request.app[FILE_COMMANDS]
    await commands.check_capacity()
    upload = await _receive(request, frozenset({"name", "parentid", "parentId"}))
    name = upload.fields.get("name") or upload.filename
    parent_id = upload.fields.get("parentid") or upload.fields.get("parentId") or ROOT
    file_id = await commands.create(name, parent_id, upload.content, _caller(request), command_context(request))
    return await _file_answer(request, file_id, 201)


@routes.get("/files")
@responds(200, list[FileAnswer])
@fails(404)
@query(FilesQuery)
async def list_files(request: web.Request) -> web.Response:
    """Lists the files and folders of a folder by its path (empty or absent: the root), or a file by its path.

    Folders come with contentType "" and size 0. A path nothing answers to is 404 `unable to resolve path`."""
    rows = await request.app[FILE_QUERIES].resolve(request.query.get("path", ""))
    return json_response([row.file_json() for row in rows])


@routes.get("/files/{id}")
@responds(200, FileAnswer)
async def get_file(request: web.Request) -> web.Response:
    """Retrieves a file's metadata (a folder's id is 404)."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.VIEW)
    return await _file_answer(request, file_id)


@routes.put("/files/{id}")
@unkeyed
@request_body(UploadForm, media_type="multipart/form-data")
@responds(200, FileAnswer)
@fails(400, 413, 415)
async def replace_file(request: web.Request) -> web.Response:
    """Replaces a file's content with a multipart/form-data upload (`file`); its name and folder stay.

    Checked as a create's upload; enqueues a vectorize job."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.EDIT)
    await request.app[FILE_QUERIES].file(file_id)  # 404 before the upload is stored
    upload = await _receive(request, frozenset())
    await request.app[FILE_COMMANDS].replace(file_id, upload.content, command_context(request))
    return await _file_answer(request, file_id)


@routes.delete("/files/{id}")
@responds(200, Removed)
async def delete_file(request: web.Request) -> web.Response:
    """Deletes a file with its content, access entries, open jobs and indexed chunks."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.MANAGE)
    await request.app[FILE_COMMANDS].delete(file_id, command_context(request))
    return json_response({"message": "file removed"})


@routes.get("/files/{id}/download")
@responds(200, bytes, media_type="application/octet-stream")
@query(DownloadQuery)
async def download_file(request: web.Request) -> web.StreamResponse:
    """Downloads a file's content as application/octet-stream, named by its path in Content-Disposition.

    `skip=true` leaves Content-Disposition out."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.VIEW)
    row = await request.app[FILE_QUERIES].file(file_id)
    reader = await request.app[BLOBS].open(row.hash)
    try:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "X-Content-Type-Options": "nosniff"}
        )
        if request.query.get("skip") != "true":
            response.headers["Content-Disposition"] = f"attachment; filename={go_quote(row.path)}"
        response.content_length = row.size
        await response.prepare(request)
        if request.method != "HEAD":
            while chunk := await reader.read():
                await response.write(chunk)
        await response.write_eof()
    finally:
        await reader.close()
    return response


@routes.put("/files/{id}/name")
@responds(200, FileAnswer)
@fails(409)
@with_body(NameBody)
async def rename_file(request: web.Request, body: NameBody) -> web.Response:
    """Renames a file (the name may contain '/'); enqueues a vectorize job.

    An empty name is 422 `missing 'name' in request body`, a folder's id 422, a name taken in its folder 409."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.EDIT)
    await request.app[FILE_COMMANDS].rename(file_id, body.name, command_context(request))
    return await _file_answer(request, file_id)


@routes.put("/files/{id}/move")
@responds(200, FileAnswer)
@fails(409)
@with_body(MoveBody)
async def move_file(request: web.Request, body: MoveBody) -> web.Response:
    """Moves a file into another folder ("": the root); enqueues a vectorize job.

    A missing file or target folder is 404, a target that is a file 422, a name taken in the target 409."""
    file_id = request.match_info["id"]
    await check_resource(request, FILES, file_id, Permission.EDIT)
    await _check_target(request, body.new_parent_id)
    await request.app[FILE_COMMANDS].move(file_id, body.new_parent_id, command_context(request))
    return await _file_answer(request, file_id)


# -- folders -------------------------------------------------------------------------------------------------


@routes.post("/folders")
@responds(201, FolderAnswer)
@fails(404, 409)
@with_body(FolderBody)
async def create_folder(request: web.Request, body: FolderBody) -> web.Response:
    """Creates a folder (its name may contain '/') in `parentId` ("" or absent: the root).

    An empty name is 422, an unknown parent 404, a name taken in the folder 409."""
    folder_id = await request.app[FILE_COMMANDS].create_folder(
        body.name, body.parent_id, _caller(request), command_context(request)
    )
    return await _folder_answer(request, folder_id, 201)


@routes.put("/folders/{id}/name")
@responds(200, FolderAnswer)
@fails(409)
@with_body(NameBody)
async def rename_folder(request: web.Request, body: NameBody) -> web.Response:
    """Renames a folder; a file's id is 422 `target is not a folder`, a name taken in its folder 409."""
    folder_id = request.match_info["id"]
    await request.app[FILE_COMMANDS].rename_folder(folder_id, body.name, command_context(request))
    return await _folder_answer(request, folder_id)


@routes.put("/folders/{id}/move")
@responds(200, FolderAnswer)
@fails(400, 409)
@with_body(MoveBody)
async def move_folder(request: web.Request, body: MoveBody) -> web.Response:
    """Moves a folder, with everything below it, into another folder ("": the root).

    Into itself or one of its subfolders is 400; a missing folder or target 404; a name taken in the target 409."""
    folder_id = request.match_info["id"]
    await check_resource(request, FILES, folder_id, Permission.EDIT)
    await _check_target(request, body.new_parent_id)
    await request.app[FILE_COMMANDS].move_folder(folder_id, body.new_parent_id, command_context(request))
    return await _folder_answer(request, folder_id)


@routes.delete("/folders/{id}")
@responds(200, Removed)
async def delete_folder(request: web.Request) -> web.Response:
    """Deletes a folder and everything below it: files with their content, access entries, jobs and chunks."""
    folder_id = request.match_info["id"]
    await check_resource(request, FILES, folder_id, Permission.MANAGE)
    await request.app[FILE_COMMANDS].delete_folder(folder_id, command_context(request))
    return json_response({"message": "folder removed"})
