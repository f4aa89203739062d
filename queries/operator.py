"""What an operator watches: where each projection and the Kafka relay have got to in the log, and why one stopped.

Not a read model: positions, faults and the relay's tracking are the read
store's (and the relay's) own bookkeeping, read as they are now, so the answer
is right even while every projector is stopped. The functions block (call them
on a thread pool): ``GET /projections`` and ``GET /relay`` (``web.operator``)
run them through ``OperatorQueries``, and anything else that reports the same
figures (``/metrics``) may call them as they are.

A lag is the number of log positions not yet applied (or published): positions
are read before the head, so a lag is never negative.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from chainloom.domain.downloads import RUNNING
from chainloom.domain.jobs import LEASED, PARKED, PENDING
from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_relay import relay_tracking_env
from chainloom.infra.readstore import Fault, ReadStore, storable_text
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import format_ns
from chainloom.projections.downloads import PROGRESS_TABLE

# The most of a relay error an answer shows (the log has it whole).
_MAX_ERROR_TEXT = 500
# user:password@ in a URL an error message quotes (a broker's or a database's).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


@cache
def projection_names() -> tuple[str, ...]:
    """Every projection, in the order the runner applies them (what ``chainloom projections list`` prints)."""
    from chainloom.projections.rebuild import projector_names  # the projectors import the query modules

    return tuple(projector_names())


# -- projections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionState:
    """A projection's position (the last ``nid`` it applied or passed), the log's head, and its fault if it has one."""

    name: str
    position: int
    head: int
    fault: Fault | None

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "fault": None if self.fault is None else self.fault.public(),
        }


def projection_states(store: ReadStore, log: EventLog, names: Sequence[str] | None = None) -> list[ProjectionState]:
    """Each named projection's state (all when None), positions and faults read in one transaction."""
    names = list(names) if names is not None else list(projection_names())
    with store.transaction(commit=False) as cursor:
        positions = store.positions(cursor, names)
        faults = store.faults(cursor, names)
    head = log.head()
    return [ProjectionState(name, positions[name], head, faults.get(name)) for name in names]


# -- the Kafka relay --------------------------------------------------------------------------------


class RunningRelay(Protocol):
    """A relay this process runs (``infra.kafka_relay.RelayService``), active or standing by."""

    @property
    def holding(self) -> bool: ...

    @property
    def last_error(self) -> tuple[float, str] | None: ...


@dataclass(frozen=True)
class RelayError:
    at: float  # seconds since the epoch
    message: str

    def public(self) -> dict[str, Any]:
        return {"message": self.message, "at": format_ns(int(self.at * 1e9))}


@dataclass(frozen=True)
class RelayState:
    """``configured``: Kafka is (``CHAINLOOM_KAFKA_BOOTSTRAP``); ``position``: the last ``nid`` the broker
    acknowledged (as tracked, by whichever process relays); ``here``/``publishing``/``last_error``: this
    process's relay, if it runs one."""

    configured: bool
    topic: str | None
    position: int | None
    head: int
    here: bool
    publishing: bool
    last_error: RelayError | None

    @property
    def lag(self) -> int | None:
        return None if self.position is None else max(0, self.head - self.position)

    def public(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "topic": self.topic,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "runsHere": self.here,
            "publishing": self.publishing,
            "lastError": None if self.last_error is None else self.last_error.public(),
        }


def relay_position(settings: Settings, store: ReadStore) -> int:
    """Where the relay of the configured topic has got to: its tracked position (0 before its first publish).

    On PostgreSQL it tracks in the read store's table (the same database); with SQLite in a file of its own
    (``relay.sqlite``, ``infra.kafka_relay.relay_tracking_env``), read here without writing to it."""
    name = f"kafka-relay:{settings.kafka_events_topic}"
    if settings.uses_postgres:
        with store.transaction(commit=False) as cursor:
            return store.positions(cursor, [name])[name]
    path = Path(relay_tracking_env(settings)["SQLITE_DBNAME"]).resolve()
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.OperationalError:
        return 0  # no relay has run yet
    try:
        row = connection.execute(
            "SELECT MAX(notification_id) FROM tracking WHERE application_name = ?", (name,)
        ).fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return 0
        raise
    finally:
        connection.close()
    return int(row[0] or 0)


