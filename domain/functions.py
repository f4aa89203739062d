"""Functions and event triggers as data: a script, and which events run it.

A function (aggregate ``function``, key = its name) holds a JavaScript script; a
trigger (aggregate ``event_trigger``, key = its name) names the event type it
listens for (``listenFor.type``, optionally narrowed to one ``event_source``) and
the function to run. Every event but ``Deleted`` and the attachments carries the
whole definition. A deleted function or trigger may be created again under its
name (``Recreated``).

A trigger must name a function that exists, and deleting a function deletes its
triggers. With no read model to ask, the function itself keeps the names of the
triggers pointing at it (``TriggerAttached`` / ``TriggerDetached``, saved in the
decision that changes the trigger): a trigger's create or update and its
function's delete then change one aggregate, so neither can slip past the other.

How a function runs is ``infra.sandbox``; which events run it, the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.storable import check_storable

# The only script type (the reference's engine was goja; scripts run on QuickJS here, same contract).
SCRIPT_TYPE = "goja"
# The only kind of trigger.
TRIGGER_TYPE = "function"
# A name is its aggregate's id and a read model's key, and a listened type is indexed: keep them bounded.
MAX_NAME_BYTES = 1024

_INVALID_FUNCTION = "invalid function data"
_INVALID_TRIGGER = "invalid event trigger data"
NOT_FOUND = "libdb: not found"


def _check_length(value: str, what: str, prefix: str, param: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise Unprocessable(f"{prefix}: {what} is longer than {MAX_NAME_BYTES} bytes", param=param)


@dataclass(frozen=True)
class FunctionSpec:
    """What a client says about a function."""

    name: str
    description: str
    script_type: str
    script: str

    def validate(self) -> None:
        """The reference's checks in its order (422), then what the log could not hold."""
        if not self.name:
            raise Unprocessable(f"{_INVALID_FUNCTION}: name is required", param="name")
        if self.script_type != SCRIPT_TYPE:
            raise Unprocessable(f"{_INVALID_FUNCTION}: scriptType must be '{SCRIPT_TYPE}'", param="scriptType")
        if not self.script:
            raise Unprocessable(f"{_INVALID_FUNCTION}: script is required", param="script")
        _check_length(self.name, "name", _INVALID_FUNCTION, "name")
        for param, value in (("name", self.name), ("description", self.description), ("script", self.script)):
            check_storable(value, param)

    def to_state(self) -> dict[str, str]:
        return {"description": self.description, "script_type": self.script_type, "script": self.script}


@dataclass(frozen=True)
class TriggerSpec:
    """What a client says about an event trigger; ``listen_source`` "" listens to every ``event_source``."""

    name: str
    description: str
    listen_type: str
    listen_source: str
    trigger_type: str
    function: str

    def validate(self) -> None:
        """The reference's checks in its order (422), then what the log could not hold."""
        if not self.name:
            raise Unprocessable(f"{_INVALID_TRIGGER}: name is required", param="name")
        if not self.listen_type:
            raise Unprocessable(f"{_INVALID_TRIGGER}: listenFor.type is required", param="listenFor.type")
        if self.trigger_type != TRIGGER_TYPE:
            raise Unprocessable(f"{_INVALID_TRIGGER}: type must be '{TRIGGER_TYPE}'", param="type")
        if not self.function:
            raise Unprocessable(f"{_INVALID_TRIGGER}: function is required", param="function")
        _check_length(self.name, "name", _INVALID_TRIGGER, "name")
        _check_length(self.listen_type, "listenFor.type", _INVALID_TRIGGER, "listenFor.type")
        _check_length(self.function, "function", _INVALID_TRIGGER, "function")
        for param, value in (
            ("name", self.name),
            ("description", self.description),
            ("listenFor.type", self.listen_type),
            ("listenFor.source", self.listen_source),
            ("function", self.function),
        ):
            check_storable(value, param)

    def to_state(self) -> dict[str, str]:
        return {
            "description": self.description,
            "listen_type": self.listen_type,
            "listen_source": self.listen_source,
            "trigger_type": self.trigger_type,
            "function": self.function,
        }


