"""Read model of activity (``activity``, ``activity_alerts``): what each request did, as the log tells it.

Every event carries the request that wrote it (its metadata's ``request_id``). The events of the areas
the platform notes track (§12: users, access entries, files and folders, the index, chats, Telegram
frontends, model downloads) and the task-chain runs are recorded here as *activity events*, each an
operation on a subject (``file.created`` → create/file, ``user.signed_in`` → login/user …, the table
``RECORDED`` below): one row per (request, operation, subject, entity). A request's further events
on the same entity — a file's chunks as ``/index`` writes them, a run's end — fold into its row,
which then spans from the first to the last (``start``, ``end``); an error the events carry (a refused
sign-in, a failed download, a failed run) is the row's ``error``. ``metadata`` keeps a few string
fields of the first event, never content nor secrets (a file's name and type, not its bytes; a Telegram
frontend's chain, not its token). Events without a request id are not activity.

A chat turn is one chat/message row (the user's message and the answer), a system message added alone
an add/instruction. A task-chain run is one run/task_chain row on the run id; its steps (the ``task_runs``
read model's, joined by the run id) are the *state* of its request. A step the engine marked with an
``alert`` (its transition took a branch with ``alert_on_match``) adds an alert.

Reads and failures that wrote nothing are not on the log: ``web.activity_record`` keeps them beside,
in a table of its own; ``queries.activity`` answers from both.

Retention: rows are numbered in the order they were last touched (``n``), and after each batch only
the newest ``retention`` of each table are kept (``CHAINLOOM_ACTIVITY_RETENTION``) — at most that many,
fewer when a row was touched again. The times and numbering come from the events, so a rebuild gives
the same rows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from chainloom.domain.base import DomainEvent, public_event_type
from chainloom.domain.chats import Chat
from chainloom.domain.documents import File, Folder
from chainloom.domain.downloads import Download
from chainloom.domain.file_chunks import FileChunks
from chainloom.domain.identity import INVALID_CREDENTIALS, AccessEntry, SignIn, User
from chainloom.domain.task_runs import TaskRun
from chainloom.domain.telegram import TelegramFrontend
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on

DEFAULT_RETENTION = 10_000
# A task-chain run, as an activity (its entity is the run id).
RUN = ("run", "task_chain")
# The longest metadata value kept (characters).
MAX_METADATA_VALUE = 256
# Alert ids are derived from the step's event (a rebuild gives the same ids).
_ALERT_IDS = uuid.UUID("5b0a7c52-4a51-4f0e-9a54-7a2b7c0d1e11")


@dataclass(frozen=True)
class Recorded:
    """How an event is recorded: its operation and subject, the data fields kept as metadata (their values as
    strings), and the error it carries (a data field, or a fixed message)."""

    operation: str
    subject: str
    metadata: tuple[str, ...] = ()
    error_field: str = ""
    error: str = ""


_ENTRY = ("identity", "resource", "resourceType", "permission")
_FRONTEND = ("userId", "chatChain", "description")  # never the token (sealed, but a secret's all the same)

# Every event that is activity, by class (a renamed event breaks here, at import).
RECORDED: dict[type[DomainEvent], Recorded] = {
    # users (user.registered: register or create by who asked, see ``_user_registered``)
    User.Recreated: Recorded("create", "user", ("email",)),
    User.Updated: Recorded("update", "user", ("email",)),
    User.Deleted: Recorded("delete", "user"),
    User.SignedIn: Recorded("login", "user"),
    User.SignInFailed: Recorded("login", "user", error_field="reason"),
    SignIn.Refused: Recorded("login", "user", ("email",), error=INVALID_CREDENTIALS),
    # access
    AccessEntry.Granted: Recorded("create", "access_entry", _ENTRY),
    AccessEntry.Regranted: Recorded("create", "access_entry", _ENTRY),
    AccessEntry.Changed: Recorded("update", "access_entry", _ENTRY),
    AccessEntry.Revoked: Recorded("delete", "access_entry"),
    # files and folders
    File.Created: Recorded("create", "file", ("name", "parentId", "contentType", "size")),
    File.ContentReplaced: Recorded("update", "file", ("contentType", "size")),
    File.Renamed: Recorded("rename", "file", ("name",)),
    File.Moved: Recorded("move", "file", ("parentId",)),
    File.Deleted: Recorded("delete", "file"),
    Folder.Created: Recorded("create", "folder", ("name", "parentId")),
    Folder.Renamed: Recorded("rename", "folder", ("name",)),
    Folder.Moved: Recorded("move", "folder", ("parentId",)),
    Folder.Deleted: Recorded("delete", "folder"),
    # the index (a file's chunks, written by POST /index)
    FileChunks.Started: Recorded("index", "document"),
    FileChunks.ChunkIndexed: Recorded("index", "document", ("model",)),
    # chats (chat.message_added: a turn's messages or an instruction, see ``_message_added``)
    Chat.Started: Recorded("create", "chat-session", ("owner",)),
    # Telegram frontends (their runtime's polls and replies are not requests)
    TelegramFrontend.Created: Recorded("create", "telegram_frontend", _FRONTEND),
    TelegramFrontend.Updated: Recorded("update", "telegram_frontend", _FRONTEND),
    TelegramFrontend.Deleted: Recorded("delete", "telegram_frontend"),
    # model downloads (queued by the reconciler, pulled by the download job)
    Download.Queued: Recorded("queue", "download", ("model", "backendId")),
    Download.Requeued: Recorded("queue", "download", ("model", "backendId")),
    Download.Completed: Recorded("complete", "download"),
    Download.Failed: Recorded("complete", "download", error_field="error"),
    Download.Cancelled: Recorded("cancel", "download"),
    Download.Dequeued: Recorded("dequeue", "download"),
    # task-chain runs (their steps: the task_runs read model)
    TaskRun.Started: Recorded(*RUN, ("chainId", "inputType")),
    TaskRun.Finished: Recorded(*RUN),
    TaskRun.Failed: Recorded(*RUN, error_field="error"),
}
_BY_TYPE: dict[str, Recorded] = {}  # the same, by public type (filled below)
_Key = tuple[str, str, str, str]  # request id, operation, subject, entity id


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


def request_of(event: Event) -> str:
    metadata = event.get("metadata") or {}
    request_id = metadata.get("request_id") if isinstance(metadata, dict) else None
    return request_id if isinstance(request_id, str) else ""


def _metadata(data: dict[str, Any], fields: tuple[str, ...]) -> str:
    kept = {}
    for name in fields:
        value = data.get(name)
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            continue
        kept[name] = str(value)[:MAX_METADATA_VALUE]
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


class ActivityProjector(Projector):
    name = "activity"
    tables = ("activity", "activity_alerts")
    schema = (
        "CREATE TABLE IF NOT EXISTS {activity} ("
        " request_id TEXT NOT NULL, operation TEXT NOT NULL, subject TEXT NOT NULL, entity_id TEXT NOT NULL,"
        " n BIGINT NOT NULL, id TEXT NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL,"
        " error TEXT NOT NULL, metadata TEXT NOT NULL, PRIMARY KEY (request_id, operation, subject, entity_id))",
        # Retention and the newest first; the requests of an operation.
        "CREATE INDEX IF NOT EXISTS {activity_newest} ON {activity} (n)",
        "CREATE INDEX IF NOT EXISTS {activity_operations} ON {activity} (operation, subject, request_id)",
        "CREATE TABLE IF NOT EXISTS {activity_alerts} ("
        " n BIGINT PRIMARY KEY, id TEXT NOT NULL, request_id TEXT NOT NULL, message TEXT NOT NULL,"
        " metadata TEXT NOT NULL, at_ns BIGINT NOT NULL)",
    )

    def __init__(self, suffix: str = "", retention: int = DEFAULT_RETENTION) -> None:
        super().__init__(suffix)
        self.retention = retention
        # The batch's rows, written by ``flush`` (one statement for all: a batch costs one round trip, not one per
        # event): by key, [n, id, start, end, error, metadata] with the batch's own events folded in; its alerts.
        self._rows: dict[_Key, list[Any]] = {}
        self._alerts: list[tuple[Any, ...]] = []
        # The last row number of each table in this batch (read at its first row; None: no row yet).
        self._last: dict[str, int | None] = {"activity": None, "activity_alerts": None}

    def aside(self, suffix: str) -> ActivityProjector:
        return type(self)(suffix, self.retention)

    # -- the events --------------------------------------------------------------------------------

    @on(*RECORDED)
    def recorded(self, cursor: TemplatedCursor, event: Event) -> None:
        recorded = _BY_TYPE[event["event_type"]]
        data = event["data"]
        error = str(data.get(recorded.error_field) or "") if recorded.error_field else recorded.error
        self._record(cursor, event, recorded.operation, recorded.subject, error, _metadata(data, recorded.metadata))

    @on(User.Registered)
    def user_registered(self, cursor: TemplatedCursor, event: Event) -> None:
        """Signing up (``/register``: nobody signed in asked) or a user created by someone (``POST /users``, the
        worker account at start-up). With security off every caller is anonymous: both read as register."""
        actor = (event.get("metadata") or {}).get("actor", "")
        operation = "register" if actor in ("", "anonymous") else "create"
        self._record(cursor, event, operation, "user", "", _metadata(event["data"], ("email",)))

    @on(Chat.MessageAdded)
    def message_added(self, cursor: TemplatedCursor, event: Event) -> None:
        """A turn (chat/message: the user's message with the answer the chain gave it, in one row) or an
        instruction (add/instruction: a system message its request added alone)."""
        operation = ("chat", "message")
        if event["data"].get("role") == "system" and self._metadata_of(cursor, event, operation) is None:
            operation = ("add", "instruction")
        self._record(cursor, event, *operation, "", _metadata(event["data"], ("messageId",)))

    @on(TaskRun.StepRecorded)
    def step_recorded(self, cursor: TemplatedCursor, event: Event) -> None:
        """A step is the state of its request (read from ``task_runs``); one marked with an alert raises it."""
        step = event["data"].get("step") or {}
        message = step.get("alert") if isinstance(step, dict) else None
        request_id = request_of(event)
        if not message or not isinstance(message, str) or not request_id:
            return
        run = self._metadata_of(cursor, event, RUN)
        metadata = {
            "chainId": str(json.loads(run).get("chainId", "")) if run else "",
            "runId": event["aggregate_id"],
            "taskId": str(step.get("taskID", "")),
            "transition": str(step.get("transition", "")),
        }
        self._alerts.append(
            (
                self._next(cursor, "activity_alerts"), str(uuid.uuid5(_ALERT_IDS, event["id"])), request_id, message,
                json.dumps(metadata, separators=(",", ":"), ensure_ascii=False), _at(event),
            )
        )  # fmt: skip

    # -- rows ------------------------------------------------------------------------------------------

    def _record(
        self, cursor: TemplatedCursor, event: Event, operation: str, subject: str, error: str, metadata: str
    ) -> None:
        """The request's row for this operation on the event's aggregate: made, or stretched to this event."""
        request_id = request_of(event)
        if not request_id:
            return
        at = _at(event)
        n = self._next(cursor, "activity")
        row = self._rows.get(key := (request_id, operation, subject, event["aggregate_id"]))
        if row is None:
            self._rows[key] = [n, event["id"], at, at, error, metadata]
            return
        row[0], row[3] = n, at
        row[4] = error or row[4]
        row[5] = row[5] if row[5] != "{}" else metadata

    def _metadata_of(self, cursor: TemplatedCursor, event: Event, activity: tuple[str, str]) -> str | None:
        """The metadata of the event's request's row of ``activity`` on its aggregate; None when it has none."""
        key = (request_of(event), *activity, event["aggregate_id"])
        row = self._rows.get(key)
        if row is not None:
            return str(row[5])
        cursor.execute(
            "SELECT metadata FROM {activity} WHERE request_id = ? AND operation = ? AND subject = ? AND entity_id = ?", key
        )
        found = cursor.fetchone()
        return None if found is None else str(found["metadata"])

    def _next(self, cursor: TemplatedCursor, table: str) -> int:
        last = self._last[table]
        if last is None:
            cursor.execute(f"SELECT COALESCE(MAX(n), 0) AS n FROM {{{table}}}")
            row = cursor.fetchone()
            last = int(row["n"]) if row else 0
        self._last[table] = last + 1
        return last + 1

    def flush(self, cursor: Any) -> None:
        """Write the batch's rows (folded into those of earlier batches), then keep only the newest ``retention``
        of each table."""
        templated = self.templated(cursor)
        templated.executemany(
            "INSERT INTO {activity} (request_id, operation, subject, entity_id, n, id, start_ns, end_ns, error,"
            " metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (request_id, operation, subject, entity_id) DO UPDATE SET n = excluded.n,"
            " end_ns = excluded.end_ns,"
            " error = CASE WHEN excluded.error = '' THEN {activity}.error ELSE excluded.error END,"
            " metadata = CASE WHEN {activity}.metadata = '{{}}' THEN excluded.metadata ELSE {activity}.metadata END",
            [(*key, *row) for key, row in self._rows.items()],
        )
        templated.executemany(
            "INSERT INTO {activity_alerts} (n, id, request_id, message, metadata, at_ns) VALUES (?, ?, ?, ?, ?, ?)",
            self._alerts,
        )
        for table, last in self._last.items():
            if last is not None and last > self.retention:
                templated.execute(f"DELETE FROM {{{table}}} WHERE n <= ?", (last - self.retention,))
        self.discard()

    def discard(self) -> None:
        self._rows = {}
        self._alerts = []
        self._last = dict.fromkeys(self._last)


_BY_TYPE.update((public_event_type(event_class), recorded) for event_class, recorded in RECORDED.items())
