"""The tamper-evident journal: a hash chain over the log, kept beside it, and ``chainloom audit verify``.

Every event is *sealed* with a hash that chains it to the one before it in log order::

    hash(n) = sha256( hash(prev) ‖ canonical(event n) )   as 64 lowercase hex digits

- ``canonical(event)``: the public event (``infra.envelope``, the ``/events`` shape) WITH its ``nid``, as
  JSON with sorted keys, ``separators=(",", ":")``, ``ensure_ascii=False``, in UTF-8 — in Python exactly
  ``json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``;
- ``hash(prev)``: the hex digits (64 ASCII bytes) of the previous *sealed* position, erased or not; 64
  zeros before the first.

It is deterministic: whoever computes a position gets the same hash, so anyone holding the events (an
export, a Kafka topic: ``infra.kafka_log`` puts ``chain_hash`` and ``chain_prev`` on every record) can
check them, and two sealers that compute the same position agree. Sealing follows the log (``seal``, run
by the singleton sealer of ``projections.sealer``, lock ``seals``), not inside the append: appends never
wait on reading the previous hash. ``GET /log/digest`` answers the last sealed position and its hash; an
auditor who records it elsewhere can later show the log was not rewritten up to there
(``chainloom audit verify --digest POSITION:HASH``).

**The table** (in the log's database, beside ``stored_events``)::

    log_seals(position  BIGINT PRIMARY KEY,  -- the event's nid
              hash      TEXT NOT NULL,        -- hash(position), 64 lowercase hex digits
              sealed_at BIGINT NOT NULL,      -- when it was sealed: nanoseconds since the epoch, UTC
              erased_by BIGINT)               -- NULL; once the event is erased (GDPR), the nid of the
                                              -- erasure's audit event: the row is then a *tombstone*

**Erasure** (``infra.erasure``) seals every position up to the erased ones in its own transaction, then
deletes the events and marks their seals ``erased_by``: the chain still verifies through the tombstones
(their stored hash links the next event), and the deletion stays visible — ``audit verify`` counts the
tombstones and checks that each names an erasure's audit event in the log. Sealing and erasure are
serialised by one lock (SQLite: a file lock beside the log; PostgreSQL: a transaction advisory lock),
or an erasure landing between a sealer's reads would chain over a gap.

**Copying a log elsewhere** (``infra.log_transfer``): carry the seals with the events, ``seals(log, after,
until)`` → ``Seal.row()`` on the way out, ``Seal.from_row`` → ``write(cursor, seals)`` on the way in (after
``ensure(target)``, in the import's transactions): the copy's chain is the source's, and a digest recorded
from the source verifies on it. Only the tombstones (``tombstones(log)``) would do as well once the
target's sealer has run — it recomputes the rest from the events to exactly the same hashes, chaining
through tombstones ahead of it — but until then ``verify`` reports the events below them as unsealed. A
copy without tombstones verifies too, but its chain differs from the source's from the first erased
position on.

Who calls what: the sealer ``seal``; the Kafka relay ``links`` (the hashes of what it publishes, sealing
them first if the sealer is behind); erasure ``sealing_lock``, ``lock_chain``, ``seal_in``, ``mark_erased``;
``GET /log/digest`` ``digest``; ``chainloom audit verify`` ``verify``; export and import ``seals``,
``tombstones``, ``write``; everyone that writes here ``ensure`` first. Everything blocks: call it from a
worker thread.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from chainloom.domain.base import public_event_type
from chainloom.domain.eventsource.events import EventDeletion
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.schema import LOCK_IN_TRANSACTION
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import format_ns

TABLE = "log_seals"
ZERO = "0" * 64  # hash(prev) of the first sealed position
BATCH = 1000  # events hashed and stored per sealing transaction
VERIFY_BATCH = 5000
CHAIN_LOCK = "chainloom.seal-chain"  # not the sealer's singleton lock ("seals"): that one says who seals
DELETION_RECORDED = public_event_type(EventDeletion.Recorded)

_SQLITE_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (position INTEGER PRIMARY KEY, hash TEXT NOT NULL,"
    " sealed_at BIGINT NOT NULL, erased_by BIGINT)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_erased ON {TABLE} (erased_by) WHERE erased_by IS NOT NULL",
)
_POSTGRES_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (position BIGINT PRIMARY KEY, hash TEXT NOT NULL,"
    " sealed_at BIGINT NOT NULL, erased_by BIGINT)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_erased ON {TABLE} (erased_by) WHERE erased_by IS NOT NULL",
)


# -- the hash ------------------------------------------------------------------------------------


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes a public event (with ``nid``) is sealed over: the definition (``json.dumps(event,
    sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8)."""
    return _CANONICAL.encode(event).encode("utf-8", "surrogatepass")


