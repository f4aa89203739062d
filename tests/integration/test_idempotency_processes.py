"""Idempotency-Key across the worker processes of ``chainloom serve`` (SQLite and PostgreSQL).

The workers share the keys through the store: a retry answered by another
worker than the first attempt gets the first answer and writes nothing; a retry
of a write whose read models are stopped (a poison event faults the catalog
projector) is not applied again, and gets the success once an operator skips
the poison event; a worker killed while it held such a key leaves the key
stored, unanswered — its retry is refused (409), never applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

import aiohttp
import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.idempotency import IdempotencyKeys
from chainloom.infra.settings import Settings
from chainloom.projections import operator
from tests.integration.serve_process import (
    NODE_HEADER,
    fresh_connections,
    log_events,
    ready_workers,
)
from tests.integration.test_projection_faults import inject_poison

KEY = "Idempotency-Key"


async def keyed(session: aiohttp.ClientSession, path: str, body: Any, key: str) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of a POST sent with ``key`` over a new connection."""
    async with session.post(path, data=json.dumps(body), headers={"Content-Type": "application/json", KEY: key}) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if raw else None), r.headers


def backend(name: str) -> dict[str, str]:
    return {"name": name, "baseUrl": f"http://{name}:11434", "type": "ollama"}


def created(settings: Settings) -> list[dict]:
    return [e for e in log_events(settings) if e["event_type"] == "backend.created"]


async def test_a_retry_answered_by_another_worker_gets_the_first_answer(serve, settings: Settings):
    service = serve(settings)
    key = str(uuid.uuid4())
    async with fresh_connections(service.base) as session:
        first = await keyed(session, "/backends", backend("b1"), key)
        assert first[0] == 201, first
        nodes = {first[2][NODE_HEADER]}
        answers = []
        while len(nodes) < 2:  # new connections: the kernel spreads them over both workers
            answer = await keyed(session, "/backends", backend("b1"), key)
            answers.append(answer)
            nodes.add(answer[2][NODE_HEADER])
            assert len(answers) < 200, "one worker answered every request"
    assert all(a[0] == 201 and a[1] == first[1] and a[2]["Idempotent-Replayed"] == "true" for a in answers)
    assert [e["aggregate_id"] for e in await asyncio.to_thread(created, settings)] == [first[1]["id"]]


async def test_concurrent_duplicates_on_both_workers_write_once(serve, settings: Settings):
    service = serve(settings)
    key = str(uuid.uuid4())
    async with fresh_connections(service.base) as session:
        answers = await asyncio.gather(*(keyed(session, "/backends", backend("b1"), key) for _ in range(12)))
    statuses = [a[0] for a in answers]
    # The first answer, or — when the first was not answered within the wait — 409 with Retry-After.
    assert set(statuses) <= {201, 409} and 201 in statuses, [a[:2] for a in answers]
    assert len({json.dumps(a[1]) for a in answers if a[0] == 201}) == 1
    assert all(a[2]["Retry-After"] == "1" for a in answers if a[0] == 409)
    assert len(await asyncio.to_thread(created, settings)) == 1


async def until_not_503(session: aiohttp.ClientSession, body: Any, key: str) -> tuple[int, Any, Any]:
    while True:
        answer = await keyed(session, "/backends", body, key)
        if answer[0] != 503:
            return answer
        assert answer[2]["Retry-After"] == "1", answer
        await asyncio.sleep(0.1)


async def test_a_write_stored_while_the_read_models_are_stopped_is_answered_once_they_go_on(serve, settings: Settings):
    service = serve(settings, CHAINLOOM_PROJECTION_TIMEOUT="2")  # how long a retry waits for the first answer
    await asyncio.to_thread(inject_poison, settings)
    key = str(uuid.uuid4())
    async with fresh_connections(service.base) as session:
        while True:  # the catalog projector stops at the poison event: the write is stored, not shown
            status, body, headers = await keyed(session, "/backends", backend("b1"), key)
            if status == 503 and "stopped at position" in body["error"]["message"]:
                break
            assert status == 201, body  # the projector had not reached the poison yet: take another key
            key = str(uuid.uuid4())
            await asyncio.sleep(0.05)
        stored = await asyncio.to_thread(created, settings)
        retries = [await keyed(session, "/backends", backend("b1"), key) for _ in range(3)]
        assert {r[0] for r in retries} == {503}, [r[:2] for r in retries]
        assert all("was stored" in r[1]["error"]["message"] for r in retries), [r[1] for r in retries]
        assert await asyncio.to_thread(created, settings) == stored  # nothing written again
        await asyncio.to_thread(operator.skip, settings, "catalog")
        status, answer, headers = await until_not_503(session, backend("b1"), key)
    assert status == 201, answer
    assert answer["name"] == "b1" and answer["id"] == stored[-1]["aggregate_id"]
    assert await asyncio.to_thread(created, settings) == stored


