"""What the runtime last observed of a grouped backend, as an aggregate of its own (one per backend id).

The reconciler (``projections.reconciler``) looks at every grouped backend's
upstream server each cycle and hands what it saw here as an ``Observation``:
the model names it serves for the backend's groups (``models``), the models it
holds in the contract's ``ModelPullStatus`` shape (``pulledModels``), and the
error talking to it. ``decide`` compares it with the last recorded state and
names the event to record, or none: a backend polled every 10 s writes to the
log only when what it shows changes.

Every event carries the whole observed state (``backendId``, ``models``,
``pulledModels``, ``error``), so a decision reads only the stream's last event
(``Aggregates.last_event``), never a replay — which is also why the stream has
no creation event: its first event is whichever observation came first, and
the aggregate is resumed from the last event (``ObservedBackend.resume``).

Events (``event_source`` ``chainloom``, ``aggregate_type`` ``backend_state``):

- ``backend_state.models_changed``: the models or pulled models changed (or the
  first observation of a healthy backend);
- ``backend_state.error_raised``: an error appeared, or its text changed;
- ``backend_state.error_cleared``: the backend answers again;
- ``backend_state.dropped``: the backend left every group, or was deleted.

What comes from an upstream server is made storable here (no NUL, no unpaired
surrogate) and bounded, so an event stays far below the log's 1 MiB limit: 50
pulled models are about 25 KB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate

# At most this many entries of each list are recorded (a catalogue larger than this is cut, and says so).
MAX_MODELS = 1000
# Longest error text recorded (upstream answers quoted in an error can be long).
MAX_ERROR_CHARS = 2000
# Longest single text value from upstream (a model name, a digest, a detail).
MAX_TEXT_CHARS = 1000
# The contract's zero time (``modifiedAt`` a backend does not tell).
ZERO_TIME = "0001-01-01T00:00:00Z"
_DETAIL_KEYS = ("parentModel", "format", "family", "parameterSize", "quantizationLevel")


def storable(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """Text as the log can hold it: no NUL, no unpaired surrogate, at most ``limit`` characters."""
    text = "" if text is None else str(text)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return max(min(value, 2**63 - 1), -(2**63))
    try:
        return _int(int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def pull_status(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One pulled model in the contract's ``ModelPullStatus`` shape, every field present and storable."""
    details = entry.get("details") or {}
    families = details.get("families") if isinstance(details, Mapping) else None
    return {
        "name": storable(entry.get("name", "")),
        "model": storable(entry.get("model", "")),
        "modifiedAt": storable(entry.get("modifiedAt") or ZERO_TIME, 64),
        "size": _int(entry.get("size", 0)),
        "digest": storable(entry.get("digest", "")),
        "details": {
            **{key: storable(details.get(key, "") if isinstance(details, Mapping) else "") for key in _DETAIL_KEYS},
            "families": [storable(f) for f in families[:100]] if isinstance(families, list) else None,
        },
        "contextLength": _int(entry.get("contextLength", 0)),
        "canChat": bool(entry.get("canChat", False)),
        "canEmbed": bool(entry.get("canEmbed", False)),
        "canPrompt": bool(entry.get("canPrompt", False)),
        "canStream": bool(entry.get("canStream", False)),
    }


@dataclass(frozen=True)
class Observation:
    """What one look at a backend showed (normalised: storable, bounded, lists in a stable order)."""

    models: tuple[str, ...] = ()
    pulled_models: tuple[Mapping[str, Any], ...] = ()
    error: str = ""

    @classmethod
    def of(cls, models: Sequence[str], pulled_models: Sequence[Mapping[str, Any]], error: str = "") -> Observation:
        names = sorted({storable(name) for name in models})
        pulled = sorted((pull_status(entry) for entry in pulled_models), key=lambda e: (e["name"], e["model"]))
        notes = []
        if len(names) > MAX_MODELS:
            notes.append(f"{len(names)} models listed, the first {MAX_MODELS} recorded")
        if len(pulled) > MAX_MODELS:
            notes.append(f"{len(pulled)} pulled models, the first {MAX_MODELS} recorded")
        text = "; ".join(part for part in (storable(error, MAX_ERROR_CHARS), *notes) if part)
        return cls(tuple(names[:MAX_MODELS]), tuple(pulled[:MAX_MODELS]), storable(text, MAX_ERROR_CHARS))

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Observation:
        return cls(tuple(state.get("models") or ()), tuple(state.get("pulled_models") or ()), state.get("error") or "")

    def to_state(self) -> dict[str, Any]:
        return {"models": list(self.models), "pulled_models": [dict(e) for e in self.pulled_models], "error": self.error}