def link(prev: str, event: Mapping[str, Any]) -> str:
    """hash(n) from hash(n-1) and public event n."""
    return hashlib.sha256(prev.encode("ascii") + canonical(event)).hexdigest()


# orjson reads JSON to the same values as ``json`` (floats correctly rounded alike), but for integers past
# 64 bits, which it reads as floats; and it writes what ``canonical`` writes — strings, integers, keys sorted
# by code point — but for floats (1e-7, not 1e-07). So an event is read by orjson, and written by orjson
# when it holds no float, else by ``canonical``'s encoder; one with a float that may have been such an
# integer (integral, 2**63 or more) is read again by ``json``. tests/integration/test_seals.py holds the
# result equal to the definition.
_NO_FLOAT, _FLOATS, _MAYBE_BIG_INTEGER = 0, 1, 2
_BIG = float(2**63)


def _floats(value: Any) -> int:
    found = _NO_FLOAT
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            if abs(item) >= _BIG and item.is_integer():  # orjson reads no NaN nor infinity
                return _MAYBE_BIG_INTEGER
            found = _FLOATS
    return found


def canonical_stored(state: bytes, nid: int) -> bytes:
    """``canonical`` of the event stored as ``state`` at ``nid`` (``EnvelopeMapper.to_public``, then canonical)."""
    try:
        event = orjson.loads(state)
    except orjson.JSONDecodeError:  # NaN, Infinity, lone surrogates, nesting: ``json`` decides
        event = None
    floats = _floats(event) if type(event) is dict else _MAYBE_BIG_INTEGER
    if floats == _NO_FLOAT:
        event["nid"] = nid
        try:
            return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # nested too deep for orjson
            pass
    elif floats == _FLOATS:
        event["nid"] = nid
        return canonical(event)
    event = json.loads(state)
    event["nid"] = nid
    return canonical(event)


def _link_stored(prev: str, state: Any, nid: int) -> str:
    """hash(nid) from hash(prev) and the stored state of the event at ``nid``."""
    state = state if isinstance(state, bytes) else bytes(state)
    return hashlib.sha256(prev.encode("ascii") + canonical_stored(state, nid)).hexdigest()


# -- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seal:
    """A row of ``log_seals``."""

    position: int
    hash: str
    sealed_at: int  # ns
    erased_by: int | None = None

    @property
    def tombstone(self) -> bool:
        return self.erased_by is not None

    def row(self) -> dict[str, Any]:
        """As JSON (an export line's ``row``)."""
        return {"position": self.position, "hash": self.hash, "sealed_at": self.sealed_at, "erased_by": self.erased_by}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Seal:
        """From ``row()`` (or a database row); refuses what could not be a seal."""
        position, digest, sealed_at, erased_by = row["position"], row["hash"], row["sealed_at"], row.get("erased_by")
        if not (isinstance(position, int) and position > 0 and isinstance(sealed_at, int)):
            raise ValueError(f"not a seal row: {dict(row)!r}")
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise ValueError(f"not a seal's hash (64 lowercase hex digits): {digest!r}")
        if erased_by is not None and not (isinstance(erased_by, int) and erased_by > 0):
            raise ValueError(f"not a position: erased_by {erased_by!r}")
        return cls(position, digest, sealed_at, erased_by)


