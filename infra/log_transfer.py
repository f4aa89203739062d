"""Moving a log whole: ``chainloom log export`` / ``log import``, and ``copy_log`` (point-in-time copies).

An export is JSON lines. Each event is one line, exactly the public shape ``/events`` answers (with its
``nid``), in log order: what an auditor reads, greps and keeps. A migration also needs what lives beside
the log and is not derived from it; ``--with-state`` appends it after the events, one row a line,
``{"beside": "<table>", "row": {…}}``:

- ``credentials`` — password hashes (``infra.credentials``): never on the log, so never in a public export;
- ``dispatch_positions`` / ``dispatch_outputs`` — where trigger dispatch stands (``infra.dispatch_log``),
  clamped to the export's last position;
- ``log_seals`` — the hash chain (``infra.seals``), its tombstones included, up to that position;
- ``blob`` — uploaded content (``infra.blobs``), 256 KiB a line in base64, whatever the source's blob store.

The index of unique values (``infra.unique_index``) is derived from the events: an import rebuilds it.
Not carried: idempotency keys (``infra.idempotency``: remembered answers that expire within a day) and
unfinished uploads.

An import goes into an EMPTY log only, in ONE transaction: a refused line (its number is said), a value held
twice, or a failure of the database leaves the target as it was. Every event keeps its position (``nid``)
and id; erased positions stay gaps (an import never hands them out again: SQLite's next rowid and
PostgreSQL's sequence are past the last one). The stored event is rebuilt from the public one as the mapper
stores it (``infra.envelope``): an internal event in the stream ``<aggregate_type>:<aggregate_id>`` at its
version, under the topic of the class its type names (``domain.base.declared_events``); an external event
in the stream of its identity at version 1. Its stored bytes are the public shape without ``nid``, written as
the mapper writes it, so an exported log imports into the very bytes it was exported from. PostgreSQL takes
the events by ``COPY`` with their positions, under the log's table lock; its sequence is then moved past them
and the table analysed (reads by position are planned as scans until it is). Blob content is written to the
target's blob store as it comes, outside the transaction: content-addressed, what a refused import leaves
there is an orphan the blob sweeper collects.

Without dispatch state (a public export), the trigger dispatcher starts at the imported head: the
executions the history caused are in it already, and must not run twice.

Everything here blocks.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import fcntl
import hashlib
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic

import chainloom.domain
from chainloom.domain.base import declared_events, public_event_type
from chainloom.domain.errors import Unprocessable
from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE, ExternalEvent, utc_day
from chainloom.domain.storable import check_storable, text_problem
from chainloom.infra import credentials, dispatch_log, seals, unique_index
from chainloom.infra.blobs import Blobs, BlobWriter
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.schema import POSTGRES_RELATIONS, SQLITE_RELATIONS
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import parse_ns

__all__ = ["ImportRefused", "copy_log", "export_command", "export_lines", "import_command", "import_lines"]

# Events read (export) or written (import) per statement.
EXPORT_BATCH = 5_000
IMPORT_BATCH = 2_000
# The dispatch position an import without dispatch state sets to its head (``projections.dispatch.NAME``).
TRIGGER_DISPATCH = "triggers"
BLOB = "blob"
_EXTERNAL_TOPIC = get_topic(ExternalEvent)
# The mapper's layout of a stored envelope (``EnvelopeMapper._state``), built once (``json.dumps`` builds one a call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_IDENTITY_ENCODER = json.JSONEncoder(ensure_ascii=False)
_TEXT_FIELDS = ("id", "created_at", "event_type", "event_source", "aggregate_type", "aggregate_id")


class ImportRefused(Exception):
    """An import that wrote nothing: the log is not empty, or a line is not one an export holds."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


# -- what is kept beside the log ---------------------------------------------------------------------


@dataclass(frozen=True)
class Beside:
    """A table of the log's database that a ``--with-state`` export carries, row by row."""

    table: str
    schema: Sequence[str]
    columns: tuple[str, ...]
    key: tuple[str, ...]  # upserted on it (a target that ran once has a dispatch position at 0); () to insert
    position: str | None = None  # rows whose column exceeds the export's last position are left out
    clamp: str | None = None  # a column lowered to the export's last position