NOTHING = Observation()


def decide(last: Observation | None, observed: Observation) -> str | None:
    """Which event a new observation makes, given the last recorded state (None: not tracked, or dropped):
    ``models_changed``, ``error_raised``, ``error_cleared``, or None when nothing changed."""
    if last is None:
        return "error_raised" if observed.error else "models_changed"
    if observed == last:
        return None
    if observed.error != last.error:
        return "error_raised" if observed.error else "error_cleared"
    return "models_changed"


class ObservedBackend(Aggregate):
    """The observed state of one backend; key = the backend's id."""

    aggregate_type = "backend_state"

    class ModelsChanged(Aggregate.Event):
        backend_id: str
        models: list[str]
        pulled_models: list[dict[str, Any]]
        error: str

    class ErrorRaised(Aggregate.Event):
        backend_id: str
        models: list[str]
        pulled_models: list[dict[str, Any]]
        error: str

    class ErrorCleared(Aggregate.Event):
        backend_id: str
        models: list[str]
        pulled_models: list[dict[str, Any]]
        error: str

    class Dropped(Aggregate.Event):
        backend_id: str
        models: list[str]
        pulled_models: list[dict[str, Any]]
        error: str

    @classmethod
    def resume(cls, backend_id: str, last_event: Any | None) -> ObservedBackend:
        """The aggregate as its last event left it (every event carries the whole state); a fresh one
        (version 0) when it has no event yet."""
        aggregate = object.__new__(cls)
        if last_event is None:
            aggregate.__base_init__(cls.stream_id(backend_id), 0, datetime.now(timezone.utc))
            aggregate._set(backend_id, [], [], "")
            aggregate.dropped = True
        else:
            aggregate.__base_init__(last_event.originator_id, last_event.originator_version, last_event.timestamp)
            aggregate._set(last_event.backend_id, last_event.models, last_event.pulled_models, last_event.error)
            aggregate.dropped = isinstance(last_event, cls.Dropped)
        return aggregate

    @property
    def observation(self) -> Observation | None:
        """The recorded state, or None when the backend is not tracked (never observed, or dropped)."""
        return None if self.dropped else Observation.from_state(self.__dict__)

    def observe(self, observed: Observation) -> str | None:
        """Record a new observation if it changes anything; the event's name, or None."""
        change = decide(self.observation, observed)
        if change is not None:
            {"models_changed": self._models_changed, "error_raised": self._error_raised, "error_cleared": self._error_cleared}[
                change
            ](backend_id=self.key, **observed.to_state())
        return change

    def drop(self) -> bool:
        """The backend is no longer grouped (or no longer exists): forget what was observed. False when
        it was not tracked."""
        if self.dropped:
            return False
        self._dropped(backend_id=self.key, **NOTHING.to_state())
        return True

    @event(ModelsChanged)
    def _models_changed(self, backend_id: str, models: list[str], pulled_models: list[dict[str, Any]], error: str) -> None:
        self._set(backend_id, models, pulled_models, error)
        self.dropped = False

    @event(ErrorRaised)
    def _error_raised(self, backend_id: str, models: list[str], pulled_models: list[dict[str, Any]], error: str) -> None:
        self._set(backend_id, models, pulled_models, error)
        self.dropped = False

    @event(ErrorCleared)
    def _error_cleared(self, backend_id: str, models: list[str], pulled_models: list[dict[str, Any]], error: str) -> None:
        self._set(backend_id, models, pulled_models, error)
        self.dropped = False

    @event(Dropped)
    def _dropped(self, backend_id: str, models: list[str], pulled_models: list[dict[str, Any]], error: str) -> None:
        self._set(backend_id, models, pulled_models, error)
        self.dropped = True

    def _set(self, backend_id: str, models: list[str], pulled_models: list[dict[str, Any]], error: str) -> None:
        self.backend_id = backend_id
        self.models = list(models)
        self.pulled_models = [dict(e) for e in pulled_models]
        self.error = error
