"""A model download: pulling one declared model onto one Ollama backend (one aggregate per backend and model).

Its life: *queued* (``download.queued`` the first time, ``download.requeued``
after it ended) → *running* (``download.started``, recorded by the download
job as it begins the pull) → *completed*, *failed* {error} or *cancelled*
(``DELETE /queue/cancel``, a purge: recorded by the API; the job pulling it
notices on the log and stops the pull). A queued download may be
*dequeued* (``DELETE /queue/{model}``, a purge) before it starts. Once it has
ended it may be queued again (the reconciler does so while the model stays
declared and missing, after a pause: ``may_queue``).

The events carry only what the notes list (``queued`` and ``requeued``: the
backend, its base URL and the model; ``failed``: the error); the aggregate id
names the backend and the model (``key``).
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
DEQUEUED = "dequeued"
ACTIVE_STATES = (QUEUED, RUNNING)
ENDED_STATES = (COMPLETED, FAILED, CANCELLED, DEQUEUED)

# The longest error text a ``download.failed`` keeps (an upstream may answer a page of HTML).
MAX_ERROR_LENGTH = 2000


def download_key(backend_id: str, model: str) -> str:
    """The aggregate's key: backend ids are UUIDs (never a ``/``), model names may hold one."""
    return f"{backend_id}/{model}"


class Download(Aggregate):
    aggregate_type = "download"

    class Queued(Aggregate.Created):
        backend_id: str
        base_url: str
        model: str

    class Requeued(Aggregate.Event):
        backend_id: str
        base_url: str
        model: str

    class Started(Aggregate.Event):
        pass

    class Completed(Aggregate.Event):
        pass

    class Failed(Aggregate.Event):
        error: str

    class Cancelled(Aggregate.Event):
        pass

    class Dequeued(Aggregate.Event):
        pass

    @classmethod
    def queue(cls, backend_id: str, base_url: str, model: str) -> Download:
        return cls._create(
            cls.Queued, id=cls.stream_id(download_key(backend_id, model)), backend_id=backend_id, base_url=base_url, model=model
        )

    @event(Queued)
    def __init__(self, backend_id: str, base_url: str, model: str) -> None:
        self._queued(backend_id, base_url, model)

    def _queued(self, backend_id: str, base_url: str, model: str) -> None:
        self.backend_id = backend_id
        self.base_url = base_url
        self.model = model
        self.state = QUEUED
        self.error = ""

    # -- queueing -------------------------------------------------------------

    def may_queue(self, now: datetime, retry_after: float) -> bool:
        """Whether it may be queued again now: it has ended, at least ``retry_after`` seconds ago (a failed,
        cancelled, dequeued or just completed download is not retried at once)."""
        return self.state in ENDED_STATES and (now - self.modified_on).total_seconds() >= retry_after

    def requeue(self, base_url: str) -> None:
        if self.state not in ENDED_STATES:
            raise Conflict(f"the download of {self.model} is already {self.state}")
        self._requeue(backend_id=self.backend_id, base_url=base_url, model=self.model)

    @event(Requeued)
    def _requeue(self, backend_id: str, base_url: str, model: str) -> None:
        self._queued(backend_id, base_url, model)

    def dequeue(self) -> None:
        self._require(QUEUED)
        self._dequeue()

    @event(Dequeued)
    def _dequeue(self) -> None:
        self.state = DEQUEUED

    # -- the pull ---------------------------------------------------------------

    def start(self) -> None:
        self._require(QUEUED)
        self._start()

    @event(Started)
    def _start(self) -> None:
        self.state = RUNNING

    def complete(self) -> None:
        self._require(RUNNING)
        self._complete()

    @event(Completed)
    def _complete(self) -> None:
        self.state = COMPLETED

    def fail(self, error: str) -> None:
        self._require(RUNNING)
        error = error or "the pull failed"
        if len(error) > MAX_ERROR_LENGTH:
            error = error[: MAX_ERROR_LENGTH - 1] + "…"
        self._fail(error=error)

    @event(Failed)
    def _fail(self, error: str) -> None:
        self.state = FAILED
        self.error = error

    def cancel(self) -> None:
        self._require(RUNNING)
        self._cancel()

    @event(Cancelled)
    def _cancel(self) -> None:
        self.state = CANCELLED

    def _require(self, state: str) -> None:
        if self.state != state:
            raise Conflict(f"the download of {self.model} is {self.state}, not {state}")
