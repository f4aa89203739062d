"""One poison event stops one projector, not the service: faults, /health, /ready, retry and skip, on both stores.

The poison event is put into the log through the store (as a bug, a migration
or another writer could), never through the API: a ``group.created`` whose
data lacks ``purposeType``, which the catalog projector cannot apply.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent

from chainloom.domain.groups import AffinityGroup
from chainloom.domain.models import Model, ModelSpec
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import Fault, open_read_store
from chainloom.projections import operator
from chainloom.projections.registry import all_projectors
from chainloom.projections.tracked import TrackedProjections
from chainloom.projections.waits import ProjectionFaulted
from tests.api.helpers import assert_error, call, create_backend, create_group, ready_status
from chainloom.web.app import create_app

EXTERNAL_EVENT = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user", "version": 1}


def stored(log: EventLog, aggregate, edit_data=None) -> StoredEvent:
    """The aggregate's (one) pending event as stored, its data changed by ``edit_data`` behind the domain's back."""
    (event,) = [log.mapper.to_stored_event(e, {"actor": "test"}) for e in aggregate.collect_events()]
    if edit_data is None:
        return event
    envelope = json.loads(event.state)
    edit_data(envelope["data"])
    return StoredEvent(
        originator_id=event.originator_id,
        originator_version=event.originator_version,
        topic=event.topic,
        state=json.dumps(envelope).encode(),
    )


def insert(settings, *events_of) -> list[int]:
    """Append, through the store (not the API), the events ``events_of(log)`` makes; their positions."""
    log = EventLog(settings.event_store_env())
    try:
        return log.insert([make(log) for make in events_of])
    finally:
        log.close()


def missing_purpose(log: EventLog) -> StoredEvent:
    """A ``group.created`` without ``purposeType``: the catalog projector cannot apply it."""
    group = AffinityGroup.create(str(uuid.uuid4()), "poison", "testing")
    return stored(log, group, lambda data: data.pop("purposeType"))


def inject_poison(settings) -> int:
    """Append, through the store, a ``group.created`` the catalog projector cannot apply; its position."""
    return insert(settings, missing_purpose)[0]


def read_log(settings, after: int) -> list[dict]:
    log = EventLog(settings.event_store_env())
    try:
        return log.read(after=after, limit=1000)
    finally:
        log.close()


async def until(predicate, timeout: float = 10.0):
    """Poll ``predicate`` (async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def health(client) -> tuple[int, dict | None]:
    return await call(client, "GET", "/health")


async def degraded(client):
    status, body = await health(client)
    assert status == 200
    return body


async def healthy(client):
    status, body = await health(client)
    return status == 200 and body is None


async def test_a_poison_event_faults_only_its_projector_until_skipped(client, settings):
    before = await create_backend(client, "before")
    nid = await asyncio.to_thread(inject_poison, settings)

    # The catalog projector stops at the poison event; the fault is recorded durably.
    report = await until(lambda: degraded(client))
    assert report["status"] == "degraded"
    (fault,) = report["faulted"]
    assert (fault["projection"], fault["position"], fault["eventType"]) == ("catalog", nid, "group.created")
    assert fault["eventId"] and "purposeType" in fault["error"]
    statuses = {s.name: s for s in await asyncio.to_thread(operator.status, settings)}
    assert statuses["catalog"].fault is not None and statuses["catalog"].fault.position == nid
    assert statuses["catalog"].position < nid and statuses["eventsource"].fault is None

    status, body = await call(client, "GET", "/ready")
    assert_error(status, body, 503, "catalog")

    # A catalog command answers at once with the reason (not the 10 s timeout's "did not reach").
    status, body = await call(client, "POST", "/backends", {"name": "while-faulted", "baseUrl": "http://x", "type": "ollama"})
    assert_error(status, body, 503, f"'catalog' is stopped at position {nid}")
    assert "did not reach" not in body["error"]["message"]

    # The event source projector keeps running: POST /events still reads back its write.
    status, appended = await call(client, "POST", "/events", EXTERNAL_EVENT | {"aggregate_id": "u-1"})
    assert status == 201, appended
    assert appended["nid"] > nid

    # Retry without repairing anything: the same event faults again.
    first_failure = statuses["catalog"].fault.failed_at
    cleared = await asyncio.to_thread(operator.retry, settings, "catalog")
    assert cleared.position == nid

    async def failed_again():
        fault = {s.name: s for s in await asyncio.to_thread(operator.status, settings)}["catalog"].fault
        return fault is not None and fault.failed_at != first_failure and fault

    assert (await until(failed_again)).position == nid

    # Skip it: audited on the log, the projector goes on, without restarting the service.
    skipped = await asyncio.to_thread(operator.skip, settings, "catalog")
    assert skipped.position == nid
    await until(lambda: healthy(client))
    assert await ready_status(client) == (200, "ready")
    audits = [e for e in await asyncio.to_thread(read_log, settings, nid) if e["event_type"] == "projection.event_skipped"]
    assert len(audits) == 1
    assert audits[0]["aggregate_type"] == "projection"
    assert audits[0]["data"]["projection"] == "catalog" and audits[0]["data"]["skippedNid"] == nid
    assert audits[0]["data"]["eventId"] == fault["eventId"] and "purposeType" in audits[0]["data"]["error"]

    # Catalog commands work and read back again, and the write kept during the fault shows.
    group = await create_group(client, "after-skip")
    assert (await call(client, "GET", f"/groups/{group['id']}"))[0] == 200
    status, backends = await call(client, "GET", "/backends")
    assert {b["name"] for b in backends} >= {before["name"], "while-faulted"}


async def test_the_command_line_retries_and_skips_while_the_service_runs(client, settings):
    nid = await asyncio.to_thread(inject_poison, settings)
    await until(lambda: degraded(client))
    env = dict(os.environ, CHAINLOOM_DATA_DIR=str(settings.data_dir), CHAINLOOM_DATABASE_URL=settings.database_url)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chainloom.infra.cli", "projections", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    shown = await asyncio.to_thread(cli, "status")
    assert shown.returncode == 0, shown.stderr
    assert "catalog: position" in shown.stdout and f"FAULTED at event {nid} (group.created" in shown.stdout
    assert "eventsource: position" in shown.stdout and "eventsource" in shown.stdout.split("\n")[1]

    retried = await asyncio.to_thread(cli, "retry", "catalog")
    assert retried.returncode == 0 and f"will try again event {nid}" in retried.stdout, retried.stderr

    async def faulted_again():
        return {s.name: s for s in await asyncio.to_thread(operator.status, settings)}["catalog"].fault

    await until(faulted_again)
    skipped = await asyncio.to_thread(cli, "skip", "catalog")
    assert skipped.returncode == 0 and f"skipped event {nid}" in skipped.stdout, skipped.stderr
    await until(lambda: healthy(client))
    await create_backend(client, "after-cli-skip")

    not_faulted = await asyncio.to_thread(cli, "skip", "catalog")
    assert not_faulted.returncode == 2 and "not faulted" in not_faulted.stderr
    unknown = await asyncio.to_thread(cli, "retry", "nope")
    assert unknown.returncode == 2 and "unknown projection" in unknown.stderr


async def test_tracked_projections_fail_waits_on_a_faulted_projector_at_once(settings):
    """The distributed mode: the API reads the faults projector workers record beside their positions."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store, factory = open_read_store(settings.read_store_env())
    tracked = TrackedProjections(store, all_projectors(), asyncio.to_thread)
    try:
        await tracked.start()

        def fault_catalog() -> None:
            with store.transaction() as cursor:
                store.track(cursor, "eventsource", 5)
                store.record_fault(cursor, Fault("catalog", 3, "e-3", "group.created", "KeyError: 'x'", "now"))

        await asyncio.to_thread(fault_catalog)
        started = time.monotonic()
        try:
            await tracked.wait_for(5, 10.0, needs=("catalog",))
        except ProjectionFaulted as error:
            assert "'catalog' is stopped at position 3" in str(error)
        else:
            raise AssertionError("a wait on a faulted projector must fail")
        assert time.monotonic() - started < 5  # not the timeout
        await tracked.wait_for(5, 10.0, needs=("eventsource",))  # unaffected
        assert set(await tracked.read_faults()) == {"catalog"}
    finally:
        await tracked.stop()
        factory.close()


async def test_events_before_the_poison_in_its_batch_are_kept_and_the_store_recovers(client, settings):
    """A value the read store cannot hold (an integer beyond 64 bits): on PostgreSQL the server aborts the
    statement, so the transaction goes on only thanks to the savepoint; the group before it is kept."""
    group_id = str(uuid.uuid4())

    def good_group(log: EventLog) -> StoredEvent:
        return stored(log, AffinityGroup.create(group_id, "kept", "testing"))

    def huge_context(log: EventLog) -> StoredEvent:
        model = Model.declare("huge", ModelSpec("huge", 1024, can_chat=True))
        return stored(log, model, lambda data: data.update(contextLength=2**70))

    kept, poison = await asyncio.to_thread(insert, settings, good_group, huge_context)
    report = await until(lambda: degraded(client))
    assert [(f["projection"], f["position"], f["eventType"]) for f in report["faulted"]] == [
        ("catalog", poison, "model.declared")
    ]
    statuses = {s.name: s for s in await asyncio.to_thread(operator.status, settings)}
    assert statuses["catalog"].position == kept  # tracked just before the poison event
    assert "Overflow" in statuses["catalog"].fault.error or "out of range" in statuses["catalog"].fault.error
    status, group = await call(client, "GET", f"/groups/{group_id}")
    assert status == 200 and group["name"] == "kept"
    status, appended = await call(client, "POST", "/events", EXTERNAL_EVENT | {"aggregate_id": "u-2"})
    assert status == 201 and appended["nid"] > poison


async def test_a_service_restarted_while_faulted_starts_degraded_and_seeds_once_skipped(settings):
    async with TestClient(TestServer(create_app(settings))) as client:
        assert await call(client, "DELETE", "/groups/internal_tasks_group") == (200, "deleted")
        await asyncio.to_thread(inject_poison, settings)
        await until(lambda: degraded(client))
    # Start-up seeding brings the deleted group back (a write the faulted catalog cannot show yet).
    async with TestClient(TestServer(create_app(settings))) as client:
        report = await degraded(client)
        assert [f["projection"] for f in report["faulted"]] == ["catalog"]
        assert (await call(client, "GET", "/groups/internal_tasks_group"))[0] == 404
        await asyncio.to_thread(operator.skip, settings, "catalog")

        async def seeded():
            status, group = await call(client, "GET", "/groups/internal_tasks_group")
            return status == 200 and group

        assert (await until(seeded))["name"] == "Tasks"  # once the runner's next batch has applied it
        assert await healthy(client)
