"""A backend: one upstream LLM server (Ollama or vLLM) that can host models.

Cloud providers (OpenAI, Gemini) are backends too — *provider backends*, one
per provider, id = name = its type, at the provider's base URL — but they come
into being only through provider configuration (``create_provider_backend``):
``POST /backends`` still accepts only ``ollama`` and ``vllm``. An update keeps a
provider backend's type (its name and base URL may change, say to a proxy).
"""

from __future__ import annotations

from typing import Literal, get_args

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.uniqueness import BACKEND_NAME, BACKEND_URL

BackendType = Literal["ollama", "vllm"]
BACKEND_TYPES: tuple[str, ...] = get_args(BackendType)
ProviderType = Literal["openai", "gemini"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
# Every type a stored backend may have (what the API answers).
AnyBackendType = Literal["ollama", "vllm", "openai", "gemini"]
# Where each provider's backend points when configured (or reset by a configure with upsert).
PROVIDER_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com",
}


def validate_backend(name: str, base_url: str, backend_type: str) -> None:
    if not name:
        raise Unprocessable("invalid backend data: name is required", param="name")
    if not base_url:
        raise Unprocessable("invalid backend data: baseURL is required", param="baseUrl")
    if backend_type not in BACKEND_TYPES:
        raise Unprocessable("invalid backend data: Type is required to be ollama or vllm", param="type")


def validate_provider_backend(name: str, base_url: str, backend_type: str, provider_type: str) -> None:
    """An update of a provider backend: name and base URL as for any backend; the type stays."""
    if not name:
        raise Unprocessable("invalid backend data: name is required", param="name")
    if not base_url:
        raise Unprocessable("invalid backend data: baseURL is required", param="baseUrl")
    if backend_type != provider_type:
        raise Unprocessable(
            f"invalid backend data: Type of the {provider_type} provider backend stays {provider_type}", param="type"
        )


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

    class Recreated(Aggregate.Event):
        """A deleted provider backend made again by a provider configuration (its id is its type)."""

        name: str
        base_url: str
        type: str

    @classmethod
    def create(cls, backend_id: str, name: str, base_url: str, type: str) -> Backend:
        validate_backend(name, base_url, type)
        return cls._create(cls.Created, id=cls.stream_id(backend_id), name=name, base_url=base_url, type=type)

    @classmethod
    def create_provider_backend(cls, provider_type: str) -> Backend:
        """The backend of a cloud provider: id = name = type, at the provider's base URL."""
        base_url = _provider_base_url(provider_type)
        return cls._create(
            cls.Created, id=cls.stream_id(provider_type), name=provider_type, base_url=base_url, type=provider_type
        )

    @property
    def is_provider_backend(self) -> bool:
        return self.type in PROVIDER_TYPES

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
        if self.is_provider_backend:
            validate_provider_backend(name, base_url, type, self.type)
        else:
            validate_backend(name, base_url, type)
        self._update(name=name, base_url=base_url, type=type)

    def reset_provider_backend(self, provider_type: str) -> bool:
        """Make this provider backend (id = type) what configuring the provider makes it: name = type, the
        provider's base URL — created again if it was deleted. False when it already is (no event)."""
        name, base_url = provider_type, _provider_base_url(provider_type)
        if self.deleted:
            self._recreate(name=name, base_url=base_url, type=provider_type)
            return True
        if (self.name, self.base_url, self.type) == (name, base_url, provider_type):
            return False
        self._update(name=name, base_url=base_url, type=provider_type)
        return True

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

    @event(Recreated)
    def _recreate(self, name: str, base_url: str, type: str) -> None:
        self.name = name
        self.base_url = base_url
        self.type = type
        self.deleted = False


def _provider_base_url(provider_type: str) -> str:
    try:
        return PROVIDER_BASE_URLS[provider_type]
    except KeyError:
        raise NotFound(f"unknown provider type '{provider_type}': openai or gemini") from None
