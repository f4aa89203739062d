"""Routes of the index: ``POST /index`` (a worker's chunks of a file), ``GET /search``, ``GET /keywords``.

Shapes and messages are the platform notes' (§8): ``/index`` answers the chunk
ids and the enriched texts, and refuses a request without ``jobId`` or
``leaserId`` (400 ``serverops: missing parameter``), one whose job is not leased
(404) or leased by another (422 ``job is not leased by this leaser``). A search
answers ``{results, triedQuery}``; a ``topk``, ``radius`` or ``epsilon`` that is
not a number is 400. The models' refusals are the execution service's (422:
nothing can serve the default model, 502: it refused, 503: its backends are down).
"""

from __future__ import annotations

import math
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from chainloom.commands.indexing import IndexRequest
from chainloom.domain.errors import BadRequest
from chainloom.queries.pagination import MAX_LIMIT, Page
from chainloom.queries.search import DEFAULT_TOPK, MAX_TOPK, SearchRequest
from chainloom.web.bodies import json_response, with_body
from chainloom.web.keys import INDEX_COMMANDS, SEARCH_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Answer

routes = web.RouteTableDef()


# -- bodies (unknown fields are ignored; field names match in any case) -------------------------------------


_REQUIRED: JsonDict = {"minLength": 1}


class IndexBody(BaseModel):
    """``indexservice.IndexRequest``."""

    model_config = ConfigDict(
        strict=True, extra="ignore", populate_by_name=True, json_schema_extra={"required": ["id", "chunks", "jobId", "leaserId"]}
    )

    id: str = Field("", description="The file the chunks are of: the job's `entityId`.", json_schema_extra=_REQUIRED)
    chunks: list[str] = Field(default_factory=list, description="The file's text in chunks, in order.")
    replace: bool = Field(
        False, description="Replace the file's chunks. They are replaced whenever the file has some, whatever this says."
    )
    job_id: str = Field(
        "", alias="jobId", description="The job being done (completed by this request); empty: 400.", json_schema_extra=_REQUIRED
    )
    leaser_id: str = Field("", alias="leaserId", description="Who leased the job; empty: 400.", json_schema_extra=_REQUIRED)

    def request(self) -> IndexRequest:
        return IndexRequest(self.id, self.chunks, self.replace, self.job_id, self.leaser_id)


# -- answers -------------------------------------------------------------------------------------------------


class IndexAnswer(Answer):
    """``commands.indexing.IndexCommands.index``."""

    id: str
    vectors: list[str] = Field(description="The chunks' ids, `<fileId>-<index>`.")
    augmented_metadata: list[str] = Field(
        alias="augmentedMetadata", description="Each chunk as embedded: its text, a blank line, `Keywords: …`."
    )


class FileRecord(Answer):
    """``queries.search.raw_file_record``: the file as the reference's records table had it."""

    id: str
    type: str = Field(description="Its content type.")
    meta: str = Field(description='Base64 of `{"specVersion","hash","size","fileId"}`.')
    is_folder: bool = Field(alias="isFolder")
    blobs_id: str = Field(alias="blobsId", description="Its content's sha256.")
    created_at: str = Field(alias="createdAt", json_schema_extra={"format": "date-time"})
    updated_at: str = Field(alias="updatedAt", json_schema_extra={"format": "date-time"})


class SearchResult(Answer):
    """``queries.search.SearchQueries._results``: one per file, its nearest chunk."""

    id: str = Field(description="The file's id.")
    type: str = Field(description="`file`.")
    distance: float = Field(description="Euclidean (L2) distance of the nearest chunk; smaller is closer.")
    chunk_id: str = Field(alias="chunkId")
    file_meta: FileRecord | None = Field(alias="fileMeta", description="With `expand=files`; else null.")


class SearchAnswer(Answer):
    results: list[SearchResult] = Field(description="Nearest first.")
    tried_query: list[str] = Field(alias="triedQuery", description="`q`, and its rewrite when it is a question.")


# -- query strings -------------------------------------------------------------------------------------------


class SearchQuery(BaseModel):
    q: str | None = Field(None, description="What to look for; a question is also searched as keywords.")
    topk: int | None = Field(
        None, description=f"At most this many files (default {DEFAULT_TOPK}, also for 0 or less; at most {MAX_TOPK})."
    )
    radius: float | None = Field(None, description="With `epsilon`: no hit farther than this (when positive).")
    epsilon: float | None = Field(None, description="Accepted for compatibility (the search is exact).")
    expand: str | None = Field(None, description="`files`: answer each file's record as `fileMeta`.")


class KeywordsQuery(BaseModel):
    limit: str | None = Field(
        None, description=f"At most this many (1 to {MAX_LIMIT}, the default); any other value is ignored."
    )
    cursor: datetime | None = Field(None, description="Only chunks indexed before this time; a bad one is 400.")


def _number(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"invalid {name} parameter: {text!r} is not a number", param=name)
    return value


def _topk(request: web.Request) -> int:
    text = request.query.get("topk", "")
    if not text:
        return DEFAULT_TOPK
    try:
        topk = int(text)
    except ValueError:
        raise BadRequest(f"invalid topk parameter: {text!r} is not an integer", param="topk") from None
    return DEFAULT_TOPK if topk <= 0 else min(topk, MAX_TOPK)


# -- routes --------------------------------------------------------------------------------------------------


@routes.post("/index")
@responds(200, IndexAnswer)
@fails(400, 404, 502, 503)
@with_body(IndexBody)
async def index_chunks(request: web.Request, body: IndexBody) -> web.Response:
    """Indexes content chunks for semantic search, and completes the job that produced them.

    Each chunk gets 5–7 keywords from the default task model and is embedded, with them, by the default
    embedding model. The file's earlier chunks are replaced. Missing `jobId` or `leaserId`: 400 `serverops:
    missing parameter`; the job not leased: 404; leased by another leaser (or for another file): 422."""
    answer = await request.app[INDEX_COMMANDS].index(body.request(), command_context(request))
    return json_response(answer)


@routes.get("/search")
@responds(200, SearchAnswer)
@fails(400, 502, 503)
@query(SearchQuery)
async def search(request: web.Request) -> web.Response:
    """Searches indexed content using semantic similarity: the files nearest to `q`, nearest first.

    A question (as the default task model judges it) is also searched as a keyword query in its own words
    (`triedQuery`). One result per file, its nearest chunk. A `topk`, `radius` or `epsilon` that is not a number
    is 400. Nothing is written."""
    radius, epsilon = _number(request, "radius"), _number(request, "epsilon")
    searched = SearchRequest(
        request.query.get("q", ""),
        _topk(request),
        radius,
        epsilon,
        request.query.get("expand", "") == "files",
    )
    took: dict[str, float] = {}
    answer = json_response(await request.app[SEARCH_QUERIES].search(searched, took))
    # Where the time went (the models' calls, the vector look-up, the read store), for operators and bench/.
    answer.headers["Server-Timing"] = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in took.items())
    return answer


@routes.get("/keywords")
@responds(200, list[str])
@fails(400)
@query(KeywordsQuery)
async def list_keywords(request: web.Request) -> web.Response:
    """Lists all extracted keywords from indexed content: one comma-separated text per chunk, newest first.

    At most `limit` (1000 by default and at most), of chunks indexed before `cursor`; a bad cursor is 400."""
    return json_response(
        await request.app[SEARCH_QUERIES].keywords(Page.lenient(request.query.get("limit"), request.query.get("cursor")))
    )