def ensure(log: EventLog) -> None:
    """Create the table if missing (idempotent, any process)."""
    log.ensure_tables(_SQLITE_SCHEMA if _sqlite(log) else _POSTGRES_SCHEMA)


def tombstones(log: EventLog, after: int = 0, until: int | None = None) -> list[Seal]:
    """The tombstones (seals of erased events) at positions in (``after``, ``until``], in order."""
    bound, params = _until(until)
    return _select(log, f"erased_by IS NOT NULL AND position > ?{bound}", (after, *params))


def seals(log: EventLog, after: int = 0, until: int | None = None, limit: int = VERIFY_BATCH) -> list[Seal]:
    """At most ``limit`` seals at positions in (``after``, ``until``], in order (to copy all of them)."""
    bound, params = _until(until)
    return _select(log, f"position > ?{bound} ORDER BY position LIMIT ?", (after, *params, limit))


def write(cursor: SqlCursor, rows: Sequence[Seal]) -> None:
    """Store seals as they are (an import, in its transaction); a position already sealed is left alone."""
    cursor.executemany(
        f"INSERT INTO {TABLE} (position, hash, sealed_at, erased_by) VALUES (?, ?, ?, ?) ON CONFLICT (position) DO NOTHING",
        [(s.position, s.hash, s.sealed_at, s.erased_by) for s in rows],
    )


def _until(until: int | None) -> tuple[str, tuple[int, ...]]:
    return ("", ()) if until is None else (" AND position <= ?", (until,))


def _select(log: EventLog, where: str, params: Sequence[Any]) -> list[Seal]:
    if not exists(log):
        return []
    with log.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT position, hash, sealed_at, erased_by FROM {TABLE} WHERE {where}", params)
        rows = cursor.fetchall()
    return [Seal(r["position"], r["hash"], r["sealed_at"], r["erased_by"]) for r in sorted(rows, key=lambda r: r["position"])]


def exists(log: EventLog) -> bool:
    with log.transaction(commit=False) as cursor:
        return _exists_in(cursor, log)


def _exists_in(cursor: SqlCursor, log: EventLog) -> bool:
    if _sqlite(log):
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
    else:
        cursor.execute("SELECT to_regclass(?) AS name", (TABLE,))
    row = cursor.fetchone()
    return row is not None and row["name"] is not None


# -- the lock shared with erasure ----------------------------------------------------------------


def _sqlite(log: EventLog) -> bool:
    return log.position_column == "rowid"


def _sqlite_path(log: EventLog) -> str:
    return str(log.recorder.datastore.pool.db_name)  # type: ignore[attr-defined]


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def sealing_lock(log: EventLog) -> Iterator[None]:
    """Hold the chain lock around a transaction that seals or erases (SQLite: a file lock beside the log).
    On PostgreSQL it is taken inside the transaction instead: ``lock_chain``, as its first statement."""
    if not _sqlite(log):
        yield
        return
    with _file_lock(f"{_sqlite_path(log)}.seal-lock"):
        yield


def lock_chain(cursor: SqlCursor, log: EventLog) -> None:
    """PostgreSQL: take the chain lock until the transaction ends (no-op on SQLite: ``sealing_lock``)."""
    if not _sqlite(log):
        cursor.execute(LOCK_IN_TRANSACTION, (CHAIN_LOCK,))


# -- sealing -----------------------------------------------------------------------------------


def _frontier(cursor: SqlCursor) -> tuple[int, str]:
    """The last sealed event that is not erased, and its hash: every event up to it is sealed, none after it
    (seals after it can only be tombstones: of the erased last events, or brought by an import)."""
    cursor.execute(f"SELECT position, hash FROM {TABLE} WHERE erased_by IS NULL ORDER BY position DESC LIMIT 1")
    row = cursor.fetchone()
    return (int(row["position"]), str(row["hash"])) if row else (0, ZERO)


