"""The log: one event store, one global order (``nid``), on SQLite or PostgreSQL.

Built from the ``eventsourcing`` library's recorders; which database is used is
configuration (``PERSISTENCE_MODULE`` in the factory environment), nothing above
this module knows. All methods block: call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol, TypeVar

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    EventStore,
    InfrastructureFactory,
    RecordConflictError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import Environment, get_topic

from chainloom.domain.base import Aggregate
from chainloom.infra import unique_index
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.schema import (
    POSTGRES_RELATIONS,
    SQLITE_RELATIONS,
    LogRecorder,
    log_env,
    missing,
    schema_lock,
    uses_postgres,
)
from chainloom.infra.unique_index import Holding

A = TypeVar("A", bound=Aggregate)


class FenceRefused(RecordConflictError):
    """A fence refused an append (nothing of it is stored); trying it again cannot help."""


class Fence(Protocol):
    """A condition an append is stored under (``infra.logwriter.appending_under``)."""

    def check(self, cursor: SqlCursor) -> None:
        """In the append's transaction, before its events: raise ``FenceRefused`` to refuse it whole."""

    def committed(self) -> None:
        """The append was committed."""


class SQLiteLogRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder of the log, writing in an append's transaction what it carries
    besides its events: its fences are checked first, the unique values it changes recorded after."""

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        for fence in kwargs.get("fences", ()):
            fence.check(SqlCursor(c, "?"))
        positions = super()._insert_events(c, stored_events, **kwargs)
        unique_index.record(SqlCursor(c, "?"), kwargs.get("holdings", ()))
        return positions


class PostgresLogRecorder(LogRecorder):
    """The same on PostgreSQL: fences before the log's table lock is taken, unique values once it is
    held (so appenders never wait on each other's index rows in two orders)."""

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        for fence in kwargs.get("fences", ()):
            fence.check(SqlCursor(curs, "%s"))

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        holdings = kwargs.get("holdings")
        if holdings:  # on a cursor of its own: the events' cursor still holds their positions
            with curs.connection.cursor() as cursor:
                unique_index.record(SqlCursor(cursor, "%s"), holdings)
        return positions

AGGREGATE_CACHE_SIZE = 10_000


class EventLog:
    def __init__(self, env: Mapping[str, str], mapper: EnvelopeMapper | None = None) -> None:
        postgres = uses_postgres(env)
        self._env = dict(env)
        self._placeholder = "%s" if postgres else "?"
        recorder = PostgresLogRecorder if postgres else SQLiteLogRecorder
        factory_env = log_env(env) | {"APPLICATION_RECORDER_TOPIC": get_topic(recorder)}
        self.mapper = mapper or EnvelopeMapper()
        with schema_lock(env):
            self.factory = InfrastructureFactory.construct(Environment(env=factory_env))
            self.recorder: ApplicationRecorder = self.factory.application_recorder()
            self._repository = self._aggregates()
            self._ensure_unique_index()
        # SQLite: processes appending to one file take turns through a lock the kernel hands straight to
        # the next waiter. Without it a writer that finds the file locked sleeps in SQLite's busy handler
        # (1, 2, 5, 10 … ms) and the processes' commits interleave badly. PostgreSQL queues them itself.
        self._append_lock: IO[str] | None = None
        if not uses_postgres(env):
            self._append_lock = open(f"{env['SQLITE_DBNAME']}.append-lock", "a")

    def _aggregates(self) -> Repository:
        # Aggregates are cached and fast-forwarded with the events written since
        # (by this or another process), so a busy aggregate — a group with
        # thousands of memberships — is not replayed from its first event on
        # every command. Cached copies are deep-copied before use.
        return Repository(
            event_store=EventStore(mapper=self.mapper, recorder=self.recorder),
            cache_maxsize=AGGREGATE_CACHE_SIZE,
            fastforward=True,
        )

    def _ensure_unique_index(self) -> None:
        """Create the index of unique values if missing, built from the log (under the schema lock)."""
        table = self.recorder.events_table_name  # type: ignore[attr-defined]

        def streams(prefix: str) -> list[str]:
            with self._transaction(commit=False) as cursor:
                cursor.execute(f"SELECT DISTINCT originator_id FROM {table} WHERE originator_id LIKE ?", (prefix + "%",))
                return [row["originator_id"] for row in cursor.fetchall() if row["originator_id"].startswith(prefix)]

        with self._transaction() as cursor:
            cursor.execute(POSTGRES_RELATIONS if self._placeholder == "%s" else SQLITE_RELATIONS)
            exists = unique_index.TABLE in {row["name"] for row in cursor.fetchall()}
            unique_index.ensure(cursor, exists, self, streams)

    @contextmanager
    def _transaction(self, *, commit: bool = True) -> Iterator[SqlCursor]:
        with self.recorder.datastore.transaction(commit=commit) as raw:  # type: ignore[attr-defined]
            yield SqlCursor(raw, self._placeholder)

    # -- tables kept beside the log (written in its transactions) ---------------------------------

    @property
    def events_table(self) -> str:
        return str(self.recorder.events_table_name)  # type: ignore[attr-defined]

    @property
    def position_column(self) -> str:
        """The column holding an event's position (``nid``) in ``events_table``."""
        return "notification_id" if self._placeholder == "%s" else "rowid"

    def transaction(self, *, commit: bool = True) -> contextlib.AbstractContextManager[SqlCursor]:
        """A transaction on the log's database, for the tables kept beside it."""
        return self._transaction(commit=commit)

    def ensure_tables(self, statements: Sequence[str]) -> None:
        """Create what is missing of these tables and indexes (``CREATE … IF NOT EXISTS``), serialised with
        other processes; when nothing is missing, nothing is locked (appenders are not held up)."""
        relations = POSTGRES_RELATIONS if self._placeholder == "%s" else SQLITE_RELATIONS

        def existing() -> set[str]:
            with self._transaction(commit=False) as cursor:
                cursor.execute(relations)
                return {row["name"] for row in cursor.fetchall()}

        if not missing(statements, existing()):
            return
        with schema_lock(self._env):
            with self._transaction() as cursor:
                for statement in statements:
                    cursor.execute(statement)

    def get(self, aggregate_class: type[A], key: str) -> A | None:
        """The aggregate as its events tell it, or None if it never existed."""
        try:
            aggregate: Aggregate = self._repository.get(aggregate_class.stream_id(key))
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, aggregate_class), aggregate
        return aggregate

    def last_event(self, aggregate_class: type[A], key: str) -> Any | None:
        """The latest domain event of an aggregate, or None: one indexed read, no replay, no lock.

        For aggregates whose every event carries the whole state (a mapping's configuration).
        """
        latest = self.recorder.select_events(aggregate_class.stream_id(key), desc=True, limit=1)
        return self.mapper.to_domain_event(latest[0]) if latest else None

    def owner_of(self, scope: str, value: str) -> str | None:
        """The key of the aggregate holding a unique value of ``scope``, or None (``domain.uniqueness``)."""
        row = self._read_one(f"SELECT owner FROM {unique_index.TABLE} WHERE scope = ? AND value = ?", (scope, value))
        return row["owner"].split(":", 1)[1] if row else None

    def _read_one(self, sql: str, params: Sequence[Any]) -> Mapping[str, Any] | None:
        """The first row of one query. On PostgreSQL one round trip (the pool's connections commit each
        statement by themselves) rather than three for a transaction around it."""
        if self._placeholder == "?":
            with self._transaction(commit=False) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()
        with self.recorder.datastore.get_connection() as connection:  # type: ignore[attr-defined]
            return connection.execute(sql.replace("?", "%s"), tuple(params)).fetchone()

    def holdings(self, aggregate: Aggregate) -> list[Holding]:
        """How the index changes when ``aggregate`` is saved as it is now (read from the index)."""
        with self._transaction(commit=False) as cursor:
            cursor.execute(f"SELECT scope, value FROM {unique_index.TABLE} WHERE owner = ?", (aggregate.id,))
            before = {row["scope"]: row["value"] for row in cursor.fetchall()}
        return unique_index.changes(aggregate.id, before, aggregate.unique_values())

    def save(self, *aggregates: Aggregate, metadata: Mapping[str, Any] | None = None) -> int | None:
        """Append the pending events of all aggregates in one transaction (tools and tests; the service
        appends through ``infra.logwriter.LogWriter``).

        Returns the highest position written, or None when nothing was pending.
        Raises the library's ``RecordConflictError`` when another writer got there first.
        """
        holdings = [holding for aggregate in aggregates for holding in self.holdings(aggregate)]
        stored = [
            self.mapper.to_stored_event(event, metadata)
            for aggregate in aggregates
            for event in aggregate.collect_events()
        ]
        positions = self.insert(stored, holdings) if stored else []
        return max(positions) if positions else None

    def insert(
        self, stored_events: Sequence[StoredEvent], holdings: Sequence[Holding] = (), fences: Sequence[Fence] = ()
    ) -> list[int]:
        """Append in one transaction, with the changes of unique values they make, if every fence lets
        them; the position of each event, in order.

        Raises the library's ``RecordConflictError`` when one of them collides, a value is held by
        another, or a fence refuses (nothing is stored then).
        """
        if self._append_lock is not None:
            fcntl.flock(self._append_lock, fcntl.LOCK_EX)
        try:
            positions = list(self.recorder.insert_events(stored_events, holdings=holdings, fences=fences) or [])
        finally:
            if self._append_lock is not None:
                fcntl.flock(self._append_lock, fcntl.LOCK_UN)
        for fence in fences:
            fence.committed()
        return positions

    def remember(self, aggregates: Sequence[Aggregate]) -> None:
        """Keep aggregates just stored (with no pending events) for the next ``get``, which then only
        fast-forwards them past what others wrote since, instead of replaying them."""
        cache = self._repository.cache
        if cache is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)

    def read(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Public events with ``nid`` > ``after``, in log order."""
        notifications = self.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        return [self.mapper.to_public(n) for n in notifications]

    def head(self) -> int:
        """The position of the last event in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        self.factory.close()
        if self._append_lock is not None:
            self._append_lock.close()
