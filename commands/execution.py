"""Serving prompts, chats and embeddings: route a request to a backend, call it, fail over.

``ExecutionService`` is what ``/execute`` and ``/embed`` call, and what the task
engine and the OpenAI-compatible endpoint will call (``chat``, ``chat_stream``).
Each call reads the runtime's observed state (a read model, ``RuntimeStates``),
routes on it (``domain.routing``: every backend holding a qualifying model,
ordered to spread load), and calls the first backend through its provider
client (``infra.providers``), moving to the next when one is unavailable —
unreachable, timed out, 5xx — before any output was sent. Nothing is written to
the log: serving a prompt changes no state.

Outcomes a client reads (``domain.errors``, mapped by ``web.errors``):
nothing in any group can serve the request → 422 with the "no model matched
the requirements" report; something could but every such backend is in error,
not yet holding the model, or failed just now → 503 with ``Retry-After``; a
backend answered but refused (4xx, a token limit, empty content) → 502.

The hot path is kept short: the candidate catalogue is rebuilt only when the
state read model answers with a new result (its query is cached until the read
models move), and the routing of each distinct requirement is remembered with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

from chainloom.domain.errors import BadRequest, DomainError, Unavailable, Unprocessable, UpstreamRefused
from chainloom.domain.routing import Candidate, NoModelMatched, Requirement, Spreader, catalogue, route
from chainloom.domain.runtime import BackendState
from chainloom.infra.providers.base import (
    ChatOptions,
    ChatResult,
    Endpoint,
    Message,
    ProviderClient,
    ProviderError,
    ProviderUnavailable,
    Unsupported,
)

T = TypeVar("T")
logger = logging.getLogger(__name__)

# The reference's instruction for /execute: a machine asks, the model answers without small talk.
TASK_INSTRUCTION = (
    "You are a task processing engine talking to other machines. "
    "Return the direct answer without explanation to the given task."
)
PROMPT_TEMPERATURE = 0.1
_KEYED_TYPES = ("openai", "gemini")
_MAX_REMEMBERED_ROUTES = 1024


class RuntimeStates(Protocol):
    """The runtime's observed state of every grouped backend (a read model; ``queries.runtime``)."""

    async def states(self) -> list[BackendState]: ...


class ApiKeys(Protocol):
    """The API key of a cloud provider type (``openai``, ``gemini``), None when not configured."""

    async def api_key(self, provider_type: str) -> str | None: ...


class Clients(Protocol):
    """Provider clients over the process's one HTTP session (``infra.providers.open_clients``)."""

    def client(self, endpoint: Endpoint) -> ProviderClient: ...


@dataclass(frozen=True)
class Defaults:
    """The model and provider type each operation uses when a request names none (settings' TASK_*,
    CHAT_*, EMBED_*)."""

    task_model: str
    task_provider: str
    chat_model: str
    chat_provider: str
    embed_model: str
    embed_provider: str

    @classmethod
    def from_settings(cls, settings) -> Defaults:
        return cls(
            settings.task_model,
            settings.task_provider,
            settings.chat_model,
            settings.chat_provider,
            settings.embed_model,
            settings.embed_provider,
        )


