"""Queries of the job queue read model (``projections.jobs``): the listings of ``/jobs/*``, and what leasing
and the lease reaper look at before they decide.

A job answers as the platform notes' job object (§7.1); a leased one adds
``leaser`` and ``leaseExpiration`` (its ``createdAt`` stays the time it became
pending), a parked one ``lastError``. Listings are newest first, at most
``MAX_ROWS``, holding the jobs whose ``createdAt`` is strictly before the
cursor.

The read model only proposes: whether a proposed job may still be leased or
put back is decided on its aggregate (``commands.jobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chainloom.domain.jobs import LEASED, PARKED, PENDING
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries
from chainloom.queries.pagination import MAX_LIMIT

Json = dict[str, Any]
# The most jobs a listing answers (the reference's bound, the one pagination's maximum).
MAX_ROWS = MAX_LIMIT

_COLUMNS = (
    "id, task_type, operation, subject, entity_id, entity_type, payload, scheduled_for, valid_until,"
    " retry_count, created_at_ns, leaser, lease_expiration, last_error, updated_at_ns"
)
_NEWEST_FIRST = "ORDER BY created_at_ns DESC, id DESC"


def job_json(row: Row) -> Json:
    """A pending job (§7.1)."""
    return {
        "id": row["id"],
        "taskType": row["task_type"],
        "operation": row["operation"],
        "subject": row["subject"],
        "entityId": row["entity_id"],
        "entityType": row["entity_type"],
        "payload": row["payload"],
        "scheduledFor": row["scheduled_for"],
        "validUntil": row["valid_until"],
        "retryCount": row["retry_count"],
        "createdAt": format_ns(row["created_at_ns"]),
    }


def leased_job_json(row: Row) -> Json:
    """A leased job: §7.1 with who holds it and until when."""
    return {**job_json(row), "leaser": row["leaser"], "leaseExpiration": row["lease_expiration"]}


def parked_job_json(row: Row) -> Json:
    """A parked job: §7.1 with the error of its last failure and when it was parked."""
    return {**job_json(row), "lastError": row["last_error"], "parkedAt": format_ns(row["updated_at_ns"])}


class JobQueries(RememberedQueries):
    namespace = "jobs"

    async def pending(self, before_ns: int, limit: int = MAX_ROWS) -> list[Json]:
        return await self._listed(job_json, PENDING, before_ns, limit)

    async def in_progress(self, before_ns: int, limit: int = MAX_ROWS) -> list[Json]:
        return await self._listed(leased_job_json, LEASED, before_ns, limit)

    async def parked(self, before_ns: int, limit: int = MAX_ROWS) -> list[Json]:
        return await self._listed(parked_job_json, PARKED, before_ns, limit)

    async def _listed(self, convert: Any, state: str, before_ns: int, limit: int) -> list[Json]:
        return await self._rows(
            convert,
            f"SELECT {_COLUMNS} FROM jobs WHERE state = ? AND created_at_ns < ? {_NEWEST_FIRST} LIMIT ?",
            state,
            before_ns,
            min(limit, MAX_ROWS),
        )


class JobCandidates:
    """Blocking reads proposing jobs to decide on: for leases (through the pool) and the lease reaper."""

    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def pending(self, job_types: Sequence[str], limit: int) -> list[str]:
        """The ids of the oldest pending jobs of any of ``job_types``, oldest first."""
        if not job_types:
            return []
        marks = ", ".join("?" for _ in job_types)
        rows = self._store.query(
            f"SELECT id FROM jobs WHERE state = ? AND task_type IN ({marks}) ORDER BY created_at_ns, id LIMIT ?",
            (PENDING, *job_types, limit),
        )
        return [row["id"] for row in rows]

    def expired(self, now_ns: int, limit: int) -> list[str]:
        """The ids of leased jobs whose non-zero lease ran out by ``now_ns``, longest expired first."""
        rows = self._store.query(
            "SELECT id FROM jobs WHERE state = ? AND lease_ms > 0 AND lease_expiration_ns <= ?"
            " ORDER BY lease_expiration_ns, id LIMIT ?",
            (LEASED, now_ns, limit),
        )
        return [row["id"] for row in rows]
