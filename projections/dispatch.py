"""Trigger dispatch: a process manager that follows the log and runs the functions triggers name.

Every event appended — by ``POST /events``, ``/ingest``, ``/replay``, a script's ``sendEvent``, or
chainloom itself (``backend.created``, ``trigger.fired`` …) — is dispatched once, in log order, to the
triggers listening for its type (spec §4.4): triggers whose ``listenFor.type`` equals the event's type
(and whose ``listenFor.source``, when set, equals its source), created before the event, their functions
run at most once per event (the newest trigger naming a function wins). Each execution runs in the
sandbox (``infra.sandbox``) and is recorded as ``trigger.fired`` (``domain.trigger_executions``).

**Exactly once.** A batch of events is read after the dispatcher's position; its executions run
concurrently; their records and the events the scripts emitted are appended in one transaction that
also moves the position to the batch's end (``infra.dispatch_log.DispatchFence``). A crash before the
commit leaves neither, and the batch is dispatched again; a dispatcher that lost its lock finds the
position moved and stores nothing; and a second record of one (event, function) is refused by the log
itself (``TriggerExecution``'s stream).

**Nesting.** An event a script emits carries ``trigger_depth`` (its cause's + 1) in its metadata, and
``trigger.fired`` records carry it too. An event at the depth limit is not run but recorded as
``refused``; events beyond it (only refusal records) are not dispatched at all.

**Where.** One process at a time (the singleton lock ``triggers``), like the projection runner. It keeps
every trigger in memory, read from the functions' read model at the start and again whenever a change of
functions or triggers goes by in the log (once the read model has reached it): a trigger created just
before an event is never missed, and a batch without such a change costs no query.

**Waiting for triggers.** ``TriggerWaits`` lets ``POST /events``, ``/ingest`` and ``/replay`` answer
after the triggers of what they appended ran (and what those emitted was dispatched and projected in
turn), up to a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import RecordConflictError, StoredEvent

from chainloom.domain.functions import EventTrigger, Function
from chainloom.domain.trigger_executions import FAILED, REFUSED, SUCCEEDED, TriggerExecution
from chainloom.infra.dispatch_log import DispatchFence, DispatchLog, Output, Written
from chainloom.infra.envelope import INTERNAL_EVENT_SOURCE, EnvelopeMapper
from chainloom.infra.eventlog import EventLog, FenceRefused
from chainloom.infra.logwriter import LogWriter, appending_under
from chainloom.infra.sandbox import Run, SandboxPool, event_object
from chainloom.infra.singleton import Lock
from chainloom.projections.dispatch_host import EmittedIds, HostServices, ScriptHost
from chainloom.projections.waits import ReadModels, ReadModelsBehind
from chainloom.queries.functions import Listener

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]
Event = dict[str, Any]

NAME = "triggers"  # the dispatch position's name, and the singleton job's
DISPATCHER = "trigger-dispatch"  # the actor of trigger.fired records
BATCH = 500
# Executions per commit: a batch ends after the event whose executions reach this many (each may emit up to
# ``dispatch_host.MAX_EMITTED`` events, all appended in the batch's one transaction).
MAX_JOBS = 64
# A batch that ran nothing moves the stored position at most this often (a waiting request in another
# process sees it that much later; one that ran something moves it with its records, at once).
QUIET_MOVE_EVERY = 0.2
# Seconds between the holder's looks at the log when nobody pokes it, and between a standby's lock attempts.
POLL = 0.5
# Outputs of long-dispatched events are pruned every this many commits.
PRUNE_EVERY = 1000
# Aggregates whose events change what is dispatched (functions, event triggers).
_CONFIGURATION = frozenset({Function.aggregate_type, EventTrigger.aggregate_type})
# The holder remembers the outputs of this many recent events (waiting requests of its process ask it, not the store).
REMEMBERED_OUTPUTS = 10_000


class Listeners(Protocol):
    """``queries.functions.FunctionQueries``."""

    async def listeners(self, event_types: Collection[str]) -> dict[str, list[Listener]]: ...

    async def listened_types(self) -> frozenset[str]: ...


def depth_of(event: Mapping[str, Any]) -> int:
    """How many functions deep the event was emitted (0: not by a function)."""
    metadata = event.get("metadata")
    depth = metadata.get("trigger_depth", 0) if isinstance(metadata, dict) else 0
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 0


@dataclass(frozen=True)
class Job:
    event: Event
    listener: Listener
    depth: int


def plan(
    events: Sequence[Event], listeners: Mapping[str, Sequence[Listener]], max_depth: int, max_jobs: int = MAX_JOBS
) -> tuple[list[Job], int]:
    """The executions a batch calls for, in log order (then newest trigger first), and the position of the
    last event they cover: the batch ends early, after whole events, once ``max_jobs`` is reached."""
    jobs: list[Job] = []
    for event in events:
        if len(jobs) >= max_jobs:
            return jobs, jobs[-1].event["nid"]
        depth = depth_of(event)
        if depth > max_depth:
            continue
        functions: set[str] = set()
        for listener in listeners.get(event["event_type"], ()):
            if listener.function in functions or event["nid"] <= listener.active_from:
                continue
            if listener.source and listener.source != event["event_source"]:
                continue
            functions.add(listener.function)
            jobs.append(Job(event, listener, depth))
    return jobs, events[-1]["nid"] if events else 0


@dataclass
class Executed:
    job: Job
    outcome: str
    error: str
    duration_ms: float
    result: Any
    host: ScriptHost | None


class TriggerDispatcher:
    def __init__(
        self,
        log: EventLog,
        writer: LogWriter,
        dispatch_log: DispatchLog,
        listeners: Listeners,
        read_models: ReadModels,
        sandbox: SandboxPool,
        services: HostServices,
        run_blocking: RunBlocking,
        *,
        lock: Lock | None = None,
        max_depth: int = 16,
        wait_timeout: float = 5.0,
        batch: int = BATCH,
        poll: float = POLL,
        on_commit: Callable[[], None] | None = None,
        on_executed: Callable[[str], None] | None = None,
    ) -> None:
        """``on_commit()``: something was appended (followers and other processes should look);
        ``on_executed(outcome)``: an execution was recorded (metrics)."""
        self._on_executed = on_executed
        self._log = log
        self._mapper: EnvelopeMapper = log.mapper
        self._writer = writer
        self._dispatch_log = dispatch_log
        self._listeners = listeners
        self._read_models = read_models
        self._sandbox = sandbox
        self._services = services
        self._run_blocking = run_blocking
        self._lock = lock
        self._max_depth = max_depth
        self._wait_timeout = wait_timeout
        self._batch = batch
        self._poll = poll
        self._on_commit = on_commit
        self._ids = EmittedIds()
        self._position: int | None = None  # as stored (None: to be read)
        self._passed = 0  # every event up to here was dispatched (stored, or a quiet move not yet stored)
        self._listening: Mapping[str, Sequence[Listener]] | None = None  # every trigger, by type (None: to be read)
        self._outputs: dict[int, list[Written]] = {}  # source nid → what its executions appended (recent ones)
        self._remembered_after = 0  # the outputs of events after this position, up to ``_passed``, are all known
        self._stored_at = 0.0
        self._commits = 0
        self._holding = False
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what the service sees --------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def passed(self) -> int:
        """Every event up to here has been dispatched by this process (0 when it does not hold the job)."""
        return self._passed if self._holding else 0

    def outputs_of(self, source_nids: Sequence[int]) -> list[Written] | None:
        """What the executions for these (dispatched) events appended, if this process dispatched them
        lately; None when it cannot tell (ask the store)."""
        if not self._holding or not all(self._remembered_after < nid <= self._passed for nid in source_nids):
            return None
        return [written for nid in source_nids for written in self._outputs.get(nid, ())]

    def poke(self) -> None:
        """Something was appended: look now."""
        self._wakeup.set()

    async def moved(self, timeout: float) -> None:
        """Return when the position moves (or after ``timeout``)."""
        event = self._moved
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    async def start(self) -> None:
        """Try the lock once now (a single process holds the job from its start), then follow the log."""
        try:
            await self._hold()
        except Exception as error:  # the store is unreachable: the loop tries again
            logger.warning("trigger dispatch: could not try its lock yet: %s", error)
        self._task = asyncio.create_task(self._run(), name="trigger-dispatch")

    async def stop(self) -> None:
        """Stop after the batch in flight (a script is bounded by its timeout), then give up the lock."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._lock is not None:
            await self._run_blocking(self._lock.release)
        self._holding = False

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            busy = False
            self._wakeup.clear()  # before the step: a poke while it runs makes the next look at once
            try:
                if await self._hold():
                    busy = await self.step()
                failures = 0
            except Exception as error:
                failures += 1
                self._position = None  # read it again: another dispatcher may have moved it
                if isinstance(error, ReadModelsBehind):  # the functions read model is slow, not wrong: wait again
                    logger.warning("trigger dispatch: %s; trying again", error)
                elif failures == 1:
                    logger.exception("trigger dispatch: a batch failed; trying it again")
                else:
                    logger.warning("trigger dispatch: a batch failed again (%d in a row): %s", failures, error)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
            if busy or self._stopping:
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._poll)
            except TimeoutError:
                pass

    async def _hold(self) -> bool:
        if self._lock is None:
            self._holding = True
            return True
        held = bool(await self._run_blocking(self._lock.acquire))
        if held != self._holding:
            logger.info("trigger dispatch: %s", "took the lock; dispatching here" if held else "lost the lock; standing by")
            self._holding = held
            self._position = None
        return held

    async def step(self) -> bool:
        """Dispatch the next batch; False when there was nothing after the position."""
        if self._position is None:
            self._position = await self._run_blocking(self._dispatch_log.position, NAME)
            self._passed = self._remembered_after = self._position
            self._outputs.clear()
            self._listening = None
        before = self._passed
        events: list[Event] = await self._run_blocking(self._log.read, before, self._batch)
        if not events:
            await self._store_quiet_move(force=True)
            return False
        jobs, last = plan(events, await self._listeners_of(events), self._max_depth)
        if not jobs:
            self._passed = last
            await self._store_quiet_move(force=False)
            self._announce_moved()
            return True
        executed = await asyncio.gather(*(self._execute(job) for job in jobs))
        await self._commit(executed, last)
        return True

    async def _listeners_of(self, events: Sequence[Event]) -> Mapping[str, Sequence[Listener]]:
        """The triggers as they stand at these events. The dispatcher sees every change of functions and
        triggers go by in the log, so it reads them again only after one (once the read model has it)."""
        changed = any(
            event["event_source"] == INTERNAL_EVENT_SOURCE and event["event_type"].split(".", 1)[0] in _CONFIGURATION
            for event in events
        )
        if self._listening is None or changed:
            await self._read_models.wait_for(events[-1]["nid"], self._wait_timeout, ["functions"])
            self._listening = await self._listeners.listeners(await self._listeners.listened_types())
        return self._listening

    async def _store_quiet_move(self, *, force: bool) -> None:
        """Store a position reached without running anything — not after every batch (it costs a write)."""
        assert self._position is not None
        if self._passed == self._position or (not force and time.monotonic() - self._stored_at < QUIET_MOVE_EVERY):
            return
        if not await self._run_blocking(self._dispatch_log.move, NAME, self._position, self._passed):
            raise FenceRefused("the dispatch position was moved by another dispatcher")
        self._position = self._passed
        self._stored_at = time.monotonic()

    async def _execute(self, job: Job) -> Executed:
        listener, started = job.listener, time.perf_counter()
        if job.depth >= self._max_depth:
            return Executed(
                job,
                REFUSED,
                f"not run: the event was emitted by a chain of {job.depth} functions (the limit is {self._max_depth})",
                0.0,
                None,
                None,
            )
        try:
            script_event = event_object(job.event)
        except ValueError as error:
            return Executed(job, FAILED, str(error), 0.0, None, None)
        host = ScriptHost(self._services, self._mapper, self._ids, listener.function, listener.trigger, job.event, job.depth)
        outcome = await self._sandbox.run(Run(listener.function, listener.script, script_event), host)
        duration = outcome.duration_ms or (time.perf_counter() - started) * 1000
        if not outcome.ok:
            logger.info("function %s failed on event %s (%s): %s", listener.function, job.event["nid"], job.event["event_type"], outcome.error)
            return Executed(job, FAILED, outcome.error, duration, None, None)
        return Executed(job, SUCCEEDED, "", duration, outcome.result, host)

    async def _commit(self, executed: Sequence[Executed], last: int) -> None:
        """Append the batch's records and emitted events, moving the position to ``last``, in one transaction."""
        assert self._position is not None
        stored: list[StoredEvent] = []
        outputs: list[Output] = []
        for done in executed:
            event, listener = done.job.event, done.job.listener
            emitted = done.host.emitted if done.host is not None else []
            for external, stored_event in emitted:
                stored.append(stored_event)
                outputs.append(Output(event["nid"], external.stream_id, external.event_type))
            record = TriggerExecution.fire(
                trigger=listener.trigger,
                function=listener.function,
                event_id=event["id"],
                event_nid=event["nid"],
                event_type=event["event_type"],
                depth=done.job.depth,
                outcome=done.outcome,
                error=done.error,
                duration_ms=done.duration_ms,
                result=done.result,
                emitted=[external.id for external, _ in emitted],
            )
            metadata = _record_metadata(event, done.job.depth)
            stored.extend(self._mapper.to_stored_event(e, metadata, size_limited=False) for e in record.collect_events())
            outputs.append(Output(event["nid"], record.id, "trigger.fired"))
        self._commits += 1
        fence = DispatchFence(NAME, self._position, last, outputs, prune=self._commits % PRUNE_EVERY == 0)
        token = appending_under.set(fence)
        try:
            positions = await self._writer.append(stored)
        except RecordConflictError:
            self._position = None  # another dispatcher was here (or recorded these executions): read again
            raise
        finally:
            appending_under.reset(token)
        self._position = self._passed = last
        self._stored_at = time.monotonic()
        self._remember(outputs, positions)
        if self._on_executed is not None:
            for done in executed:
                self._on_executed(done.outcome)
        if self._on_commit is not None:
            self._on_commit()
        self._announce_moved()

    def _remember(self, outputs: Sequence[Output], positions: Sequence[int]) -> None:
        """Keep what a commit appended, for the waiting requests of this process (``outputs_of``)."""
        # One output per appended event, in the order they were appended.
        assert len(outputs) == len(positions), (len(outputs), len(positions))
        for output, nid in zip(outputs, positions):
            self._outputs.setdefault(output.source_nid, []).append(Written(output.source_nid, nid, output.event_type))
        while len(self._outputs) > REMEMBERED_OUTPUTS:
            oldest = next(iter(self._outputs))
            del self._outputs[oldest]
            self._remembered_after = max(self._remembered_after, oldest)

    def _announce_moved(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()


def _record_metadata(event: Mapping[str, Any], depth: int) -> dict[str, Any]:
    metadata = event.get("metadata")
    source: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}
    request_id = source.get("request_id") if isinstance(source.get("request_id"), str) else ""
    return {
        "actor": DISPATCHER,
        "request_id": request_id,
        "correlation_id": source.get("correlation_id") if isinstance(source.get("correlation_id"), str) else request_id,
        "causation_id": event["id"],
        "trigger_depth": depth + 1,
    }


