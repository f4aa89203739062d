"""Values unique across aggregates: backend names and base URLs, model, group and remote hook names, user e-mails.

An aggregate says which values it holds (``Aggregate.unique_values``). The log
keeps an index of who holds what, written in the transaction that appends the
holder's events, where the database refuses a second holder of a value: two
concurrent creates of one name cannot both be stored, whichever processes
make them; the loser's command is decided again and refused with the 409
``ensure_free`` gives. The index is derived from the aggregates, so it can be
built again from any log.

``UniqueValue`` is how claims were kept before (an aggregate per value, two
extra events per create): logs written then still hold its events, which stay
readable, bookkeeping that the public event API does not list.
"""

from __future__ import annotations

from collections.abc import Callable

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict

BACKEND_NAME = "backend.name"
BACKEND_URL = "backend.baseUrl"
MODEL_NAME = "model.name"
GROUP_NAME = "group.name"
HOOK_NAME = "hook.name"
USER_EMAIL = "user.email"  # lower-cased (domain.identity.normal_email)


def ensure_free(owner_of: Callable[[str, str], str | None], scope: str, value: str, owner: str, what: str) -> None:
    """Refuse (409) a value of ``scope`` that an aggregate other than ``owner`` holds; ``what`` names it."""
    holder = owner_of(scope, value)
    if holder and holder != owner:
        raise Conflict(f"libdb: unique constraint violation: {what} already exists")


class UniqueValue(Aggregate):
    """A claim of one value (logs written before the index): read, never written now."""

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
