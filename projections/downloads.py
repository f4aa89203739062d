"""Model downloads: the queue read model, the download job, and the relay of pull progress between processes.

**The queue** (``DownloadsProjector``): one row per (backend, model) download
with its state; ``GET /queue`` shows the queued ones, oldest first.

**The job** (``DownloadJob``): a singleton job across worker processes and
machines (``infra.singleton``, lock ``downloads``), started by every API
process; the one holding the lock looks at the queue every
``CHAINLOOM_DOWNLOAD_POLL`` seconds (at once when poked), and begins the
oldest queued download of every backend that is not pulling already — at
most one pull per backend, pulls on different backends run side by side. It
records ``download.started`` (which also claims the download: a download
dequeued meanwhile is not started), pulls through the provider client
(``ProviderClient.pull``), and records ``download.completed`` or
``download.failed``. A download another holder had started (``running`` in
the queue while no pull of this holder runs it) was cut off when that holder
stopped: it is recorded as failed ("interrupted"), and the reconciler queues
it again after the retry delay. A holder that loses its lock stops its pulls.

**Cancelling**: ``DELETE /queue/cancel`` and a purge record
``download.cancelled`` on the log, in whichever process or machine answered.
The job looks at the log's last event of each download it pulls every
``CHAINLOOM_DOWNLOAD_CANCEL_CHECK`` seconds (0.25 s: one indexed read per
running pull); once it is no longer ``download.started`` the pull's task is
cancelled, which closes its HTTP stream to Ollama.

**Progress** (``ProgressWriter`` → ``ProgressFeed``): a pull's progress lines
do not go to the log (thousands of lines per model, and nobody replays
them); the SSE clients of ``GET /queue/inProgress`` may be connected to any
worker process, on any machine, while the pull runs in the job's process. So
the job appends the lines to a small table of the read store,
``download_progress`` (seq, line, at), every ``CHAINLOOM_DOWNLOAD_PROGRESS_INTERVAL``
seconds (0.15 s) in one transaction: consecutive lines of a pull that only
advance the byte count of the same layer are coalesced into the latest
(status changes are all kept), and only the latest 1000 rows are kept. Every
process runs one poller, and only while at least one of its clients is
connected: it reads the rows past the last ``seq`` it saw at the same
interval and fans them out to its clients. It works the same on SQLite (one
machine: the table is in ``views.sqlite``) and PostgreSQL (any number of
machines), costs one small insert per interval per pulling job and one
indexed read per interval per process with clients, and nothing otherwise.
Nothing waits for a client: each client has a bounded buffer whose oldest
lines are dropped when it does not keep up (the notes' non-blocking
delivery), and the pull only appends to an in-memory list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chainloom.commands.downloads import DownloadCommands
from chainloom.domain.downloads import QUEUED, RUNNING, Download
from chainloom.infra.providers.base import Endpoint, ProviderError, PullProgress
from chainloom.infra.readstore import ReadStore, storable_text
from chainloom.infra.schema import schema_lock
from chainloom.infra.singleton import Lock
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on
from chainloom.queries.downloads import DownloadQueue, DownloadRow

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


class DownloadsProjector(Projector):
    name = "downloads"
    tables = ("downloads",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {downloads} ("
        " id TEXT PRIMARY KEY, backend_id TEXT NOT NULL, base_url TEXT NOT NULL, model TEXT NOT NULL,"
        " state TEXT NOT NULL, error TEXT NOT NULL, queued_at BIGINT NOT NULL, changed_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {downloads_state} ON {downloads} (state, queued_at, id)",
        "CREATE INDEX IF NOT EXISTS {downloads_backend} ON {downloads} (backend_id)",
        "CREATE INDEX IF NOT EXISTS {downloads_model} ON {downloads} (model)",
        "CREATE INDEX IF NOT EXISTS {downloads_base_url} ON {downloads} (base_url)",
    )

    @on(Download.Queued)
    def queued(self, cursor: TemplatedCursor, event: Event) -> None:
        data, at = event["data"], _at(event)
        cursor.execute(
            "INSERT INTO {downloads} (id, backend_id, base_url, model, state, error, queued_at, changed_at)"
            " VALUES (?, ?, ?, ?, ?, '', ?, ?)",
            (event["aggregate_id"], data["backendId"], data["baseUrl"], data["model"], QUEUED, at, at),
        )

    @on(Download.Requeued)
    def requeued(self, cursor: TemplatedCursor, event: Event) -> None:
        at = _at(event)
        cursor.execute(
            "UPDATE {downloads} SET base_url = ?, state = ?, error = '', queued_at = ?, changed_at = ? WHERE id = ?",
            (event["data"]["baseUrl"], QUEUED, at, at, event["aggregate_id"]),
        )

    @on(Download.Started)
    def started(self, cursor: TemplatedCursor, event: Event) -> None:
        self._state(cursor, event, RUNNING)

    @on(Download.Completed)
    def completed(self, cursor: TemplatedCursor, event: Event) -> None:
        self._state(cursor, event, "completed")

    @on(Download.Cancelled)
    def cancelled(self, cursor: TemplatedCursor, event: Event) -> None:
        self._state(cursor, event, "cancelled")

    @on(Download.Dequeued)
    def dequeued(self, cursor: TemplatedCursor, event: Event) -> None:
        self._state(cursor, event, "dequeued")

    @on(Download.Failed)
    def failed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {downloads} SET state = ?, error = ?, changed_at = ? WHERE id = ?",
            ("failed", event["data"]["error"], _at(event), event["aggregate_id"]),
        )

    def _state(self, cursor: TemplatedCursor, event: Event, state: str) -> None:
        cursor.execute(
            "UPDATE {downloads} SET state = ?, changed_at = ? WHERE id = ?", (state, _at(event), event["aggregate_id"])
        )


# -- progress --------------------------------------------------------------------------------

PROGRESS_TABLE = "download_progress"
_PROGRESS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (seq BIGINT PRIMARY KEY, line TEXT NOT NULL, at BIGINT NOT NULL)"
)
# Rows kept in the table (a client's poller reads those past its last seq; more than enough for one interval).
PROGRESS_KEPT = 1000
# Lines waiting to be written at most (while the store is unreachable, the oldest are dropped).
_PENDING_LIMIT = 1000


def ensure_progress_table(store: ReadStore, env: dict[str, str]) -> None:
    """Create the progress table if missing (blocking); under the schema lock, as every process may start at once."""
    if store.looks_before_creating:  # PostgreSQL: only a missing table takes the schema lock
        with store.transaction(commit=False) as cursor:
            if PROGRESS_TABLE in store.relations(cursor):
                return
    # SQLite: no look first (a transaction that has read cannot start writing once another process wrote).
    with schema_lock(env), store.transaction() as cursor:
        cursor.execute(_PROGRESS_SCHEMA)


def progress_line(progress: PullProgress, model: str, base_url: str) -> dict[str, Any]:
    """The notes' progress event: ``digest``, ``total``, ``completed`` left out when empty."""
    line: dict[str, Any] = {"status": progress.status}
    if progress.digest:
        line["digest"] = progress.digest
    if progress.total:
        line["total"] = progress.total
    if progress.completed:
        line["completed"] = progress.completed
    line["model"] = model
    line["baseUrl"] = base_url
    return line