# -- waiting for triggers ------------------------------------------------------------------------------

DONE = "done"
PENDING = "pending"


class Counter(Protocol):
    """A count several processes share (``web.workers.SharedVersion``)."""

    def __call__(self) -> int: ...

    def bump(self) -> None: ...


class ListenedTypes:
    """The event types some trigger listens for, read at most once per ``ttl`` seconds — and again at once
    after a change of functions or triggers made through this process or a sibling worker (``changes``)."""

    def __init__(self, load: Callable[[], Awaitable[frozenset[str]]], ttl: float = 1.0, changes: Counter | None = None) -> None:
        self._load = load
        self._ttl = ttl
        self._changes = changes
        self._value: frozenset[str] | None = None
        self._read_at = 0.0
        self._stamp = 0

    def _stamp_now(self) -> int:
        return self._changes() if self._changes is not None else 0

    async def get(self) -> frozenset[str]:
        stamp = self._stamp_now()
        if self._value is None or stamp != self._stamp or time.monotonic() - self._read_at >= self._ttl:
            read_at = time.monotonic()
            self._value = await self._load()
            self._read_at, self._stamp = read_at, stamp
        return self._value

    def clear(self) -> None:
        """Forget what was read, here and in the processes sharing ``changes`` (``POST /executor/sync``)."""
        self._value = None
        if self._changes is not None:
            self._changes.bump()


