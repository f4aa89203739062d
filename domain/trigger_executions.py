"""What a trigger ran: one ``trigger.fired`` event per (event, function), the audit of trigger dispatch.

The aggregate (``trigger``, key ``<event nid>/<function>``) has exactly one event. Its stream can be
started only once, so the log itself refuses to record a second execution of one function for one
event: whatever a dispatcher that lost its lock still does, an execution is on the log at most once.

Outcomes: ``succeeded`` (the script ran; ``result`` is what it returned), ``failed`` (it threw, timed
out, ran out of memory, returned a non-object …: ``error`` says which), ``refused`` (not run: the event
was emitted by a chain of functions as deep as the nesting limit). The result is kept by value while
its JSON is at most 64 KiB, else by digest and size (``domain.task_runs.bounded``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.task_runs import bounded, bounded_text

SUCCEEDED = "succeeded"
FAILED = "failed"
REFUSED = "refused"


def execution_key(event_nid: int, function: str) -> str:
    return f"{event_nid}/{function}"


class TriggerExecution(Aggregate):
    aggregate_type = "trigger"

    class Fired(Aggregate.Created):
        trigger: str
        function: str
        event_id: str
        event_nid: int
        event_type: str
        depth: int
        outcome: str
        error: str
        duration_ms: float
        result: Any
        result_sha256: str
        result_size: int
        emitted: list

    @classmethod
    def fire(
        cls,
        *,
        trigger: str,
        function: str,
        event_id: str,
        event_nid: int,
        event_type: str,
        depth: int,
        outcome: str,
        error: str = "",
        duration_ms: float = 0.0,
        result: Any = None,
        emitted: Sequence[str] = (),
    ) -> TriggerExecution:
        value, digest, size = bounded(result) if result is not None else (None, "", 0)
        return cls._create(
            cls.Fired,
            id=cls.stream_id(execution_key(event_nid, function)),
            trigger=trigger,
            function=function,
            event_id=event_id,
            event_nid=event_nid,
            event_type=event_type,
            depth=depth,
            outcome=outcome,
            error=bounded_text(error),
            duration_ms=round(duration_ms, 3),
            result=value,
            result_sha256=digest,
            result_size=size,
            emitted=list(emitted),
        )

    @event(Fired)
    def __init__(
        self,
        trigger: str,
        function: str,
        event_id: str,
        event_nid: int,
        event_type: str,
        depth: int,
        outcome: str,
        error: str,
        duration_ms: float,
        result: Any,
        result_sha256: str,
        result_size: int,
        emitted: list,
    ) -> None:
        self.outcome = outcome
