"""Unique values across aggregates (backend names, base URLs, model and group names).

A value is claimed by creating (or re-claiming) the aggregate whose id *is* the
value. The claim is saved in the same transaction as the owner's events, so two
concurrent claims of one value cannot both be stored: the second insert of
version 1 collides in the log and the command is retried, then refused.
"""

from __future__ import annotations

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict


class UniqueValue(Aggregate):
    # Bookkeeping, not a fact clients asked about: its events stay on the log (and Kafka) for
    # audit, but the public event API does not list them.
    aggregate_type = "unique_value"

    class Claimed(Aggregate.Created):
        scope: str
        value: str
        owner: str

    class Reclaimed(Aggregate.Event):
        owner: str

    class Released(Aggregate.Event):
        pass

    @staticmethod
    def key_for(scope: str, value: str) -> str:
        return f"{scope}={value}"

    @event(Claimed)
    def __init__(self, scope: str, value: str, owner: str) -> None:
        self.scope = scope
        self.value = value
        self.owner = owner

    @classmethod
    def claim_new(cls, scope: str, value: str, owner: str) -> UniqueValue:
        return cls._create(
            cls.Claimed, id=cls.stream_id(cls.key_for(scope, value)), scope=scope, value=value, owner=owner
        )

    def claim(self, owner: str, description: str) -> None:
        if self.owner == owner:
            return
        if self.owner:
            raise Conflict(f"libdb: unique constraint violation: {description} already exists")
        self._reclaim(owner=owner)

    def release(self, owner: str) -> None:
        if self.owner == owner:
            self._release()

    @event(Reclaimed)
    def _reclaim(self, owner: str) -> None:
        self.owner = owner

    @event(Released)
    def _release(self) -> None:
        self.owner = ""


# Aggregates whose events are chainloom's bookkeeping (kept out of the public event API).
BOOKKEEPING_AGGREGATE_TYPES = frozenset({UniqueValue.aggregate_type})
