"""The log: one event store, one global order (``nid``), on SQLite or PostgreSQL.

Built from the ``eventsourcing`` library's recorders; which database is used is
configuration (``PERSISTENCE_MODULE`` in the factory environment), nothing above
this module knows. All methods block: call them from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    EventStore,
    InfrastructureFactory,
    StoredEvent,
)
from eventsourcing.utils import Environment

from chainloom.domain.base import Aggregate
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.infra.schema import schema_lock

A = TypeVar("A", bound=Aggregate)

AGGREGATE_CACHE_SIZE = 10_000


class EventLog:
    def __init__(self, env: Mapping[str, str], mapper: EnvelopeMapper | None = None) -> None:
        with schema_lock(env):
            self.factory = InfrastructureFactory.construct(Environment(env=dict(env)))
            self.recorder: ApplicationRecorder = self.factory.application_recorder()
        self.mapper = mapper or EnvelopeMapper()
        # Aggregates are cached and fast-forwarded with the events written since
        # (by this or another process), so a busy aggregate — a group with
        # thousands of memberships — is not replayed from its first event on
        # every command. Cached copies are deep-copied before use.
        self._repository = Repository(
            event_store=EventStore(mapper=self.mapper, recorder=self.recorder),
            cache_maxsize=AGGREGATE_CACHE_SIZE,
            fastforward=True,
        )

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

    def save(self, *aggregates: Aggregate, metadata: Mapping[str, Any] | None = None) -> int | None:
        """Append the pending events of all aggregates in one transaction.

        Returns the highest position written, or None when nothing was pending.
        Raises the library's ``IntegrityError`` when another writer got there first.
        """
        stored = [
            self.mapper.to_stored_event(event, metadata)
            for aggregate in aggregates
            for event in aggregate.collect_events()
        ]
        return self.append(stored)

    def insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Append in one transaction; the position of each event, in order.

        Raises the library's ``IntegrityError`` when one of them collides (nothing is stored then).
        """
        return list(self.recorder.insert_events(stored_events) or [])

    def append(self, stored_events: Sequence[StoredEvent]) -> int | None:
        if not stored_events:
            return None
        positions = self.recorder.insert_events(stored_events)
        return max(positions) if positions else self.head()

    def read(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Public events with ``nid`` > ``after``, in log order."""
        notifications = self.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        return [self.mapper.to_public(n) for n in notifications]

    def head(self) -> int:
        """The position of the last event in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        self.factory.close()
