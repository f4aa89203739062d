"""The log writer on the real log (SQLite and PostgreSQL): appends share commits, decisions in a group
see each other, refusals and collisions cost only their own work."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent

from chainloom.commands.base import Decision
from chainloom.domain.backends import Backend
from chainloom.domain.errors import Conflict, TooLarge
from chainloom.domain.uniqueness import BACKEND_NAME, ensure_free
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.infra.eventlog import EventLog, FenceRefused
from chainloom.infra.logwriter import LogWriter, appending_under

METADATA = {"actor": "test"}


def stored(stream: str, n: int = 1) -> list[StoredEvent]:
    return [StoredEvent(f"{stream}", v, "t", json.dumps({"s": stream, "v": v}).encode()) for v in range(1, n + 1)]


@pytest.fixture
def log(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env(), EnvelopeMapper(max_event_bytes=4096))
    yield log
    log.close()


@pytest.fixture
def commits(log) -> list[int]:
    """The size of every transaction the log commits (the real insert, counted)."""
    sizes: list[int] = []
    insert = log.insert

    def counted(events, holdings=(), fences=()):
        positions = insert(events, holdings, fences)
        sizes.append(len(events))
        return positions

    log.insert = counted
    return sizes


class Gate:
    """Holds the writer thread inside a decision until everything to be grouped has been submitted."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def decide(self, log):
        self.entered.set()
        assert self.open.wait(10)
        return Decision(None, [])


def submit_behind_gate(writer: LogWriter, *work):
    """Run ``work`` (coroutine factories) so that all of it is queued while the writer is held, then
    release it: what was queued forms one group. The results (or errors), in order."""

    async def run():
        gate = Gate()
        held = asyncio.ensure_future(writer.decide(gate.decide, METADATA))
        await asyncio.to_thread(gate.entered.wait, 10)
        tasks = [asyncio.ensure_future(make()) for make in work]
        await asyncio.sleep(0.05)  # every task has submitted (none can finish: the writer is held)
        gate.open.set()
        await held
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(run())


def backend_decision(backend_id: str, name: str, before_storing=lambda: None):
    """Create a backend named ``name`` (a unique value), as ``commands.catalog`` does."""

    def decide(log):
        ensure_free(log.owner_of, BACKEND_NAME, name, backend_id, f"backend name '{name}'")
        before_storing()
        return Decision(backend_id, [Backend.create(backend_id, name, f"http://{name}", "ollama")])

    return decide


def test_appends_queued_together_share_one_commit_and_each_gets_its_positions(log, commits):
    writer = LogWriter(log)
    try:
        results = submit_behind_gate(writer, *[lambda i=i: writer.append(stored(f"s:{i}", 1 + i % 3)) for i in range(16)])
    finally:
        writer.close()
    by_position = {n.id: json.loads(n.state) for n in log.recorder.select_notifications(start=1, limit=1000)}
    for i, positions in enumerate(results):
        assert [by_position[p]["s"] for p in positions] == [f"s:{i}"] * (1 + i % 3)
        assert [by_position[p]["v"] for p in positions] == list(range(1, 2 + i % 3))
    assert commits == [sum(1 + i % 3 for i in range(16))]


def test_concurrent_appends_are_all_stored_each_request_together(log):
    writer = LogWriter(log)

    async def run():
        return await asyncio.gather(*(writer.append(stored(f"t:{i}", 2)) for i in range(64)))

    try:
        results = asyncio.run(run())
    finally:
        writer.close()
    assert sorted(p for r in results for p in r) == list(range(1, 129))
    assert all(r[1] == r[0] + 1 for r in results)  # one request's events stay together


def test_a_colliding_append_fails_alone(log, commits):
    log.insert(stored("taken"))
    writer = LogWriter(log)
    try:
        results = submit_behind_gate(
            writer, *[lambda i=i: writer.append(stored("taken" if i == 3 else f"free:{i}")) for i in range(8)]
        )
    finally:
        writer.close()
    assert isinstance(results[3], RecordConflictError)
    assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(results) if i != 3)
    streams = [n.originator_id for n in log.recorder.select_notifications(start=1, limit=1000)]
    assert sorted(streams) == sorted(["taken"] + [f"free:{i}" for i in range(8) if i != 3])


def test_decisions_in_one_group_see_each_other(log, commits):
    """Two creates of one name queued together: the second is refused as if they had run one by one."""
    writer = LogWriter(log)
    try:
        first, second, other = submit_behind_gate(
            writer,
            lambda: writer.decide(backend_decision("b-1", "same"), METADATA),
            lambda: writer.decide(backend_decision("b-2", "same"), METADATA),
            lambda: writer.decide(backend_decision("b-3", "other"), METADATA),
        )
    finally:
        writer.close()
    assert first[0] == "b-1" and other[0] == "b-3"
    assert isinstance(second, Conflict) and "already exists" in second.message
    assert commits == [2]  # both stored creates in one transaction
    assert log.get(Backend, "b-2") is None
    assert log.owner_of(BACKEND_NAME, "same") == "b-1"


