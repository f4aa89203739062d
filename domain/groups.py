"""An affinity group: the backends and models that may serve each other.

A model is routable on a backend only when both belong to one group. Groups
hold their memberships; every change of membership is an event of the group.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, Forbidden, NotFound
from chainloom.domain.uniqueness import GROUP_NAME

EMBED_GROUP_ID = "internal_embed_group"
TASKS_GROUP_ID = "internal_tasks_group"
CHAT_GROUP_ID = "internal_chat_group"


@dataclass(frozen=True)
class InternalGroup:
    """A group seeded at start-up, with the model it is seeded with."""

    group_id: str
    name: str
    purpose_type: str
    capability: str  # the capability its seeded model gets switched on


# Seeding order matters: it is the order of creation, so listings (newest first)
# show Chat, Tasks, Embedder.
INTERNAL_GROUPS = (
    InternalGroup(EMBED_GROUP_ID, "Embedder", "Internal Embeddings", "can_embed"),
    InternalGroup(TASKS_GROUP_ID, "Tasks", "Internal Tasks", "can_prompt"),
    InternalGroup(CHAT_GROUP_ID, "Chat", "Internal Chat", "can_chat"),
)

# The embedding group backs the vector index; its model set must not change.
IMMUTABLE_GROUP_IDS = frozenset({EMBED_GROUP_ID})


class AffinityGroup(Aggregate):
    aggregate_type = "group"

    class Created(Aggregate.Created):
        name: str
        purpose_type: str

    class Recreated(Aggregate.Event):
        name: str
        purpose_type: str

    class Updated(Aggregate.Event):
        name: str
        purpose_type: str

    class Deleted(Aggregate.Event):
        pass

    class BackendAssigned(Aggregate.Event):
        backend_id: str

    class BackendRemoved(Aggregate.Event):
        backend_id: str

    class ModelAssigned(Aggregate.Event):
        model_id: str

    class ModelRemoved(Aggregate.Event):
        model_id: str

    @classmethod
    def create(cls, group_id: str, name: str, purpose_type: str) -> AffinityGroup:
        return cls._create(cls.Created, id=cls.stream_id(group_id), name=name, purpose_type=purpose_type)

    @event(Created)
    def __init__(self, name: str, purpose_type: str) -> None:
        self._reset(name, purpose_type)

    @property
    def immutable(self) -> bool:
        return self.key in IMMUTABLE_GROUP_IDS

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {GROUP_NAME: self.name}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")

    def recreate(self, name: str, purpose_type: str) -> None:
        """Bring back a deleted group under its old id (start-up seeding of internal groups)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: group '{self.key}' already exists")
        self._recreate(name=name, purpose_type=purpose_type)

    def update(self, name: str, purpose_type: str) -> None:
        self.ensure_exists()
        if self.immutable:
            raise Forbidden(f"affinity group {self.key} is immutable")
        self._update(name=name, purpose_type=purpose_type)

    def delete(self) -> None:
        """Delete the group, first removing each of its assignments (each one an event)."""
        self.ensure_exists()
        if self.immutable:
            raise Forbidden(f"affinity group {self.key} is immutable")
        for backend_id in sorted(self.backend_ids):
            self._remove_backend(backend_id=backend_id)
        for model_id in sorted(self.model_ids):
            self._remove_model(model_id=model_id)
        self._delete()

    def assign_backend(self, backend_id: str) -> None:
        self.ensure_exists()
        if backend_id in self.backend_ids:
            raise Conflict(
                f"libdb: unique constraint violation: backend {backend_id} is already assigned to group {self.key}"
            )
        self._assign_backend(backend_id=backend_id)

    def remove_backend(self, backend_id: str) -> None:
        if self.deleted or backend_id not in self.backend_ids:
            raise NotFound("libdb: not found")
        self._remove_backend(backend_id=backend_id)

    def assign_model(self, model_id: str) -> None:
        self.ensure_exists()
        if model_id in self.model_ids:
            raise Conflict(
                f"libdb: unique constraint violation: model {model_id} is already assigned to group {self.key}"
            )
        self._assign_model(model_id=model_id)

    def remove_model(self, model_id: str, *, cascade: bool = False) -> None:
        """Remove a model; ``cascade`` when the model itself is being deleted."""
        if self.immutable and not cascade:
            raise Forbidden("serverops: immutable group")
        if self.deleted or model_id not in self.model_ids:
            raise NotFound("libdb: not found")
        self._remove_model(model_id=model_id)

    @event(Recreated)
    def _recreate(self, name: str, purpose_type: str) -> None:
        self._reset(name, purpose_type)

    @event(Updated)
    def _update(self, name: str, purpose_type: str) -> None:
        self.name = name
        self.purpose_type = purpose_type

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    @event(BackendAssigned)
    def _assign_backend(self, backend_id: str) -> None:
        self.backend_ids.add(backend_id)

    @event(BackendRemoved)
    def _remove_backend(self, backend_id: str) -> None:
        self.backend_ids.discard(backend_id)

    @event(ModelAssigned)
    def _assign_model(self, model_id: str) -> None:
        self.model_ids.add(model_id)

    @event(ModelRemoved)
    def _remove_model(self, model_id: str) -> None:
        self.model_ids.discard(model_id)

    def _reset(self, name: str, purpose_type: str) -> None:
        self.name = name
        self.purpose_type = purpose_type
        self.backend_ids: set[str] = set()
        self.model_ids: set[str] = set()
        self.deleted = False
