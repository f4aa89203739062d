"""The activity the log cannot tell: reads, and requests that failed before writing anything (platform notes §12).

What a request changed is on the log, and ``projections.activity`` reads it there. A read (``GET
/files/{id}``, ``GET /search`` …), a chat completion (which writes only its run), and a write that was
refused (a duplicate registration, an upload to a missing folder) leave nothing on it; this middleware
records those, for the routes of the areas §12 tracks (``TRACKED``: users, access entries, files and
folders, the index, chats, Telegram frontends, the download queue), in a table beside the read models
(``activity_records``) that ``queries.activity`` answers from with the projection's rows.

A record holds the route's operation and subject, the request id, the path's ``id`` as the entity,
its other path values and a few named query values as metadata, when it began and ended, and the
error message of a failure — never a body, a header or a credential. Recording never fails nor slows a
request: the middleware hands a small tuple to ``ActivityRecorder`` (a list append), which writes them in
batches, at most every ``FLUSH_INTERVAL`` seconds, from the store's threads; a batch that cannot be
written is logged and dropped, and at most ``PENDING_LIMIT`` records wait (the oldest go first). The
activity routes write what is waiting first (``flush``), so this process's own reads are shown at once.
The table keeps about the newest ``CHAINLOOM_ACTIVITY_RETENTION`` records: each process trims it after
every tenth of that many records it wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

from chainloom.domain.errors import DomainError
from chainloom.infra.readstore import PostgresReadStore, ReadStore, storable_text
from chainloom.infra.schema import schema_lock
from chainloom.projections.runner import ProjectionFaulted, ReadModelsBehind
from chainloom.web.errors import status_of
from chainloom.web.middleware import REQUEST_ID

logger = logging.getLogger(__name__)

RECORDS_TABLE = "activity_records"
# One index, by time (the newest, and the retention's trim): every other index would be paid for by every read
# the service answers; the activity routes scan the (bounded) table instead.
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {RECORDS_TABLE} ("
    " id TEXT NOT NULL, request_id TEXT NOT NULL, operation TEXT NOT NULL, subject TEXT NOT NULL,"
    " entity_id TEXT NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, status INTEGER NOT NULL,"
    " error TEXT NOT NULL, metadata TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {RECORDS_TABLE}_newest ON {RECORDS_TABLE} (end_ns)",
)
# Seconds records wait at most before they are written (they are written at once for the activity routes).
FLUSH_INTERVAL = 0.1
# Records waiting at most (while the store cannot be written, the oldest are dropped).
PENDING_LIMIT = 10_000
_COLUMNS = "id, request_id, operation, subject, entity_id, start_ns, end_ns, status, error, metadata"
# The longest metadata value and error message kept (characters).
MAX_VALUE = 256
MAX_ERROR = 2000


# -- what is recorded ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tracked:
    """A route's activity: its operation and subject; ``reads``: recorded whatever it answers (else only a
    failure: its success is on the log); ``query``: the query values kept as metadata."""

    operation: str
    subject: str
    reads: bool = False
    query: tuple[str, ...] = ()


def _read(operation: str, subject: str, *query: str) -> Tracked:
    return Tracked(operation, subject, True, query)


def _write(operation: str, subject: str) -> Tracked:
    return Tracked(operation, subject)


# By method and route (the root's path template). Sign-ins are not here: refused ones are on the log too.
TRACKED: dict[tuple[str, str], Tracked] = {
    # users
    ("POST", "/register"): _write("register", "user"),
    ("POST", "/ui/register"): _write("register", "user"),
    ("POST", "/users"): _write("create", "user"),
    ("GET", "/users"): _read("list", "users"),
    ("GET", "/users/{id}"): _read("read", "user"),
    ("PUT", "/users/{id}"): _write("update", "user"),
    ("DELETE", "/users/{id}"): _write("delete", "user"),
    # access
    ("POST", "/access-control"): _write("create", "access_entry"),
    ("GET", "/access-control"): _read("list", "access_entries", "identity", "resource"),
    ("GET", "/access-control/{id}"): _read("read", "access_entry"),
    ("PUT", "/access-control/{id}"): _write("update", "access_entry"),
    ("DELETE", "/access-control/{id}"): _write("delete", "access_entry"),
    # files and folders
    ("POST", "/files"): _write("create", "file"),
    ("GET", "/files"): _read("list", "files", "path"),
    ("GET", "/files/{id}"): _read("read", "file"),
    ("GET", "/files/{id}/download"): _read("read", "file"),
    ("PUT", "/files/{id}"): _write("update", "file"),
    ("DELETE", "/files/{id}"): _write("delete", "file"),
    ("PUT", "/files/{id}/name"): _write("rename", "file"),
    ("PUT", "/files/{id}/move"): _write("move", "file"),
    ("POST", "/folders"): _write("create", "folder"),
    ("PUT", "/folders/{id}/name"): _write("rename", "folder"),
    ("PUT", "/folders/{id}/move"): _write("move", "folder"),
    ("DELETE", "/folders/{id}"): _write("delete", "folder"),
    # the index
    ("POST", "/index"): _write("index", "document"),
    ("GET", "/search"): _read("search", "query", "q", "topk"),
    ("GET", "/keywords"): _read("list", "keywords"),
    # chats (a completion writes only its run: it is recorded as a read)
    ("POST", "/chats"): _write("create", "chat-session"),
    ("GET", "/chats"): _read("list", "chats"),
    ("GET", "/chats/{id}"): _read("read", "chat-session"),
    ("POST", "/chats/{id}/chat"): _write("chat", "message"),
    ("POST", "/chats/{id}/instruction"): _write("add", "instruction"),
    ("POST", "/v1/chat/completions"): _read("openai_chat_completion", "request"),
    ("POST", "/openai/{chainID}/v1/chat/completions"): _read("openai_chat_completion", "request"),
    # Telegram frontends
    ("POST", "/telegram-frontends"): _write("create", "telegram_frontend"),
    ("GET", "/telegram-frontends"): _read("list", "telegram_frontends"),
    ("GET", "/telegram-frontends/users/{userId}"): _read("list", "telegram_frontends"),
    ("GET", "/telegram-frontends/{id}"): _read("get", "telegram_frontend"),
    ("PUT", "/telegram-frontends/{id}"): _write("update", "telegram_frontend"),
    ("DELETE", "/telegram-frontends/{id}"): _write("delete", "telegram_frontend"),
    # model downloads
    ("GET", "/queue"): _read("list", "downloads"),
    ("DELETE", "/queue/cancel"): _write("cancel", "download"),
    ("DELETE", "/queue/{model}"): _write("dequeue", "download"),
}


class Record(NamedTuple):
    request_id: str
    operation: str
    subject: str
    entity_id: str
    start_ns: int
    end_ns: int
    status: int
    error: str
    metadata: str


def _metadata(request: web.Request, tracked: Tracked) -> str:
    kept = {name: value[:MAX_VALUE] for name, value in request.match_info.items() if name != "id"}
    for name in tracked.query:
        value = request.query.get(name)
        if value:
            kept[name] = value[:MAX_VALUE]
    return json.dumps(kept, separators=(",", ":")) if kept else "{}"  # ASCII: whatever a client sent, it is storable


# -- the middleware ------------------------------------------------------------------------------------------

# This process's recorder (also ``web.keys.ACTIVITY_RECORDER``).
ACTIVITY_RECORDER: web.AppKey[ActivityRecorder] = web.AppKey("activity_recorder")


@web.middleware
async def activity_record_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Record the tracked routes' reads and failures (inside the error envelope's middleware: it sees the
    refusal itself, and records the message the client gets)."""
    resource = request.match_info.route.resource
    tracked = TRACKED.get((request.method, resource.canonical)) if resource is not None else None
    if tracked is None:
        return await handler(request)
    start = time.time_ns()
    try:
        response = await handler(request)
    except DomainError as error:
        _record(request, tracked, start, status_of(error), error.message)
        raise
    except (ProjectionFaulted, ReadModelsBehind) as error:
        _record(request, tracked, start, 503, str(error))
        raise
    except web.HTTPException as error:
        if error.status >= 400:
            _record(request, tracked, start, error.status, error.reason)
        raise
    except Exception:
        _record(request, tracked, start, 500, "internal error")
        raise
    if response.status >= 400:
        _record(request, tracked, start, response.status, getattr(response, "message", "") or response.reason or "")
    elif tracked.reads:
        _record(request, tracked, start, response.status, "")
    return response