class ExecutionService:
    def __init__(
        self,
        states: RuntimeStates,
        keys: ApiKeys,
        clients: Clients,
        defaults: Defaults,
        *,
        retry_after: float = 10.0,
        cool_down: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``retry_after``: what a 503 tells a client when backends are in error or still pulling (when the
        runtime looks again: the reconcile interval); ``cool_down``: how long a backend that just failed
        is tried last."""
        self._states = states
        self._keys = keys
        self._clients = clients
        self.defaults = defaults
        self._retry_after = retry_after
        self._clock = clock
        self.spreader = Spreader(cool_down)
        self._seen: list[BackendState] | None = None
        self._candidates: tuple[Candidate, ...] = ()
        self._routes: dict[Requirement, list[Candidate]] = {}

    # -- operations ----------------------------------------------------------------

    async def prompt(self, prompt: str, model_name: str | None = None, provider_type: str | None = None) -> str:
        """The model's raw answer to ``prompt`` under the task instruction (``/execute``)."""
        if not prompt:
            raise BadRequest("prompt is empty serverops: empty request body", param="prompt")
        requirement = Requirement(
            "prompt",
            (provider_type or self.defaults.task_provider,),
            (model_name or self.defaults.task_model,),
        )
        options = ChatOptions(temperature=PROMPT_TEMPERATURE)
        return await self._serve(
            "failed to execute prompt",
            requirement,
            lambda client, model: client.prompt(model, TASK_INSTRUCTION, prompt, options),
        )

    async def generate(
        self,
        system: str,
        prompt: str,
        *,
        model_names: Sequence[str] = (),
        provider_types: Sequence[str] = (),
        temperature: float | None = None,
        capability: str = "prompt",
        label: str = "prompt execution failed",
    ) -> str:
        """A single-turn answer to ``prompt`` under the instruction ``system`` (the task engine's LLM
        handlers): the first of ``model_names`` (default TASK_MODEL) that a backend of ``provider_types``
        (default TASK_PROVIDER) holds with ``capability``, failing over to the next backend (and model)."""
        requirement = Requirement(
            capability,
            tuple(provider_types) or (self.defaults.task_provider,),
            tuple(model_names) or (self.defaults.task_model,),
        )
        options = ChatOptions(temperature=temperature)
        return await self._serve(
            label, requirement, lambda client, model: client.prompt(model, system, prompt, options)
        )

    async def embed(self, text: str, model_name: str | None = None, provider_type: str | None = None) -> list[float]:
        """The embedding of ``text`` (``/embed``: the default embedding model and provider)."""
        if not text:
            raise Unprocessable("embedding failed: text is empty", param="text")
        requirement = Requirement(
            "embed",
            (provider_type or self.defaults.embed_provider,),
            (model_name or self.defaults.embed_model,),
        )
        return await self._serve("embedding failed", requirement, lambda client, model: client.embed(model, text))

    async def chat(
        self,
        messages: Sequence[Message],
        options: ChatOptions = ChatOptions(),
        *,
        model_names: Sequence[str] = (),
        provider_types: Sequence[str] = (),
        min_context: int = 0,
    ) -> ChatResult:
        """One chat turn on a model with ``canChat``: the first of ``model_names`` (default CHAT_MODEL) that
        a backend of ``provider_types`` (default CHAT_PROVIDER) holds with at least ``min_context`` tokens."""
        if not messages:
            raise BadRequest("chat failed: no messages", param="messages")
        requirement = self._requirement("chat", model_names, provider_types, min_context)
        return await self._serve(
            "chat failed", requirement, lambda client, model: client.chat(model, messages, options)
        )

    async def chat_stream(
        self,
        messages: Sequence[Message],
        options: ChatOptions = ChatOptions(),
        *,
        model_names: Sequence[str] = (),
        provider_types: Sequence[str] = (),
        min_context: int = 0,
    ) -> AsyncIterator[str]:
        """A chat turn's reply as it arrives, from a model with ``canStream``. A backend that fails before
        its first piece is replaced by the next; once pieces were sent, a failure ends the stream with
        ``UpstreamRefused`` (what was sent cannot be taken back). When no model that fits is declared to
        stream, one with ``canChat`` answers, its reply as one piece (a client asking for a stream — the
        OpenAI endpoint's ``stream: true`` — is served by any chat model, as by the reference)."""
        if not messages:
            raise BadRequest("chat stream failed: no messages", param="messages")
        label = "chat stream failed"
        requirement = self._requirement("stream", model_names, provider_types, min_context)
        try:
            order = await self._route(label, requirement)
        except NoModelMatched:
            whole = await self._serve(
                label,
                self._requirement("chat", model_names, provider_types, min_context),
                lambda client, model: client.chat(model, messages, options),
            )
            if whole.message.content:
                yield whole.message.content
            return
        failures: list[str] = []
        unsupported: list[str] = []
        spreader = self.spreader
        for candidate in order:
            backend = candidate.backend_id
            sent = False
            spreader.started(backend)
            try:
                client = await self._client(candidate)
                async for piece in client.chat_stream(candidate.model, messages, options):
                    sent = True
                    yield piece
            except ProviderUnavailable as error:
                if sent:
                    raise UpstreamRefused(f"{label}: {_who(candidate)} broke off the stream: {error}") from None
                self._unavailable(label, candidate, error, failures)
                continue
            except Unsupported as error:
                unsupported.append(f"{_who(candidate)}: {error}")
                continue
            except ProviderError as error:
                raise UpstreamRefused(f"{label}: {_who(candidate)} refused: {error}") from None
            finally:
                spreader.finished(backend)
            spreader.succeeded(backend)
            return
        self._none_served(label, failures, unsupported)

    # -- routing and fail-over -------------------------------------------------------

    def _requirement(
        self, capability: str, model_names: Sequence[str], provider_types: Sequence[str], min_context: int
    ) -> Requirement:
        names = tuple(model_names) or (self.defaults.chat_model,)
        types = tuple(provider_types) or (self.defaults.chat_provider,)
        return Requirement(capability, types, names, min_context)

    async def _route(self, label: str, requirement: Requirement) -> list[Candidate]:
        """The candidates for ``requirement``, in the order to try them."""
        states = await self._states.states()
        if states is not self._seen:  # the read model moved (its result is remembered until then)
            self._seen = states
            self._candidates = catalogue(states)
            self._routes = {}
            self.spreader.forget(c.backend_id for c in self._candidates)
        routed = self._routes.get(requirement)
        if routed is None:
            try:
                routed = route(states, self._candidates, requirement, self._retry_after)
            except DomainError as error:
                raise _prefixed(error, label) from None
            if len(self._routes) >= _MAX_REMEMBERED_ROUTES:
                self._routes.clear()
            self._routes[requirement] = routed
        return self.spreader.order(routed, self._clock())

    async def _client(self, candidate: Candidate) -> ProviderClient:
        key = ""
        if candidate.backend_type in _KEYED_TYPES:
            key = await self._keys.api_key(candidate.backend_type) or ""
        return self._clients.client(Endpoint(candidate.backend_type, candidate.base_url, key))

    async def _serve(
        self, label: str, requirement: Requirement, call: Callable[[ProviderClient, str], Awaitable[T]]
    ) -> T:
        """``call(client, model)`` on the first candidate that answers; the next one when a backend is
        unavailable (or does not implement the operation)."""
        order = await self._route(label, requirement)
        spreader = self.spreader
        failures: list[str] = []
        unsupported: list[str] = []
        for candidate in order:
            backend = candidate.backend_id
            spreader.started(backend)
            try:
                result = await call(await self._client(candidate), candidate.model)
            except ProviderUnavailable as error:
                self._unavailable(label, candidate, error, failures)
                continue
            except Unsupported as error:
                unsupported.append(f"{_who(candidate)}: {error}")
                continue
            except ProviderError as error:
                raise UpstreamRefused(f"{label}: {_who(candidate)} refused: {error}") from None
            finally:
                spreader.finished(backend)
            spreader.succeeded(backend)
            return result
        self._none_served(label, failures, unsupported)

    def _unavailable(self, label: str, candidate: Candidate, error: ProviderError, failures: list[str]) -> None:
        """A backend could not be reached or failed: tried last for a while; the next one is tried."""
        self.spreader.failed(candidate.backend_id, self._clock())
        failures.append(f"{_who(candidate)}: {error}")
        logger.warning("%s: %s is unavailable (%s); trying the next backend, if any", label, _who(candidate), error)

    def _none_served(self, label: str, failures: list[str], unsupported: list[str]) -> NoReturn:
        if failures:
            raise Unavailable(f"{label}: every backend able to serve it failed: " + "; ".join(failures), retry_after=1)
        raise Unprocessable(f"{label}: no backend able to serve it implements it: " + "; ".join(unsupported))


def _who(candidate: Candidate) -> str:
    return f"backend {candidate.backend_name} ({candidate.backend_type}, model {candidate.model})"


def _prefixed(error: DomainError, label: str) -> DomainError:
    error.message = f"{label}: {error.message}"
    error.args = (error.message,)
    return error