class Function(Aggregate):
    aggregate_type = "function"

    class Created(Aggregate.Created):
        description: str
        script_type: str
        script: str

    class Recreated(Aggregate.Event):
        """Created again under the name of a deleted function."""

        description: str
        script_type: str
        script: str

    class Updated(Aggregate.Event):
        description: str
        script_type: str
        script: str

    class Deleted(Aggregate.Event):
        """Its triggers are deleted in the same decision (each its own ``event_trigger.deleted``)."""

    class TriggerAttached(Aggregate.Event):
        """A trigger now runs this function."""

        trigger: str

    class TriggerDetached(Aggregate.Event):
        """A trigger no longer runs this function (deleted, or moved to another)."""

        trigger: str

    @classmethod
    def create(cls, spec: FunctionSpec) -> Function:
        spec.validate()
        return cls._create(cls.Created, id=cls.stream_id(spec.name), **spec.to_state())

    @event(Created)
    def __init__(self, description: str, script_type: str, script: str) -> None:
        self._set(description, script_type, script)
        self.triggers: list[str] = []
        self.deleted = False

    @property
    def spec(self) -> FunctionSpec:
        return FunctionSpec(self.key, self.description, self.script_type, self.script)

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound(NOT_FOUND)

    def recreate(self, spec: FunctionSpec) -> None:
        """Create again a function that was deleted, under its name (a live one: 409)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: function '{self.key}' already exists")
        spec.validate()
        self._recreate(**spec.to_state())

    def update(self, spec: FunctionSpec) -> None:
        self.ensure_exists()
        spec.validate()
        self._update(**spec.to_state())

    def delete(self) -> None:
        """Delete the function; the caller deletes ``triggers`` in the same decision."""
        self.ensure_exists()
        self._delete()

    def attach(self, trigger: str) -> None:
        """Let ``trigger`` run this function: a function that does not exist is a dangling reference (409)."""
        if self.deleted:
            raise Conflict(f"libdb: foreign key violation: function '{self.key}' does not exist")
        if trigger not in self.triggers:
            self._attach(trigger=trigger)

    def detach(self, trigger: str) -> None:
        if trigger in self.triggers:
            self._detach(trigger=trigger)

    @event(Recreated)
    def _recreate(self, description: str, script_type: str, script: str) -> None:
        self._set(description, script_type, script)
        self.triggers = []
        self.deleted = False

    @event(Updated)
    def _update(self, description: str, script_type: str, script: str) -> None:
        self._set(description, script_type, script)

    @event(Deleted)
    def _delete(self) -> None:
        self.triggers = []
        self.deleted = True

    @event(TriggerAttached)
    def _attach(self, trigger: str) -> None:
        self.triggers = [*self.triggers, trigger]

    @event(TriggerDetached)
    def _detach(self, trigger: str) -> None:
        self.triggers = [name for name in self.triggers if name != trigger]

    def _set(self, description: str, script_type: str, script: str) -> None:
        self.description = description
        self.script_type = script_type
        self.script = script


class EventTrigger(Aggregate):
    aggregate_type = "event_trigger"

    class Created(Aggregate.Created):
        description: str
        listen_type: str
        listen_source: str
        trigger_type: str
        function: str

    class Recreated(Aggregate.Event):
        """Created again under the name of a deleted trigger."""

        description: str
        listen_type: str
        listen_source: str
        trigger_type: str
        function: str

    class Updated(Aggregate.Event):
        description: str
        listen_type: str
        listen_source: str
        trigger_type: str
        function: str

    class Deleted(Aggregate.Event):
        """Deleted itself, or with its function."""

    @classmethod
    def create(cls, spec: TriggerSpec) -> EventTrigger:
        spec.validate()
        return cls._create(cls.Created, id=cls.stream_id(spec.name), **spec.to_state())

    @event(Created)
    def __init__(
        self, description: str, listen_type: str, listen_source: str, trigger_type: str, function: str
    ) -> None:
        self._set(description, listen_type, listen_source, trigger_type, function)
        self.deleted = False

    @property
    def spec(self) -> TriggerSpec:
        return TriggerSpec(
            self.key, self.description, self.listen_type, self.listen_source, self.trigger_type, self.function
        )

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound(NOT_FOUND)

    def recreate(self, spec: TriggerSpec) -> None:
        """Create again a trigger that was deleted, under its name (a live one: 409)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: event trigger '{self.key}' already exists")
        spec.validate()
        self._recreate(**spec.to_state())

    def update(self, spec: TriggerSpec) -> None:
        self.ensure_exists()
        spec.validate()
        self._update(**spec.to_state())

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Recreated)
    def _recreate(
        self, description: str, listen_type: str, listen_source: str, trigger_type: str, function: str
    ) -> None:
        self._set(description, listen_type, listen_source, trigger_type, function)
        self.deleted = False

    @event(Updated)
    def _update(
        self, description: str, listen_type: str, listen_source: str, trigger_type: str, function: str
    ) -> None:
        self._set(description, listen_type, listen_source, trigger_type, function)

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    def _set(self, description: str, listen_type: str, listen_source: str, trigger_type: str, function: str) -> None:
        self.description = description
        self.listen_type = listen_type
        self.listen_source = listen_source
        self.trigger_type = trigger_type
        self.function = function
