"""The read store: tables of the read models, and where each projection has got to.

Built on the ``eventsourcing`` library's tracking recorders, the way the library
builds materialised views: a projection's rows and its tracked position are
written in one transaction, so a position never claims rows that were lost, nor
rows a position that was not recorded. SQLite (a file beside the log) by
default, PostgreSQL by configuration. All methods block: call them from a
worker thread.

Beside the positions it keeps each projection's *fault* (the event it failed
on, so one poison event stops that projection only and an operator can see
it, retry it or skip it from another process) and the events an operator
skipped (so a rebuild skips them too). Batches of every process and the swap
of a rebuild take the projection lock first, so they never interleave.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from chainloom.infra.schema import (
    LOCK_IN_TRANSACTION,
    LOCK_NAME,
    POSTGRES_RELATIONS,
    SQLITE_RELATIONS,
    schema_lock,
    uses_postgres,
)

Row = dict[str, Any]

PROJECTION_LOCK_NAME = "chainloom.projections"
_MAX_ERROR_TEXT = 2000


def storable_text(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    """Text any store can hold (no lone surrogates, no NUL), at most ``limit`` characters: for error reports."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Fault:
    """A projection stopped at the event at ``position`` (its ``nid``): it applies nothing past it until cleared."""

    projection: str
    position: int
    event_id: str
    event_type: str
    error: str
    failed_at: str

    def public(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "position": self.position,
            "eventId": self.event_id,
            "eventType": self.event_type,
            "error": self.error,
            "failedAt": self.failed_at,
        }


_HOUSEKEEPING_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS projection_faults ("
    " projection TEXT PRIMARY KEY, position BIGINT NOT NULL, event_id TEXT NOT NULL,"
    " event_type TEXT NOT NULL, error TEXT NOT NULL, failed_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_skips ("
    " projection TEXT NOT NULL, position BIGINT NOT NULL, PRIMARY KEY (projection, position))",
)


class SqlCursor:
    """A cursor that takes ``?`` placeholders on every database."""

    def __init__(self, raw: Any, placeholder: str) -> None:
        self.raw = raw
        self._placeholder = placeholder

    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.raw.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.executemany(self._sql(sql), [tuple(r) for r in rows])

    def fetchone(self) -> Row | None:
        row = self.raw.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[Row]:
        return [dict(row) for row in self.raw.fetchall()]


