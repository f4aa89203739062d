"""Live events for the SSE streams when no projection runner follows the log in this process.

In the distributed mode (``CHAINLOOM_PROJECTIONS=kafka``) projector workers
elsewhere keep the read models and the API only watches their positions, so
nothing here reads new events. This follower (the shared loop of
``infra/follower.py``) reads them for the live streams only: from the log's
head at start-up on, every ``poll`` seconds or when poked after a write, and
not at all while nobody is subscribed (it then only keeps up with the head).

The listener gets every batch with the position read up to —
``listener(events, position)`` — also when events were passed over because
nobody was subscribed: a stream that resumes from ``Last-Event-ID`` reads the
events before that position from the event index (once the index has reached
it) and gets every later one from here. A subscriber that arrives while a step
passes events over would miss them, so the step is undone and those events are
read after all.
"""

from __future__ import annotations

from collections.abc import Callable

from chainloom.infra.eventlog import EventLog
from chainloom.infra.follower import Follower, RunBlocking
from chainloom.projections.base import Event

Listener = Callable[[list[Event], int], None]


class LiveLog:
    def __init__(
        self,
        log: EventLog,
        run_blocking: RunBlocking,
        listener: Listener,
        subscribed: Callable[[], int],
        *,
        poll: float = 0.1,
        batch_size: int = 1000,
    ) -> None:
        self._log = log
        self._listener = listener
        self._subscribed = subscribed
        self._batch_size = batch_size
        self._after: int | None = None
        self._follower = Follower(
            self._step, run_blocking, name="live-streams", idle_poll=poll, on_step=self._stepped,
        )

    def _step(self) -> tuple[int, bool, list[Event], int | None]:
        """(position, more, events read, where a pass-over started or None) — in a worker thread."""
        if self._after is None or not self._subscribed():
            passed_from = self._after
            self._after = self._log.head()
            return self._after, False, [], passed_from
        events = self._log.read(after=self._after, limit=self._batch_size)
        if events:
            self._after = events[-1]["nid"]
        return self._after, len(events) == self._batch_size, events, None

    def _stepped(self, result: tuple[int, bool, list[Event], int | None]) -> None:
        """On the event loop, between two steps."""
        position, _, events, passed_from = result
        if passed_from is not None and passed_from < position and self._subscribed():
            # Someone subscribed after the step found nobody: read what it passed over for them.
            self._after = passed_from
            self._follower.poke()
            return
        self._listener(events, position)

    def start(self) -> None:
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def poke(self) -> None:
        self._follower.poke()
