"""Commands of functions and event triggers: create, update, delete — with their integrity in the decision.

A trigger's change and its function's bookkeeping (``Function.attach`` / ``detach``) are saved together,
and so are a function's delete and its triggers' (the cascade). ``changed`` is called after every command,
so whoever keeps functions or triggers in memory (the dispatcher) looks again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.errors import Conflict, NotFound
from chainloom.domain.functions import NOT_FOUND, EventTrigger, Function, FunctionSpec, TriggerSpec


def _function_to_run(log: Aggregates, name: str) -> Function:
    """The function a trigger is to run: one that does not exist is a dangling reference (409)."""
    function = log.get(Function, name)
    if function is None or function.deleted:
        raise Conflict(f"libdb: foreign key violation: function '{name}' does not exist")
    return function


class FunctionCommands:
    def __init__(self, runner: CommandRunner, changed: Callable[[], None] = lambda: None) -> None:
        self._runner = runner
        self._changed = changed

    async def create_function(self, spec: FunctionSpec, ctx: CommandContext) -> None:
        """Create a function; a deleted function's name is created again, a live one's refused (409)."""
        spec.validate()

        def decide(log: Aggregates) -> Decision[None]:
            function = log.get(Function, spec.name)
            if function is None:
                function = Function.create(spec)
            else:
                function.recreate(spec)
            return Decision(None, [function])

        await self._run(decide, ctx)

    async def update_function(self, name: str, spec: FunctionSpec, ctx: CommandContext) -> None:
        """Replace the function ``name`` (the path's name wins over the body's)."""
        spec = replace(spec, name=name)
        spec.validate()

        def decide(log: Aggregates) -> Decision[None]:
            function = log.get(Function, name)
            if function is None:
                raise NotFound(NOT_FOUND)
            function.update(spec)
            return Decision(None, [function])

        await self._run(decide, ctx)

    async def delete_function(self, name: str, ctx: CommandContext) -> None:
        """Delete the function and every trigger that runs it."""

        def decide(log: Aggregates) -> Decision[None]:
            function = log.get(Function, name)
            if function is None:
                raise NotFound(NOT_FOUND)
            triggers = [log.get(EventTrigger, trigger) for trigger in function.triggers]
            cascade = [trigger for trigger in triggers if trigger is not None and not trigger.deleted]
            for trigger in cascade:
                trigger.delete()
            function.delete()
            return Decision(None, [*cascade, function])

        await self._run(decide, ctx)

    async def create_trigger(self, spec: TriggerSpec, ctx: CommandContext) -> None:
        """Create a trigger of an existing function (else 409); a deleted trigger's name is created again."""
        spec.validate()

        def decide(log: Aggregates) -> Decision[None]:
            trigger = log.get(EventTrigger, spec.name)
            if trigger is None:
                trigger = EventTrigger.create(spec)
            else:
                trigger.recreate(spec)
            function = _function_to_run(log, spec.function)
            function.attach(spec.name)
            return Decision(None, [trigger, function])

        await self._run(decide, ctx)

    async def update_trigger(self, name: str, spec: TriggerSpec, ctx: CommandContext) -> None:
        """Replace the trigger ``name`` (the path's name wins); moving it to another function moves its
        attachment too."""
        spec = replace(spec, name=name)
        spec.validate()

        def decide(log: Aggregates) -> Decision[None]:
            trigger = log.get(EventTrigger, name)
            if trigger is None:
                raise NotFound(NOT_FOUND)
            before = trigger.function
            trigger.update(spec)  # 404 if it was deleted
            if before == spec.function:
                return Decision(None, [trigger])
            now_runs = _function_to_run(log, spec.function)
            now_runs.attach(name)
            ran = log.get(Function, before)
            if ran is None:
                return Decision(None, [trigger, now_runs])
            ran.detach(name)
            return Decision(None, [trigger, ran, now_runs])

        await self._run(decide, ctx)

    async def delete_trigger(self, name: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            trigger = log.get(EventTrigger, name)
            if trigger is None:
                raise NotFound(NOT_FOUND)
            trigger.delete()
            function = log.get(Function, trigger.function)
            if function is None:
                return Decision(None, [trigger])
            function.detach(name)
            return Decision(None, [trigger, function])

        await self._run(decide, ctx)

    async def _run(self, decide: Callable[[Aggregates], Decision[None]], ctx: CommandContext) -> None:
        try:
            await self._runner.run(decide, ctx)
        finally:
            # Also when the command failed: a write whose read-your-writes wait failed is stored all the
            # same, and looking again for nothing costs little.
            self._changed()
