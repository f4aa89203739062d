"""Keeps read models current by following the log in this process (embedded mode).

The SQLite recorder has no push subscription, so the runner reads the log
after each commit (commands poke it) and, for writes made by other processes,
every ``idle_poll`` seconds. Each batch is applied to every projector and
their positions tracked in one read-store transaction. Commands wait on
``wait_for`` before answering: that is read-your-writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from infra.eventlog import EventLog
from infra.readstore import ReadStore
from projections.base import Event, Projector

log = logging.getLogger(__name__)

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]
Listener = Callable[[list[Event]], None]


class ReadModelsBehind(Exception):
    """The read models did not reach a command's write within the allowed time."""


class ProjectionRunner:
    def __init__(
        self,
        log_: EventLog,
        store: ReadStore,
        projectors: Sequence[Projector],
        run_blocking: RunBlocking,
        *,
        batch_size: int = 1000,
        idle_poll: float = 0.5,
    ) -> None:
        self._log = log_
        self._store = store
        self._projectors = list(projectors)
        self._names = [p.name for p in self._projectors]
        self._run_blocking = run_blocking
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._position = 0  # every projector has processed the log up to here
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._live_after = 0  # events up to here were in the log before this runner started
        self._stopping = False

    # -- blocking part (worker threads, CLI) --------------------------------

    def setup(self) -> None:
        with self._store.transaction() as cursor:
            for projector in self._projectors:
                projector.create(cursor)
            self._position = min(self._store.positions(cursor, self._names).values())
        self._live_after = self._log.head()

    def process_batch(self, only: Sequence[str] | None = None) -> tuple[int, bool]:
        """Apply the next batch of the log; returns (position reached, whether more may follow)."""
        position, more, _ = self._process_batch(only)
        return position, more

    def _process_batch(self, only: Sequence[str] | None = None) -> tuple[int, bool, list[Event]]:
        projectors = [p for p in self._projectors if only is None or p.name in only]
        names = [p.name for p in projectors]
        with self._store.transaction() as cursor:
            positions = self._store.positions(cursor, names)
            start = min(positions.values())
            events = self._log.read(after=start, limit=self._batch_size)
            if not events:
                return start, False, []
            last = events[-1]["nid"]
            for projector in projectors:
                done = positions[projector.name]
                for event in events:
                    if event["nid"] > done:
                        projector.apply(cursor, event)
                if last > done:
                    self._store.track(cursor, projector.name, last)
        return last, len(events) == self._batch_size, events

    def catch_up(self, only: Sequence[str] | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Process the log until the end as it is now; returns the position reached."""
        while True:
            position, more = self.process_batch(only)
            if progress is not None:
                progress(position)
            if not more:
                if only is None:
                    self._position = position
                return position

    def rebuild(self, names: Sequence[str], progress: Callable[[int], None] | None = None) -> int:
        """Drop the named read models and build them again from position 0."""
        with self._store.transaction() as cursor:
            for projector in self._projectors:
                if projector.name in names:
                    projector.drop(cursor)
                    projector.create(cursor)
                    self._store.reset(cursor, projector.name)
        return self.catch_up(only=names, progress=progress)

    # -- async part (the service) -------------------------------------------

    @property
    def position(self) -> int:
        return self._position

    async def start(self) -> None:
        await self._run_blocking(self.setup)
        self._task = asyncio.create_task(self._follow(), name="projection-runner")

    async def stop(self) -> None:
        """Stop following; returns once no batch is in flight (so the stores can be closed)."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        for _, waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(events)`` on the event loop with each batch of new events once it is applied
        (live streams). Events already in the log when the runner started are not passed on."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Something was appended: read the log now rather than at the next poll."""
        self._wakeup.set()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        """Return once every read model has processed the log up to ``position``."""
        if position is None or position <= self._position:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, waiter))
        self.poke()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise ReadModelsBehind(
                f"read models did not reach position {position} within {timeout:g}s (at {self._position})"
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _follow(self) -> None:
        backoff = 0.05
        while not self._stopping:
            self._wakeup.clear()
            try:
                position, more, events = await self._run_blocking(self._process_batch)
            except Exception:
                # Another process may have tracked first (the transaction was dropped
                # whole), or the store is briefly unavailable: retry, slowing down.
                log.exception("projection batch failed; retrying in %.2fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            self._advance(position)
            self._tell_listeners(events)
            if more or self._stopping:
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)
            except TimeoutError:
                pass

    def _tell_listeners(self, events: list[Event]) -> None:
        live = [event for event in events if event["nid"] > self._live_after]
        if not live:
            return
        self._live_after = live[-1]["nid"]
        for listener in self._listeners:
            try:
                listener(live)
            except Exception:
                log.exception("projection listener failed")

    def _advance(self, position: int) -> None:
        self._position = max(self._position, position)
        pending = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= self._position:
                waiter.set_result(None)
            else:
                pending.append((target, waiter))
        self._waiters = pending
