"""A job of the dispatch queue (aggregate ``job``, key = a UUIDv4): work a worker leases, then reports done or failed.

Its life (platform notes §7): *pending* (``job.enqueued``) → *leased* by one
leaser for a while (``job.leased``) → *done* (``job.completed``: ``PATCH
/jobs/{id}/done`` or ``POST /index``), or back to *pending* (``job.failed``,
with ``retryCount`` + 1 and a new ``createdAt``; ``job.lease_expired``, put back
by the lease reaper once the lease ran out, ``retryCount`` unchanged), or
*parked* once it failed ``max_failures`` times (``job.parked``, with its last
error: it is retried no more). A job whose file is gone is *purged*
(``job.purged``) whether it was pending, leased or parked.

Who may lease which job is decided here, on the aggregate, never on a read
model: a lease is a decision that finds the job still pending, and the log's
optimistic concurrency per aggregate makes a second leaser of the same job —
in this process or another — decide again and find it leased.

Times are explicit in the events (``createdAt``, ``leaseExpiration``: RFC 3339,
UTC), taken from the clock when the decision is made, so a replay and the
read model see exactly what was decided.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, Unprocessable

PENDING = "pending"
LEASED = "leased"
DONE = "done"
PARKED = "parked"
PURGED = "purged"
# States in which a job is still somebody's business (listed, and purged with its file).
OPEN_STATES = (PENDING, LEASED, PARKED)

EMPTY_PAYLOAD = "e30="  # base64 of ``{}``
VECTORIZE = "vectorize_"
FILE = "file"
# The longest error text a job keeps (a worker may report a whole traceback).
MAX_ERROR_LENGTH = 2000
NOT_FOUND = "libdb: not found"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# The clock decisions read (freezegun pins ``datetime.now``; tests may also swap this for one of their own).
clock: Callable[[], datetime] = _utc_now


def rfc3339(moment: datetime) -> str:
    """``2025-08-21T10:11:12.345678Z`` (UTC, microseconds trimmed of zeros)."""
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def parse_rfc3339(text: str) -> datetime:
    """What ``rfc3339`` wrote, back as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- lease durations, as Go writes them ("30s", "1m30s", "500ms", "2h") ----------------------------------

_NS_PER_UNIT = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
}  # fmt: skip
_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_MAX_NS = 2**63 - 1
# What ``parse_duration_ms`` takes (documented in the API's schema): Go's syntax without a minus sign.
DURATION_PATTERN = r"^([-+]?0|\+?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)?$"