# The seals (``infra.seals``) are carried by that module's own rows; blob content by ``Blobs``.
BESIDE = (
    Beside(credentials.TABLE, credentials.SCHEMA, ("user_id", "hash"), ("user_id",)),
    Beside(dispatch_log.POSITIONS, dispatch_log.SCHEMA, ("name", "position"), ("name",), clamp="position"),
    Beside(dispatch_log.OUTPUTS, dispatch_log.SCHEMA, ("source_nid", "output_id", "event_type"), (), position="source_nid"),
)


# -- the events --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _topics() -> dict[str, str]:
    """Public event type → the topic its class is stored under, for every event an aggregate declares."""
    for module in pkgutil.walk_packages(chainloom.domain.__path__, "chainloom.domain."):
        importlib.import_module(module.name)
    return {public_event_type(event_class): get_topic(event_class) for event_class in declared_events()}


def _postgres(log: EventLog) -> bool:
    return isinstance(log.recorder, PostgresApplicationRecorder)


def _existing_tables(log: EventLog) -> set[str]:
    with log.transaction(commit=False) as cursor:
        cursor.execute(POSTGRES_RELATIONS if _postgres(log) else SQLITE_RELATIONS)
        return {str(row["name"]).lower() for row in cursor.fetchall()}


def export_lines(
    log: EventLog,
    after: int = 0,
    until: int | None = None,
    types: Sequence[str] = (),
    with_state: bool = False,
    *,
    blobs: Blobs | None = None,
) -> Iterator[str]:
    """The events with ``after`` < nid <= ``until`` (default: the head when the export starts) whose type
    starts with one of ``types`` (default: all), one JSON line each (no newline), in log order, read
    ``EXPORT_BATCH`` at a time; then, ``with_state``, the rows kept beside the log, and the content of
    ``blobs`` when given."""
    if with_state and types:
        raise ValueError("--with-state carries the state of the whole log: it cannot go with --type")
    last = log.head() if until is None else until
    prefixes = tuple(types)
    # No upper bound in the query: with one, PostgreSQL may plan a scan of the whole range and a sort per batch
    # (a table whose statistics are not there yet: just imported); positions past ``last`` are dropped here.
    select = (
        f"SELECT {log.position_column} AS nid, state FROM {log.events_table}"
        f" WHERE {log.position_column} > ? ORDER BY {log.position_column} LIMIT ?"
    )
    position = after
    while position < last:
        with log.transaction(commit=False) as cursor:
            cursor.execute(select, (position, min(EXPORT_BATCH, last - position)))
            rows = cursor.raw.fetchall()
        if not rows:
            break
        for row in rows:
            if row["nid"] > last:
                break
            state = bytes(row["state"])
            if prefixes and not _event_type(state).startswith(prefixes):
                continue
            # The stored state is the public shape without nid, as ``json.dumps`` wrote it: the line is that
            # with nid appended, which is what ``EnvelopeMapper.to_public`` and then ``json.dumps`` would give.
            yield f'{state.decode().rstrip()[:-1]},"nid":{row["nid"]}}}'
        position = int(rows[-1]["nid"])
    if with_state:
        yield from _state_lines(log, last)
        yield from _seal_lines(log, last)
        if blobs is not None:
            yield from _blob_lines(blobs)


def _event_type(state: bytes) -> str:
    try:
        return str(orjson.loads(state)["event_type"])
    except orjson.JSONDecodeError:  # what only the json module reads (a lone surrogate somewhere)
        return str(json.loads(state)["event_type"])


def _state_lines(log: EventLog, last: int) -> Iterator[str]:
    existing = _existing_tables(log)
    for beside in BESIDE:
        if beside.table.lower() not in existing:
            continue
        where = f" WHERE {beside.position} <= ?" if beside.position else ""
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {', '.join(beside.columns)} FROM {beside.table}{where} ORDER BY {', '.join(beside.columns)}",
                (last,) if beside.position else (),
            )
            rows = cursor.fetchall()
        for row in rows:
            if beside.clamp is not None:
                row[beside.clamp] = min(int(row[beside.clamp]), last)
            yield json.dumps({"beside": beside.table, "row": row}, separators=(",", ":"), ensure_ascii=False)


