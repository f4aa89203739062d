"""Read models kept by projector workers in other processes, as the API sees them (``CHAINLOOM_PROJECTIONS=kafka``).

The API does not project; it reads the positions and faults the workers
record in the read store. While a command waits for its write
(read-your-writes), they are read every 10 ms until every projector the
command needs has reached the write's position, or one of them is faulted
(the command then fails at once); when nobody waits, nothing is read. Same
interface as the embedded ``ProjectionRunner`` (``start``, ``stop``, ``poke``,
``wait_for``, ``position``, ``faults``, ``read_faults``).

The API never depends on the workers being there: it starts, serves reads and
takes writes without them. A wait that runs out says which peer is missing —
the relay, when its tracked position (same table, on PostgreSQL) is before the
write, the projector workers otherwise — so a 503 or a ``/ready`` answer tells
an operator what to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from chainloom.infra.follower import RunBlocking
from chainloom.infra.readstore import Fault, ReadStore
from chainloom.projections.base import Projector, create_tables
from chainloom.projections.runner import is_store_trouble
from chainloom.projections.waits import ProjectorStates, ReadModelsBehind

logger = logging.getLogger(__name__)

# Set-up is tried this many times while the store refuses it for a moment (a lock, a lost connection).
SETUP_ATTEMPTS = 5


class WorkersBehind(ReadModelsBehind):
    """The projector workers have not reached a position in time; ``hint`` says which peer is missing.

    ``diagnosis`` is the same without the time waited (``/ready`` reports it as it is)."""

    def __init__(self, position: int, timeout: float, reached: str, hint: str) -> None:
        self.diagnosis = f"the projector workers have not reached position {position} ({reached}): {hint}"
        super().__init__(f"the projector workers did not reach position {position} within {timeout:g}s ({reached}): {hint}")


class TrackedProjections:
    def __init__(
        self,
        store: ReadStore,
        projectors: Sequence[Projector],
        run_blocking: RunBlocking,
        *,
        poll: float = 0.01,
        relay: str | None = None,
    ) -> None:
        """``relay``: the relay's tracking name when it tracks its position in this store (PostgreSQL),
        so that a wait that runs out can tell a missing relay from missing workers."""
        self._store = store
        self._relay = relay
        self._projectors = list(projectors)
        self._names = [p.name for p in self._projectors]
        self._run_blocking = run_blocking
        self._poll = poll
        self._states = ProjectorStates(self._names, wake=self.poke)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def setup(self) -> tuple[dict[str, int], dict[str, Fault]]:
        """Create what is missing of the read models' tables (so queries work before a worker has run);
        return positions and faults. A store that refuses for a moment is asked again."""
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                with self._store.transaction() as cursor:
                    create_tables(self._store, cursor, self._projectors)
                return self.read()
            except Exception as error:
                if attempt == SETUP_ATTEMPTS or not is_store_trouble(error):
                    raise
                logger.warning("tracked projections: set-up failed (%s); trying again", error)
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

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
        """Return once the ``needs`` workers' projectors have reached ``position``; ``WorkersBehind``, naming
        the missing peer, after ``timeout``; ``ProjectionFaulted`` at once on a fault."""
        try:
            await self._states.wait_for(position, timeout, needs)
        except ReadModelsBehind:
            assert position is not None
            names = list(needs) if needs is not None else self._names
            reached = ", ".join(f"{name} at {self._states.positions[name]}" for name in names)
            raise WorkersBehind(position, timeout, reached, await self._hint(position)) from None

    async def _hint(self, position: int) -> str:
        """Which peer to look at: the relay when it has not published ``position`` yet, the workers otherwise."""
        if self._relay is not None:
            try:
                relay = await self._run_blocking(self._relay_position)
            except Exception:
                logger.warning("tracked projections: reading the relay's position failed", exc_info=True)
            else:
                if relay < position:
                    return (
                        f"the relay has published up to position {relay} only — is a relay running (`chainloom"
                        " relay`, or an API with CHAINLOOM_KAFKA_RELAY_IN_SERVE=true) and the broker reachable?"
                    )
        return "is a projector worker (`chainloom project`) running?"

    def _relay_position(self) -> int:
        assert self._relay is not None
        with self._store.transaction(commit=False) as cursor:
            return self._store.positions(cursor, [self._relay])[self._relay]

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
