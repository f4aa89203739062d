"""Commands of the job queue: leasing, a leaser's report (failed, done), and the lease reaper's put-backs.

**Leasing is atomic and fair across processes.** The read model proposes the
oldest pending jobs of the listed types (``JobCandidates.pending``, up to
``CANDIDATES``); then *one* decision leases the first of them its aggregate
still says is pending. Two leases in one process are decided one after the
other by the process's log writer (the second sees the first's lease); two in
different processes that pick the same job both write its next version, the
log stores only the first, and the other is decided again on fresh state
(``infra.logwriter``) — where it finds that job leased and takes the next. So
no job is ever leased twice, and a lease answers 404 only when every pending
job the read model showed was taken (it looks further once when the proposals
were a full page, all taken by racing leasers).

Which job is leased, whether a report is accepted, and whether a lease has run
out are decided on the aggregate; the read model only proposes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain import jobs as job_domain
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.jobs import NOT_FOUND, Job

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]
Json = dict[str, Any]

# Pending jobs proposed to a lease's decision (then CANDIDATES * WIDEN, when all of them were taken meanwhile).
CANDIDATES = 32
WIDEN = 16
# A lease decided again this many times at most when the log writer gives up on it (other processes
# kept taking the jobs it proposed) before it answers 409.
LEASE_ATTEMPTS = 5
# The reaper puts back at most this many jobs in one decision.
REAP_BATCH = 100

# The reaper's records, in the events' metadata.
REAPER = CommandContext(actor="system", request_id="lease-reaper")


class Candidates(Protocol):
    """``queries.jobs.JobCandidates`` (blocking)."""

    def pending(self, job_types: Sequence[str], limit: int) -> list[str]: ...

    def expired(self, now_ns: int, limit: int) -> list[str]: ...


def leased_job(job: Job) -> Json:
    """The leased job as ``POST /leases`` answers it, from the aggregate the lease was decided on (the read
    model's ``queries.jobs.leased_job_json`` gives the same once it shows the lease)."""
    return {
        "id": job.key,
        "taskType": job.task_type,
        "operation": job.operation,
        "subject": job.subject,
        "entityId": job.entity_id,
        "entityType": job.entity_type,
        "payload": job.payload,
        "scheduledFor": job.scheduled_for,
        "validUntil": job.valid_until,
        "retryCount": job.retry_count,
        "createdAt": job.created_at,
        "leaser": job.leaser,
        "leaseExpiration": job.lease_expiration,
    }


def _leased(log: Aggregates, job_id: str, leaser: str) -> Job:
    """The job ``leaser`` holds: none leased under that id is 404, another's 422 (the notes' messages)."""
    job = log.get(Job, job_id)
    if job is None or job.state != job_domain.LEASED:
        raise NotFound(f"no leased job {job_id}: {NOT_FOUND}")
    if not job.leased_by(leaser):
        raise Unprocessable(f"job {job_id} not leased by {leaser}", param="leaserId")
    return job


def _leasing(
    proposed: Sequence[str], wanted: set[str], leaser: str, duration_ms: int
) -> Callable[[Aggregates], Decision[Json | None]]:
    """The decision of a lease: the first of ``proposed`` still pending (by its aggregate) is leased; None
    when every one was taken meanwhile."""

    def decide(log: Aggregates) -> Decision[Json | None]:
        for job_id in proposed:
            job = log.get(Job, job_id)
            if job is not None and job.pending and job.task_type in wanted:
                job.lease(leaser, duration_ms)
                return Decision(leased_job(job), [job])
        return Decision(None, [])

    return decide


class JobCommands:
    def __init__(
        self,
        runner: CommandRunner,
        background: CommandRunner,
        candidates: Candidates,
        run_blocking: RunBlocking,
        max_failures: int,
    ) -> None:
        """``runner`` waits for the ``jobs`` read model (the API's commands); ``background`` (the reaper's)
        only announces what it wrote."""
        self._runner = runner
        self._background = background
        self._candidates = candidates
        self._run_blocking = run_blocking
        self._max_failures = max_failures

    # -- a leaser ---------------------------------------------------------------------------

    async def lease(self, leaser: str, duration_ms: int, job_types: Sequence[str], ctx: CommandContext) -> Json:
        """Lease the oldest pending job of any of ``job_types`` to ``leaser`` for ``duration_ms``; the leased job.
        ``NotFound`` when there is none to lease (a worker's "idle")."""
        types = list(dict.fromkeys(job_types))
        limit = CANDIDATES
        attempts = 0
        while True:
            proposed: list[str] = await self._run_blocking(self._candidates.pending, types, limit)
            decide = _leasing(proposed, set(types), leaser, duration_ms)
            try:
                leased = await self._runner.run(decide, ctx) if proposed else None
            except Conflict:  # the writer gave up deciding again: other processes kept taking what it proposed
                attempts += 1
                if attempts >= LEASE_ATTEMPTS:
                    raise
                continue
            if leased is not None:
                return leased
            if len(proposed) < limit or limit > CANDIDATES:
                shown = ", ".join(types[:5]) + (", …" if len(types) > 5 else "")
                raise NotFound(f"no pending job to lease of the types {shown}: {NOT_FOUND}")
            limit = CANDIDATES * WIDEN  # a full page, all taken meanwhile: look further

    async def failed(self, job_id: str, leaser: str, error: str, ctx: CommandContext) -> None:
        """``leaser`` gave up on the job: pending again with one failure more, or parked after
        ``max_failures`` with ``error`` as its last error."""

        def decide(log: Aggregates) -> Decision[None]:
            job = _leased(log, job_id, leaser)
            job.fail(leaser, error, self._max_failures)
            return Decision(None, [job])

        await self._runner.run(decide, ctx)

    async def done(self, job_id: str, leaser: str, ctx: CommandContext) -> None:
        """``leaser`` finished the job: it leaves the queue."""

        def decide(log: Aggregates) -> Decision[None]:
            job = _leased(log, job_id, leaser)
            job.complete(leaser)
            return Decision(None, [job])

        await self._runner.run(decide, ctx)

    # -- the lease reaper ----------------------------------------------------------------------

    async def expired(self, now_ns: int) -> list[str]:
        """The ids the read model says hold a lease that ran out by ``now_ns`` (proposals: ``expire`` decides)."""
        ids: list[str] = await self._run_blocking(self._candidates.expired, now_ns, REAP_BATCH)
        return ids

    async def expire(self, job_ids: Sequence[str]) -> list[str]:
        """Put back to pending those of ``job_ids`` whose non-zero lease has run out by the clock, read in the
        decision (never one a moment early, nor one leased again or reported meanwhile); the ids put back."""
        if not job_ids:
            return []

        def decide(log: Aggregates) -> Decision[list[str]]:
            now = job_domain.clock()
            save = []
            for job_id in job_ids:
                job = log.get(Job, job_id)
                if job is not None and job.lease_expired(now):
                    job.expire_lease(now)
                    save.append(job)
            return Decision([job.key for job in save], save)

        return await self._background.run(decide, REAPER)
