"""Live events for the SSE streams when no projection runner follows the log in this process.

In the distributed mode (``CHAINLOOM_PROJECTIONS=kafka``) projector workers
elsewhere keep the read models and the API only watches their positions, so
nothing here reads new events. This follower (the shared loop of
``infra/follower.py``) reads them for the live streams only: from the log's
head at start-up on, every ``poll`` seconds or when poked after a write, and
not at all while nobody is subscribed (it then only keeps up with the head).
"""

from __future__ import annotations

from collections.abc import Callable

from infra.eventlog import EventLog
from infra.follower import Follower, RunBlocking
from projections.base import Event


class LiveLog:
    def __init__(
        self,
        log: EventLog,
        run_blocking: RunBlocking,
        listener: Callable[[list[Event]], None],
        subscribed: Callable[[], int],
        *,
        poll: float = 0.1,
        batch_size: int = 1000,
    ) -> None:
        self._log = log
        self._subscribed = subscribed
        self._batch_size = batch_size
        self._after: int | None = None
        self._follower = Follower(
            self._step, run_blocking, name="live-streams", idle_poll=poll,
            on_step=lambda result: listener(result[2]) if result[2] else None,
        )

    def _step(self) -> tuple[int, bool, list[Event]]:
        if self._after is None or not self._subscribed():
            self._after = self._log.head()
            return self._after, False, []
        events = self._log.read(after=self._after, limit=self._batch_size)
        if events:
            self._after = events[-1]["nid"]
        return self._after, len(events) == self._batch_size, events

    def start(self) -> None:
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def poke(self) -> None:
        self._follower.poke()