async def test_a_worker_killed_after_storing_leaves_its_key_stored_and_unanswered(serve, settings: Settings):
    service = serve(settings, CHAINLOOM_PROJECTION_TIMEOUT="2")
    async with fresh_connections(service.base) as session:
        # Which worker is which process (asked while /ready still answers: not once the read models are faulted).
        pids = {body["nodeInstanceID"]: pid for pid, body in (await ready_workers(session, 2)).items()}
        await asyncio.to_thread(inject_poison, settings)
        while True:
            key = str(uuid.uuid4())
            status, body, headers = await keyed(session, "/backends", backend(f"b-{key}"), key)
            if status == 503:
                break
            assert status == 201, body
            await asyncio.sleep(0.05)
        stored = await asyncio.to_thread(created, settings)
        # Kill -9 the worker that holds the key (it waits for the read models to make its answer).
        os.kill(pids[headers[NODE_HEADER]], signal.SIGKILL)
        # Its lease runs out: the retry learns that its write counted, and nothing is written again.
        while True:
            status, body, _ = await keyed(session, "/backends", backend(f"b-{key}"), key)
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert status == 409 and body["error"]["param"] == KEY, body
        assert "answer was lost" in body["error"]["message"]
    assert await asyncio.to_thread(created, settings) == stored


def test_expired_keys_are_cleaned_up_and_may_be_used_again(settings: Settings):
    """The store side of the window (``CHAINLOOM_IDEMPOTENCY_WINDOW``), on both stores."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    try:
        now = [1000.0]
        keys = IdempotencyKeys(log, window=60.0, clock=lambda: now[0])
        IdempotencyKeys.open(log, settings.event_store_env(), 60.0)  # the table
        first = keys.claim("caller", "k", "fingerprint")
        keys.answer(first, 201, {"Content-Type": "application/json"}, b"{}")
        kept = keys.claim("caller", "k", "fingerprint")
        assert kept.state == "answered" and kept.status == 201
        now[0] += 50
        assert keys.claim("another caller", "k", "fingerprint").token  # a key per caller: a new attempt
        now[0] += 11
        keys.clean()
        assert keys.look("caller", "k") is None and keys.look("another caller", "k") is not None  # within its window
        again = keys.claim("caller", "k", "another fingerprint")  # forgotten: a new request
        assert again.token != first.token
    finally:
        log.close()


# -- the key and the events commit together ----------------------------------------------------


def _external(log: EventLog, event_id: str):
    from chainloom.domain.eventsource.events import ExternalEvent

    return log.mapper.to_stored_external(ExternalEvent(
        id=event_id, created_at_ns=1_700_000_000_000_000_000, event_type="order.placed", event_source="shop",
        aggregate_type="order", aggregate_id="o-1", version=1, data={}, metadata={},
    ))


def test_an_append_marks_its_key_stored_in_its_own_transaction(settings: Settings):
    from chainloom.infra.idempotency import LEASE, KeySuperseded

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    try:
        IdempotencyKeys.open(log, settings.event_store_env(), 3600.0)
        now = [1000.0]
        keys = IdempotencyKeys(log, window=3600.0, clock=lambda: now[0])
        log.insert([_external(log, "taken")])

        # An append that fails (its event repeats a stored identity) leaves the key as it was: nothing stored.
        attempt = keys.claim("caller", "k", "fp")
        with pytest.raises(Exception):
            log.insert([_external(log, "taken")], fences=[attempt])
        assert keys.look("caller", "k").state == "running" and not attempt.stored

        # Its holder died: once the lease has run out a retry takes the key over, and the dead attempt's
        # append — should it still come — is refused whole.
        now[0] += LEASE + 1
        retry = keys.claim("caller", "k", "fp")
        assert retry.token != attempt.token
        head = log.head()
        with pytest.raises(KeySuperseded):
            log.insert([_external(log, "late")], fences=[attempt])
        assert log.head() == head and attempt.superseded

        log.insert([_external(log, "retried")], fences=[retry])
        assert retry.stored and keys.look("caller", "k").state == "stored"
        # A stored key is never taken over, however long its holder is gone.
        now[0] += 10 * LEASE
        assert keys.claim("caller", "k", "fp").state == "stored"
    finally:
        log.close()
