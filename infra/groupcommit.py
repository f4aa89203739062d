"""Group commit: inserts that arrive together from worker threads share one transaction.

Each commit of the log costs a round of locking and a sync to disk (SQLite) or
a table lock and round trips (PostgreSQL). Appends of independent events
(webhooks, client events) need not pay it one by one: the first thread to
arrive commits whatever has queued up meanwhile, its own insert included, and
hands every caller its own positions. Should the shared transaction collide
(one event repeats an identity), each insert is retried alone, so only the
offending one fails — nothing is ever stored twice, nor refused for another's
fault. Blocking: call it from worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import RecordConflictError, StoredEvent

Insert = Callable[[Sequence[StoredEvent]], list[int]]


@dataclass
class _Request:
    events: Sequence[StoredEvent]
    done: threading.Event = field(default_factory=threading.Event)
    positions: list[int] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, insert: Insert, max_events: int = 500) -> None:
        self._insert = insert
        self._max_events = max_events
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._committing = False

    def insert(self, events: Sequence[StoredEvent]) -> list[int]:
        """Like ``EventLog.insert``: all of ``events`` in one transaction, their positions in order."""
        request = _Request(events)
        with self._lock:
            self._queue.append(request)
            lead = not self._committing
            self._committing = True
        if lead:
            self._commit_queued()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.positions

    def _commit_queued(self) -> None:
        while True:
            with self._lock:
                batch: list[_Request] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0].events) <= self._max_events):
                    batch.append(self._queue.pop(0))
                    size += len(batch[-1].events)
                if not batch:
                    self._committing = False
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        try:
            positions = self._insert([e for r in batch for e in r.events])
        except RecordConflictError as conflict:
            if len(batch) == 1:
                self._finish(batch[0], error=conflict)
                return
            for request in batch:  # find the offender: each alone
                self._commit([request])
            return
        except BaseException as error:
            for request in batch:
                self._finish(request, error=error)
            return
        start = 0
        for request in batch:
            self._finish(request, positions[start : start + len(request.events)])
            start += len(request.events)

    @staticmethod
    def _finish(request: _Request, positions: list[int] | None = None, error: BaseException | None = None) -> None:
        request.positions = positions or []
        request.error = error
        request.done.set()

