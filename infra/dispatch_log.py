"""Where trigger dispatch stands, kept in the log's database and moved in the transactions that append
what it ran (``projections.dispatch``).

- ``dispatch_positions`` (name → position): every event up to ``position`` has been dispatched. The
  dispatcher moves it from the position it read to the last event of a batch *in the transaction that
  appends the batch's executions* (``DispatchFence.check``: compare and set), so what it recorded and
  where it stands never disagree — a crash before the commit leaves both as they were and the batch is
  dispatched again; a dispatcher that lost its lock to another finds the position moved and stores nothing.
- ``dispatch_outputs`` (source nid → output stream id): what an event's executions appended (their
  ``trigger.fired`` records and the events scripts emitted), so a request that appended the event can wait
  for those to be dispatched and projected in turn (``projections.dispatch.TriggerWaits``). Rows of events
  long dispatched are pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from chainloom.infra.eventlog import EventLog, FenceRefused
from chainloom.infra.readstore import SqlCursor

POSITIONS = "dispatch_positions"
OUTPUTS = "dispatch_outputs"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {POSITIONS} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {OUTPUTS} (source_nid BIGINT NOT NULL, output_id TEXT NOT NULL, event_type TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {OUTPUTS}_source ON {OUTPUTS} (source_nid)",
)
# Outputs of events this far behind the position are forgotten (no request waits that long).
KEEP_OUTPUTS = 100_000


@dataclass(frozen=True)
class Output:
    """An event an execution appended (a ``trigger.fired`` record, or an event a script emitted)."""

    source_nid: int
    output_id: str  # the stream id of what was appended
    event_type: str


@dataclass(frozen=True)
class Written:
    """``Output`` once stored: its position."""

    source_nid: int
    nid: int
    event_type: str


class DispatchFence:
    """The condition a batch of executions is appended under (``infra.eventlog.Fence``): the position is
    still ``before`` (no other dispatcher moved it); it becomes ``after``, with the batch's outputs."""

    def __init__(self, name: str, before: int, after: int, outputs: Sequence[Output], prune: bool = False) -> None:
        self._name = name
        self._before = before
        self._after = after
        self._outputs = outputs
        self._prune = prune
        self.done = False

    def check(self, cursor: SqlCursor) -> None:
        # RETURNING, not a row count: on PostgreSQL the append runs in a pipeline, where only a fetch waits.
        cursor.execute(
            f"UPDATE {POSITIONS} SET position = ? WHERE name = ? AND position = ? RETURNING name",
            (self._after, self._name, self._before),
        )
        if cursor.fetchone() is None:
            raise FenceRefused(f"dispatch position {self._name!r} is no longer {self._before}: another dispatcher moved it")
        cursor.executemany(
            f"INSERT INTO {OUTPUTS} (source_nid, output_id, event_type) VALUES (?, ?, ?)",
            [(o.source_nid, o.output_id, o.event_type) for o in self._outputs],
        )
        if self._prune:
            cursor.execute(f"DELETE FROM {OUTPUTS} WHERE source_nid < ?", (self._after - KEEP_OUTPUTS,))

    def committed(self) -> None:
        self.done = True


class DispatchLog:
    """Reads and moves the dispatch positions and outputs (blocking: call from a worker thread)."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._events = log.events_table
        self._nid = log.position_column

    def ensure(self, name: str) -> None:
        """Create the tables if missing and the position ``name`` at 0 (idempotent, any process)."""
        self._log.ensure_tables(SCHEMA)
        with self._log.transaction() as cursor:
            cursor.execute(f"INSERT INTO {POSITIONS} (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", (name,))

    def position(self, name: str) -> int:
        with self._log.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT position FROM {POSITIONS} WHERE name = ?", (name,))
            row = cursor.fetchone()
        return int(row["position"]) if row else 0

    def move(self, name: str, before: int, after: int) -> bool:
        """Move the position when nothing is appended with it (a batch without executions); False when
        another dispatcher moved it first."""
        with self._log.transaction() as cursor:
            cursor.execute(
                f"UPDATE {POSITIONS} SET position = ? WHERE name = ? AND position = ? RETURNING name", (after, name, before)
            )
            return cursor.fetchone() is not None

    def written(self, source_nids: Iterable[int]) -> list[Written]:
        """The stored outputs of the executions for these events, with their positions."""
        sources = sorted(set(source_nids))
        if not sources:
            return []
        marks = ", ".join("?" for _ in sources)
        with self._log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT o.source_nid AS source_nid, o.event_type AS event_type, e.{self._nid} AS nid"
                f" FROM {OUTPUTS} o JOIN {self._events} e ON e.originator_id = o.output_id"
                f" WHERE o.source_nid IN ({marks})",
                sources,
            )
            rows = cursor.fetchall()
        return [Written(int(r["source_nid"]), int(r["nid"]), r["event_type"]) for r in rows]

