"""What a projector is: named tables, and one handler per event type it reads.

Projectors read public event envelopes (the same JSON the Kafka relay
publishes), so the same code serves the embedded runner and Kafka workers.
They never decide anything: they record what the events say.

Table and index names in a projector's SQL are templates (``{backends}``):
a rebuild builds a copy of the read models aside, under suffixed names, and
swaps it in only once it is complete (projections/rebuild.py).

Handlers get only chainloom's own events (``event_source`` ``chainloom``,
which no external producer may claim): an event a client appends through
``POST /events`` or ``/ingest`` never reaches them, whatever its type.

Handlers are keyed by the aggregates' event classes (``@on(Backend.Created)``),
not by type strings: a renamed or removed event class breaks the projector at
import instead of leaving its handler silently unused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from chainloom.domain.base import DomainEvent, public_event_type
from chainloom.infra.envelope import INTERNAL_EVENT_SOURCE
from chainloom.infra.readstore import ReadStore, SqlCursor
from chainloom.infra.schema import missing

Event = dict[str, Any]
Handler = Callable[[Any, "TemplatedCursor", Event], None]


def on(*event_classes: type[DomainEvent]) -> Callable[[Handler], Handler]:
    """Mark a projector method as the handler of the given events (``@on(Backend.Created)``).

    Raises ``LookupError`` at import for a class no aggregate declares.
    """
    event_types = tuple(public_event_type(event_class) for event_class in event_classes)

    def mark(handler: Handler) -> Handler:
        setattr(handler, "__handles__", event_types)
        return handler

    return mark


_INDEX_NAME = re.compile(r"CREATE INDEX IF NOT EXISTS \{(\w+)\}")


class _Names(dict):
    """Template names → names with the suffix (``{backends}`` → ``backends_rebuild``)."""

    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix

    def __missing__(self, name: str) -> str:
        return name + self.suffix


class TemplatedCursor:
    """A cursor that puts a projector's table and index names into each statement it runs."""

    def __init__(self, cursor: SqlCursor, projector: Projector) -> None:
        self.raw_cursor = cursor
        self._projector = projector

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.raw_cursor.execute(self._projector.sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.raw_cursor.executemany(self._projector.sql(sql), rows)

    def fetchone(self) -> Any:
        return self.raw_cursor.fetchone()

    def fetchall(self) -> Any:
        return self.raw_cursor.fetchall()


class Projector:
    name: str
    # Statements creating the tables and indexes (idempotent: IF NOT EXISTS), names as templates.
    schema: ClassVar[tuple[str, ...]]
    # Tables dropped on rebuild (live names).
    tables: ClassVar[tuple[str, ...]]
    _handlers: ClassVar[dict[str, Handler]]

    def __init__(self, suffix: str = "") -> None:
        """``suffix``: a copy writing to suffixed tables and tracked under a suffixed name (a rebuild's)."""
        self.suffix = suffix
        self.name = type(self).name + suffix
        self.live_name = type(self).name
        self._names = _Names(suffix)
        self._statements: dict[str, str] = {}

    def aside(self, suffix: str) -> Projector:
        """The same projector writing to tables named with ``suffix``."""
        return type(self)(suffix)

    def sql(self, template: str) -> str:
        """The statement with this projector's table and index names."""
        statement = self._statements.get(template)
        if statement is None:
            statement = self._statements[template] = template.format_map(self._names)
        return statement

    def table_names(self) -> list[str]:
        return [table + self.suffix for table in self.tables]

    def index_names(self) -> list[str]:
        """Live index names (the templates')."""
        return [match.group(1) for statement in self.schema for match in _INDEX_NAME.finditer(statement)]

    def index_statement(self, index: str) -> str:
        """The statement creating the live index ``index``."""
        return next(statement for statement in self.schema if f"EXISTS {{{index}}}" in statement).format_map(_Names(""))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {
            event_type: member
            for member in vars(cls).values()
            for event_type in getattr(member, "__handles__", ())
        }

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def drop(self, cursor: SqlCursor) -> None:
        for table in self.table_names():
            cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def templated(self, cursor: SqlCursor | TemplatedCursor) -> TemplatedCursor:
        """``cursor`` running this projector's statements with its table names."""
        return cursor if isinstance(cursor, TemplatedCursor) else TemplatedCursor(cursor, self)

    def apply(self, cursor: SqlCursor | TemplatedCursor, event: Event) -> None:
        cursor = self.templated(cursor)
        if event["event_source"] != INTERNAL_EVENT_SOURCE:
            return
        handler = self._handlers.get(event["event_type"])
        if handler is not None:
            handler(self, cursor, event)

    # -- read models kept outside the read store (projections.vectors: lancedb) ----------------

    def flush(self, cursor: SqlCursor | TemplatedCursor) -> None:
        """Write what the handlers of this batch buffered for a store outside the read store; called once
        the projector's events of a batch are applied, before its position is tracked, in the batch's
        transaction. What it writes must be written again harmlessly: the transaction may still roll
        back, and the batch is then applied again."""

    def discard(self) -> None:
        """Forget what the handlers buffered (their share of the batch is rolled back)."""

    def tidy(self, store: ReadStore) -> None:
        """Remove what this projector keeps outside the read store that no table of it names any more
        (a rebuilt generation's leftovers); at start-up and after a rebuild. Blocking."""


def create_tables(store: ReadStore, cursor: SqlCursor, projectors: Sequence[Projector]) -> None:
    """Create what is missing of the projectors' tables and the store's fault records, serialised with other
    processes; what exists is not touched.

    Set-up runs while other processes project (a second API started while a worker projects the log): even
    ``CREATE INDEX IF NOT EXISTS`` on an existing index locks its table against their writes, and two such
    statements in one transaction deadlock with a batch writing both tables. So the catalogue is read first,
    and only when something is missing are the locks taken — the projection lock first, as batches and a
    rebuild take it (so no batch is half-way when a table is indexed), then the schema lock — and the
    catalogue read again before creating. (SQLite, with one write lock for everything, just creates.)
    """
    statements = [*store.housekeeping_schema, *(projector.sql(s) for projector in projectors for s in projector.schema)]
    if not store.looks_before_creating:
        for statement in statements:
            cursor.execute(statement)
        return
    if not missing(statements, store.relations(cursor)):
        return
    store.lock_projections(cursor)
    store.lock_schema(cursor)
    for statement in missing(statements, store.relations(cursor)):
        cursor.execute(statement)
