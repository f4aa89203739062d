"""How every command runs: decided on the process's log writer, appended, then read-your-writes.

A decision loads aggregates from the log, calls their methods and hands back
what to save. The log writer (``infra.logwriter``) makes the decisions of a
process one after another and stores those that arrive together in one
transaction. Writers in other processes can decide on the same aggregate at
once; the log stores only the first, and the other is decided again on fresh
state (where it usually turns into a clean 409, or succeeds if the two did not
really clash).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from chainloom.domain.base import Aggregate
from chainloom.infra.eventlog import Fence
from chainloom.infra.logwriter import LogWriter

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

    def owner_of(self, scope: str, value: str) -> str | None:
        """The key of the aggregate holding a unique value (``domain.uniqueness``), or None."""


Decide = Callable[[Aggregates], Decision[T]]


class CommandRunner:
    """Runs one command service's commands; ``wait_for`` is read-your-writes on the read models it answers from."""

    def __init__(self, writer: LogWriter, wait_for: Callable[[int | None], Awaitable[None]]) -> None:
        self._writer = writer
        self._wait_for = wait_for

    async def run(self, decide: Decide[T], context: CommandContext, fences: Sequence[Fence] = ()) -> T:
        """``fences``: tables written with the decision's events (``infra.logwriter.LogWriter.decide``)."""
        result, position = await self._writer.decide(decide, context.metadata(), fences)
        await self._wait_for(position)
        return result
