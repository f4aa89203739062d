"""A backend: one upstream LLM server (Ollama or vLLM) that can host models."""

from __future__ import annotations

from typing import Literal, get_args

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.uniqueness import BACKEND_NAME, BACKEND_URL

BackendType = Literal["ollama", "vllm"]
BACKEND_TYPES: tuple[str, ...] = get_args(BackendType)


def validate_backend(name: str, base_url: str, backend_type: str) -> None:
    if not name:
        raise Unprocessable("invalid backend data: name is required", param="name")
    if not base_url:
        raise Unprocessable("invalid backend data: baseURL is required", param="baseUrl")
    if backend_type not in BACKEND_TYPES:
        raise Unprocessable("invalid backend data: Type is required to be ollama or vllm", param="type")


class Backend(Aggregate):
    aggregate_type = "backend"

    class Created(Aggregate.Created):
        name: str
        base_url: str
        type: str

    class Updated(Aggregate.Event):
        name: str
        base_url: str
        type: str

    class Deleted(Aggregate.Event):
        pass

    @classmethod
    def create(cls, backend_id: str, name: str, base_url: str, type: str) -> Backend:
        validate_backend(name, base_url, type)
        return cls._create(cls.Created, id=cls.stream_id(backend_id), name=name, base_url=base_url, type=type)

    @event(Created)
    def __init__(self, name: str, base_url: str, type: str) -> None:
        self.name = name
        self.base_url = base_url
        self.type = type
        self.deleted = False

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {BACKEND_NAME: self.name, BACKEND_URL: self.base_url}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")

    def update(self, name: str, base_url: str, type: str) -> None:
        self.ensure_exists()
        validate_backend(name, base_url, type)
        self._update(name=name, base_url=base_url, type=type)

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Updated)
    def _update(self, name: str, base_url: str, type: str) -> None:
        self.name = name
        self.base_url = base_url
        self.type = type

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True