def _plan(cursor: SqlCursor, log: EventLog, through: int | None, limit: int) -> tuple[list[tuple[int, str]], int, bool]:
    """Read and hash the next events to seal (at most ``limit``, none past ``through``): the new seals
    (position, hash), the position sealed through once they are stored, and whether more may follow."""
    frontier, prev = _frontier(cursor)
    if through is not None and frontier >= through:
        return [], frontier, False
    nid = log.position_column
    bound = "" if through is None else f" AND {nid} <= ?"
    cursor.execute(
        f"SELECT {nid} AS nid, state FROM {log.events_table} WHERE {nid} > ?{bound} ORDER BY {nid} LIMIT ?",
        (frontier, *(() if through is None else (through,)), limit),
    )
    events = cursor.fetchall()
    if not events:
        return [], frontier, False
    last = int(events[-1]["nid"])
    cursor.execute(
        f"SELECT position, hash FROM {TABLE} WHERE position > ? AND position <= ? ORDER BY position", (frontier, last)
    )
    stones = [(int(r["position"]), str(r["hash"])) for r in cursor.fetchall()]  # tombstones, to chain through
    new: list[tuple[int, str]] = []
    next_stone = 0
    for event in events:
        position = int(event["nid"])
        while next_stone < len(stones) and stones[next_stone][0] < position:
            prev = stones[next_stone][1]
            next_stone += 1
        if next_stone < len(stones) and stones[next_stone][0] == position:  # sealed already (a tombstone left
            prev = stones[next_stone][1]  # over an event that is back: ``verify`` reports it); keep its hash
            next_stone += 1
            continue
        prev = _link_stored(prev, event["state"], position)
        new.append((position, prev))
    return new, last, len(events) == limit


def _store(cursor: SqlCursor, new: Sequence[tuple[int, str]], now: int) -> None:
    cursor.executemany(
        f"INSERT INTO {TABLE} (position, hash, sealed_at) VALUES (?, ?, ?) ON CONFLICT (position) DO NOTHING",
        [(position, digest, now) for position, digest in new],
    )


def seal(log: EventLog, limit: int = BATCH, through: int | None = None, clock: Callable[[], int] = time.time_ns) -> tuple[int, bool]:
    """Seal the next events (at most ``limit``, none past ``through``) in one transaction: the position
    sealed through, and whether more may follow. Appends never wait on it: on SQLite the events are read
    and hashed before the write, which only stores the hashes.

    Seals are derived data, like the read models: their commits are not synced to disk (a power failure
    can only take some back, and the next sealing computes the very same hashes again), so a sealer
    does not add a disk sync per commit to the log's."""
    if not _sqlite(log):
        with log.transaction() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            lock_chain(cursor, log)
            new, reached, more = _plan(cursor, log, through, limit)
            _store(cursor, new, clock())
        return reached, more
    with sealing_lock(log):
        with log.transaction(commit=False) as cursor:
            new, reached, more = _plan(cursor, log, through, limit)
        if new:
            # Queued with the appenders of every process (``EventLog``'s append lock), as one of them.
            with _file_lock(f"{_sqlite_path(log)}.append-lock"), _unsynced_sqlite_transaction(log) as cursor:
                _store(cursor, new, clock())
    return reached, more


@contextmanager
def _unsynced_sqlite_transaction(log: EventLog) -> Iterator[SqlCursor]:
    """A write transaction on the log's SQLite database whose commit is not synced (``synchronous`` is a
    setting of the connection, and of the log's connections: it is put back after)."""
    datastore = log.recorder.datastore  # type: ignore[attr-defined]
    with datastore.get_connection(commit=True) as connection:
        setting = connection.cursor()
        setting.execute("PRAGMA synchronous")
        synchronous = int(setting.fetchone()[0])
        setting.execute("PRAGMA synchronous = NORMAL")
        try:
            with connection.transaction(commit=True) as raw:
                yield SqlCursor(raw, "?")
        finally:
            connection.cursor().execute(f"PRAGMA synchronous = {synchronous}")