@dataclass
class _Pending:
    pull: str  # the download's key
    stage: tuple[str, str]  # (status, digest): lines of one stage only advance its byte count
    line: bytes


class ProgressWriter:
    """The job's side: collects the lines of its pulls and writes them to the progress table in batches."""

    def __init__(self, store: ReadStore, run_blocking: RunBlocking, interval: float) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._interval = interval
        self._pending: list[_Pending] = []
        self._seq: int | None = None  # the last seq written (read from the table when this process begins)
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def add(self, pull: str, line: dict[str, Any]) -> None:
        """Never blocks: a pull hands over its line and goes on."""
        encoded = json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()
        stage = (line.get("status", ""), line.get("digest", ""))
        for pending in reversed(self._pending):
            if pending.pull == pull:
                if pending.stage == stage:
                    pending.line = encoded  # the same layer, further along: only the latest matters
                    return
                break
        self._pending.append(_Pending(pull, stage, encoded))
        if len(self._pending) > _PENDING_LIMIT:
            del self._pending[0]
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="download-progress")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending:  # the last lines (a pull's "success") still reach the clients
            try:
                await self._flush()
            except Exception:  # noqa: BLE001 - shutting down; progress is ephemeral
                logger.debug("could not write the last progress lines", exc_info=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:  # noqa: BLE001 - progress is ephemeral: a lost batch is only missed by its clients
                logger.warning("could not write download progress", exc_info=True)
            await asyncio.sleep(self._interval)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await self._run_blocking(self._write, [p.line.decode() for p in batch])

    def _write(self, lines: list[str]) -> None:
        now = time.time_ns()
        with self._store.transaction() as cursor:
            if self._seq is None:
                cursor.execute(f"SELECT COALESCE(MAX(seq), 0) AS seq FROM {PROGRESS_TABLE}")
                row = cursor.fetchone()
                self._seq = int(row["seq"]) if row else 0
            first = self._seq + 1
            cursor.executemany(
                f"INSERT INTO {PROGRESS_TABLE} (seq, line, at) VALUES (?, ?, ?)",
                [(first + i, line, now) for i, line in enumerate(lines)],
            )
            last = first + len(lines) - 1
            if last // PROGRESS_KEPT != self._seq // PROGRESS_KEPT:  # now and then, not at every batch
                cursor.execute(f"DELETE FROM {PROGRESS_TABLE} WHERE seq <= ?", (last - PROGRESS_KEPT,))
        self._seq = last

    def lost_lock(self) -> None:
        """Another process may write next: read the last seq again before writing."""
        self._seq = None


class ProgressSubscription:
    """One SSE client's lines: a bounded buffer whose oldest lines go when the client does not keep up."""

    def __init__(self, size: int) -> None:
        self._lines: deque[bytes] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, line: bytes) -> None:
        self._lines.append(line)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self, timeout: float) -> list[bytes]:
        """The lines waiting, after at most ``timeout`` seconds (none if nothing came)."""
        if not self._lines and not self.closed:
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        lines = list(self._lines)
        self._lines.clear()
        self._ready.clear()
        return lines


