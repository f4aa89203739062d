"""Read models kept by projector workers in other processes, as the API sees them (``CHAINLOOM_PROJECTIONS=kafka``).

The API does not project; it reads the positions and faults the workers
record in the read store. While a command waits for its write
(read-your-writes), they are read every 10 ms until every projector the
command needs has reached the write's position, or one of them is faulted
(the command then fails at once); when nobody waits, nothing is read. Same
interface as the embedded ``ProjectionRunner`` (``start``, ``stop``, ``poke``,
``wait_for``, ``position``, ``faults``, ``read_faults``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from chainloom.infra.follower import RunBlocking
from chainloom.infra.readstore import Fault, ReadStore
from chainloom.projections.base import Projector, create_tables
from chainloom.projections.waits import ProjectorStates

logger = logging.getLogger(__name__)


class TrackedProjections:
    def __init__(
        self, store: ReadStore, projectors: Sequence[Projector], run_blocking: RunBlocking, *, poll: float = 0.01
    ) -> None:
        self._store = store
        self._projectors = list(projectors)
        self._names = [p.name for p in self._projectors]
        self._run_blocking = run_blocking
        self._poll = poll
        self._states = ProjectorStates(self._names, wake=self.poke)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def setup(self) -> tuple[dict[str, int], dict[str, Fault]]:
        """Create the read models' tables (so queries work before a worker has run); return positions and faults."""
        with self._store.transaction() as cursor:
            create_tables(self._store, cursor, self._projectors)
        return self.read()

    def read(self) -> tuple[dict[str, int], dict[str, Fault]]:
        with self._store.transaction(commit=False) as cursor:
            return self._store.positions(cursor, self._names), self._store.faults(cursor, self._names)

    @property
    def position(self) -> int:
        return min(self._states.positions.values())

    @property
    def holding(self) -> bool:
        return False  # projector workers elsewhere project

    @property
    def faults(self) -> dict[str, Fault]:
        return dict(self._states.faults)

    async def read_faults(self) -> dict[str, Fault]:
        _, faults = await self._run_blocking(self.read)
        return faults

    async def start(self) -> None:
        self._states.update(*await self._run_blocking(self.setup))
        self._task = asyncio.create_task(self._follow(), name="tracked-projections")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    def poke(self) -> None:
        self._wakeup.set()

    async def wait_for(self, position: int | None, timeout: float, needs: Sequence[str] | None = None) -> None:
        await self._states.wait_for(position, timeout, needs)

    async def _follow(self) -> None:
        """Read positions and faults while someone waits; sleep until poked otherwise."""
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._states.waiting and not self._stopping:
                try:
                    self._states.update(*await self._run_blocking(self.read))
                except Exception:
                    logger.exception("tracked projections: reading positions failed")
                    await asyncio.sleep(0.1)
                    continue
                await asyncio.sleep(self._poll)
