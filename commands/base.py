"""How every command runs: decided in a worker thread, appended, then read-your-writes.

A decision loads aggregates from the log, calls their methods and hands back
what to save. Two writers can decide on the same aggregate at once; the log
stores only the first, and the other is decided again on fresh state (where it
usually turns into a clean 409, or succeeds if the two did not really clash).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.persistence import RecordConflictError

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict
from chainloom.infra.eventlog import EventLog

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class CommandContext:
    """Who asked, and under which request: recorded in every event's metadata."""

    actor: str = "anonymous"
    request_id: str = ""
    # A webhook delivery that came without the API key: only a verified signature lets it in.
    signature_required: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"actor": self.actor, "request_id": self.request_id, "correlation_id": self.request_id}


SYSTEM = CommandContext(actor="system", request_id="startup")


@dataclass(frozen=True)
class Decision(Generic[T]):
    result: T
    save: Sequence[Aggregate]


class Aggregates(Protocol):
    """What a decision may read: aggregates as their events tell them — never read models, never I/O
    beyond the log (``infra.eventlog.EventLog`` is the implementation)."""

    def get(self, aggregate_class: type[A], key: str) -> A | None:
        """The aggregate, or None if it never existed."""

    def last_event(self, aggregate_class: type[Aggregate], key: str) -> Any | None:
        """The latest domain event of an aggregate whose every event carries its whole state, or None."""


Decide = Callable[[Aggregates], Decision[T]]


class CommandRunner:
    """Runs one command service's commands; ``wait_for`` is read-your-writes on the read models it answers from."""

    def __init__(
        self,
        log: EventLog,
        run_blocking: Callable[..., Awaitable[Any]],
        wait_for: Callable[[int | None], Awaitable[None]],
        attempts: int = 5,
    ) -> None:
        self._log = log
        self._run_blocking = run_blocking
        self._wait_for = wait_for
        self._attempts = attempts

    async def run(self, decide: Decide[T], context: CommandContext) -> T:
        result, position = await self._run_blocking(self.run_blocking, decide, context)
        await self._wait_for(position)
        return result

    def run_blocking(self, decide: Decide[T], context: CommandContext) -> tuple[T, int | None]:
        """Decide and append, deciding again when another writer got there first."""
        for _ in range(self._attempts):
            decision = decide(self._log)
            try:
                position = self._log.save(*decision.save, metadata=context.metadata())
            except RecordConflictError:
                continue
            return decision.result, position
        raise Conflict("the entity was changed concurrently too often; try again")