def relay_state(settings: Settings, store: ReadStore, log: EventLog, running: RunningRelay | None = None) -> RelayState:
    """The relay as an operator sees it; ``running``: the relay of this process, if it runs one."""
    if not settings.kafka_enabled:
        return RelayState(False, None, None, log.head(), False, False, None)
    position = relay_position(settings, store)
    head = log.head()
    failure = running.last_error if running is not None else None
    last_error = None if failure is None else RelayError(failure[0], public_error(failure[1]))
    return RelayState(
        True, settings.kafka_events_topic, position, head, running is not None,
        running is not None and running.holding, last_error,
    )  # fmt: skip


def public_error(message: str) -> str:
    """An error's text as an answer may show it: credentials of any URL it quotes masked, bounded."""
    return storable_text(_URL_CREDENTIALS.sub(r"\1***@", message), _MAX_ERROR_TEXT)


# -- backends, pulls and jobs (the gauges of /metrics) ----------------------------------------------


@dataclass(frozen=True)
class RunningPull:
    model: str
    backend: str  # its name ("-" when the backend is gone)
    completed: int  # bytes of the current layer
    total: int


# Download progress lines looked at (the table keeps its newest ~1000; a pull writes a few a second).
_PROGRESS_LINES = 1000


def backend_observations(store: ReadStore) -> list[tuple[str, str]]:
    """Each backend's name and observed state: ``up``, ``error`` or ``unobserved`` (not looked at yet)."""
    rows = store.query(
        "SELECT b.name, s.error, s.backend_id AS observed FROM backends b LEFT JOIN backend_states s ON s.backend_id = b.id"
    )
    return [(row["name"], "unobserved" if row["observed"] is None else ("error" if row["error"] else "up")) for row in rows]


def running_pulls(store: ReadStore) -> list[RunningPull]:
    """The pulls running now, each with the newest progress line its job wrote."""
    running = store.query(
        "SELECT d.model, d.base_url, b.name FROM downloads d LEFT JOIN backends b ON b.id = d.backend_id WHERE d.state = ?",
        (RUNNING,),
    )
    if not running:
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in store.query(f"SELECT line FROM {PROGRESS_TABLE} ORDER BY seq DESC LIMIT {_PROGRESS_LINES}"):
        line = json.loads(row["line"])
        latest.setdefault((line.get("model", ""), line.get("baseUrl", "")), line)
    pulls = []
    for row in running:
        line = latest.get((row["model"], row["base_url"]), {})
        pulls.append(RunningPull(row["model"], row["name"] or "-", line.get("completed", 0), line.get("total", 0)))
    return pulls


def job_depths(store: ReadStore) -> list[tuple[str, str, int]]:
    """Open jobs counted by type and state (``pending``, ``in_progress``, ``parked``)."""
    rows = store.query("SELECT task_type, state, COUNT(*) AS n FROM jobs GROUP BY task_type, state")
    return [(row["task_type"], _JOB_STATES.get(str(row["state"]), str(row["state"])), row["n"]) for row in rows]


def oldest_leases(store: ReadStore) -> list[tuple[str, int]]:
    """Per job type with a held lease: when (ns since the epoch) the oldest held lease was taken."""
    rows = store.query("SELECT task_type, MIN(updated_at_ns) AS since FROM jobs WHERE state = ? GROUP BY task_type", (LEASED,))
    return [(row["task_type"], int(row["since"])) for row in rows]


_JOB_STATES = {PENDING: "pending", LEASED: "in_progress", PARKED: "parked"}


# -- for the web layer -------------------------------------------------------------------------------


class OperatorQueries:
    """The functions above through the app's thread pool, on the app's own log and read store."""

    def __init__(
        self,
        settings: Settings,
        store: ReadStore,
        log: EventLog,
        run_blocking: Callable[..., Awaitable[Any]],
        relay: Callable[[], RunningRelay | None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._log = log
        self._run_blocking = run_blocking
        self._relay = relay

    async def projections(self, names: Sequence[str] | None = None) -> list[ProjectionState]:
        states: list[ProjectionState] = await self._run_blocking(projection_states, self._store, self._log, names)
        return states

    async def relay(self) -> RelayState:
        state: RelayState = await self._run_blocking(relay_state, self._settings, self._store, self._log, self._relay())
        return state
