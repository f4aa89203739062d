"""A job decides alone: its life (lease, fail, park, complete, expire, purge), its events and their camelCase
data, the lease reaper's rule (never before leaseExpiration, never a zero-length lease), and Go durations."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, Unprocessable
from chainloom.domain.jobs import (
    DONE,
    LEASED,
    PARKED,
    PENDING,
    PURGED,
    Job,
    parse_duration_ms,
    parse_rfc3339,
    rfc3339,
    vectorize_job,
)
from chainloom.infra.envelope import EnvelopeMapper

TEXT = "text/plain; charset=utf-8"


def events(job: Aggregate) -> list[tuple[str, dict]]:
    """(type, data) of each pending event, as the log stores them."""
    mapper = EnvelopeMapper()
    envelopes = [json.loads(mapper.to_stored_event(e).state) for e in job.collect_events()]
    return [(envelope["event_type"], envelope["data"]) for envelope in envelopes]


def test_a_vectorize_job_is_the_notes_job_and_its_events_are_camel_case():
    job = vectorize_job("j-1", "f-1", TEXT, "create")
    assert (job.key, job.task_type, job.operation, job.subject, job.entity_id, job.entity_type, job.payload) == (
        "j-1", f"vectorize_{TEXT}", "create", "file", "f-1", "file", "e30="
    )  # fmt: skip
    assert job.state == PENDING and job.retry_count == 0 and job.created_at.endswith("Z")
    job.lease("w-1", 30_000)
    job.complete("w-1")
    (enqueued, enqueued_data), (leased, leased_data), (completed, completed_data) = events(job)
    assert (enqueued, leased, completed) == ("job.enqueued", "job.leased", "job.completed")
    assert enqueued_data == {
        "taskType": f"vectorize_{TEXT}", "operation": "create", "subject": "file", "entityId": "f-1",
        "entityType": "file", "payload": "e30=", "scheduledFor": 0, "validUntil": 0, "createdAt": job.created_at,
    }  # fmt: skip
    assert set(leased_data) == {"leaser", "leaseMs", "leaseExpiration"} and leased_data["leaseMs"] == 30_000
    assert completed_data == {"leaser": "w-1"}
    assert job.state == DONE


def test_a_lease_lasts_its_duration_and_only_its_leaser_reports():
    job = vectorize_job("j-1", "f-1", TEXT, "update")
    created_at = job.created_at
    job.lease("w-1", 1500)
    assert job.state == LEASED and job.leased_by("w-1") and not job.leased_by("w-2")
    lasts = parse_rfc3339(job.lease_expiration) - job.modified_on
    assert lasts == pytest.approx(timedelta(seconds=1.5), abs=timedelta(milliseconds=5))
    assert job.created_at == created_at  # a lease keeps the time it became pending
    with pytest.raises(Conflict, match="not pending"):
        job.lease("w-2", 1000)  # never twice
    with pytest.raises(Conflict, match="not leased by w-2"):
        job.fail("w-2", "", 5)
    with pytest.raises(Conflict, match="not leased by w-2"):
        job.complete("w-2")


def test_a_failure_puts_it_back_with_one_more_and_the_last_allowed_parks_it():
    job = vectorize_job("j-1", "f-1", TEXT, "create")
    job.collect_events()
    first_created = job.created_at
    job.lease("w-1", 1000)
    job.fail("w-1", "boom 1", 3)
    assert (job.state, job.retry_count, job.last_error, job.leaser) == (PENDING, 1, "boom 1", "")
    assert job.lease_expiration == "" and job.lease_ms == 0
    assert job.created_at >= first_created
    job.lease("w-1", 1000)
    job.fail("w-1", "boom 2", 3)
    job.lease("w-2", 1000)
    job.fail("w-2", "x" * 5000, 3)
    assert (job.state, job.retry_count) == (PARKED, 3) and len(job.last_error) == 2000
    assert [t for t, _ in events(job)] == ["job.leased", "job.failed"] * 2 + ["job.leased", "job.parked"]
    with pytest.raises(Conflict):
        job.lease("w-1", 1000)  # parked: never leased again
    job.purge()
    assert job.state == PURGED


@pytest.mark.parametrize("max_failures", [1, 2])
def test_parking_counts_every_failure(max_failures: int):
    job = vectorize_job("j-1", "f-1", TEXT, "create")
    for _ in range(max_failures):
        job.lease("w", 10)
        job.fail("w", "no", max_failures)
    assert job.state == PARKED and job.retry_count == max_failures


def test_the_reaper_acts_only_once_a_non_zero_lease_ran_out():
    job = vectorize_job("j-1", "f-1", TEXT, "create")
    job.lease("w-1", 200)
    expiration = parse_rfc3339(job.lease_expiration)
    assert not job.lease_expired(expiration - timedelta(microseconds=1))
    with pytest.raises(Conflict, match="has not expired"):
        job.expire_lease(expiration - timedelta(microseconds=1))
    assert job.lease_expired(expiration)
    job.collect_events()
    job.expire_lease(expiration + timedelta(milliseconds=3))
    [(kind, data)] = events(job)
    assert kind == "job.lease_expired"
    assert data["leaser"] == "w-1" and data["leaseExpiration"] == rfc3339(expiration)
    assert parse_rfc3339(data["createdAt"]) == expiration + timedelta(milliseconds=3)
    assert (job.state, job.retry_count, job.leaser) == (PENDING, 0, "")  # an expiry is not a failure

    zero = vectorize_job("j-2", "f-1", TEXT, "create")
    zero.lease("w-1", 0)  # the reference's default: expires at once, and stays with its leaser
    far_later = parse_rfc3339(zero.lease_expiration) + timedelta(days=365)
    assert not zero.lease_expired(far_later)
    with pytest.raises(Conflict):
        zero.expire_lease(far_later)


def test_a_purge_drops_an_open_job_and_leaves_an_ended_one_alone():
    for prepare in (lambda j: None, lambda j: j.lease("w", 10)):
        job = vectorize_job("j-1", "f-1", TEXT, "create")
        prepare(job)
        job.purge()
        assert job.state == PURGED and not job.leased_by("w")
    done = vectorize_job("j-2", "f-1", TEXT, "create")
    done.lease("w", 10)
    done.complete("w")
    done.collect_events()
    done.purge()
    assert done.state == DONE and done.collect_events() == []


@pytest.mark.parametrize(
    "text, ms",
    [("", 0), ("0", 0), ("-0", 0), ("30s", 30_000), ("1m30s", 90_000), ("500ms", 500), ("2h", 7_200_000),
     ("1.5s", 1_500), (".5m", 30_000), ("1h2m3.25s", 3_723_250), ("100us", 1), ("3µs", 1), ("+2s", 2_000)],
)  # fmt: skip
def test_lease_durations_read_as_go_reads_them(text: str, ms: int):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text, message",
    [("abc", 'time: invalid duration "abc"'), ("1", 'time: missing unit in duration "1"'),
     ("5x", 'time: unknown unit "x" in duration "5x"'), ("-1s", "must not be negative"),
     ("99999999999h", "time: invalid duration"), (".s", "time: invalid duration"), ("1s2", "missing unit")],
)  # fmt: skip
def test_a_lease_duration_go_refuses_is_refused(text: str, message: str):
    with pytest.raises(Unprocessable, match="invalid lease duration") as refused:
        parse_duration_ms(text)
    assert message in refused.value.message and refused.value.param == "leaseDuration"


def test_every_event_class_has_its_public_type():
    from chainloom.domain.base import public_event_type

    classes = (Job.Enqueued, Job.Leased, Job.Failed, Job.Parked, Job.Completed, Job.LeaseExpired, Job.Purged)
    names = {public_event_type(cls) for cls in classes}
    assert names == {
        "job.enqueued", "job.leased", "job.failed", "job.parked", "job.completed", "job.lease_expired", "job.purged"
    }  # fmt: skip
