"""One way for every process to open what it needs: the log, the read store, the secrets.

The API workers, the Kafka relay, the projector worker, the rebuild, the
operator commands and the tests all open their resources here, from the one
settings object. Each resource's cleanup is registered the moment it is
opened, so a start-up that fails half-way (a bad secrets key, PostgreSQL or
the broker out of reach) closes exactly what it had opened, in reverse order,
and a process that ends closes everything the same way. A process adds its own
resources (a Kafka consumer, a thread pool) to the same stack with
``Resources.closing`` or ``Resources.on_close``.

Everything here blocks: an async process enters ``open_resources`` in a worker
thread (see ``web/app.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chainloom.infra.envelope import EnvelopeMapper
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import ReadStore, open_read_store
from chainloom.infra.secrets import SecretBox, open_secret_box
from chainloom.infra.settings import Settings

T = TypeVar("T")


class NotOpened(Exception):
    """A resource was asked for that this process did not open."""


@dataclass
class Resources:
    """What a process opened; closed together, in reverse order of opening."""

    settings: Settings
    _log: EventLog | None = None
    _store: ReadStore | None = None
    secrets: SecretBox | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def log(self) -> EventLog:
        if self._log is None:
            raise NotOpened("this process did not open the log")
        return self._log

    @property
    def store(self) -> ReadStore:
        if self._store is None:
            raise NotOpened("this process did not open the read store")
        return self._store

    def closing(self, resource: T, close: Callable[[T], Any]) -> T:
        """Register ``close(resource)`` to run when the process's resources close; returns the resource."""
        self._stack.callback(close, resource)
        return resource

    def on_close(self, callback: Callable[[], Any]) -> None:
        self._stack.callback(callback)


@contextmanager
def open_resources(
    settings: Settings, *, log: bool = True, read_store: bool = True, secrets: bool = False
) -> Iterator[Resources]:
    """Open the named resources from ``settings``; close them (and whatever was added) on exit or failure."""
    resources = Resources(settings)
    with resources._stack:
        if not settings.uses_postgres:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        if log:
            mapper = EnvelopeMapper(max_event_bytes=settings.max_event_bytes)
            resources._log = resources.closing(EventLog(settings.event_store_env(), mapper), EventLog.close)
        if read_store:
            store, factory = open_read_store(settings.read_store_env())
            resources.on_close(factory.close)
            resources._store = store
        if secrets:
            # The configured key, or (embedded) a key file beside the SQLite files.
            key_file = None if settings.uses_postgres else settings.data_dir / "secrets.key"
            resources.secrets = open_secret_box(settings.secrets_key, key_file)
        yield resources
