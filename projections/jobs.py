"""Read model of the job queue (``jobs``): one row per open job — pending, leased or parked.

A completed or purged job's row is deleted. ``created_at_ns`` is when the job
last became pending (enqueued, failed, or its lease expired): listings and
their cursors go by it, and leasing takes the oldest first. A lease's end is
kept twice: as the text the API answers (``lease_expiration``, whatever the
year) and in nanoseconds for the reaper's look-up, clamped to what a BIGINT
holds. The times come from the events' data, so a rebuild gives the same rows.
"""

from __future__ import annotations

from chainloom.domain.jobs import LEASED, PARKED, PENDING, Job
from chainloom.infra.timefmt import clamp_ns, parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


class JobsProjector(Projector):
    name = "jobs"
    tables = ("jobs",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {jobs} ("
        " id TEXT PRIMARY KEY, state TEXT NOT NULL, task_type TEXT NOT NULL, operation TEXT NOT NULL,"
        " subject TEXT NOT NULL, entity_id TEXT NOT NULL, entity_type TEXT NOT NULL, payload TEXT NOT NULL,"
        " scheduled_for BIGINT NOT NULL, valid_until BIGINT NOT NULL, retry_count INTEGER NOT NULL,"
        " created_at_ns BIGINT NOT NULL, leaser TEXT NOT NULL, lease_ms BIGINT NOT NULL,"
        " lease_expiration TEXT NOT NULL, lease_expiration_ns BIGINT NOT NULL, last_error TEXT NOT NULL,"
        " updated_at_ns BIGINT NOT NULL)",
        # Leasing: the oldest pending jobs of some types; listings: a state's newest before a cursor.
        "CREATE INDEX IF NOT EXISTS {jobs_waiting} ON {jobs} (state, task_type, created_at_ns, id)",
        "CREATE INDEX IF NOT EXISTS {jobs_listed} ON {jobs} (state, created_at_ns, id)",
        # The reaper: leases that ran out.
        "CREATE INDEX IF NOT EXISTS {jobs_expiring} ON {jobs} (state, lease_expiration_ns)",
    )

    @on(Job.Enqueued)
    def enqueued(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {jobs} (id, state, task_type, operation, subject, entity_id, entity_type, payload,"
            " scheduled_for, valid_until, retry_count, created_at_ns, leaser, lease_ms, lease_expiration,"
            " lease_expiration_ns, last_error, updated_at_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '', 0, '', 0, '', ?)",
            (
                event["aggregate_id"], PENDING, data["taskType"], data["operation"], data["subject"],
                data["entityId"], data["entityType"], data["payload"], data["scheduledFor"], data["validUntil"],
                parse_ns(data["createdAt"]), _at(event),
            ),
        )  # fmt: skip

    @on(Job.Leased)
    def leased(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {jobs} SET state = ?, leaser = ?, lease_ms = ?, lease_expiration = ?, lease_expiration_ns = ?,"
            " updated_at_ns = ? WHERE id = ?",
            (
                LEASED, data["leaser"], data["leaseMs"], data["leaseExpiration"],
                clamp_ns(parse_ns(data["leaseExpiration"])), _at(event), event["aggregate_id"],
            ),
        )  # fmt: skip

    @on(Job.Failed)
    def failed(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        self._pending(cursor, event, data["createdAt"])
        cursor.execute(
            "UPDATE {jobs} SET retry_count = ?, last_error = ? WHERE id = ?",
            (data["retryCount"], data["error"], event["aggregate_id"]),
        )

    @on(Job.LeaseExpired)
    def lease_expired(self, cursor: TemplatedCursor, event: Event) -> None:
        self._pending(cursor, event, event["data"]["createdAt"])

    @on(Job.Parked)
    def parked(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {jobs} SET state = ?, retry_count = ?, last_error = ?, leaser = '', lease_ms = 0,"
            " lease_expiration = '', lease_expiration_ns = 0, updated_at_ns = ? WHERE id = ?",
            (PARKED, data["retryCount"], data["error"], _at(event), event["aggregate_id"]),
        )

    @on(Job.Completed, Job.Purged)
    def ended(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {jobs} WHERE id = ?", (event["aggregate_id"],))

    def _pending(self, cursor: TemplatedCursor, event: Event, created_at: str) -> None:
        cursor.execute(
            "UPDATE {jobs} SET state = ?, created_at_ns = ?, leaser = '', lease_ms = 0, lease_expiration = '',"
            " lease_expiration_ns = 0, updated_at_ns = ? WHERE id = ?",
            (PENDING, parse_ns(created_at), _at(event), event["aggregate_id"]),
        )
