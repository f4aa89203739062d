"""What the runtime observes of a backend, and the routing facts read from it (value objects, pure).

A backend's *observed state* is what the reconciler last saw on the upstream
server: the model names it serves for the backend's groups (``models``), the
models it actually holds with their capabilities (``pulled_models``), and the
last error talking to it. It reaches the API only through the log
(``backend.*_observed`` events) and the read models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PulledModel:
    """A model a backend holds (the contract's ``ModelPullStatus``); capabilities come from the declaration
    (Ollama, vLLM, OpenAI) or from the upstream catalogue (Gemini)."""

    name: str
    model: str = ""
    modified_at: str = ""  # RFC 3339; "" when the backend does not say
    size: int = 0
    digest: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # parentModel, format, family, families, parameterSize, quantizationLevel
    context_length: int = 0
    can_chat: bool = False
    can_embed: bool = False
    can_prompt: bool = False
    can_stream: bool = False


@dataclass(frozen=True)
class BackendState:
    """One grouped backend as the runtime last observed it (the contract's ``BackendRuntimeState``)."""

    id: str
    name: str
    type: str  # ollama | vllm | openai | gemini
    base_url: str
    models: tuple[str, ...] = ()
    pulled_models: tuple[PulledModel, ...] = ()
    error: str = ""