class TriggerWaits:
    """``POST /events``, ``/ingest`` and ``/replay`` answer after the triggers of what they appended ran —
    and what those executions appended (records, emitted events) was dispatched in turn and projected —
    or once ``timeout`` passed (the executions still happen; the answer says they are pending)."""

    def __init__(
        self,
        dispatcher: TriggerDispatcher,
        dispatch_log: DispatchLog,
        listened: ListenedTypes,
        projected: Callable[[int | None], Awaitable[None]],
        run_blocking: RunBlocking,
        *,
        timeout: float,
        max_depth: int,
        poll: float = 0.02,
    ) -> None:
        """``projected(position)``: read-your-writes on every read model."""
        self._dispatcher = dispatcher
        self._dispatch_log = dispatch_log
        self._listened = listened
        self._projected = projected
        self._run_blocking = run_blocking
        self._timeout = timeout
        self._max_depth = max_depth
        self._poll = poll
        self._stored = 0  # the stored position as last read (processes not holding the dispatcher)
        self._stored_read_at = 0.0
        self._reading = asyncio.Lock()  # the waiters of a process share one reading
        self._rung = asyncio.Event()  # another process appended (its dispatcher may have moved): read again

    async def settle(self, appended: Sequence[tuple[int, str]]) -> str | None:
        """Wait for the triggers of the events ``(nid, event_type)``: None when no trigger listens for
        them (or waiting is off), ``done``, or ``pending`` (the timeout passed first)."""
        if self._timeout <= 0 or not appended:
            return None
        listened = await self._listened.get()
        frontier = [nid for nid, event_type in appended if event_type in listened]
        if not frontier:
            return None
        deadline = time.monotonic() + self._timeout
        last = max(frontier)
        for _ in range(self._max_depth + 2):
            if not await self._dispatched(max(frontier), deadline):
                return PENDING
            written = self._dispatcher.outputs_of(frontier)
            if written is None:  # dispatched by another process (or long ago): the store has it
                written = await self._run_blocking(self._dispatch_log.written, frontier)
            if not written:
                break
            last = max(last, *(w.nid for w in written))
            listened = await self._listened.get()
            frontier = [w.nid for w in written if w.event_type in listened]
            if not frontier:
                break
        await self._projected(last)
        return DONE

    async def _dispatched(self, position: int, deadline: float) -> bool:
        while True:
            if self._dispatcher.passed >= position or self._stored >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._dispatcher.poke()
            if self._dispatcher.holding:
                await self._dispatcher.moved(min(remaining, 0.1))
            else:  # another process dispatches: look at the stored position, again when rung or after a poll
                await self._read_stored()
                if self._stored < position:
                    self._rung.clear()
                    try:
                        await asyncio.wait_for(self._rung.wait(), min(remaining, self._poll))
                    except TimeoutError:
                        pass

    def poke(self) -> None:
        """Something was appended (by the dispatcher of another process, say): waiting requests look again."""
        self._stored_read_at = 0.0
        self._rung.set()

    async def _read_stored(self) -> None:
        async with self._reading:
            if time.monotonic() - self._stored_read_at < self._poll:
                return  # another waiter has just read it
            stored = await self._run_blocking(self._dispatch_log.position, NAME)
            self._stored, self._stored_read_at = max(self._stored, stored), time.monotonic()
