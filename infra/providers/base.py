"""The one interface every provider adapter implements, and what crosses it.

Adapters speak the providers' wire protocols over one shared aiohttp client
session (see the closing note of issue 9 for why not the providers' SDKs: they
cost 4-9x the CPU per call). An API key is carried in ``Endpoint`` and never
appears in a repr, a log line or an error message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chainloom.domain.runtime import PulledModel


@dataclass(frozen=True)
class Endpoint:
    """How to reach one backend."""

    type: str  # ollama | vllm | openai | gemini
    base_url: str
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class ChatOptions:
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    tools: Sequence[dict[str, Any]] = ()  # OpenAI shape: {"type": "function", "function": {...}}


@dataclass(frozen=True)
class ChatResult:
    message: Message
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class PullProgress:
    """One line of an Ollama pull's progress."""

    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0


class ProviderError(Exception):
    """An upstream call failed; the message is safe to show a client (no key, no auth header)."""


class ProviderUnavailable(ProviderError):
    """The backend could not be reached, timed out, or answered 5xx: another backend may serve the request
    (if no output was sent yet)."""


class ProviderRefused(ProviderError):
    """The backend answered but refused the request (4xx, a bad finish reason, empty content)."""


class TokenLimit(ProviderRefused):
    """The model stopped at its token limit (``length``)."""


class Unsupported(ProviderError):
    """This provider type does not implement the operation (vLLM embeddings, pulls other than Ollama's)."""


class ProviderClient(Protocol):
    endpoint: Endpoint

    async def list_models(self) -> list[PulledModel]:
        """What the backend serves (Ollama: /api/tags; OpenAI/vLLM: /models; Gemini: the catalogue with each
        model's limits and capabilities)."""

    async def chat(self, model: str, messages: Sequence[Message], options: ChatOptions = ChatOptions()) -> ChatResult: ...

    def chat_stream(
        self, model: str, messages: Sequence[Message], options: ChatOptions = ChatOptions()
    ) -> AsyncIterator[str]:
        """The reply's text as it arrives (non-empty pieces)."""

    async def prompt(self, model: str, system: str, prompt: str, options: ChatOptions = ChatOptions()) -> str: ...

    async def embed(self, model: str, text: str) -> list[float]: ...

    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Ollama only: the pull's progress lines until it completes (an ``error`` line raises)."""

    async def delete(self, model: str) -> None:
        """Ollama only: remove a model from the server."""
