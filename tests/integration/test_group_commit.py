"""Group commit on the real log (SQLite and PostgreSQL): shared transactions, only offenders refused."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent

from chainloom.infra.eventlog import EventLog
from chainloom.infra.groupcommit import GroupCommit


def stored(stream: str, n: int = 1) -> list[StoredEvent]:
    return [StoredEvent(f"{stream}", v, "t", json.dumps({"s": stream, "v": v}).encode()) for v in range(1, n + 1)]


@pytest.fixture
def log(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    yield log
    log.close()


def test_concurrent_inserts_share_transactions_and_each_gets_its_positions(log):
    commits = []

    def counting_insert(events):
        commits.append(len(events))
        return log.insert(events)

    group = GroupCommit(counting_insert)
    start = threading.Barrier(16)

    def one(i: int) -> tuple[int, list[int]]:
        start.wait()
        return i, group.insert(stored(f"s:{i}", 1 + i % 3))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    by_position = {n.id: json.loads(n.state) for n in log.recorder.select_notifications(start=1, limit=1000)}
    for i, positions in results:
        assert [by_position[p]["s"] for p in positions] == [f"s:{i}"] * (1 + i % 3)
        assert [by_position[p]["v"] for p in positions] == list(range(1, 2 + i % 3))
    assert sum(commits) == len(by_position) and len(commits) < 16  # some inserts shared a commit


def test_a_colliding_insert_fails_alone(log):
    log.insert(stored("taken"))
    group = GroupCommit(log.insert)
    start = threading.Barrier(8)

    def one(i: int):
        start.wait()
        try:
            return group.insert(stored("taken" if i == 3 else f"free:{i}"))
        except RecordConflictError as error:
            return error

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert isinstance(results[3], RecordConflictError)
    assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(results) if i != 3)
    streams = [n.originator_id for n in log.recorder.select_notifications(start=1, limit=1000)]
    assert sorted(streams) == sorted(["taken"] + [f"free:{i}" for i in range(8) if i != 3])
