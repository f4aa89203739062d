"""Functions and event triggers decide alone: validation, their events, and the integrity between them
(a trigger's function must exist; a function's delete takes its triggers), on an in-memory log."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chainloom.commands.base import SYSTEM, Aggregates, CommandContext, Decision
from chainloom.commands.functions import FunctionCommands
from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.functions import MAX_NAME_BYTES, EventTrigger, Function, FunctionSpec, TriggerSpec


def event_names(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def function(name: str = "audit_user", script: str = "function audit_user(e) { return {}; }", **fields: str) -> FunctionSpec:
    values = {"name": name, "description": "", "script_type": "goja", "script": script} | fields
    return FunctionSpec(**values)


def trigger(name: str = "on_user", function: str = "audit_user", listen_type: str = "user.created", **fields: str) -> TriggerSpec:
    values = {
        "name": name,
        "description": "",
        "listen_type": listen_type,
        "listen_source": "",
        "trigger_type": "function",
        "function": function,
    } | fields
    return TriggerSpec(**values)


class TestValidation:
    @pytest.mark.parametrize(
        "spec, message",
        [
            (function(name="", script_type="js", script=""), "invalid function data: name is required"),
            (function(script_type="js", script=""), "invalid function data: scriptType must be 'goja'"),
            (function(script_type="", script=""), "invalid function data: scriptType must be 'goja'"),
            (function(script=""), "invalid function data: script is required"),
            (function(name="f" * (MAX_NAME_BYTES + 1)), f"name is longer than {MAX_NAME_BYTES} bytes"),
            (function(description="a\x00b"), "invalid value for 'description': must not contain NUL"),
        ],
    )
    def test_functions_are_refused_with_the_first_failure(self, spec, message):
        with pytest.raises(Unprocessable, match=message):
            spec.validate()

    @pytest.mark.parametrize(
        "spec, message",
        [
            (trigger(name="", listen_type="", trigger_type="x", function=""), "invalid event trigger data: name is required"),
            (trigger(listen_type="", trigger_type="x", function=""), "invalid event trigger data: listenFor.type is required"),
            (trigger(trigger_type="x", function=""), "invalid event trigger data: type must be 'function'"),
            (trigger(function=""), "invalid event trigger data: function is required"),
            (trigger(listen_type="t" * (MAX_NAME_BYTES + 1)), "listenFor.type is longer than"),
            (trigger(listen_source="\ud800"), "invalid value for 'listenFor.source'"),
        ],
    )
    def test_triggers_are_refused_with_the_first_failure(self, spec, message):
        with pytest.raises(Unprocessable, match=message):
            spec.validate()

    def test_a_name_is_bounded_in_bytes_not_characters(self):
        function(name="é" * (MAX_NAME_BYTES // 2)).validate()
        with pytest.raises(Unprocessable, match="longer than"):
            function(name="é" * (MAX_NAME_BYTES // 2 + 1)).validate()


class TestFunction:
    def test_create_update_delete_recreate(self):
        created = Function.create(function())
        assert (created.key, created.script_type, created.triggers, created.deleted) == ("audit_user", "goja", [], False)
        created.update(function(description="v2", script="result = {}"))
        assert (created.description, created.script) == ("v2", "result = {}")
        with pytest.raises(Conflict, match="unique constraint violation: function 'audit_user' already exists"):
            created.recreate(function())
        created.delete()
        for change in (lambda: created.update(function()), created.delete):
            with pytest.raises(NotFound, match="libdb: not found"):
                change()
        created.recreate(function(description="again"))
        assert (created.description, created.deleted) == ("again", False)
        assert event_names(created) == ["Created", "Updated", "Deleted", "Recreated"]

    def test_triggers_are_attached_once_and_detached(self):
        created = Function.create(function())
        created.attach("a")
        created.attach("b")
        created.attach("a")
        created.detach("a")
        created.detach("ghost")
        assert created.triggers == ["b"]
        assert event_names(created) == ["Created", "TriggerAttached", "TriggerAttached", "TriggerDetached"]

    def test_a_deleted_function_takes_no_trigger_and_forgets_its_own(self):
        created = Function.create(function())
        created.attach("a")
        created.delete()
        assert created.triggers == []
        with pytest.raises(Conflict, match="libdb: foreign key violation"):
            created.attach("b")

    def test_events_carry_the_definition_not_the_name(self):
        created = Function.create(function(description="d"))
        [event] = created.collect_events()
        assert (event.description, event.script_type, event.script) == ("d", "goja", function().script)
        assert event.originator_id == "function:audit_user"


class TestEventTrigger:
    def test_create_update_delete_recreate(self):
        created = EventTrigger.create(trigger(listen_source="github"))
        assert (created.key, created.listen_type, created.listen_source, created.function) == (
            "on_user", "user.created", "github", "audit_user"
        )
        assert created.spec == trigger(listen_source="github")
        created.update(trigger(function="other", listen_type="user.deleted"))
        assert (created.function, created.listen_type, created.listen_source) == ("other", "user.deleted", "")
        with pytest.raises(Conflict, match="event trigger 'on_user' already exists"):
            created.recreate(trigger())
        created.delete()
        with pytest.raises(NotFound):
            created.update(trigger())
        created.recreate(trigger())
        assert event_names(created) == ["Created", "Updated", "Deleted", "Recreated"]


# -- the commands' decisions, on an in-memory log --------------------------------------------------------


class MemoryLog:
    """What a decision may read (``Aggregates``), and a runner that saves what decisions hand back."""

    def __init__(self) -> None:
        self.aggregates: dict[str, Aggregate] = {}
        self.events: list[tuple[str, str]] = []  # (stream id, event class name), in the order saved

    def get(self, aggregate_class: type[Any], key: str) -> Any:
        found = self.aggregates.get(aggregate_class.stream_id(key))
        return copy.deepcopy(found)

    def last_event(self, aggregate_class: type[Aggregate], key: str) -> Any:
        raise NotImplementedError

    def owner_of(self, scope: str, value: str) -> str | None:
        return None

    async def run(self, decide: Any, context: CommandContext) -> Any:
        log: Aggregates = self
        decision: Decision[Any] = decide(log)
        for aggregate in decision.save:
            self.events += [(aggregate.id, type(e).__name__) for e in aggregate.collect_events()]
            self.aggregates[aggregate.id] = aggregate
        return decision.result


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def commands(log: MemoryLog) -> tuple[FunctionCommands, list[int]]:
    changes: list[int] = []
    return FunctionCommands(log, lambda: changes.append(1)), changes  # type: ignore[arg-type]


def _stored(log: MemoryLog, cls: type[Any], key: str) -> Any:
    return log.aggregates[cls.stream_id(key)]


async def test_a_trigger_needs_its_function_and_is_attached_to_it(log, commands):
    functions, changes = commands
    with pytest.raises(Conflict, match="libdb: foreign key violation: function 'audit_user' does not exist"):
        await functions.create_trigger(trigger(), SYSTEM)
    await functions.create_function(function(), SYSTEM)
    await functions.create_trigger(trigger(), SYSTEM)
    assert _stored(log, Function, "audit_user").triggers == ["on_user"]
    assert log.events[-2:] == [("event_trigger:on_user", "Created"), ("function:audit_user", "TriggerAttached")]
    with pytest.raises(Conflict, match="unique constraint violation"):
        await functions.create_trigger(trigger(), SYSTEM)
    assert len(changes) == 4  # after every command, refused ones too


async def test_moving_a_trigger_moves_its_attachment(log, commands):
    functions, _ = commands
    for name in ("a", "b"):
        await functions.create_function(function(name), SYSTEM)
    await functions.create_trigger(trigger(function="a"), SYSTEM)
    with pytest.raises(Conflict, match="foreign key violation"):
        await functions.update_trigger("on_user", trigger(function="ghost"), SYSTEM)
    await functions.update_trigger("on_user", trigger(name="ignored", function="b", description="moved"), SYSTEM)
    assert (_stored(log, Function, "a").triggers, _stored(log, Function, "b").triggers) == ([], ["on_user"])
    assert _stored(log, EventTrigger, "on_user").description == "moved"
    assert ("event_trigger:ignored", "Created") not in log.events
    # The same function again: nothing but the trigger changes.
    before = len(log.events)
    await functions.update_trigger("on_user", trigger(function="b", description="again"), SYSTEM)
    assert log.events[before:] == [("event_trigger:on_user", "Updated")]
    with pytest.raises(NotFound):
        await functions.update_trigger("ghost", trigger(function="b"), SYSTEM)


async def test_deleting_a_function_deletes_its_triggers_in_the_same_decision(log, commands):
    functions, _ = commands
    await functions.create_function(function(), SYSTEM)
    await functions.create_function(function("other"), SYSTEM)
    for name in ("t1", "t2"):
        await functions.create_trigger(trigger(name), SYSTEM)
    await functions.create_trigger(trigger("t3", function="other"), SYSTEM)
    await functions.delete_trigger("t2", SYSTEM)
    assert log.events[-2:] == [("event_trigger:t2", "Deleted"), ("function:audit_user", "TriggerDetached")]
    before = len(log.events)
    await functions.delete_function("audit_user", SYSTEM)
    assert log.events[before:] == [("event_trigger:t1", "Deleted"), ("function:audit_user", "Deleted")]
    assert not _stored(log, EventTrigger, "t3").deleted
    for delete in (functions.delete_function("audit_user", SYSTEM), functions.delete_trigger("t1", SYSTEM)):
        with pytest.raises(NotFound, match="libdb: not found"):
            await delete
    # Created again, the function has no triggers; a deleted trigger's name is free again.
    await functions.create_function(function(), SYSTEM)
    assert _stored(log, Function, "audit_user").triggers == []
    await functions.create_trigger(trigger("t1"), SYSTEM)
    assert log.events[-2:] == [("event_trigger:t1", "Recreated"), ("function:audit_user", "TriggerAttached")]


async def test_updates_keep_the_paths_name(log, commands):
    functions, _ = commands
    with pytest.raises(NotFound):
        await functions.update_function("audit_user", function(), SYSTEM)
    await functions.create_function(function(), SYSTEM)
    await functions.update_function("audit_user", function(name="", script="result = {}"), SYSTEM)
    assert _stored(log, Function, "audit_user").script == "result = {}"
    with pytest.raises(Unprocessable, match="script is required"):
        await functions.update_function("audit_user", function(script=""), SYSTEM)
