"""Keeps read models current by following the log in this process (embedded mode; Kafka workers reuse it).

The SQLite recorder has no push subscription, so the runner reads the log
after each commit (commands poke it) and, for writes made by other processes,
every ``idle_poll`` seconds. Each batch is applied to every projector and
their positions tracked in one read-store transaction, which first takes the
projection lock (batches of other processes and a rebuild's swap wait) and
reads the positions together with the faults (so a retry or skip done by an
operator from another process is seen at the next batch).

One poison event must not stop every read model: each projector's share of a
batch runs under its own savepoint. When a projector fails on an event, its
share is rolled back, the events before the poison one are applied again, its
position is tracked just before it, and the fault is recorded; the other
projectors go on. A faulted projector is left alone until the fault is
cleared. Errors of the store itself (a lock, a lost connection) are not
faults: the whole batch is dropped and the follower tries it again.

Commands wait on ``wait_for`` for the projectors they need before answering:
that is read-your-writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from chainloom.infra.follower import Follower, RunBlocking
from chainloom.infra.singleton import Lock
from chainloom.infra.readstore import Fault, ReadStore, SqlCursor, storable_text
from chainloom.infra.timefmt import format_ns
from chainloom.projections.base import Event, Projector, create_tables
from chainloom.projections.waits import ProjectionFaulted, ProjectorStates, ReadModelsBehind

__all__ = ["ProjectionFailed", "ProjectionFaulted", "ProjectionRunner", "ReadModelsBehind"]

logger = logging.getLogger(__name__)

Listener = Callable[[list[Event]], None]

_SAVEPOINT = "projector"
# Seconds between full readings of positions and faults when nothing seems to happen.
FULL_READING_EVERY = 0.5


class ProjectionFailed(Exception):
    """A projector failed on an event while faults were not to be recorded (a rebuild)."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        super().__init__(
            f"projection {fault.projection} failed on event {fault.position}"
            f" ({fault.event_type} {fault.event_id}): {fault.error}"
        )


class LogReader(Protocol):
    """What the runner reads: the log (``infra.eventlog.EventLog``), or the events topic that carries it
    (``projections.kafka_worker.KafkaLogReader``)."""

    def read(self, after: int, limit: int) -> list[Event]:
        """Public events with ``nid`` > ``after``, in log order, at most ``limit``."""

    def head(self) -> int:
        """The last position known to be in the log (0 when unknown)."""


class Batch(NamedTuple):
    position: int  # every projector that is not faulted has applied the log up to here
    more: bool  # a full batch: more may follow at once
    events: list[Event]
    positions: dict[str, int]
    faults: dict[str, Fault]


def is_store_trouble(error: BaseException) -> bool:
    """A lock, a lost connection, a missing table: the store's state, not the event's (DB-API class names)."""
    return any(cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(error).__mro__)


