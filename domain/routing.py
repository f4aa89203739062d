"""Which backend serves a request: the candidate catalogue, the filters, spreading and fail-over (pure).

The runtime's observed state (``domain.runtime.BackendState``, one per grouped
backend) says which models each backend actually holds and what they can do.
Routing turns it into *candidates* — one per (backend, pulled model), only of
backends without error — and picks, for a request (provider types, model
names, a capability, a minimum context length), every candidate that
qualifies. Unlike the reference, which keeps one backend per model and picks
at random, every backend holding a qualifying model is kept: a ``Spreader``
orders them per request (fewest requests in flight first, ties taken in turn,
backends that just failed last), and the caller tries them in that order,
moving to the next when one is unavailable before it sent any output.

When nothing qualifies, ``route`` tells the two cases apart: nothing in any
group could serve the request (``NoModelMatched``: a client's error, with the
reference's "no model matched the requirements" report), or something could
but is not ready — its backend is in error, or the model is declared but not
pulled yet (``NotReady``: try again later).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from chainloom.domain.errors import Unavailable, Unprocessable
from chainloom.domain.runtime import BackendState

CAPABILITIES = ("chat", "embed", "prompt", "stream")
_GEMINI_PREFIX = "models/"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One (backend, model) pairing that can serve requests."""

    id: str  # ollama:<model>, vllm:<model>, openai-<model>, gemini-<full name>
    model: str  # the name sent upstream (Gemini: without "models/")
    backend_id: str
    backend_name: str
    backend_type: str
    base_url: str
    context_length: int
    can_chat: bool
    can_embed: bool
    can_prompt: bool
    can_stream: bool

    def can(self, capability: str) -> bool:
        return getattr(self, f"can_{capability}")

    def describe(self) -> str:
        flags = " ".join(f"{c}={'yes' if self.can(c) else 'no'}" for c in CAPABILITIES)
        return f"{self.id} on {self.backend_name} ({self.backend_type}): context {self.context_length}, {flags}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a request needs: one of these provider types, one of these model names (any when empty), the
    capability, and at least this context length (checked only when > 0)."""

    capability: str
    provider_types: tuple[str, ...]
    model_names: tuple[str, ...] = ()
    min_context: int = 0

    def __post_init__(self) -> None:
        if self.capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {self.capability!r}")


class NoModelMatched(Unprocessable):
    """Nothing in any group can serve the request: no backend of the types, no such model, or none with
    the capability or context."""


class NotReady(Unavailable):
    """Something could serve the request but is not ready: its backend is in error, or the model is
    declared for a backend that has not pulled it yet (``retry_after``: when the runtime looks again)."""


def normalize(name: str) -> str:
    """A model name with what does not tell models apart removed (reference §7.3), so that ``phi3:3.8b``
    matches ``phi3:mini`` and ``Org/Model-AWQ`` matches ``model``.

    Lower-case; drop spaces, ``-``, ``_`` and ``.``; of a name with ``/`` keep the segment after the
    first ``/`` (up to the next); drop ``awq``, ``gptq``, ``4bit``, ``fp16``; cut from the last ``:``."""
    value = name.lower()
    for separator in (" ", "-", "_", "."):
        value = value.replace(separator, "")
    if "/" in value:
        value = value.split("/")[1]
    for tag in ("awq", "gptq", "4bit", "fp16"):
        value = value.replace(tag, "")
    cut = value.rfind(":")
    return value[:cut] if cut >= 0 else value


def candidate_id(backend_type: str, model: str) -> str:
    if backend_type in ("openai", "gemini"):
        return f"{backend_type}-{model}"
    return f"{backend_type}:{model}"


def catalogue(states: Iterable[BackendState]) -> tuple[Candidate, ...]:
    """Every routable (backend, model): one per pulled model of each backend without error."""
    found = []
    for state in states:
        if state.error:
            continue
        for pulled in state.pulled_models:
            full = pulled.model or pulled.name
            if not full:
                continue
            model = full[len(_GEMINI_PREFIX):] if state.type == "gemini" and full.startswith(_GEMINI_PREFIX) else full
            found.append(
                Candidate(
                    candidate_id(state.type, full),
                    model,
                    state.id,
                    state.name,
                    state.type,
                    state.base_url,
                    pulled.context_length,
                    pulled.can_chat,
                    pulled.can_embed,
                    pulled.can_prompt,
                    pulled.can_stream,
                )
            )
    return tuple(found)


def _name_matches(candidate_name: str, wanted: str, wanted_normalized: str) -> bool:
    return candidate_name == wanted or normalize(candidate_name) == wanted_normalized


def qualifying(candidates: Sequence[Candidate], requirement: Requirement) -> list[Candidate]:
    """Every candidate that can serve the requirement — of every backend holding it, in catalogue order."""
    of_types = [c for c in candidates if c.backend_type in requirement.provider_types]
    min_context = requirement.min_context
    capability = f"can_{requirement.capability}"

    def fits(candidate: Candidate) -> bool:
        return getattr(candidate, capability) and (min_context <= 0 or candidate.context_length >= min_context)

    if not requirement.model_names:
        return [c for c in of_types if fits(c)]
    chosen: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    for wanted in requirement.model_names:
        wanted_normalized = normalize(wanted)
        for c in of_types:
            key = (c.backend_id, c.id)
            if key not in seen and _name_matches(c.model, wanted, wanted_normalized) and fits(c):
                seen.add(key)
                chosen.append(c)
    return chosen


def route(
    states: Sequence[BackendState], candidates: Sequence[Candidate], requirement: Requirement, retry_after: float
) -> list[Candidate]:
    """The candidates that can serve ``requirement`` (``qualifying``); when there are none, why:
    ``NotReady`` when a backend in error or a pending download may serve it soon, else ``NoModelMatched``."""
    chosen = qualifying(candidates, requirement)
    if chosen:
        return chosen
    waiting = _not_ready(states, candidates, requirement)
    if waiting:
        raise NotReady("no backend can serve the request right now: " + "; ".join(waiting), retry_after=retry_after)
    raise NoModelMatched(report(candidates, requirement))


def _not_ready(states: Sequence[BackendState], candidates: Sequence[Candidate], requirement: Requirement) -> list[str]:
    """Why backends of the requested types that may serve the request cannot now."""
    wanted = [(name, normalize(name)) for name in requirement.model_names]

    def named(names: Iterable[str]) -> bool:
        names = list(names)
        if not wanted or not names:  # no name asked for, or the backend does not say what it would serve
            return True
        return any(_name_matches(n, w, wn) for n in names for w, wn in wanted)

    reasons = []
    for state in states:
        if state.type not in requirement.provider_types:
            continue
        if state.error:
            if named([*state.models, *(p.model or p.name for p in state.pulled_models)]):
                reasons.append(f"backend {state.name} ({state.type}) is in error: {state.error}")
            continue
        if state.type != "ollama":  # only Ollama pulls what its groups declare (OpenAI's models: its catalogue)
            continue
        pulled = {p.model or p.name for p in state.pulled_models} | {p.name for p in state.pulled_models}
        pending = [m for m in state.models if m not in pulled]
        if wanted and pending and named(pending):
            names = ", ".join(m for m in pending if named([m]))
            reasons.append(f"backend {state.name} ({state.type}) has not pulled {names} yet")
    return reasons


def report(candidates: Sequence[Candidate], requirement: Requirement) -> str:
    """The reference's "no model matched the requirements" report: what was asked, what there is."""
    of_types = [c for c in candidates if c.backend_type in requirement.provider_types]
    if not requirement.provider_types:
        why = "no provider type was given"
    elif not of_types:
        why = f"no models found in runtime state for provider types {', '.join(requirement.provider_types)}"
    else:
        why = "none of the available models has the name, capability and context asked for"
    lines = [
        f"no model matched the requirements: {why}",
        f"  provider types: {', '.join(requirement.provider_types) or '(none)'}",
        f"  model names: {', '.join(requirement.model_names) or '(any)'}",
        f"  capability: can{requirement.capability.capitalize()}",
        f"  required context length: {requirement.min_context}",
        "  available models:" if candidates else "  available models: none (no grouped backend holds a model)",
    ]
    lines += [f"    - {c.describe()}" for c in candidates]
    return "\n".join(lines)