def parse_duration_ms(text: str) -> int:
    """A lease duration as Go's ``time.ParseDuration`` reads it, in milliseconds (a positive duration under a
    millisecond counts as one, so it is never taken for a zero-length lease). "" is zero (the reference's
    default: the lease expires at once); a negative duration is refused, as is anything Go refuses (422)."""
    if text == "":
        return 0
    quoted = '"' + text + '"'
    body = text[1:] if text[0] in "+-" else text
    if text[0] == "-" and body != "0":
        raise Unprocessable(f"invalid lease duration: it must not be negative: {quoted}", param="leaseDuration")
    if body == "0":
        return 0
    if not body:
        raise Unprocessable(f"invalid lease duration: time: invalid duration {quoted}", param="leaseDuration")
    total = 0
    position = 0
    while position < len(body):
        match = _TERM.match(body, position)
        assert match is not None  # the pattern matches the empty string
        whole, fraction, unit = match.groups()
        if not whole and not fraction:
            raise Unprocessable(f"invalid lease duration: time: invalid duration {quoted}", param="leaseDuration")
        if not unit:
            raise Unprocessable(
                f"invalid lease duration: time: missing unit in duration {quoted}", param="leaseDuration"
            )
        if unit not in _NS_PER_UNIT:
            raise Unprocessable(
                f'invalid lease duration: time: unknown unit "{unit}" in duration {quoted}', param="leaseDuration"
            )
        scale = _NS_PER_UNIT[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _MAX_NS:
            raise Unprocessable(f"invalid lease duration: time: invalid duration {quoted}", param="leaseDuration")
        position = match.end()
    return -(-total // 1_000_000)  # ceiling


class Job(Aggregate):
    aggregate_type = "job"

    class Enqueued(Aggregate.Created):
        task_type: str
        operation: str
        subject: str
        entity_id: str
        entity_type: str
        payload: str
        scheduled_for: int
        valid_until: int
        created_at: str

    class Leased(Aggregate.Event):
        leaser: str
        lease_ms: int
        lease_expiration: str

    class Failed(Aggregate.Event):
        """Back to pending: ``retryCount`` is the new count, ``createdAt`` the new time it waits from."""

        leaser: str
        error: str
        retry_count: int
        created_at: str

    class Parked(Aggregate.Event):
        """Failed for the ``retryCount``-th time, the most allowed: retried no more."""

        leaser: str
        error: str
        retry_count: int

    class Completed(Aggregate.Event):
        leaser: str

    class LeaseExpired(Aggregate.Event):
        """The lease of ``leaser`` ran out (at ``leaseExpiration``): pending again from ``createdAt``."""

        leaser: str
        lease_expiration: str
        created_at: str

    class Purged(Aggregate.Event):
        """Its file is gone."""

    # -- creating ---------------------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        job_id: str,
        task_type: str,
        operation: str,
        subject: str,
        entity_id: str,
        entity_type: str,
        payload: str = EMPTY_PAYLOAD,
    ) -> Job:
        return cls._create(
            cls.Enqueued,
            id=cls.stream_id(job_id),
            task_type=task_type,
            operation=operation,
            subject=subject,
            entity_id=entity_id,
            entity_type=entity_type,
            payload=payload,
            scheduled_for=0,
            valid_until=0,
            created_at=rfc3339(clock()),
        )

    @event(Enqueued)
    def __init__(
        self,
        task_type: str,
        operation: str,
        subject: str,
        entity_id: str,
        entity_type: str,
        payload: str,
        scheduled_for: int,
        valid_until: int,
        created_at: str,
    ) -> None:
        self.task_type = task_type
        self.operation = operation
        self.subject = subject
        self.entity_id = entity_id
        self.entity_type = entity_type
        self.payload = payload
        self.scheduled_for = scheduled_for
        self.valid_until = valid_until
        self.retry_count = 0
        self.last_error = ""
        self._pending(created_at)

    def _pending(self, created_at: str) -> None:
        self.state = PENDING
        self.created_at = created_at
        self.leaser = ""
        self.lease_expiration = ""
        self.lease_ms = 0

    # -- what a leaser does -------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    def leased_by(self, leaser: str) -> bool:
        """Whether ``leaser`` holds it now (leased, and not yet put back by the reaper)."""
        return self.state == LEASED and self.leaser == leaser

    def lease(self, leaser: str, duration_ms: int) -> None:
        """Lease it to ``leaser`` for ``duration_ms`` (0: the lease expires at once, and is never reaped)."""
        if self.state != PENDING:
            raise Conflict(f"job {self.key} is {self.state}, not pending")
        if duration_ms < 0:
            raise Conflict("a lease cannot last a negative time")
        expiration = clock() + timedelta(milliseconds=duration_ms)
        self._lease(leaser=leaser, lease_ms=duration_ms, lease_expiration=rfc3339(expiration))

    @event(Leased)
    def _lease(self, leaser: str, lease_ms: int, lease_expiration: str) -> None:
        self.state = LEASED
        self.leaser = leaser
        self.lease_ms = lease_ms
        self.lease_expiration = lease_expiration

    def fail(self, leaser: str, error: str, max_failures: int) -> None:
        """``leaser`` gave up on it: pending again with one failure more, or parked with ``error`` once it has
        failed ``max_failures`` times."""
        self._require_leaser(leaser)
        if len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 1] + "…"
        failures = self.retry_count + 1
        if failures >= max_failures:
            self._park(leaser=leaser, error=error, retry_count=failures)
        else:
            self._fail(leaser=leaser, error=error, retry_count=failures, created_at=rfc3339(clock()))

    @event(Failed)
    def _fail(self, leaser: str, error: str, retry_count: int, created_at: str) -> None:
        self.retry_count = retry_count
        self.last_error = error
        self._pending(created_at)

    @event(Parked)
    def _park(self, leaser: str, error: str, retry_count: int) -> None:
        self.state = PARKED
        self.retry_count = retry_count
        self.last_error = error
        self.leaser = ""
        self.lease_expiration = ""
        self.lease_ms = 0

    def complete(self, leaser: str) -> None:
        self._require_leaser(leaser)
        self._complete(leaser=leaser)

    @event(Completed)
    def _complete(self, leaser: str) -> None:
        self.state = DONE

    def _require_leaser(self, leaser: str) -> None:
        if not self.leased_by(leaser):
            raise Conflict(f"job {self.key} not leased by {leaser}")

    # -- the lease reaper -----------------------------------------------------------------

    def lease_expired(self, now: datetime) -> bool:
        """Whether the reaper may put it back: leased for a non-zero time that has run out by ``now``."""
        return (
            self.state == LEASED
            and self.lease_ms > 0
            and bool(self.lease_expiration)
            and now >= parse_rfc3339(self.lease_expiration)
        )

    def expire_lease(self, now: datetime | None = None) -> None:
        """Put it back to pending, its lease having run out (``now``: the clock's time by default). Never
        before ``leaseExpiration``, never a zero-length lease."""
        now = clock() if now is None else now
        if not self.lease_expired(now):
            raise Conflict(f"the lease of job {self.key} has not expired")
        self._expire(leaser=self.leaser, lease_expiration=self.lease_expiration, created_at=rfc3339(now))

    @event(LeaseExpired)
    def _expire(self, leaser: str, lease_expiration: str, created_at: str) -> None:
        self._pending(created_at)

    # -- its file is gone ---------------------------------------------------------------------

    def purge(self) -> None:
        """Drop it (its file was deleted or changed away); nothing happens unless it is still open."""
        if self.state in OPEN_STATES:
            self._purge()

    @event(Purged)
    def _purge(self) -> None:
        self.state = PURGED
        self.leaser = ""
        self.lease_expiration = ""
        self.lease_ms = 0


def vectorize_job(job_id: str, file_id: str, content_type: str, operation: str) -> Job:
    """The job indexing a file after ``operation`` (create, update, rename, move) — taskType
    ``vectorize_`` + its content type, subject and entity type ``file``, payload ``{}``."""
    return Job.enqueue(job_id, VECTORIZE + content_type, operation, FILE, file_id, FILE, EMPTY_PAYLOAD)