def _record(request: web.Request, tracked: Tracked, start: int, status: int, error: str) -> None:
    try:
        recorder = request.app.get(ACTIVITY_RECORDER)
        request_id = request.get(REQUEST_ID, "")
        if recorder is None or not request_id:
            return
        recorder.add(
            Record(
                request_id, tracked.operation, tracked.subject, request.match_info.get("id", "")[:MAX_VALUE], start,
                time.time_ns(), status, error, _metadata(request, tracked),
            )
        )  # fmt: skip
    except Exception:  # noqa: BLE001 — recording never fails a request
        logger.debug("could not record the activity of %s %s", request.method, request.path, exc_info=True)


# -- the records ------------------------------------------------------------------------------------------------


def ensure_records_table(store: ReadStore, env: Mapping[str, str]) -> None:
    """Create the records' table if missing (blocking); under the schema lock, as every process may start at once."""
    if store.looks_before_creating:  # PostgreSQL: only a missing table takes the schema lock
        with store.transaction(commit=False) as cursor:
            if RECORDS_TABLE in store.relations(cursor):
                return
    with schema_lock(env), store.transaction() as cursor:
        for statement in _SCHEMA:
            cursor.execute(statement)


class ActivityRecorder:
    """This process's records: taken at once, written in batches (see the module's docstring)."""

    def __init__(
        self,
        store: ReadStore,
        run_blocking: Callable[..., Awaitable[Any]],
        retention: int,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._retention = retention
        self._trim_every = max(1, retention // 10)
        self._interval = interval
        self._pending: deque[Record] = deque(maxlen=PENDING_LIMIT)
        self._writing = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._since_trim = 0

    def add(self, record: Record) -> None:
        """Never blocks: the record is written within ``interval`` seconds."""
        self._pending.append(record)
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._soon(), name="activity-records")

    async def _soon(self) -> None:
        await asyncio.sleep(self._interval)
        await self.flush()

    async def flush(self) -> None:
        """Write what is waiting now (and wait for a write in progress); a failure is logged, not raised."""
        async with self._writing:
            if not self._pending:
                return
            batch = list(self._pending)
            self._pending.clear()
            try:
                await self._run_blocking(self._write, batch)
            except Exception:  # noqa: BLE001 — activity is a record, not a promise: the batch is dropped
                logger.warning("could not record the activity of %d requests", len(batch), exc_info=True)

    async def close(self) -> None:
        """Write the last records (at shutdown, before the store closes)."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        await self.flush()

    def _write(self, batch: list[Record]) -> None:
        rows = [
            (uuid.uuid4().hex, r.request_id, r.operation, r.subject, storable_text(r.entity_id, MAX_VALUE), r.start_ns,
             r.end_ns, r.status, storable_text(r.error, MAX_ERROR) if r.error else "", r.metadata)
            for r in batch
        ]  # fmt: skip
        self._since_trim += len(rows)
        with self._store.transaction() as cursor:
            if isinstance(self._store, PostgresReadStore):  # COPY: a sixth of the client's work of an INSERT per row
                with cursor.raw.copy(f"COPY {RECORDS_TABLE} ({_COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(f"INSERT INTO {RECORDS_TABLE} ({_COLUMNS}) VALUES ({', '.join('?' * 10)})", rows)
            if self._since_trim >= self._trim_every:
                cursor.execute(
                    f"DELETE FROM {RECORDS_TABLE} WHERE end_ns < (SELECT end_ns FROM {RECORDS_TABLE}"
                    " ORDER BY end_ns DESC LIMIT 1 OFFSET ?)",
                    (self._retention - 1,),
                )
                self._since_trim = 0
