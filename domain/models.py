"""A declared model: an entry of the model registry that groups route to backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import BadRequest, Conflict, NotFound, Unprocessable
from chainloom.domain.uniqueness import MODEL_NAME

# The largest context length every read store can hold (a 32-bit integer column).
MAX_CONTEXT_LENGTH = 2**31 - 1


@dataclass(frozen=True)
class ModelSpec:
    """What a declaration says about a model."""

    model: str
    context_length: int
    can_chat: bool = False
    can_embed: bool = False
    can_prompt: bool = False
    can_stream: bool = False

    def validate(self) -> None:
        prefix = "serverops: bad request invalid model data"
        if not self.model:
            raise BadRequest(f"{prefix}: model name is required", param="model")
        if self.context_length == 0:
            raise BadRequest(f"{prefix}: context length is required", param="contextLength")
        if not (self.can_chat or self.can_embed or self.can_prompt or self.can_stream):
            raise BadRequest(f"{prefix}: capabilities are required")
        if self.context_length < 0:
            raise Unprocessable("invalid model data: context length must be positive", param="contextLength")
        if self.context_length > MAX_CONTEXT_LENGTH:
            raise Unprocessable(
                f"invalid model data: context length must be at most {MAX_CONTEXT_LENGTH}", param="contextLength"
            )


class Model(Aggregate):
    aggregate_type = "model"

    class Declared(Aggregate.Created):
        model: str
        context_length: int
        can_chat: bool
        can_embed: bool
        can_prompt: bool
        can_stream: bool

    class Redeclared(Aggregate.Event):
        model: str
        context_length: int
        can_chat: bool
        can_embed: bool
        can_prompt: bool
        can_stream: bool

    class Updated(Aggregate.Event):
        model: str
        context_length: int
        can_chat: bool
        can_embed: bool
        can_prompt: bool
        can_stream: bool

    class Deleted(Aggregate.Event):
        pass

    @classmethod
    def declare(cls, model_id: str, spec: ModelSpec) -> Model:
        spec.validate()
        return cls._create(cls.Declared, id=cls.stream_id(model_id), **_fields(spec))

    @event(Declared)
    def __init__(
        self,
        model: str,
        context_length: int,
        can_chat: bool,
        can_embed: bool,
        can_prompt: bool,
        can_stream: bool,
    ) -> None:
        self._set(model, context_length, can_chat, can_embed, can_prompt, can_stream)
        self.deleted = False

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            self.model, self.context_length, self.can_chat, self.can_embed, self.can_prompt, self.can_stream
        )

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {MODEL_NAME: self.model}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")

    def redeclare(self, spec: ModelSpec) -> None:
        """Declare again a model that was deleted (its id is its name, so it comes back)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: model '{self.key}' already exists")
        spec.validate()
        self._redeclare(**_fields(spec))

    def update(self, spec: ModelSpec) -> None:
        self.ensure_exists()
        spec.validate()
        if spec != self.spec:
            self._update(**_fields(spec))

    def require(self, context_length: int, capability: str) -> None:
        """Start-up seeding: the configured context length must match; the capability is switched on."""
        if self.context_length != context_length:
            raise Unprocessable(
                f"model {self.model} is declared with context length {self.context_length}, "
                f"configuration says {context_length}"
            )
        if not getattr(self, capability):
            spec = self.spec.__dict__ | {capability: True}
            self._update(**spec)

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Redeclared)
    def _redeclare(
        self, model: str, context_length: int, can_chat: bool, can_embed: bool, can_prompt: bool, can_stream: bool
    ) -> None:
        self._set(model, context_length, can_chat, can_embed, can_prompt, can_stream)
        self.deleted = False

    @event(Updated)
    def _update(
        self, model: str, context_length: int, can_chat: bool, can_embed: bool, can_prompt: bool, can_stream: bool
    ) -> None:
        self._set(model, context_length, can_chat, can_embed, can_prompt, can_stream)

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    def _set(
        self, model: str, context_length: int, can_chat: bool, can_embed: bool, can_prompt: bool, can_stream: bool
    ) -> None:
        self.model = model
        self.context_length = context_length
        self.can_chat = can_chat
        self.can_embed = can_embed
        self.can_prompt = can_prompt
        self.can_stream = can_stream


def _fields(spec: ModelSpec) -> dict[str, Any]:
    return dict(spec.__dict__)
