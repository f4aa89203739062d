"""The sealer: a singleton job that follows the log and seals it (``infra/seals.py``), within a bounded lag.

Why not seal inside the append: appends serialise on the log's lock, and hashing needs the previous
hash, which would have to be read (or remembered by one writer) inside that lock — every append of every
process would then wait on it. Following the log instead, one process of all (lock ``seals``) seals up to
``seals.BATCH`` events per transaction, off the appenders' path; on SQLite only the insert of the hashes
queues with them.

Its lag is bounded: a write of this process pokes it (like the projection runner), a sibling worker's
write rings the doorbell that pokes it, and otherwise it looks every ``CHAINLOOM_SEAL_POLL`` seconds (writes
of other API processes on PostgreSQL). Pokes are gathered for ``GATHER`` seconds before it steps: each
step is a transaction on the log's database beside the appenders' (on SQLite its pages go through the
same write-ahead log), so their number, not the hashing, is what appends feel. Measured on SQLite
(``POST /events`` under wrk, 16 connections, sealer off and on in alternated runs): a step per poke cost
about a third of the append throughput, a step every 50 ms 9–15 %, every 100 ms 4 % on average (runs
from −9 % to +7 %: the noise of a shared machine).

A standby tries the lock every ``LOCK_RETRY`` seconds and takes over when the holder dies. What is not
sealed yet is never lost: the chain is deterministic, so whoever seals next — this job, the Kafka relay
before it publishes, an erasure — computes the same hashes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chainloom.infra import seals
from chainloom.infra.eventlog import EventLog
from chainloom.infra.follower import Follower, RunBlocking
from chainloom.infra.settings import Settings
from chainloom.infra.singleton import Lock, Throttled, singleton_lock

logger = logging.getLogger(__name__)

LOCK_NAME = "seals"
LOCK_RETRY = 0.5
GATHER = 0.1


class Sealer:
    """The blocking part: ``step`` seals the next batch while this process holds the lock."""

    def __init__(self, log: EventLog, lock: Lock, batch: int = seals.BATCH) -> None:
        self._log = log
        self._lock = lock
        self._batch = batch
        self._holding = False
        self.position = 0  # sealed through, as far as this process knows

    @property
    def holding(self) -> bool:
        return self._holding

    def step(self) -> tuple[int, bool]:
        held = self._lock.acquire()
        if held != self._holding:
            logger.info("sealer: %s the %s lock", "took" if held else "lost", LOCK_NAME)
            self._holding = held
        if not held:
            return self.position, False
        self.position, more = seals.seal(self._log, self._batch)
        return self.position, more

    def release(self) -> None:
        self._lock.release()
        self._holding = False


class SealerService:
    """The sealer in a running process: the follower loop; ``poke`` after an append."""

    def __init__(
        self,
        sealer: Sealer,
        run_blocking: RunBlocking,
        idle_poll: float,
        gather: float = GATHER,
        on_stop: Callable[[], Any] | None = None,
    ) -> None:
        self.sealer = sealer
        self._run_blocking = run_blocking
        self._on_stop = on_stop
        self._gather = gather
        self._gathering: asyncio.TimerHandle | None = None
        self._follower = Follower(sealer.step, run_blocking, name="sealer", idle_poll=idle_poll, what="the sealer")

    @property
    def holding(self) -> bool:
        return self.sealer.holding

    @property
    def position(self) -> int:
        return self._follower.position

    def start(self) -> None:
        self._follower.start()

    def poke(self) -> None:
        """Something was appended: step within ``GATHER`` seconds (with whatever else is appended meanwhile)."""
        if self._gathering is None:
            self._gathering = asyncio.get_running_loop().call_later(self._gather, self._gathered)

    def _gathered(self) -> None:
        self._gathering = None
        self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        """Return once this process has sealed through ``position`` (tests, benchmarks)."""
        await self._follower.wait_for(position, timeout)

    async def stop(self) -> None:
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None
        await self._follower.stop()
        await self._run_blocking(self.sealer.release)
        if self._on_stop is not None:
            self._on_stop()


def open_sealer(settings: Settings, log: EventLog) -> SealerService:
    """The sealer of the configured log, on a thread of its own (it waits on the log's locks: in the store
    pool it would keep a thread from the requests meanwhile)."""
    lock = Throttled(singleton_lock(settings, LOCK_NAME), LOCK_RETRY)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sealer")

    async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return SealerService(Sealer(log, lock), run_blocking, settings.seal_poll, on_stop=executor.shutdown)
