"""What a projector is: named tables, and one handler per event type it reads.

Projectors read public event envelopes (the same JSON the Kafka relay
publishes), so the same code serves the embedded runner and Kafka workers.
They never decide anything: they record what the events say.

Handlers get only chainloom's own events (``event_source`` ``chainloom``,
which no external producer may claim): an event a client appends through
``POST /events`` or ``/ingest`` never reaches them, whatever its type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from infra.envelope import INTERNAL_EVENT_SOURCE
from infra.readstore import ReadStore, SqlCursor

Event = dict[str, Any]
Handler = Callable[[Any, SqlCursor, Event], None]


def on(*event_types: str) -> Callable[[Handler], Handler]:
    """Mark a projector method as the handler of the given event types."""

    def mark(handler: Handler) -> Handler:
        handler.__handles__ = event_types  # type: ignore[attr-defined]
        return handler

    return mark


class Projector:
    name: ClassVar[str]
    # Statements creating the tables and indexes (idempotent: IF NOT EXISTS).
    schema: ClassVar[tuple[str, ...]]
    # Tables dropped on rebuild.
    tables: ClassVar[tuple[str, ...]]
    _handlers: ClassVar[dict[str, Handler]]

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

    def create(self, cursor: SqlCursor) -> None:
        for statement in self.schema:
            cursor.execute(statement)

    def drop(self, cursor: SqlCursor) -> None:
        for table in self.tables:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, cursor: SqlCursor, event: Event) -> None:
        if event["event_source"] != INTERNAL_EVENT_SOURCE:
            return
        handler = self._handlers.get(event["event_type"])
        if handler is not None:
            handler(self, cursor, event)


def create_tables(store: ReadStore, cursor: SqlCursor, projectors: Sequence[Projector]) -> None:
    """Create the projectors' tables (idempotent), serialised with other processes doing the same."""
    store.lock_schema(cursor)
    for projector in projectors:
        projector.create(cursor)