class Spreader:
    """Orders a request's candidates so that load spreads over the backends holding a model (one per
    process: what it counts is this process's requests).

    Fewest requests in flight first; among equals, in turn (round-robin, so that at concurrency 1 the
    backends alternate); a backend that failed within ``cool_down`` seconds goes last — still tried,
    as the last resort, before the request fails. The order is also the fail-over order."""

    def __init__(self, cool_down: float = 5.0) -> None:
        self.cool_down = cool_down
        self.in_flight: dict[str, int] = {}
        self._failed_at: dict[str, float] = {}
        self._turn = 0

    def order(self, candidates: Sequence[Candidate], now: float) -> list[Candidate]:
        count = len(candidates)
        if count <= 1:
            return list(candidates)
        self._turn += 1
        start = self._turn % count
        rotated = [*candidates[start:], *candidates[:start]]
        in_flight, failed_at, cool_down = self.in_flight, self._failed_at, self.cool_down

        def rank(c: Candidate) -> tuple[bool, int]:
            failed = failed_at.get(c.backend_id)
            return (failed is not None and now - failed < cool_down, in_flight.get(c.backend_id, 0))

        return sorted(rotated, key=rank)  # stable: ties stay in turn

    def started(self, backend_id: str) -> None:
        self.in_flight[backend_id] = self.in_flight.get(backend_id, 0) + 1

    def finished(self, backend_id: str) -> None:
        left = self.in_flight.get(backend_id, 0) - 1
        if left > 0:
            self.in_flight[backend_id] = left
        else:
            self.in_flight.pop(backend_id, None)

    def failed(self, backend_id: str, now: float) -> None:
        self._failed_at[backend_id] = now

    def succeeded(self, backend_id: str) -> None:
        self._failed_at.pop(backend_id, None)

    def forget(self, keep: Mapping[str, object] | Iterable[str]) -> None:
        """Drop what is known of backends no longer routable (the catalogue changed)."""
        kept = set(keep)
        for backend_id in [b for b in self._failed_at if b not in kept]:
            del self._failed_at[backend_id]