class ReadStoreMixin:
    placeholder = "?"
    tracking_table = "tracking"
    relations_query = SQLITE_RELATIONS
    # Whether set-up reads the catalogue and creates only what is missing (``projections.base.create_tables``).
    # Not SQLite: a transaction that has read cannot start writing once another connection wrote since, and
    # its one write lock leaves no deadlock to avoid; it runs the ``IF NOT EXISTS`` statements as they are.
    looks_before_creating = False

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[SqlCursor]:
        with self.datastore.transaction(commit=commit) as raw:  # type: ignore[attr-defined]
            yield SqlCursor(raw, self.placeholder)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.transaction(commit=False) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def position(self, name: str) -> int:
        return self.max_tracking_id(name) or 0  # type: ignore[attr-defined]

    def positions(self, cursor: SqlCursor, names: Sequence[str]) -> dict[str, int]:
        """Where each named projection has got to, read inside the cursor's transaction."""
        marks = ", ".join("?" for _ in names)
        cursor.execute(
            f"SELECT application_name, notification_id FROM {self.tracking_table}"
            f" WHERE application_name IN ({marks})",
            tuple(names),
        )
        found = {row["application_name"]: row["notification_id"] for row in cursor.fetchall()}
        return {name: found.get(name) or 0 for name in names}

    def track(self, cursor: SqlCursor, name: str, position: int) -> None:
        """Record, in the cursor's transaction, that ``name`` has processed up to ``position``.

        Raises the library's IntegrityError when the position does not advance
        (another process got there first): the transaction must then be dropped.
        """
        self._insert_tracking(cursor.raw, Tracking(name, position))  # type: ignore[attr-defined]

    def lock_schema(self, cursor: SqlCursor) -> None:
        """Serialise table creation in this transaction with other processes' (infra/schema.py)."""

    def relations(self, cursor: SqlCursor) -> set[str]:
        """The names of the tables and indexes there are (set-up creates only what is missing)."""
        cursor.execute(self.relations_query)
        return {row["name"] for row in cursor.fetchall()}

    def lock_projections(self, cursor: SqlCursor) -> None:
        """Hold the projection lock until this transaction ends (SQLite: its write lock, taken now).

        Call it first in a transaction that writes: SQLite cannot turn a transaction that has read into
        a writing one once another connection has written since (it fails at once, without waiting)."""
        cursor.execute("DELETE FROM projection_faults WHERE 0 = 1")

    def reset(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute(f"DELETE FROM {self.tracking_table} WHERE application_name = ?", (name,))

    def set_position(self, cursor: SqlCursor, name: str, position: int) -> None:
        """Record ``position`` for ``name`` whatever it was (a skip, or a rebuilt projection swapped in)."""
        self.reset(cursor, name)
        cursor.execute(
            f"INSERT INTO {self.tracking_table} (application_name, notification_id) VALUES (?, ?)", (name, position)
        )

    # -- faults and skips ---------------------------------------------------------

    # The fault and skip records' tables, created with the read models' (``projections.base.create_tables``).
    housekeeping_schema = _HOUSEKEEPING_SCHEMA

    def faults(self, cursor: SqlCursor, names: Sequence[str] | None = None) -> dict[str, Fault]:
        """The faulted projections among ``names`` (all when None), read inside the cursor's transaction."""
        cursor.execute(
            "SELECT projection, position, event_id, event_type, error, failed_at FROM projection_faults"
            " ORDER BY projection"
        )
        found = {row["projection"]: Fault(**row) for row in cursor.fetchall()}
        return found if names is None else {name: found[name] for name in names if name in found}

    def record_fault(self, cursor: SqlCursor, fault: Fault) -> None:
        self.clear_fault(cursor, fault.projection)
        cursor.execute(
            "INSERT INTO projection_faults (projection, position, event_id, event_type, error, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (fault.projection, fault.position, fault.event_id, fault.event_type, fault.error, fault.failed_at),
        )

    def clear_fault(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute("DELETE FROM projection_faults WHERE projection = ?", (name,))

    def record_skip(self, cursor: SqlCursor, name: str, position: int) -> None:
        cursor.execute("DELETE FROM projection_skips WHERE projection = ? AND position = ?", (name, position))
        cursor.execute("INSERT INTO projection_skips (projection, position) VALUES (?, ?)", (name, position))

    def skipped(self, cursor: SqlCursor, name: str) -> frozenset[int]:
        """The positions an operator skipped for ``name``: a rebuild skips them too."""
        cursor.execute("SELECT position FROM projection_skips WHERE projection = ?", (name,))
        return frozenset(row["position"] for row in cursor.fetchall())

    # -- savepoints: one projector's part of a batch can be undone alone ----------

    def savepoint(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute(f"SAVEPOINT {name}")

    def rollback_to_savepoint(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")

    def release_savepoint(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute(f"RELEASE SAVEPOINT {name}")

    # -- renaming (a rebuild swaps its fresh tables in) --------------------------------

    def rename_table(self, cursor: SqlCursor, old: str, new: str) -> None:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")

    def rename_index(self, cursor: SqlCursor, old: str, new: str, create_statement: str) -> None:
        """Give a renamed table's index its live name (SQLite cannot rename an index: it is made again)."""
        cursor.execute(f"DROP INDEX IF EXISTS {old}")
        cursor.execute(create_statement)


# Commits of the read store need not wait for the disk: everything in it is derived from the log, and a
# projection's rows and its position are committed together, so a power failure can only take both back
# to an earlier position, from which the runner projects again. The log itself is synced at every commit.


class SQLiteReadStore(ReadStoreMixin, SQLiteTrackingRecorder):
    placeholder = "?"
    tracking_table = "tracking"

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[SqlCursor]:
        with self.datastore.get_connection(commit=commit) as connection:
            if commit:  # a per-connection setting, and only outside a transaction
                connection.cursor().execute("PRAGMA synchronous = NORMAL")
            with connection.transaction(commit=commit) as raw:
                yield SqlCursor(raw, self.placeholder)


class PostgresReadStore(ReadStoreMixin, PostgresTrackingRecorder):
    placeholder = "%s"
    tracking_table = "notification_tracking"
    relations_query = POSTGRES_RELATIONS
    looks_before_creating = True

    @contextmanager
    def transaction(self, *, commit: bool = True) -> Iterator[SqlCursor]:
        with super().transaction(commit=commit) as cursor:
            if commit:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            yield cursor

    def lock_schema(self, cursor: SqlCursor) -> None:
        cursor.execute(LOCK_IN_TRANSACTION, (LOCK_NAME,))

    def lock_projections(self, cursor: SqlCursor) -> None:
        cursor.execute(LOCK_IN_TRANSACTION, (PROJECTION_LOCK_NAME,))

    def rename_index(self, cursor: SqlCursor, old: str, new: str, create_statement: str) -> None:
        cursor.execute(f"ALTER INDEX {old} RENAME TO {new}")


ReadStore = SQLiteReadStore | PostgresReadStore


def open_read_store(env: Mapping[str, str]) -> tuple[ReadStore, InfrastructureFactory[ReadStore]]:
    """The read store for a factory environment (same keys as the log's), and its factory to close."""
    with schema_lock(env):
        factory = InfrastructureFactory[ReadStore].construct(Environment(env=dict(env)))
        store_class: type[ReadStore] = PostgresReadStore if uses_postgres(env) else SQLiteReadStore
        store = factory.tracking_recorder(store_class)
    return store, factory