def _seal_lines(log: EventLog, last: int) -> Iterator[str]:
    """Every seal up to ``last``, tombstones included: the target's chain is the source's (``audit verify``
    there proves the copy faithful), and its sealer goes on from the last one."""
    position = 0
    while batch := seals.seals(log, after=position, until=last, limit=EXPORT_BATCH):
        for seal in batch:
            yield json.dumps({"beside": seals.TABLE, "row": seal.row()}, separators=(",", ":"))
        position = batch[-1].position


def _blob_lines(blobs: Blobs) -> Iterator[str]:
    for digest in blobs.stale(float("-inf")):  # not touched within -inf seconds: every blob
        reader = blobs.open(digest)
        try:
            seq = 0
            chunk = reader.read()
            while chunk or seq == 0:  # (an empty file's content is one line too)
                row = {"hash": digest, "seq": seq, "data": base64.b64encode(chunk).decode()}
                yield json.dumps({"beside": BLOB, "row": row}, separators=(",", ":"))
                seq += 1
                chunk = reader.read()
        finally:
            reader.close()


# -- import ------------------------------------------------------------------------------------------


def _stored(event: dict[str, Any], text: str, line: int, checked: bool) -> StoredEvent:
    """The stored event of a public one (``text`` its line), as the mapper would have stored it.

    ``checked``: ``text`` was parsed by orjson, which refuses what JSON cannot hold (NaN, lone surrogates)."""
    for name in _TEXT_FIELDS:
        if type(event.get(name)) is not str:
            raise ImportRefused(f"not an exported event: {name!r} is missing or not a string", line)
    if type(event.get("version")) is not int:
        raise ImportRefused("not an exported event: 'version' is missing or not an integer", line)
    if "data" not in event or "metadata" not in event:
        raise ImportRefused("not an exported event: 'data' or 'metadata' is missing", line)
    try:
        created_at_ns = parse_ns(event["created_at"])
    except ValueError as error:
        raise ImportRefused(str(error), line) from None
    # The line as ``export_lines`` writes it is the stored state with nid appended: take the state back as it
    # is (the common case, and the fast one); any other layout is written again as the mapper writes it.
    suffix = f',"nid":{event["nid"]}}}'
    stripped = text.rstrip()
    if checked and stripped.endswith(suffix):
        state = (stripped[: -len(suffix)] + "}").encode()
    else:  # (read again by the json module: orjson reads integers beyond 64 bits as floats)
        envelope = {name: value for name, value in json.loads(text).items() if name != "nid"}
        try:
            state = _ENCODER.encode(envelope).encode()
        except (UnicodeEncodeError, ValueError):  # a lone surrogate; NaN
            state = b""
        if not state:
            try:
                check_storable(envelope, "")
            except Unprocessable as error:
                raise ImportRefused(f"the log cannot hold this event: {error}", line) from None
    if b"\\u0000" in state:  # NUL, or a false alarm (an escaped backslash before "u0000")
        try:
            check_storable(orjson.loads(state), "")
        except Unprocessable as error:
            raise ImportRefused(f"the log cannot hold this event: {error}", line) from None
    if event["event_source"] == INTERNAL_EVENT_SOURCE:
        topic = _topics().get(event["event_type"])
        if topic is None or not event["event_type"].startswith(event["aggregate_type"] + "."):
            raise ImportRefused(f"no aggregate of type {event['aggregate_type']!r} records {event['event_type']!r}", line)
        stream_id = f"{event['aggregate_type']}:{event['aggregate_id']}"
        if text_problem(stream_id):
            raise ImportRefused(f"invalid aggregate id: {text_problem(stream_id)}", line)
        return StoredEvent(originator_id=stream_id, originator_version=event["version"], topic=topic, state=state)
    # ``ExternalEvent.stream_id``, with an encoder built once (the round-trip test holds the two together).
    identity = (event["id"], event["event_type"], event["event_source"], utc_day(created_at_ns))
    stream_id = "event:" + hashlib.sha256(_IDENTITY_ENCODER.encode(identity).encode()).hexdigest()
    return StoredEvent(originator_id=stream_id, originator_version=1, topic=_EXTERNAL_TOPIC, state=state)


