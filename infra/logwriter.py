"""The one writer of a process: every append to the log goes through it, and appends share commits.

A commit of the log costs a round of locking and a sync to disk (SQLite) or a
table lock and round trips (PostgreSQL); at a few hundred writes a second that
cost, not the work of deciding, was what bounded throughput. So one thread per
process appends, in *groups*: whatever arrived while the previous group was
being committed is decided and stored in one transaction.

Two kinds of work arrive:

- **decisions** (``decide``): a function of the aggregates, as commands make
  them. Decisions run one after the other on the writer thread, each against
  the log *plus what the decisions before it in the group produced* (an
  overlay of uncommitted aggregates), so a group is exactly what running its
  decisions one by one would have stored — two creates of one name in one
  group still give one 409. A refused decision leaves nothing behind: it
  worked on copies.
- **prepared events** (``append``): events stated by a client or a webhook,
  already mapped; they collide only by repeating an identity.

An append may be *fenced*: a request that appends only on a condition (its
``Idempotency-Key`` still being its own) sets ``appending_under`` in its
context, and every append it submits carries that fence, checked in the
append's transaction (``Fence.check``: refuse it whole) and told once the
append is stored (``Fence.stored``). A decision may bring fences of its own
(``decide(…, fences=…)``: a table written with its events, such as a user's
credential), carried besides the request's.

Another process may write to the same log (several workers, several API
processes): if a group's transaction collides, nothing of it was stored, and
its work is done again one at a time — decisions decided afresh (up to
``attempts`` times), prepared events alone — so only an offender is refused,
and nobody for another's fault.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.persistence import RecordConflictError, StoredEvent

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict
from chainloom.infra.eventlog import EventLog, Fence, FenceRefused
from chainloom.infra.unique_index import Holding, changes

logger = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
A = TypeVar("A", bound=Aggregate)

# A group's transaction holds at most about this many events (a decision's count is known once made).
MAX_GROUP_EVENTS = 500


class Decided(Protocol[T_co]):
    """What a decision hands back (``commands.base.Decision``): its result, and the aggregates to save."""

    @property
    def result(self) -> T_co: ...

    @property
    def save(self) -> Sequence[Aggregate]: ...


# The fence of the appends a request submits (see the module's docstring); None: unfenced.
appending_under: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("appending_under", default=None)


def without_fence() -> contextvars.Context:
    """A copy of the current context whose appends are unfenced: for work a request starts that outlives it
    (its key's fence would refuse that work's appends once the request has answered)."""
    context = contextvars.copy_context()
    context.run(appending_under.set, None)
    return context


class Overlay:
    """The log as a decision in a group sees it: what is stored, then what earlier decisions of the group
    produced — aggregates and the unique values they hold. Each ``get`` is a copy, so a decision that is
    refused changes nothing."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._aggregates: dict[str, Aggregate] = {}
        self._last_events: dict[str, Any] = {}
        self._owners: dict[tuple[str, str], str | None] = {}  # (scope, value) → holder's stream id, None: given up
        self._before: dict[str, dict[str, str]] = {}  # unique values of what the current decision got

    def begin(self) -> None:
        """A new decision starts."""
        self._before = {}

    def get(self, aggregate_class: type[A], key: str) -> A | None:
        kept = self._aggregates.get(aggregate_class.stream_id(key))
        aggregate = self._log.get(aggregate_class, key) if kept is None else copy.deepcopy(kept)
        if aggregate is not None:
            assert isinstance(aggregate, aggregate_class), aggregate
            self._before.setdefault(aggregate.id, aggregate.unique_values())
        return aggregate

    def last_event(self, aggregate_class: type[Aggregate], key: str) -> Any | None:
        stream_id = aggregate_class.stream_id(key)
        if stream_id in self._last_events:
            return self._last_events[stream_id]
        return self._log.last_event(aggregate_class, key)

    def owner_of(self, scope: str, value: str) -> str | None:
        if (scope, value) in self._owners:
            owner = self._owners[(scope, value)]
            return owner.split(":", 1)[1] if owner else None
        return self._log.owner_of(scope, value)

    def stage(self, aggregates: Sequence[Aggregate], metadata: Mapping[str, Any]) -> tuple[list[StoredEvent], list[Holding]]:
        """The stored events of a decision and the unique values it takes and gives up, made visible to
        the decisions after it in the group.

        Mapping can refuse an event (too large, not storable): then nothing of the decision is kept.
        """
        pending = [(aggregate, aggregate.collect_events()) for aggregate in aggregates]
        stored = [self._log.mapper.to_stored_event(e, metadata) for _, events in pending for e in events]
        holdings = [
            holding
            for aggregate, events in pending
            if events
            for holding in changes(aggregate.id, self._before.get(aggregate.id, {}), aggregate.unique_values())
        ]
        for aggregate, events in pending:
            if events:
                self._aggregates[aggregate.id] = aggregate
                self._last_events[aggregate.id] = events[-1]
        for holding in holdings:
            self._owners[(holding.scope, holding.value)] = holding.owner if holding.held else None
        return stored, holdings

    def decided(self) -> list[Aggregate]:
        """The aggregates as the group left them (to remember once it is stored)."""
        return list(self._aggregates.values())


@dataclass
class _Work(Generic[T]):
    future: Future
    decide: Callable[[Any], Decided[T]] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    prepared: Sequence[StoredEvent] = ()
    fence: Fence | None = None  # the request's (``appending_under``)
    own_fences: Sequence[Fence] = ()  # the decision's own (``decide(…, fences=…)``)
    # Filled while the group is made:
    stored: list[StoredEvent] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    result: Any = None
    refusal: BaseException | None = None

    @property
    def fences(self) -> list[Fence]:
        return [*([self.fence] if self.fence is not None else []), *self.own_fences]