class ProgressFeed:
    """A process's side: one poller of the progress table, running only while clients are connected."""

    def __init__(self, store: ReadStore, run_blocking: RunBlocking, interval: float, buffer_size: int) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._interval = interval
        self._buffer_size = buffer_size
        self._subscribers: set[ProgressSubscription] = set()
        self._task: asyncio.Task | None = None
        self._started = asyncio.Event()
        self._closed = False

    async def subscribe(self) -> ProgressSubscription:
        """A new client: it gets every line written from now on (once the poller knows where the table ends)."""
        subscription = ProgressSubscription(self._buffer_size)
        if self._closed:
            subscription.close()
            return subscription
        self._subscribers.add(subscription)
        if self._task is None or self._task.done():
            self._started = asyncio.Event()
            self._task = asyncio.create_task(self._poll(self._started), name="download-progress-feed")
        await self._started.wait()
        return subscription

    def unsubscribe(self, subscription: ProgressSubscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every stream (service shutdown)."""
        self._closed = True
        for subscription in self._subscribers:
            subscription.close()
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
        self._started.set()

    async def _poll(self, started: asyncio.Event) -> None:
        last: int | None = None
        while self._subscribers:
            try:
                if last is None:  # the clients get the lines written after they connected
                    try:
                        last = await self._run_blocking(self._last_seq)
                    finally:
                        started.set()
                else:
                    rows = await self._run_blocking(self._after, last)
                    for seq, line in rows:
                        last = seq
                        for subscription in list(self._subscribers):
                            subscription.offer(line)
            except Exception:  # noqa: BLE001 - try again at the next interval
                logger.warning("could not read download progress", exc_info=True)
            await asyncio.sleep(self._interval)

    def _last_seq(self) -> int:
        rows = self._store.query(f"SELECT COALESCE(MAX(seq), 0) AS seq FROM {PROGRESS_TABLE}")
        return int(rows[0]["seq"])

    def _after(self, seq: int) -> list[tuple[int, bytes]]:
        rows = self._store.query(
            f"SELECT seq, line FROM {PROGRESS_TABLE} WHERE seq > ? ORDER BY seq LIMIT 1000", (seq,)
        )
        return [(int(r["seq"]), r["line"].encode()) for r in rows]


# -- the job -----------------------------------------------------------------------------------


@dataclass
class _Pull:
    row: DownloadRow
    task: asyncio.Task | None = None
    started: bool = False  # download.started is on the log: from now on a cancel there ends it


INTERRUPTED = "interrupted: the process pulling it stopped before the pull ended"


class DownloadJob:
    """Pulls queued downloads in the one process holding the ``downloads`` lock (see the module's docstring)."""

    def __init__(
        self,
        commands: DownloadCommands,
        queue: DownloadQueue,
        last_event: Callable[[str], Any],
        clients: Any,
        lock: Lock,
        run_blocking: RunBlocking,
        progress: ProgressWriter,
        *,
        poll: float = 1.0,
        cancel_check: float = 0.25,
    ) -> None:
        """``last_event(key)``: the latest event of a download on the log (blocking); ``clients``: the process's
        provider clients (``infra.providers.open_clients``)."""
        self._commands = commands
        self._queue = queue
        self._last_event = last_event
        self._clients = clients
        self._lock = lock
        self._run_blocking = run_blocking
        self._progress = progress
        self._poll = poll
        self._cancel_check = cancel_check
        self._pulls: dict[str, _Pull] = {}
        self._holding = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def pulling(self) -> list[str]:
        """The keys of the downloads this process pulls now."""
        return list(self._pulls)

    def start(self) -> None:
        self._progress.start()
        self._tasks = [
            asyncio.create_task(self._run(), name="download-job"),
            asyncio.create_task(self._watch(), name="download-cancel-watch"),
        ]

    def poke(self) -> None:
        """Something may have been queued: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        # The job's loop is let finish its step rather than cancelled: a cancel would leave a lock attempt
        # running in its thread, which could take the lock after the release below and keep it.
        self._stopping = True
        self._wake.set()
        for task in self._tasks[1:]:  # the cancel watch
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stop_pulls()
        await self._progress.stop()
        if self._holding:
            self._holding = False
        await self._run_blocking(self._lock.release)

    async def _stop_pulls(self) -> None:
        tasks = [pull.task for pull in self._pulls.values() if pull.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                held = await self._run_blocking(self._lock.acquire)
            except Exception:  # noqa: BLE001 - the store is unreachable: try again later
                logger.warning("download job: could not take the downloads lock", exc_info=True)
                held = False
            if held:
                if not self._holding:
                    logger.info("download job: took the downloads lock; pulling here")
                    self._holding = True
                try:
                    if not self._stopping:
                        await self._step()
                except Exception:  # noqa: BLE001 - the next step tries again
                    logger.warning("download job: a step failed", exc_info=True)
            elif self._holding:
                logger.warning("download job: lost the downloads lock; stopping the pulls here")
                self._holding = False
                self._progress.lost_lock()
                await self._stop_pulls()
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _step(self) -> None:
        rows: list[DownloadRow] = await self._run_blocking(self._queue.active)
        busy = {pull.row.backend_id for pull in self._pulls.values()}
        for row in rows:
            if row.state == RUNNING and row.key not in self._pulls:
                # Started by a holder that stopped (or lost the lock) before the pull ended.
                await self._commands.fail(row.key, INTERRUPTED)
            elif row.state == QUEUED and row.backend_id not in busy and row.key not in self._pulls:
                busy.add(row.backend_id)
                pull = _Pull(row)
                self._pulls[row.key] = pull
                pull.task = asyncio.create_task(self._pull(pull), name=f"pull {row.model} on {row.base_url}")

    async def _pull(self, pull: _Pull) -> None:
        key = pull.row.key
        try:
            claimed = await self._commands.start(key)
            if claimed is None:
                return  # dequeued (or taken) meanwhile
            pull.started = True
            base_url, model = claimed
            logger.info("download job: pulling %s on %s", model, base_url)
            try:
                stream = self._clients.client(Endpoint("ollama", base_url)).pull(model)
                try:
                    async for progress in stream:
                        self._progress.add(key, progress_line(progress, model, base_url))
                finally:
                    close = getattr(stream, "aclose", None)
                    if close is not None:
                        await close()  # closes the HTTP stream to Ollama at once (also when cancelled)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - recorded as the download's failure
                pull.started = False  # ended here: what the log says next is this job's own record
                if isinstance(error, ProviderError):
                    logger.warning("download job: pulling %s on %s failed: %s", model, base_url, error)
                    message = str(error)
                else:
                    logger.warning("download job: pulling %s on %s failed", model, base_url, exc_info=True)
                    message = f"{type(error).__name__}: {error}"
                await self._commands.fail(key, storable_text(message))
            else:
                pull.started = False
                logger.info("download job: pulled %s on %s", model, base_url)
                await self._commands.complete(key)
        except asyncio.CancelledError:
            logger.info("download job: stopped pulling %s on %s", pull.row.model, pull.row.base_url)
            raise
        except Exception:  # noqa: BLE001 - recording failed: the next holder finds it running and fails it
            logger.warning("download job: could not record the pull of %s", key, exc_info=True)
        finally:
            if self._pulls.get(key) is pull:
                del self._pulls[key]
            self.poke()  # the backend is free for its next download

    async def _watch(self) -> None:
        """End the pulls whose download was cancelled on the log (by any process, on any machine)."""
        while True:
            await asyncio.sleep(self._cancel_check)
            for key, pull in list(self._pulls.items()):
                if not pull.started or pull.task is None or pull.task.done():
                    continue
                try:
                    latest = await self._run_blocking(self._last_event, key)
                except Exception:  # noqa: BLE001 - look again at the next check
                    logger.warning("download job: could not look for a cancel of %s", key, exc_info=True)
                    continue
                if not isinstance(latest, Download.Started) and pull.started and not pull.task.done():
                    logger.info("download job: %s was cancelled; stopping its pull", key)
                    pull.task.cancel()