def test_a_refused_decision_leaves_nothing_for_the_next(log):
    """A decision that changes an aggregate and is then refused: the next decision in the group sees
    the aggregate as stored, and nothing of the refused one is written."""
    log.save(Backend.create("b", "before", "http://before", "ollama"))

    def rename_then_refuse(aggregates):
        backend = aggregates.get(Backend, "b")
        backend.update("during", "http://during", "ollama")
        raise Conflict("refused after changing it")

    def read_name(aggregates):
        return Decision(aggregates.get(Backend, "b").name, [])

    writer = LogWriter(log)
    try:
        refused, seen = submit_behind_gate(
            writer,
            lambda: writer.decide(rename_then_refuse, METADATA),
            lambda: writer.decide(read_name, METADATA),
        )
    finally:
        writer.close()
    assert isinstance(refused, Conflict)
    assert seen == ("before", None)
    assert [e.originator_version for e in log.recorder.select_events(Backend.stream_id("b"))] == [1]


def test_an_event_too_large_refuses_only_its_decision(log, commits):
    writer = LogWriter(log)
    try:
        large, small = submit_behind_gate(
            writer,
            lambda: writer.decide(backend_decision("big", "x" * 5000), METADATA),
            lambda: writer.decide(backend_decision("small", "small"), METADATA),
        )
    finally:
        writer.close()
    assert isinstance(large, TooLarge)
    assert small[0] == "small"
    assert log.get(Backend, "big") is None and commits == [1]


def test_a_group_that_collides_with_another_process_is_redone_one_decision_at_a_time(log, settings):
    """Another process appends to an aggregate after a decision in the group read it: the group's
    transaction collides, nothing of it is stored, and each decision is made again alone."""
    log.save(Backend.create("shared", "shared", "http://shared", "ollama"))
    other_process = EventLog(settings.event_store_env())
    calls = []

    def update_racing_another_process(aggregates):
        backend = aggregates.get(Backend, "shared")
        if not calls:  # the first time only: another process writes the next version meanwhile
            theirs = other_process.get(Backend, "shared")
            theirs.update("theirs", "http://theirs", "ollama")
            other_process.save(theirs)
        calls.append(backend.version)
        backend.update("ours", "http://ours", "ollama")
        return Decision("updated", [backend])

    writer = LogWriter(log)
    try:
        updated, created = submit_behind_gate(
            writer,
            lambda: writer.decide(update_racing_another_process, METADATA),
            lambda: writer.decide(backend_decision("independent", "independent"), METADATA),
        )
    finally:
        writer.close()
        other_process.close()
    assert calls == [1, 2]  # decided again on the state the other process left
    assert updated[0] == "updated" and created[0] == "independent"
    assert [e.originator_version for e in log.recorder.select_events(Backend.stream_id("shared"))] == [1, 2, 3]
    assert log.get(Backend, "shared").name == "ours"
    assert log.get(Backend, "independent") is not None
    positions = [n.id for n in log.recorder.select_notifications(start=1, limit=100)]
    assert len(positions) == len(set(positions)) == 4  # create, theirs, ours, and the independent create


def test_a_value_another_process_took_meanwhile_is_refused_by_the_index(log, settings):
    """Another process creates a backend of the same name after the decision found the name free: the
    database refuses the group's transaction (the index's key), and the decision, made again, is a 409."""
    other_process = EventLog(settings.event_store_env())
    raced = []

    def the_other_process_takes_the_name():
        if not raced:
            raced.append(other_process.save(Backend.create("theirs", "contested", "http://elsewhere", "ollama")))

    writer = LogWriter(log)
    try:
        refused, independent = submit_behind_gate(
            writer,
            lambda: writer.decide(backend_decision("ours", "contested", the_other_process_takes_the_name), METADATA),
            lambda: writer.decide(backend_decision("independent", "independent"), METADATA),
        )
    finally:
        writer.close()
        other_process.close()
    assert isinstance(refused, Conflict) and "backend name 'contested' already exists" in refused.message
    assert independent[0] == "independent"
    assert log.get(Backend, "ours") is None
    assert log.owner_of(BACKEND_NAME, "contested") == "theirs"


