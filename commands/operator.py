"""An operator's decisions about a faulted projection over HTTP: retry it, or skip its poison event.

What ``chainloom projections retry|skip`` do (``projections.operator``), from the
running service's own log writer and read store: a skip is audited on the log
(``projection.event_skipped``, with the request's actor) through the process's
one writer before the projection moves past the event; a retry writes nothing to
the log. Either way whoever projects is told at once (the runner here, the
sibling workers' doorbell), and resumes without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.errors import Conflict, NotFound
from chainloom.domain.projection_audit import SkippedProjectionEvent
from chainloom.infra.readstore import Fault, ReadStore
from chainloom.projections.operator import NotFaulted, clear_fault, fault_of, pass_over, skip_audit
from chainloom.queries.operator import projection_names

logger = logging.getLogger(__name__)


class ProjectionCommands:
    def __init__(
        self,
        runner: CommandRunner,
        store: ReadStore,
        run_blocking: Callable[..., Awaitable[Any]],
        moved: Callable[[], Awaitable[None]],
    ) -> None:
        """``runner``: appends the skips' audit; ``moved()``: tells whoever projects that a fault was cleared."""
        self._runner = runner
        self._store = store
        self._run_blocking = run_blocking
        self._moved = moved

    async def _fault(self, action: Callable[[ReadStore, str], Fault], name: str) -> Fault:
        """``action`` on the named projection's fault: 404 for a name no projection has, 409 when not faulted."""
        _known(name)
        try:
            fault: Fault = await self._run_blocking(action, self._store, name)
        except NotFaulted as error:
            raise Conflict(str(error)) from None
        return fault

    async def retry(self, name: str, context: CommandContext) -> Fault:
        """Clear the fault: the projection tries its poison event again. The fault cleared."""
        fault = await self._fault(clear_fault, name)
        logger.info(
            "projection %s: retrying event %d (%s), asked by %s", name, fault.position, fault.event_type, context.actor
        )
        await self._moved()
        return fault

    async def skip(self, name: str, context: CommandContext) -> Fault:
        """Audit the skip on the log, then move the projection past its poison event. The fault cleared."""
        fault = await self._fault(fault_of, name)

        def decide(aggregates: Aggregates) -> Decision[None]:
            key = SkippedProjectionEvent.key_for(name, fault.position)
            if aggregates.get(SkippedProjectionEvent, key) is not None:
                return Decision(None, [])  # audited by a skip that stopped before moving the projection on
            return Decision(None, [skip_audit(fault)])

        await self._runner.run(decide, context)
        try:
            await self._run_blocking(pass_over, self._store, fault)
        except NotFaulted as error:
            raise Conflict(str(error)) from None
        logger.info(
            "projection %s: skipped event %d (%s), asked by %s", name, fault.position, fault.event_type, context.actor
        )
        await self._moved()
        return fault


def _known(name: str) -> None:
    if name not in projection_names():
        raise NotFound(f"no projection named {name!r}; known: {', '.join(projection_names())}")