def seal_through(log: EventLog, position: int) -> int:
    """Seal every event up to ``position``; the position sealed through."""
    while True:
        reached, more = seal(log, BATCH, position)
        if not more:
            return reached


def seal_in(cursor: SqlCursor, log: EventLog, through: int, clock: Callable[[], int] = time.time_ns) -> None:
    """Seal every event up to ``through`` in the caller's transaction, which holds the chain lock (erasure)."""
    more = True
    while more:
        new, _, more = _plan(cursor, log, through, BATCH)
        _store(cursor, new, clock())


def mark_erased(cursor: SqlCursor, positions: Sequence[int], erasure: int) -> None:
    """Turn the seals of erased events into tombstones naming the erasure's audit event (its transaction)."""
    ordered = sorted(positions)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        marks = ",".join("?" for _ in chunk)
        cursor.execute(f"UPDATE {TABLE} SET erased_by = ? WHERE position IN ({marks})", (erasure, *chunk))


# -- reading the chain -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """The last sealed position (0: none yet; an erased event's tombstone counts) and its hash, when it was
    sealed, and the log's head."""

    position: int
    hash: str
    sealed_at: int | None
    head: int

    def public(self) -> dict[str, Any]:
        """``GET /log/digest``."""
        sealed_at = None if self.sealed_at is None else format_ns(self.sealed_at)
        return {"position": self.position, "hash": self.hash, "sealedAt": sealed_at, "head": self.head}


def digest(log: EventLog) -> Digest:
    """One read transaction (``GET /log/digest`` is polled)."""
    nid = log.position_column
    with log.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT MAX({nid}) AS head FROM {log.events_table}")  # first: no position above it
        head_row = cursor.fetchone()
        row = None
        if _exists_in(cursor, log):
            cursor.execute(f"SELECT position, hash, sealed_at FROM {TABLE} ORDER BY position DESC LIMIT 1")
            row = cursor.fetchone()
    head = int(head_row["head"] or 0) if head_row else 0
    if row is None:
        return Digest(0, ZERO, None, head)
    return Digest(int(row["position"]), str(row["hash"]), int(row["sealed_at"]), max(head, int(row["position"])))


class Unsealed(RuntimeError):
    """An event that should have a seal by now has none."""


