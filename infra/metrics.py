"""The process's Prometheus instruments, and how several worker processes add theirs up.

What a process *does* (requests answered, events it appended, chain runs, trigger
executions) is counted where it happens, in counters and histograms. ``chainloom
serve`` runs several forked workers, each counting its own: prometheus_client's
multiprocess mode keeps every worker's figures in memory-mapped files of one
directory, which any worker sums at a scrape (``MultiProcessCollector``). The
parent makes a fresh private directory before it forks (``enable_multiprocess``),
tells the library when a worker dies (``worker_ended``) and removes the directory
when it stops. A single process (``--workers 1``, the tests' in-process service)
keeps its figures in a registry of its own, one per application.

What describes *shared state* (projection lag, backend states, the job queue) is
not counted here: it is read from the store at scrape time (``web/metrics.py``), so
whichever worker answers tells the same.

Labels stay few: a route is its template (``/groups/{id}``), never the path sent;
an event's type is the domain's (a closed set) or, for events clients state, one of
the first ``LABELS_KEPT`` types this process saw, then ``other``; chain ids alike.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client import multiprocess

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "chainloom-metrics-"  # then the parent's pid: chainloom-metrics-<pid>-<random>
# Distinct values a process labels by name where clients choose them (event types, chain ids); later: "other".
LABELS_KEPT = 100
OTHER = "other"
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"

# Seconds: requests are mostly milliseconds, streams and model calls minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
CHAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_EXTERNAL_TOPIC_SUFFIX = ":ExternalEvent"
# The envelope's own "event_type" comes before its data (``ExternalEvent.envelope``); a quote inside a string
# is escaped, so this cannot match inside one.
_EVENT_TYPE = re.compile(rb'"event_type":"((?:[^"\\]|\\.)*)"')


def multiprocess_directory() -> str | None:
    """The directory the workers of this ``chainloom serve`` count in, or None in a single process."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def enable_multiprocess() -> str:
    """In the parent, before forking: count in a fresh private directory (0700) from now on (and remove those
    of services that were killed before they could).

    prometheus_client picks how values are kept when it is first imported; the web layer imports it before
    the workers are planned, so the choice is made again here, once the directory is set.
    """
    _remove_abandoned()
    directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=_root())
    os.environ[MULTIPROCESS_ENV] = directory
    values.ValueClass = values.get_value_class()
    return directory


def _root() -> str:
    """Memory (``/dev/shm``) where there is: every count writes to a shared file mapping, and on a disk's file
    system keeping those pages written back cost a worker some 7 µs per request (measured: bench_metrics.py)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else tempfile.gettempdir()


def _remove_abandoned() -> None:
    """The directories of services that were killed (``kill -9`` leaves them): their parent no longer runs."""
    for directory in Path(_root()).glob(f"{_PREFIX}*-*"):
        pid = directory.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def disable_multiprocess(directory: str) -> None:
    """In the parent, once its workers have stopped: remove their files."""
    if os.environ.get(MULTIPROCESS_ENV) == directory:
        del os.environ[MULTIPROCESS_ENV]
        values.ValueClass = values.get_value_class()
    shutil.rmtree(directory, ignore_errors=True)


def worker_ended(pid: int) -> None:
    """A worker died: its live gauges (none here today) stop counting; its counters stay in the sums."""
    if multiprocess_directory() is not None:
        multiprocess.mark_process_dead(pid)


class Instruments:
    """The counters and histograms of one process (registered in ``registry``; unregistered in multiprocess
    mode, where the scrape reads every worker's files instead)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        # Requests are counted by the histogram alone (its _count, by status too): in a worker every value
        # written costs a lock and a write to its file, and this runs for every request.
        self.requests = Histogram(
            "chainloom_http_request_duration_seconds",
            "HTTP requests answered (_count) and the time they took (a stream: until it ended), by method,"
            " route template and status.",
            ("method", "route", "status"), registry=registry, buckets=REQUEST_BUCKETS,
        )  # fmt: skip
        self.events = Counter(
            "chainloom_events_appended", "Events this service appended to the log, by type and source.",
            ("type", "source"), registry=registry,
        )  # fmt: skip
        self.chain_runs = Counter(
            "chainloom_chain_runs", "Task chain runs ended, by chain id and outcome (finished, failed, cancelled).",
            ("chain", "outcome"), registry=registry,
        )  # fmt: skip
        self.chain_seconds = Histogram(
            "chainloom_chain_run_duration_seconds", "Time a task chain run took, by chain id.",
            ("chain",), registry=registry, buckets=CHAIN_BUCKETS,
        )  # fmt: skip
        self.trigger_executions = Counter(
            "chainloom_trigger_executions", "Functions run by event triggers and recorded, by outcome.",
            ("outcome",), registry=registry,
        )  # fmt: skip
        self._types = EventTypes()
        self._chains = FirstSeen(LABELS_KEPT)
        self._answers: dict[tuple[str, str, int], Any] = {}  # bounded: route templates, not paths
        self._appended: dict[tuple[str, str], Any] = {}  # bounded: see EventTypes

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._answers.get(key)
        if series is None:  # labels() looks up and checks the labels: done once per (method, route, status)
            series = self._answers[key] = self.requests.labels(method, route, str(status))
        series.observe(seconds)

    def appended(self, stored: Sequence[StoredEvent]) -> None:
        """Count events just stored (called on the log writer's thread)."""
        for event in stored:
            labels = self._types.of(event)
            counter = self._appended.get(labels)
            if counter is None:
                counter = self._appended[labels] = self.events.labels(*labels)
            counter.inc()

    def chain_ended(self, chain_id: str, outcome: str, seconds: float) -> None:
        chain = self._chains.label(chain_id)  # a chain sent with POST /tasks names itself
        self.chain_runs.labels(chain, outcome).inc()
        self.chain_seconds.labels(chain).observe(seconds)

    def trigger_executed(self, outcome: str) -> None:
        self.trigger_executions.labels(outcome).inc()


class EventTypes:
    """An event's (type, source) labels from its stored form, without decoding it: a domain event's type
    from its stream and topic (``backend`` + ``…:Backend.Created`` → ``backend.created``), a stated one's
    from its envelope."""

    def __init__(self) -> None:
        self._internal: dict[tuple[str, str], str] = {}
        self._external = FirstSeen(LABELS_KEPT)

    def of(self, event: StoredEvent) -> tuple[str, str]:
        if event.topic.endswith(_EXTERNAL_TOPIC_SUFFIX):
            return self._stated(event.state), "external"
        aggregate = str(event.originator_id).partition(":")[0]
        key = (aggregate, event.topic)
        name = self._internal.get(key)
        if name is None:
            name = self._internal[key] = f"{aggregate}.{_snake(event.topic.rsplit('.', 1)[-1].rsplit(':', 1)[-1])}"
        return name, "internal"

    def _stated(self, state: bytes) -> str:
        found = _EVENT_TYPE.search(state)
        return OTHER if found is None else self._external.label(found.group(1).decode("utf-8", "replace"))


class FirstSeen:
    """A label from values clients choose: the first ``limit`` distinct ones by name, then ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def process_registry(instruments_registry: CollectorRegistry | None, collectors: Iterable[object]) -> CollectorRegistry:
    """What a scrape of this process reads: its own registry (single process), or every worker's files."""
    if multiprocess_directory() is None:
        assert instruments_registry is not None
        registry = instruments_registry
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry
