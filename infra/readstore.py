"""The read store: tables of the read models, and where each projection has got to.

Built on the ``eventsourcing`` library's tracking recorders, the way the library
builds materialised views: a projection's rows and its tracked position are
written in one transaction, so a position never claims rows that were lost, nor
rows a position that was not recorded. SQLite (a file beside the log) by
default, PostgreSQL by configuration. All methods block: call them from a
worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from infra.schema import LOCK_IN_TRANSACTION, LOCK_NAME, schema_lock, uses_postgres

Row = dict[str, Any]


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

    def reset(self, cursor: SqlCursor, name: str) -> None:
        cursor.execute(f"DELETE FROM {self.tracking_table} WHERE application_name = ?", (name,))


class SQLiteReadStore(ReadStoreMixin, SQLiteTrackingRecorder):
    placeholder = "?"
    tracking_table = "tracking"


class PostgresReadStore(ReadStoreMixin, PostgresTrackingRecorder):
    placeholder = "%s"
    tracking_table = "notification_tracking"

    def lock_schema(self, cursor: SqlCursor) -> None:
        cursor.execute(LOCK_IN_TRANSACTION, (LOCK_NAME,))


ReadStore = SQLiteReadStore | PostgresReadStore


def open_read_store(env: Mapping[str, str]) -> tuple[ReadStore, InfrastructureFactory]:
    """The read store for a factory environment (same keys as the log's), and its factory to close."""
    with schema_lock(env):
        factory = InfrastructureFactory.construct(Environment(env=dict(env)))
        store_class = PostgresReadStore if uses_postgres(env) else SQLiteReadStore
        store = factory.tracking_recorder(store_class)  # type: ignore[arg-type]
    return store, factory
