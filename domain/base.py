"""Aggregate base class: string ids, scoped by aggregate type.

Aggregates are the library's (``eventsourcing``) with ``str`` ids, so ids such
as ``internal_embed_group`` or a model name can be used as they are. Every
aggregate type has its own id space: the stored id is ``<type>:<key>``, and
``key`` is the id clients see.
"""

from __future__ import annotations

from datetime import datetime

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


class Aggregate(BaseAggregate[str]):
    # Public aggregate type; also the namespace of the stored id.
    aggregate_type = "aggregate"

    class Event(DomainEvent):
        pass

    class Created(Event, CanInitAggregate[str]):
        originator_topic: str

    @classmethod
    def stream_id(cls, key: str) -> str:
        return f"{cls.aggregate_type}:{key}"

    @property
    def key(self) -> str:
        """The id as clients know it (the stored id without its type prefix)."""
        return self.id.split(":", 1)[1]


def split_stream_id(stream_id: str) -> tuple[str, str]:
    """``"backend:1234"`` → ``("backend", "1234")``."""
    aggregate_type, _, key = stream_id.partition(":")
    return aggregate_type, key
