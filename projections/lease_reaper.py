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

import logging

from chainloom.commands.jobs import JobCommands
from chainloom.domain import jobs as job_domain
from chainloom.infra.singleton import Lock
from chainloom.infra.timefmt import to_ns
from chainloom.projections.periodic import PeriodicJob, RunBlocking

logger = logging.getLogger(__name__)


def _now_ns() -> int:
    return to_ns(job_domain.clock())


class LeaseReaper(PeriodicJob):
    name = "lease reaper"
    lock_name = "leases"

    def __init__(self, commands: JobCommands, lock: Lock, run_blocking: RunBlocking, *, interval: float) -> None:
        super().__init__(lock, run_blocking, interval=interval)
        self._commands = commands

    async def step(self) -> list[str]:
        return await self.cycle()

    async def cycle(self) -> list[str]:
        """Put back every job whose lease ran out by now; their ids."""
        put_back: list[str] = []
        while not self.stopping:
            proposed = await self._commands.expired(_now_ns())
            if not proposed:
                break
            expired = await self._commands.expire(proposed)
            put_back += expired
            if not expired:  # the read model lags behind what was decided: look again next interval
                break
        if put_back:
            logger.info("lease reaper: %d job(s) whose lease ran out are pending again", len(put_back))
        return put_back