def test_values_given_up_in_a_group_are_free_for_the_decisions_after_it(log, commits):
    """Rename a backend, then create another under its old name, in one group: both are stored."""
    log.save(Backend.create("first", "old-name", "http://first", "ollama"))

    def rename(aggregates):
        backend = aggregates.get(Backend, "first")
        backend.update("new-name", "http://first", "ollama")
        ensure_free(aggregates.owner_of, BACKEND_NAME, "new-name", "first", "backend name 'new-name'")
        return Decision(None, [backend])

    writer = LogWriter(log)
    try:
        renamed, created = submit_behind_gate(
            writer,
            lambda: writer.decide(rename, METADATA),
            lambda: writer.decide(backend_decision("second", "old-name"), METADATA),
        )
    finally:
        writer.close()
    assert renamed == (None, 2) and created[0] == "second"
    assert commits[-1] == 2
    assert log.owner_of(BACKEND_NAME, "old-name") == "second"
    assert log.owner_of(BACKEND_NAME, "new-name") == "first"


def test_the_index_is_built_from_the_log_when_missing(log, settings):
    log.save(Backend.create("kept", "kept-name", "http://kept", "ollama"))
    gone = Backend.create("gone", "gone-name", "http://gone", "ollama")
    log.save(gone)
    gone.delete()
    log.save(gone)
    with log._transaction() as cursor:
        cursor.execute("DROP TABLE unique_values")
    reopened = EventLog(settings.event_store_env())
    try:
        assert reopened.owner_of(BACKEND_NAME, "kept-name") == "kept"
        assert reopened.owner_of("backend.baseUrl", "http://kept") == "kept"
        assert reopened.owner_of(BACKEND_NAME, "gone-name") is None
    finally:
        reopened.close()


class OneTimeFence:
    """Lets an append through while ``open``; counts the appends committed under it."""

    def __init__(self, open: bool) -> None:
        self.open = open
        self.commits = 0

    def check(self, cursor) -> None:
        cursor.execute("SELECT 1 AS one")  # in the append's transaction, as a real fence reads its row
        assert cursor.fetchone()["one"] == 1
        if not self.open:
            raise FenceRefused("fenced off")

    def committed(self) -> None:
        self.commits += 1


def test_a_fenced_append_refused_by_its_fence_leaves_the_rest_of_its_group_stored(log, commits):
    """A request appends under a fence (``appending_under``, as a keyed request does): a refusing
    fence refuses that append whole, and only it, however the group was made."""
    writer = LogWriter(log)
    shut, opened = OneTimeFence(open=False), OneTimeFence(open=True)

    async def under(fence, events):
        token = appending_under.set(fence)
        try:
            return await writer.append(events)
        finally:
            appending_under.reset(token)

    try:
        refused, let, unfenced = submit_behind_gate(
            writer,
            lambda: under(shut, stored("fenced-off")),
            lambda: under(opened, stored("fenced-in")),
            lambda: writer.append(stored("free")),
        )
    finally:
        writer.close()
    assert isinstance(refused, RecordConflictError)
    assert isinstance(let, list) and isinstance(unfenced, list)
    assert (shut.commits, opened.commits) == (0, 1)
    streams = {n.originator_id for n in log.recorder.select_notifications(start=1, limit=100)}
    assert streams == {"fenced-in", "free"}


def test_a_decisions_own_fences_go_with_its_append_after_the_requests(log, commits):
    """``decide(…, fences=…)`` (a user's credential written with its event): checked in the append's
    transaction after the request's own fence; a refused decision carries none; a refusing one refuses all."""
    writer = LogWriter(log)
    request, own, refusing = OneTimeFence(open=True), OneTimeFence(open=True), OneTimeFence(open=False)
    order: list[str] = []
    for name, fence in (("request", request), ("own", own)):
        check = fence.check
        fence.check = lambda cursor, check=check, name=name: (order.append(name), check(cursor))[-1]

    def create(name: str):
        return lambda aggregates: Decision(None, [Backend.create(f"id-{name}", name, f"http://{name}", "ollama")])

    def refuse(aggregates):
        raise Conflict("refused")

    async def run():
        token = appending_under.set(request)
        try:
            await writer.decide(create("b1"), METADATA, fences=[own])
        finally:
            appending_under.reset(token)
        with pytest.raises(Conflict):
            await writer.decide(refuse, METADATA, fences=[refusing])
        with pytest.raises(FenceRefused):
            await writer.decide(create("b2"), METADATA, fences=[own, refusing])

    try:
        asyncio.run(run())
    finally:
        writer.close()
    assert order[:2] == ["request", "own"]  # the request's fence first (then the refused append's tries)
    assert (request.commits, own.commits, refusing.commits) == (1, 1, 0)
    streams = {n.originator_id for n in log.recorder.select_notifications(start=1, limit=100)}
    assert streams == {"backend:id-b1"}