def _parse(text: str, line: int) -> tuple[Any, bool]:
    """The value of a line, and whether orjson took it (then it holds nothing JSON cannot)."""
    try:
        return orjson.loads(text), True
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and the json module takes (integers beyond 64 bits; a lone surrogate)
            return json.loads(text), False
        except ValueError as error:
            raise ImportRefused(f"not JSON: {error}", line) from None


class _Target:
    """The empty log being written, in the import's one transaction."""

    def __init__(self, log: EventLog, cursor: SqlCursor) -> None:
        self.log = log
        self.cursor = cursor
        self.postgres = _postgres(log)
        self.head = 0
        self.events = 0

    def lock_and_check_empty(self) -> None:
        if self.postgres:
            recorder = self.log.recorder
            for statement in recorder.lock_table_statements:  # type: ignore[attr-defined]
                self.cursor.raw.execute(statement)
            # A pipe that stalls must not end the import (the library closes idle transactions after 5 s).
            self.cursor.raw.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        self.cursor.execute(f"SELECT 1 AS found FROM {self.log.events_table} LIMIT 1")
        if self.cursor.fetchone() is not None:
            raise ImportRefused("the log is not empty: an export is imported into an empty log only")

    def write(self, rows: list[tuple[int, StoredEvent]], lines: tuple[int, int]) -> None:
        if not rows:
            return
        values = [(nid, s.originator_id, s.originator_version, s.topic, s.state) for nid, s in rows]
        table = self.log.events_table
        try:
            if self.postgres:
                statement = f"COPY {table} (notification_id, originator_id, originator_version, topic, state) FROM STDIN"
                with self.cursor.raw.copy(statement) as copy:
                    for value in values:
                        copy.write_row(value)
            else:
                self.cursor.executemany(
                    f"INSERT INTO {table} (rowid, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
                    values,
                )
        except Exception as error:
            if _is_integrity_error(error):
                raise ImportRefused(
                    f"lines {lines[0]}-{lines[1]}: an event there is in the log already (the same stream and version,"
                    f" or position): {error}"
                ) from None
            raise
        self.head = rows[-1][0]
        self.events += len(rows)

    def finish(self) -> None:
        _rebuild_unique_index(self.log, self.cursor)
        if self.postgres and self.head:
            self.cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{self.log.events_table}', 'notification_id'), ?)", (self.head,)
            )
            self.cursor.fetchone()
            # Statistics now, not when autovacuum comes by: without them, reads by position are planned as scans.
            self.cursor.execute(f"ANALYZE {self.log.events_table}")
            self.cursor.raw.execute(f'NOTIFY "{self.log.recorder.channel_name}"')  # type: ignore[attr-defined]


def _is_integrity_error(error: Exception) -> bool:
    import sqlite3

    import psycopg

    return isinstance(error, (sqlite3.IntegrityError, psycopg.errors.IntegrityError))


def _rebuild_unique_index(log: EventLog, cursor: SqlCursor) -> None:
    """The index of unique values, from the aggregates that hold them, in the import's transaction."""
    table = log.events_table
    cursor.execute(f"DELETE FROM {unique_index.TABLE}")
    prefixes = tuple(f"{holder.aggregate_type}:" for holder in unique_index.HOLDERS)
    likes = " OR ".join("originator_id LIKE ?" for _ in prefixes)  # one scan of the log for all of them
    cursor.execute(f"SELECT DISTINCT originator_id FROM {table} WHERE {likes}", [prefix + "%" for prefix in prefixes])
    streams = sorted(row["originator_id"] for row in cursor.fetchall() if row["originator_id"].startswith(prefixes))
    for stream_id in streams:
        cursor.execute(
            f"SELECT originator_version, topic, state FROM {table} WHERE originator_id = ? ORDER BY originator_version",
            (stream_id,),
        )
        aggregate = None
        for row in cursor.fetchall():
            stored = StoredEvent(stream_id, int(row["originator_version"]), row["topic"], bytes(row["state"]))
            aggregate = log.mapper.to_domain_event(stored).mutate(aggregate)
        if aggregate is not None:
            unique_index.record(cursor, unique_index.changes(stream_id, {}, aggregate.unique_values()))


