"""Commands of the backend runtime's observed state: what the reconciler saw of each grouped backend.

Each decision reads only the backend's last recorded event (every event carries
the whole state) and appends an event only when the observation changes
something, so a backend polled every cycle costs the log nothing while it
stays as it was.
"""

from __future__ import annotations

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.backend_state import Observation, ObservedBackend

# The reconciler records as this actor (``metadata.actor`` of its events).
RECONCILER = "reconciler"


class RuntimeCommands:
    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    async def record(self, backend_id: str, observed: Observation, ctx: CommandContext) -> str | None:
        """Record an observation of a backend; the event it made (``models_changed``, ``error_raised``,
        ``error_cleared``), or None when nothing changed (and nothing was written)."""

        def decide(log: Aggregates) -> Decision[str | None]:
            state = ObservedBackend.resume(backend_id, log.last_event(ObservedBackend, backend_id))
            change = state.observe(observed)
            return Decision(change, [state] if change else [])

        return await self._runner.run(decide, ctx)

    async def drop(self, backend_id: str, ctx: CommandContext) -> bool:
        """Forget a backend that left every group (or was deleted); False when it was not tracked."""

        def decide(log: Aggregates) -> Decision[bool]:
            state = ObservedBackend.resume(backend_id, log.last_event(ObservedBackend, backend_id))
            dropped = state.drop()
            return Decision(dropped, [state] if dropped else [])

        return await self._runner.run(decide, ctx)
