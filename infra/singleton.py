"""Singleton jobs: one holder at a time across processes, and fail-over when it dies.

Work that is not request-bound (the projection runner, the Kafka relay, and
later every background loop) must run in exactly one process at a time. The
store provides the lock, and the operating system or the database releases it
when its holder dies, however it dies (kill -9 included):

- SQLite (one machine): an exclusive ``flock`` on a file beside the data;
- PostgreSQL: a session advisory lock on a connection of its own.

A job tries ``acquire()`` at each step; a process that does not get it stands
by and tries again, so a standby takes over within one attempt interval of the
holder's death.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any, Protocol

from chainloom.infra.settings import Settings


class Lock(Protocol):
    def acquire(self) -> bool:
        """True while this process holds the lock (taking it if it is free)."""

    def release(self) -> None: ...


class FileLock:
    """Held while this process has the file locked (SQLite: every process on one machine)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# The server probes an idle lock connection after 2 s and drops it after 3 unanswered probes a second apart:
# a holder whose machine vanished (no FIN, unlike a killed process) frees the lock within about 5 s, not
# after the operating system's default of two hours.
_KEEPALIVES = (
    "SELECT set_config('tcp_keepalives_idle', '2', false), set_config('tcp_keepalives_interval', '1', false),"
    " set_config('tcp_keepalives_count', '3', false)"
)


class AdvisoryLock:
    """A PostgreSQL session advisory lock on a connection of its own (released when the session ends)."""

    def __init__(self, url: str, key: str) -> None:
        self._url = url
        self._key = key
        self._conn: Any = None

    def acquire(self) -> bool:
        if self._conn is not None and not (self._conn.closed or self._conn.broken):
            return True
        self.release()
        import psycopg

        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        try:
            conn.execute(_KEEPALIVES)
        except psycopg.Error:  # a server or proxy that refuses them: the lock works, only slower to free
            pass
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._key,)).fetchone()
        if not row or not row[0]:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class Throttled:
    """A lock that a standby tries to take at most once per ``interval`` seconds (a PostgreSQL attempt
    costs a connection); the holder keeps answering at once."""

    def __init__(self, lock: Lock, interval: float) -> None:
        self._lock = lock
        self._interval = interval
        self._held = False
        self._next_try = 0.0

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> bool:
        now = time.monotonic()
        if not self._held and now < self._next_try:
            return False
        self._held = self._lock.acquire()
        if not self._held:
            self._next_try = now + self._interval
        return self._held

    def release(self) -> None:
        self._lock.release()
        self._held = False


def singleton_lock(settings: Settings, job: str) -> FileLock | AdvisoryLock:
    """The lock of a singleton job (``projections``, ``kafka-relay:<topic>`` …) on the configured store."""
    if settings.uses_postgres:
        return AdvisoryLock(settings.database_url, f"chainloom-{job}")
    return FileLock(settings.data_dir / f"{job}.lock")