class _BlobLines:
    """Blob lines, written into the target's blob store as they come (content-addressed: harmless if the
    import is refused later; the sweeper collects what no file names)."""

    def __init__(self, blobs: Blobs | None) -> None:
        self._blobs = blobs
        self._writer: BlobWriter | None = None
        self._digest = ""
        self._next = 0
        self._line = 0
        self.skipped = 0

    def add(self, row: Any, line: int) -> None:
        if self._blobs is None:
            self.skipped += 1
            return
        try:
            digest, seq, data = row["hash"], row["seq"], base64.b64decode(row["data"], validate=True)
        except (TypeError, KeyError, binascii.Error) as error:
            raise ImportRefused(f"not a blob row: {error}", line) from None
        if digest != self._digest:
            self.finish()
            self._writer, self._digest, self._next, self._line = self._blobs.writer(), digest, 0, line
        if seq != self._next:
            raise ImportRefused(f"blob {digest} chunk {seq} out of order (expected {self._next})", line)
        assert self._writer is not None
        self._writer.write(data)
        self._next += 1

    def finish(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        stored, _ = writer.finish()
        if stored != self._digest:
            raise ImportRefused(f"blob {self._digest}: its content hashes to {stored}", self._line)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def import_lines(
    log: EventLog,
    lines: Iterable[str],
    progress: Callable[[int], None] | None = None,
    *,
    blobs: Blobs | None = None,
) -> int:
    """Write an export (its lines, in order) into ``log``, which must be empty, in one transaction; the
    number of events written. ``progress(events written so far)`` after each batch. Blob lines go to
    ``blobs`` (skipped without it). Raises ``ImportRefused`` (nothing written) for a log that is not empty or
    a line that is not what an export holds."""
    if log.head():
        raise ImportRefused("the log is not empty: an export is imported into an empty log only")
    tables = {beside.table: beside for beside in BESIDE}
    log.ensure_tables([statement for beside in tables.values() for statement in beside.schema])
    seals.ensure(log)
    content = _BlobLines(blobs)
    append_lock = getattr(log, "_append_lock", None)  # SQLite: appenders of this file take turns on it
    if append_lock is not None:
        fcntl.flock(append_lock, fcntl.LOCK_EX)
    try:
        with log.transaction() as cursor:
            target = _Target(log, cursor)
            target.lock_and_check_empty()
            _write(target, tables, lines, content, progress)
            content.finish()
    except BaseException:
        content.abort()
        raise
    finally:
        if append_lock is not None:
            fcntl.flock(append_lock, fcntl.LOCK_UN)
    return target.events


def _write(
    target: _Target,
    tables: dict[str, Beside],
    lines: Iterable[str],
    content: _BlobLines,
    progress: Callable[[int], None] | None,
) -> None:
    batch: list[tuple[int, StoredEvent]] = []
    batch_line = 1
    rows: dict[str, list[tuple[Any, ...]]] = {}
    sealed: list[seals.Seal] = []
    dispatch_carried = False
    previous = 0
    number = 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        item, checked = _parse(text, number)
        if not isinstance(item, dict):
            raise ImportRefused("not an exported event nor a row beside the log", number)
        if "beside" in item:
            name, row = item.get("beside"), item.get("row")
            if not isinstance(row, dict):
                raise ImportRefused("not a row beside the log: 'row' is not an object", number)
            if name == BLOB:
                content.add(row, number)
                continue
            if name == seals.TABLE:
                try:
                    sealed.append(seals.Seal.from_row(row))
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    raise ImportRefused(str(error), number) from None
                if len(sealed) >= IMPORT_BATCH:
                    seals.write(target.cursor, sealed)
                    sealed = []
                continue
            beside = tables.get(name) if isinstance(name, str) else None
            if beside is None or set(row) != set(beside.columns):
                raise ImportRefused(f"not a row beside the log this version keeps: {text.strip()[:120]}", number)
            dispatch_carried |= name == dispatch_log.POSITIONS and row["name"] == TRIGGER_DISPATCH
            rows.setdefault(beside.table, []).append(tuple(row[column] for column in beside.columns))
            continue
        nid = item.get("nid")
        if not isinstance(nid, int) or isinstance(nid, bool) or nid <= previous:
            raise ImportRefused(f"'nid' must be a position after the previous line's ({previous}), not {nid!r}", number)
        previous = nid
        if not batch:
            batch_line = number
        batch.append((nid, _stored(item, text, number, checked)))
        if len(batch) >= IMPORT_BATCH:
            target.write(batch, (batch_line, number))
            batch = []
            if progress is not None:
                progress(target.events)
    target.write(batch, (batch_line, number))
    seals.write(target.cursor, sealed)
    for name, values in rows.items():
        _write_rows(target.cursor, tables[name], values)
    if not dispatch_carried:
        _write_rows(target.cursor, tables[dispatch_log.POSITIONS], [(TRIGGER_DISPATCH, target.head)])
    target.finish()
    if progress is not None:
        progress(target.events)


def _write_rows(cursor: SqlCursor, beside: Beside, values: list[tuple[Any, ...]]) -> None:
    columns = ", ".join(beside.columns)
    marks = ", ".join("?" for _ in beside.columns)
    statement = f"INSERT INTO {beside.table} ({columns}) VALUES ({marks})"
    if beside.key:
        updates = ", ".join(f"{c} = excluded.{c}" for c in beside.columns if c not in beside.key) or None
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        statement += f" ON CONFLICT ({', '.join(beside.key)}) {action}"
    for start in range(0, len(values), IMPORT_BATCH):
        cursor.executemany(statement, values[start : start + IMPORT_BATCH])


def copy_log(source: EventLog, target: EventLog, until: int | None = None) -> int:
    """Copy the events up to ``until`` (default: the head) and the state beside them (credentials, dispatch
    positions and seals up to that position; not blob content) into the empty ``target``; how many events."""
    return import_lines(target, export_lines(source, until=until, with_state=True))


# -- the commands ------------------------------------------------------------------------------------


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom log export [--after N] [--until M] [--type P …] [--with-state] > events.jsonl``."""
    from chainloom.infra.blobs import open_blobs
    from chainloom.infra.bootstrap import open_resources

    if not settings.uses_postgres and not (settings.data_dir / "events.sqlite").exists():
        print(f"chainloom: no log in {settings.data_dir} (CHAINLOOM_DATA_DIR)", file=sys.stderr)
        return 2
    with_state = bool(getattr(args, "with_state", False))
    if with_state and args.types:
        print("chainloom: --with-state carries the whole log's state: it cannot go with --type", file=sys.stderr)
        return 2
    out: IO[bytes] = sys.stdout.buffer
    with open_resources(settings, read_store=False) as resources:
        log = resources.log
        until = log.head() if args.until is None else args.until
        blobs = open_blobs(settings, log) if with_state else None
        bar = _bar(total=max(until - args.after, 0), unit="event", desc="exporting")
        written = 0
        batch: list[str] = []
        try:
            for line in export_lines(log, args.after, until, args.types or (), with_state, blobs=blobs):
                batch.append(line)
                if len(batch) >= EXPORT_BATCH:
                    out.write(("\n".join(batch) + "\n").encode())
                    written += len(batch)
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                out.write(("\n".join(batch) + "\n").encode())
                written += len(batch)
            out.flush()
        except BrokenPipeError:  # `… | head`: the reader has what it wanted
            sys.stdout = open("/dev/null", "w")  # nothing more to flush at exit
            return 0
        finally:
            if bar is not None:
                bar.close()
    return 0


def import_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom log import events.jsonl`` (``-``: standard input) into the configured, empty log."""
    from chainloom.infra.blobs import open_blobs
    from chainloom.infra.bootstrap import open_resources

    source: IO[str] = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    try:
        with open_resources(settings, read_store=False) as resources:
            log = resources.log
            bar = _bar(unit="event", desc="importing")

            def progress(events: int) -> None:
                if bar is not None:
                    bar.update(events - bar.n)

            try:
                count = import_lines(log, source, progress, blobs=open_blobs(settings, log))
            except ImportRefused as error:
                print(f"chainloom: import refused, nothing was written: {error}", file=sys.stderr)
                return 2
            finally:
                if bar is not None:
                    bar.close()
            print(f"imported {count} events; the log's head is {log.head()}", file=sys.stderr)
    finally:
        if source is not sys.stdin:
            source.close()
    return 0


def _bar(**options: Any) -> Any:
    """A progress bar on standard error when it is a terminal (none in a pipe or a log file)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(file=sys.stderr, unit_scale=True, **options)