class ProjectionRunner:
    def __init__(
        self,
        log: LogReader,
        store: ReadStore,
        projectors: Sequence[Projector],
        run_blocking: RunBlocking | None = None,
        *,
        batch_size: int = 1000,
        idle_poll: float = 0.5,
        record_faults: bool = True,
        skipped: Mapping[str, frozenset[int]] | None = None,
        lock: Lock | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        """``run_blocking`` is needed only to ``start`` following (the service); the blocking API needs none.
        ``record_faults=False`` raises ``ProjectionFailed`` instead (a rebuild must not swap in a gap).
        ``skipped``: positions per projector that are passed over (events an operator skipped).

        ``lock``: the runner is a singleton job of several processes (``chainloom serve`` with workers):
        it projects only while it holds the lock, and otherwise stands by, reading the positions and
        faults the holder tracks (so its commands' waits are still released), until the holder dies.
        ``on_batch()`` is called after each committed batch that changed read models."""
        self._log = log
        self._store = store
        self._projectors = list(projectors)
        self._names = [p.name for p in self._projectors]
        self._run_blocking = run_blocking
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._record_faults = record_faults
        self._skipped = dict(skipped or {})
        self._listeners: list[Listener] = []
        self._live_after = 0  # events up to here were in the log before this runner started
        self._version = 0  # moves whenever a batch changed read models
        self._first: Batch | None = None
        self._states = ProjectorStates(self._names, wake=self.poke)
        self._follower: Follower | None = None
        self._lock = lock
        self._on_batch = on_batch
        self._holding = lock is None
        self._last: Batch | None = None  # the last reading, and when the next full one is due
        self._full_reading_due = 0.0

    # -- blocking part (worker threads, CLI, rebuild, Kafka workers) --------

    def setup(self) -> None:
        with self._store.transaction() as cursor:
            create_tables(self._store, cursor, self._projectors)
            positions = self._store.positions(cursor, self._names)
            faults = self._store.faults(cursor, self._names)
        for projector in self._projectors:
            projector.tidy(self._store)
        self._first = Batch(self._reached(positions, faults), False, [], positions, faults)
        self._live_after = self._log.head()

    def process_batch(self) -> tuple[int, bool]:
        """Apply the next batch of the log; returns (position reached, whether more may follow)."""
        batch = self._process_batch()
        return batch.position, batch.more

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Process the log until the end as it is now; returns the position reached."""
        while True:
            position, more = self.process_batch()
            if progress is not None:
                progress(position)
            if not more:
                return position

    def catch_up_in(self, cursor: SqlCursor) -> int:
        """Process the log until its end inside the caller's transaction (a rebuild's swap)."""
        while True:
            batch = self.apply_batch(cursor)
            if not batch.more:
                return batch.position

    def _process_batch(self) -> Batch:
        with self._store.transaction() as cursor:
            return self.apply_batch(cursor)

    @property
    def holding(self) -> bool:
        """Whether this process projects (always, without a lock; else while it holds it)."""
        return self._holding

    def _follow_step(self) -> Batch:
        """The follower's step: project as the lock's holder, or read the holder's progress as a standby.

        Either way, a step with nothing to do stays cheap: it looks at the log's head (holder) or
        does nothing (standby) unless a command of this process waits, or ``FULL_READING_EVERY``
        has passed (an operator's retry or skip is seen within that).
        """
        now = time.monotonic()
        if self._lock is not None and not self._lock.acquire():
            if self._holding:
                logger.warning("projection runner: lost the projection lock; standing by")
                self._holding = False
            if self._last is not None and not self._states.waiting and now < self._full_reading_due:
                return self._last
            return self._reading(now)
        if not self._holding:
            logger.info("projection runner: took the projection lock; projecting here")
            self._holding = True
        last = self._last
        if (
            self._lock is not None
            and last is not None
            and now < self._full_reading_due
            and self._log.head() <= last.position
        ):
            return last
        batch = self._process_batch()
        if batch.events and self._on_batch is not None:
            self._on_batch()
        self._last = batch._replace(events=[])
        self._full_reading_due = now + FULL_READING_EVERY
        return batch

    def _reading(self, now: float) -> Batch:
        """The positions and faults as the store has them (a standby's view of the holder's work)."""
        with self._store.transaction(commit=False) as cursor:
            positions = self._store.positions(cursor, self._names)
            faults = self._store.faults(cursor, self._names)
        self._last = Batch(self._reached(positions, faults), False, [], positions, faults)
        self._full_reading_due = now + FULL_READING_EVERY
        return self._last

    def release(self) -> None:
        """Give the lock up (at shutdown, so a standby takes over at once)."""
        if self._lock is not None:
            self._lock.release()
            self._holding = False

    def apply_batch(self, cursor: SqlCursor) -> Batch:
        """Apply the next batch to every projector that is not faulted, in the caller's transaction."""
        self._store.lock_projections(cursor)
        positions = self._store.positions(cursor, self._names)
        faults = self._store.faults(cursor, self._names)
        active = [p for p in self._projectors if p.name not in faults]
        if not active:
            return Batch(self._reached(positions, faults), False, [], positions, faults)
        start = min(positions[p.name] for p in active)
        events = self._log.read(after=start, limit=self._batch_size)
        for projector in active:
            done = positions[projector.name]
            skipped = self._skipped.get(projector.name, frozenset())
            pending = [e for e in events if e["nid"] > done and e["nid"] not in skipped]
            reached, fault = self._apply(cursor, projector, pending, events, done)
            if fault is not None:
                if not self._record_faults:
                    raise ProjectionFailed(fault)
                self._store.record_fault(cursor, fault)
                faults[projector.name] = fault
            if reached > done:
                self._store.track(cursor, projector.name, reached)
                positions[projector.name] = reached
        return Batch(self._reached(positions, faults), len(events) == self._batch_size, events, positions, faults)

    def _apply(
        self, cursor: SqlCursor, projector: Projector, pending: list[Event], batch: list[Event], done: int
    ) -> tuple[int, Fault | None]:
        """Apply ``pending`` under a savepoint; on a poison event keep what came before it and return its fault."""
        last = batch[-1]["nid"] if batch else done
        if not pending:
            return max(done, last), None
        self._store.savepoint(cursor, _SAVEPOINT)
        current = pending[0]
        try:
            for current in pending:
                projector.apply(cursor, current)
        except Exception as error:
            projector.discard()
            if is_store_trouble(error):
                raise
            poison = current
            self._store.rollback_to_savepoint(cursor, _SAVEPOINT)
            try:
                for earlier in pending:
                    if earlier["nid"] >= poison["nid"]:
                        break
                    projector.apply(cursor, earlier)
                projector.flush(cursor)
            except BaseException:
                projector.discard()
                raise
            self._store.release_savepoint(cursor, _SAVEPOINT)
            before = max([done] + [e["nid"] for e in batch if e["nid"] < poison["nid"]])
            fault = Fault(
                projection=projector.name,
                position=poison["nid"],
                event_id=storable_text(str(poison.get("id", "")), 200),
                event_type=storable_text(str(poison.get("event_type", "")), 200),
                error=storable_text(f"{type(error).__name__}: {error}"),
                failed_at=format_ns(time.time_ns()),
            )
            logger.error(
                "projection %s stopped at event %d (%s %s): %s", fault.projection, fault.position,
                fault.event_type, fault.event_id, fault.error, exc_info=error,
            )
            return before, fault
        try:
            # What the projector keeps outside the read store (lancedb), written before the position is
            # tracked; a failure there is the store's trouble, not the event's: the batch is tried again.
            projector.flush(cursor)
        except BaseException:
            projector.discard()
            raise
        self._store.release_savepoint(cursor, _SAVEPOINT)
        return max(done, last), None

    @staticmethod
    def _reached(positions: Mapping[str, int], faults: Mapping[str, Fault]) -> int:
        healthy = [position for name, position in positions.items() if name not in faults]
        return min(healthy or positions.values() or [0])

    def current_faults(self) -> dict[str, Fault]:
        """The faults as the store has them now (blocking)."""
        with self._store.transaction(commit=False) as cursor:
            return self._store.faults(cursor, self._names)

    # -- async part (the service): the one follower loop (infra/follower.py) -----

    @property
    def version(self) -> int:
        """Moves whenever a batch has changed read models (stamps remembered query results)."""
        return self._version

    @property
    def position(self) -> int:
        """The position every projector that is not faulted has reached."""
        return self._reached(self._states.positions, self._states.faults)

    @property
    def faults(self) -> dict[str, Fault]:
        """The faults as of the last batch."""
        return dict(self._states.faults)

    async def read_faults(self) -> dict[str, Fault]:
        assert self._run_blocking is not None, "a runner without run_blocking only has the blocking API"
        return await self._run_blocking(self.current_faults)

    async def start(self) -> None:
        assert self._run_blocking is not None, "start needs run_blocking"
        await self._run_blocking(self.setup)
        assert self._first is not None
        self._states.update(self._first.positions, self._first.faults)
        self._follower = Follower(
            self._follow_step, self._run_blocking, name="projection-runner", idle_poll=self._idle_poll,
            behind=ReadModelsBehind, what="read models", on_step=self._stepped,
        )
        self._follower.start(self._first.position)

    async def stop(self) -> None:
        """Stop following; returns once no batch is in flight (so the stores can be closed)."""
        if self._follower is not None:
            await self._follower.stop()
        if self._run_blocking is not None:
            await self._run_blocking(self.release)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(events)`` on the event loop with each batch of new events once it is applied
        (live streams). Events already in the log when the runner started are not passed on."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Something was appended: read the log now rather than at the next poll."""
        if self._follower is not None:
            self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float, needs: Sequence[str] | None = None) -> None:
        """Return once the ``needs`` projectors (all when None) have processed the log up to ``position``;
        ``ProjectionFaulted`` at once when one of them is stopped before it."""
        await self._states.wait_for(position, timeout, needs)

    def _stepped(self, batch: Batch) -> None:
        if batch.events:
            self._version += 1
        self._states.update(batch.positions, batch.faults)
        self._tell_listeners(batch.events)

    def _tell_listeners(self, events: list[Event]) -> None:
        live = [event for event in events if event["nid"] > self._live_after]
        if not live:
            return
        self._live_after = live[-1]["nid"]
        for listener in self._listeners:
            try:
                listener(live)
            except Exception:
                logger.exception("projection listener failed")
