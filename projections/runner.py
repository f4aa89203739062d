"""Keeps read models current by following the log in this process (embedded mode).

The SQLite recorder has no push subscription, so the runner reads the log
after each commit (commands poke it) and, for writes made by other processes,
every ``idle_poll`` seconds. Each batch is applied to every projector and
their positions tracked in one read-store transaction. Commands wait on
``wait_for`` before answering: that is read-your-writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from infra.eventlog import EventLog
from infra.follower import Behind, Follower, RunBlocking
from infra.readstore import ReadStore
from projections.base import Event, Projector, create_tables

log = logging.getLogger(__name__)

Listener = Callable[[list[Event]], None]


class ReadModelsBehind(Behind):
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
        self._position = 0  # every projector has processed the log up to here
        self._listeners: list[Listener] = []
        self._live_after = 0  # events up to here were in the log before this runner started
        self._follower = Follower(
            self._process_batch, run_blocking, name="projection-runner", idle_poll=idle_poll,
            behind=ReadModelsBehind, what="read models", on_step=lambda result: self._tell_listeners(result[2]),
        )

    # -- blocking part (worker threads, CLI) --------------------------------

    def setup(self) -> None:
        with self._store.transaction() as cursor:
            create_tables(self._store, cursor, self._projectors)
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
        chosen = [p for p in self._projectors if p.name in names]
        with self._store.transaction() as cursor:
            for projector in chosen:
                projector.drop(cursor)
                self._store.reset(cursor, projector.name)
            create_tables(self._store, cursor, chosen)
        return self.catch_up(only=names, progress=progress)

    # -- async part (the service): the one follower loop (infra/follower.py) -----

    @property
    def position(self) -> int:
        return max(self._position, self._follower.position)

    async def start(self) -> None:
        await self._run_blocking(self.setup)
        self._follower.start(self._position)

    async def stop(self) -> None:
        """Stop following; returns once no batch is in flight (so the stores can be closed)."""
        await self._follower.stop()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(events)`` on the event loop with each batch of new events once it is applied
        (live streams). Events already in the log when the runner started are not passed on."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Something was appended: read the log now rather than at the next poll."""
        self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        """Return once every read model has processed the log up to ``position``."""
        await self._follower.wait_for(position, timeout)

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