def links(log: EventLog, positions: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(hash, previous sealed hash) of each position (the Kafka relay's headers), sealing them first when
    the sealer has not yet got there (the hash is deterministic: whoever seals gets the same)."""
    if not positions:
        return {}
    first, last = min(positions), max(positions)
    chained = _chain(log, first, last)
    if any(position not in chained for position in positions):
        seal_through(log, last)
        chained = _chain(log, first, last)
    missing = [position for position in positions if position not in chained]
    if missing:
        raise Unsealed(f"positions {missing[:5]} have no seal after sealing through {last}")
    return chained


def _chain(log: EventLog, first: int, last: int) -> dict[int, tuple[str, str]]:
    with log.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT hash FROM {TABLE} WHERE position < ? ORDER BY position DESC LIMIT 1", (first,))
        before = cursor.fetchone()
        cursor.execute(
            f"SELECT position, hash FROM {TABLE} WHERE position >= ? AND position <= ? ORDER BY position", (first, last)
        )
        rows = cursor.fetchall()
    prev = str(before["hash"]) if before else ZERO
    chained: dict[int, tuple[str, str]] = {}
    for row in rows:
        chained[int(row["position"])] = (str(row["hash"]), prev)
        prev = str(row["hash"])
    return chained


# -- verifying ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    position: int
    reason: str
    against_digest: bool = False  # the chain holds as far as it goes, but not to the recorded digest


@dataclass
class Report:
    """What ``verify`` found: the chain up to ``position`` (the last sealed position) checked, or where it broke."""

    head: int = 0
    position: int = 0
    hash: str = ZERO
    verified: int = 0  # events whose hash was recomputed and matched
    tombstones: int = 0  # erased positions whose seal chained the rest
    erasures: list[int] = field(default_factory=list)  # the audit events' positions the tombstones name
    unsealed: int = 0  # events after ``position`` (within the sealer's lag)
    broken: Break | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify(
    log: EventLog,
    expect: tuple[int, str] | None = None,
    batch: int = VERIFY_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Walk events and seals in position order up to the last sealed position, recomputing each hash; stop at
    the first break. ``expect``: a digest recorded earlier (position, hash) that the chain must still hold.

    Events are read before the seals of the same range, so an erasure committed in between is seen as an
    event with its tombstone (which verifies), never as a missing event whose seal is not yet marked.
    """
    report = Report(head=log.head())
    if exists(log):
        with log.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT MAX(position) AS position FROM {TABLE}")
            row = cursor.fetchone()
            report.position = int(row["position"] or 0) if row else 0
    nid, events_table = log.position_column, log.events_table
    prev, after = ZERO, 0
    erasures: dict[int, int] = {}  # audit position → the first tombstone naming it
    expected_hash: str | None = None
    while after < report.position and report.broken is None:
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {nid} AS nid, state FROM {events_table} WHERE {nid} > ? AND {nid} <= ? ORDER BY {nid} LIMIT ?",
                (after, report.position, batch),
            )
            events = cursor.fetchall()
        upto = int(events[-1]["nid"]) if len(events) == batch else report.position
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT position, hash, erased_by FROM {TABLE} WHERE position > ? AND position <= ? ORDER BY position",
                (after, upto),
            )
            sealed = cursor.fetchall()
        prev = _walk(report, prev, events, sealed, erasures)
        if expect is not None and after < expect[0] <= upto:
            expected_hash = next((str(s["hash"]) for s in sealed if s["position"] == expect[0]), None)
        after = upto
        if progress is not None:
            progress(after, report.position)
    if report.broken is None:
        report.hash = prev
        _check_erasures(log, report, erasures)
    if report.broken is None:
        report.erasures = sorted(erasures)
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT COUNT(*) AS n FROM {events_table} WHERE {nid} > ? AND {nid} <= ?", (report.position, report.head)
            )
            row = cursor.fetchone()
        report.unsealed = int(row["n"]) if row else 0
    if report.broken is None and expect is not None:
        _check_expected(report, expect, expected_hash)
    return report


def _walk(
    report: Report, prev: str, events: list[dict[str, Any]], sealed: list[dict[str, Any]], erasures: dict[int, int]
) -> str:
    """Check one range (its events and seals, merged in position order); the hash reached. At the first
    break, sets ``report.broken`` and returns."""
    states = {int(e["nid"]): e["state"] for e in events}
    rows = {int(s["position"]): s for s in sealed}
    for position in sorted(states.keys() | rows.keys()):
        row, state = rows.get(position), states.get(position)
        if row is None:
            report.broken = Break(
                position,
                "unsealed gap: the event has no seal, but later positions are sealed"
                " (written into the log after they were sealed?)",
            )
            return prev
        stored = str(row["hash"])
        if state is not None:
            try:
                recomputed = _link_stored(prev, state, position)
            except (ValueError, TypeError) as error:
                report.broken = Break(position, f"the event cannot be read as a public event: {error}")
                return prev
            if recomputed != stored:
                report.broken = Break(
                    position,
                    f"hash differs: the event is not the one that was sealed (sealed {stored}, recomputed {recomputed})",
                )
                return prev
            report.verified += 1
        elif row["erased_by"] is None:
            report.broken = Break(position, "a sealed event is missing, and no erasure left a tombstone for it")
            return prev
        else:
            report.tombstones += 1
            erasures.setdefault(int(row["erased_by"]), position)
        prev = stored
    return prev


