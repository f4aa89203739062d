"""Aggregate base class: string ids, scoped by aggregate type.

Aggregates are the library's (``eventsourcing``) with ``str`` ids, so ids such
as ``internal_embed_group`` or a model name can be used as they are. Every
aggregate type has its own id space: the stored id is ``<type>:<key>``, and
``key`` is the id clients see.

Each aggregate declares its event classes in its body (``class Created(Aggregate.Created)``
with ``@event(Created)`` on the method that applies it), so other modules refer to
``Backend.Created`` rather than to a string, and a renamed event breaks at import.
An event's public type (``backend.created``) is derived from its class here, once.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    MetaDomainEvent,
)


class DomainEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime


# Every event class an aggregate declares in its body → that aggregate (filled as aggregates are defined).
_declaring_aggregate: dict[type[DomainEvent], type[Aggregate]] = {}


class Aggregate(BaseAggregate[str]):
    # Public aggregate type; also the namespace of the stored id.
    aggregate_type = "aggregate"

    class Event(DomainEvent):
        pass

    class Created(Event, CanInitAggregate[str]):
        originator_topic: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The library replaces each declared event class by a subclass of the aggregate's own
        # Event (and each one an @event method applies by another); remember the final ones.
        declared = [name for name, value in vars(cls).items() if _is_event_class(value) and name != "Event"]
        super().__init_subclass__(**kwargs)
        for name in declared:
            _declaring_aggregate[getattr(cls, name)] = cls

    def unique_values(self) -> dict[str, str]:
        """The values this aggregate holds that no other may hold at the same time, by scope
        (``{"backend.name": "ollama-1"}``); none by default, and none once deleted
        (``domain.uniqueness``)."""
        return {}

    @classmethod
    def stream_id(cls, key: str) -> str:
        return f"{cls.aggregate_type}:{key}"

    @property
    def key(self) -> str:
        """The id as clients know it (the stored id without its type prefix)."""
        return self.id.split(":", 1)[1]


def _is_event_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, DomainEvent)


def declared_events() -> dict[type[DomainEvent], type[Aggregate]]:
    """Every event class the aggregates defined so far declare, with the aggregate declaring it."""
    return dict(_declaring_aggregate)


def public_event_type(event_class: type[DomainEvent]) -> str:
    """``Backend.Created`` → ``backend.created``: the type its events carry in the log and on Kafka.

    Raises ``LookupError`` for a class no aggregate declares (a base class such as ``Aggregate.Event``).
    """
    aggregate = _declaring_aggregate.get(event_class)
    if aggregate is None:
        raise LookupError(f"{event_class!r} is not an event class an aggregate declares")
    return event_type_name(aggregate.aggregate_type, event_class)


def event_type_name(aggregate_type: str, event_class: type) -> str:
    """``backend`` + ``Backend.Created`` → ``backend.created``; ``BackendAssigned`` → ``backend_assigned``."""
    return f"{aggregate_type}.{_snake_case(event_class.__name__)}"


@lru_cache(maxsize=None)
def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def split_stream_id(stream_id: str) -> tuple[str, str]:
    """``"backend:1234"`` → ``("backend", "1234")``."""
    aggregate_type, _, key = stream_id.partition(":")
    return aggregate_type, key
