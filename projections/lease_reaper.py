"""The lease reaper: a singleton job putting back to pending the jobs whose lease ran out.

The reference never re-delivers a job whose leaser vanished; it stays in
progress until failed, indexed or purged (platform notes §7.2). With
``CHAINLOOM_LEASE_REAPER`` on (the default) one process — across the workers
of a ``chainloom serve`` and across machines sharing one PostgreSQL — holds
the singleton lock ``leases`` (``infra.singleton``) and, every
``CHAINLOOM_LEASE_REAP_INTERVAL`` seconds, asks the read model for leased jobs
whose lease ended (``queries.jobs.JobCandidates.expired``) and records
``job.lease_expired`` for them (``commands.jobs.JobCommands.expire``).

The read model only proposes: the decision looks at each job's aggregate and
the clock again, so a job is never put back before its ``leaseExpiration``,
never when its lease has zero length (the reference's default: such a lease
"expires immediately" and must stay with its leaser), and not when it was
reported done or failed, or leased again, meanwhile. A job put back is
pending from the moment it was put back (a new ``createdAt``) with its
``retryCount`` unchanged: an expiry is not a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.commands.jobs import JobCommands
from chainloom.domain import jobs as job_domain
from chainloom.infra.singleton import Lock
from chainloom.infra.timefmt import to_ns

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]


def _now_ns() -> int:
    return to_ns(job_domain.clock())


class LeaseReaper:
    def __init__(self, commands: JobCommands, lock: Lock, run_blocking: RunBlocking, *, interval: float) -> None:
        self._commands = commands
        self._lock = lock
        self._run_blocking = run_blocking
        self._interval = interval
        self._holding = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.cycles = 0  # cycles run while holding the lock (tests wait on it)

    @property
    def holding(self) -> bool:
        """Whether this process runs the reaper now."""
        return self._holding

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lease-reaper")

    async def stop(self) -> None:
        # The loop is let finish its step rather than cancelled: a cancel would leave a lock attempt running
        # in its thread, which could take the lock after the release below and keep it.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._holding = False
        await self._run_blocking(self._lock.release)

    async def _run(self) -> None:
        failures = 0  # in a row: the first is logged with its traceback, the rest briefly
        while not self._stopping:
            try:
                held = await self._run_blocking(self._lock.acquire)
                if held != self._holding:
                    logger.info("lease reaper: %s the leases lock", "took" if held else "lost")
                self._holding = held
                if held and not self._stopping:
                    await self.cycle()
                failures = 0
            except Exception:  # noqa: BLE001 - the store is unreachable or a decision failed: next interval
                failures += 1
                if failures == 1:
                    logger.warning(
                        "lease reaper: a cycle failed; trying again every %g s", self._interval, exc_info=True
                    )
                else:
                    logger.debug("lease reaper: a cycle failed again", exc_info=True)
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def cycle(self) -> list[str]:
        """Put back every job whose lease ran out by now; their ids."""
        put_back: list[str] = []
        while not self._stopping:
            proposed = await self._commands.expired(_now_ns())
            if not proposed:
                break
            expired = await self._commands.expire(proposed)
            put_back += expired
            if not expired:  # the read model lags behind what was decided: look again next interval
                break
        if put_back:
            logger.info("lease reaper: %d job(s) whose lease ran out are pending again", len(put_back))
        self.cycles += 1
        return put_back