def _check_erasures(log: EventLog, report: Report, erasures: dict[int, int]) -> None:
    """Each tombstone names an erasure's audit event: it must be in the log (unless past this log's head:
    a copy that ends between an erasure and its audit)."""
    named = sorted(p for p in erasures if p <= report.head)
    if not named:
        return
    found: dict[int, str] = {}
    nid = log.position_column
    for start in range(0, len(named), 500):
        chunk = named[start : start + 500]
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {nid} AS nid, state FROM {log.events_table} WHERE {nid} IN ({','.join('?' for _ in chunk)})",
                chunk,
            )
            for row in cursor.fetchall():
                found[int(row["nid"])] = str(json.loads(bytes(row["state"])).get("event_type"))
    for audit in named:
        if found.get(audit) != DELETION_RECORDED:
            tombstone = erasures[audit]
            what = "no event" if audit not in found else f"a {found[audit]} event"
            report.broken = Break(
                tombstone, f"the tombstone names the erasure at position {audit}, but there is {what}, not its audit"
            )
            return


def _check_expected(report: Report, expect: tuple[int, str], found: str | None) -> None:
    position, expected = expect
    if position > report.position:
        report.broken = Break(position, f"it is past the last sealed position ({report.position})", True)
    elif found is None:
        report.broken = Break(position, "the position has no seal", True)
    elif found != expected:
        report.broken = Break(position, f"the seal differs (recorded {expected}, sealed {found})", True)


# -- chainloom audit verify ------------------------------------------------------------------------


def parse_digest(text: str) -> tuple[int, str]:
    """``POSITION:HASH`` (as ``GET /log/digest`` answers them) → (position, hash)."""
    position, _, digest_hash = text.partition(":")
    if not position.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest_hash.strip().lower()):
        raise ValueError(f"a digest is POSITION:HASH (64 hex digits), not {text!r}")
    return int(position), digest_hash.strip().lower()


def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom audit verify [--digest POSITION:HASH]``: 0 when the chain holds, 1 at a break, 2 on bad input."""
    from chainloom.infra.bootstrap import open_resources

    expect = None
    if getattr(args, "digest", None):
        try:
            expect = parse_digest(args.digest)
        except ValueError as error:
            print(f"chainloom: {error}", file=sys.stderr)
            return 2
    with open_resources(settings, read_store=False) as resources:
        bar = _progress_bar()
        started = time.perf_counter()
        try:
            report = verify(resources.log, expect, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - started
    for line in describe(report, elapsed):
        print(line)
    return 0 if report.intact else 1


def describe(report: Report, elapsed: float | None = None) -> list[str]:
    lines = []
    broken = report.broken
    if broken is not None and broken.against_digest:
        lines.append(f"the recorded digest at position {broken.position} is NOT confirmed: {broken.reason}")
        lines.append(f"the chain itself holds: {report.verified} events verified up to position {report.position}")
        return lines
    if broken is not None:
        lines.append(f"chain BROKEN at position {broken.position}: {broken.reason}")
        lines.append(f"checked before it: {report.verified} events, {report.tombstones} tombstones")
        return lines
    rate = f" in {elapsed:.2f} s ({report.verified / elapsed:,.0f} events/s)" if elapsed else ""
    lines.append(f"verified {report.verified} events up to position {report.position}{rate}")
    lines.append(f"last sealed position {report.position}, hash {report.hash}")
    if report.tombstones:
        shown = ", ".join(str(p) for p in report.erasures[:10]) + (" …" if len(report.erasures) > 10 else "")
        lines.append(f"erased: {report.tombstones} positions kept as tombstones, by the erasures at positions {shown}")
    else:
        lines.append("erased: none")
    lines.append(
        f"unsealed at the head: {report.unsealed} events (log head {report.head}; the sealer's lag, not a failure)"
    )
    lines.append("chain intact")
    return lines


class _Bar:
    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(unit="event", desc="verifying", file=sys.stderr)

    def update(self, position: int, last: int) -> None:
        self._bar.total = last
        self._bar.update(position - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _progress_bar() -> _Bar | None:
    return _Bar() if sys.stderr.isatty() else None