class LogWriter:
    def __init__(
        self,
        log: EventLog,
        *,
        attempts: int = 5,
        max_group_events: int = MAX_GROUP_EVENTS,
        on_stored: Callable[[Sequence[StoredEvent]], None] | None = None,
    ) -> None:
        """``on_stored(events)``: called on the writer thread with the events of each stored transaction (metrics)."""
        self._log = log
        self._on_stored = on_stored
        self._attempts = attempts
        self._max_group_events = max_group_events
        self._queue: deque[_Work] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    # -- what callers use ----------------------------------------------------

    async def decide(
        self, decide: Callable[[Any], Decided[T]], metadata: Mapping[str, Any], fences: Sequence[Fence] = ()
    ) -> tuple[T, int | None]:
        """Decide (on the writer thread) and store; the decision's result and the highest position it
        wrote (None when it wrote nothing). ``fences`` go with its append, after the request's own."""
        return await asyncio.wrap_future(
            self._submit(_Work(Future(), decide=decide, metadata=metadata, own_fences=tuple(fences)))
        )

    async def append(self, events: Sequence[StoredEvent]) -> list[int]:
        """Store prepared events in one transaction; their positions, in order. Raises the library's
        ``RecordConflictError`` when one of them repeats a stored identity (nothing is stored then)."""
        return await asyncio.wrap_future(self._submit(_Work(Future(), prepared=events)))

    def close(self) -> None:
        """Finish what was submitted, then stop."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _submit(self, work: _Work) -> Future:
        work.fence = appending_under.get()
        with self._ready:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            self._queue.append(work)
            self._ready.notify()
        return work.future

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                group = list(self._queue)
                self._queue.clear()
            try:
                self._write(group)
            except BaseException as error:  # never leave a caller waiting
                logger.exception("the log writer failed")
                for work in group:
                    if not work.future.done():
                        work.future.set_exception(error)

    def _write(self, group: list[_Work]) -> None:
        """Decide and store ``group``, in transactions of at most about ``max_group_events`` events."""
        overlay = Overlay(self._log)
        staged: list[_Work] = []
        size = 0
        for work in group:
            if size >= self._max_group_events:
                self._store(staged, overlay)
                overlay, staged, size = Overlay(self._log), [], 0
            if not work.future.set_running_or_notify_cancel():
                continue
            if work.decide is None:
                work.stored = list(work.prepared)
            else:
                overlay.begin()
                try:
                    decision = work.decide(overlay)
                    work.stored, work.holdings = overlay.stage(decision.save, work.metadata)
                    work.result = decision.result
                except Exception as refusal:  # held until the group is stored: it may have been decided on
                    work.refusal = refusal  # work that another process's write will make us redo
            staged.append(work)
            size += len(work.stored)
        self._store(staged, overlay)

    def _store(self, staged: list[_Work], overlay: Overlay) -> None:
        stored = [event for work in staged for event in work.stored]
        holdings = [holding for work in staged for holding in work.holdings]
        fences = [fence for work in staged if work.stored for fence in work.fences]
        try:
            positions = self._log.insert(stored, holdings, fences) if stored else []
        except RecordConflictError as conflict:
            if len(staged) == 1 and staged[0].decide is None:
                staged[0].future.set_exception(conflict)
            else:
                for work in staged:
                    self._alone(work)
            return
        except Exception as error:
            for work in staged:
                work.future.set_exception(error)
            return
        self._log.remember(overlay.decided())
        self._stored(stored)
        start = 0
        for work in staged:
            own = positions[start : start + len(work.stored)]
            start += len(work.stored)
            self._finish(work, own)

    def _alone(self, work: _Work) -> None:
        """Store one piece of work in a transaction of its own; a decision decided afresh each attempt."""
        if work.decide is None:
            try:
                positions = self._log.insert(work.stored, (), work.fences) if work.stored else []
            except Exception as error:
                work.future.set_exception(error)
            else:
                self._stored(work.stored)
                work.future.set_result(positions)
            return
        for _ in range(self._attempts):
            overlay = Overlay(self._log)
            work.refusal = None
            try:
                decision = work.decide(overlay)
                work.stored, work.holdings = overlay.stage(decision.save, work.metadata)
                work.result = decision.result
                own = self._log.insert(work.stored, work.holdings, work.fences) if work.stored else []
            except FenceRefused as refusal:  # deciding again would meet the same fence
                work.refusal = refusal
                own = []
            except RecordConflictError:
                continue
            except Exception as refusal:
                work.refusal = refusal
                own = []
            else:
                self._log.remember(overlay.decided())
                self._stored(work.stored)
            self._finish(work, own)
            return
        work.future.set_exception(Conflict("the entity was changed concurrently too often; try again"))

    def _stored(self, events: Sequence[StoredEvent]) -> None:
        if self._on_stored is not None and events:
            try:
                self._on_stored(events)
            except Exception:  # noqa: BLE001 - counting must never fail a write
                logger.exception("could not count the stored events")

    @staticmethod
    def _finish(work: _Work, positions: list[int]) -> None:
        if work.decide is None:
            work.future.set_result(positions)
        elif work.refusal is not None:
            work.future.set_exception(work.refusal)
        else:
            work.future.set_result((work.result, max(positions) if positions else None))
