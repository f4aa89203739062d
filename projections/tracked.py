"""Read models kept by projector workers in other processes, as the API sees them (``CHAINLOOM_PROJECTIONS=kafka``).

The API does not project; it reads the positions the workers track in the read
store. While a command waits for its write (read-your-writes), the follower
loop reads them every 10 ms until every projector has reached the write's
position; when nobody waits, it reads nothing. Same interface as the embedded
``ProjectionRunner`` (``start``, ``stop``, ``poke``, ``wait_for``, ``position``).
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.follower import Follower, RunBlocking
from infra.readstore import ReadStore
from projections.base import Projector, create_tables
from projections.runner import ReadModelsBehind


class TrackedProjections:
    def __init__(self, store: ReadStore, projectors: Sequence[Projector], run_blocking: RunBlocking) -> None:
        self._store = store
        self._projectors = list(projectors)
        self._names = [p.name for p in self._projectors]
        self._run_blocking = run_blocking
        self._follower = Follower(
            self.read_position, run_blocking, name="tracked-projections", idle_poll=None,
            behind=ReadModelsBehind, what="read models",
        )

    def setup(self) -> int:
        """Create the read models' tables (so queries work before a worker has run); return the position."""
        with self._store.transaction() as cursor:
            create_tables(self._store, cursor, self._projectors)
            return min(self._store.positions(cursor, self._names).values())

    def read_position(self) -> tuple[int, bool]:
        with self._store.transaction(commit=False) as cursor:
            return min(self._store.positions(cursor, self._names).values()), False

    @property
    def position(self) -> int:
        return self._follower.position

    async def start(self) -> None:
        self._follower.start(await self._run_blocking(self.setup))

    async def stop(self) -> None:
        await self._follower.stop()

    def poke(self) -> None:
        self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        await self._follower.wait_for(position, timeout)
