"""Idempotency keys: a write retried under the same key is stored once, whatever became of its answer.

A key's row lives in the log's own database (``idempotency_keys``, beside the
events), and the row is marked *stored* **in the transaction that appends the
events written under the key**: a keyed request's appends are fenced by its
``Attempt`` (``infra.logwriter.appending_under``), which the log's recorder
checks in the append's transaction, as the library's process recorder writes
its tracking record in the events' transaction. So "did my first attempt count?" is answered by the
log itself — no crash leaves events stored under a key whose row does not say
so, nor a row saying so without its events.

A row is in one of three states:

- ``running``: an attempt holds the key (``token``) and may still write; it
  renews its lease (``held_until``) while it runs. A retry finding the lease
  run out (the holder's process died before writing anything) takes the key
  over with a new token; the old attempt's append, should it still come, then
  fails whole (``KeySuperseded``): nothing of it is stored.
- ``stored``: the attempt's events are in the log; its answer is not recorded
  yet (it waits for the read models). The holder keeps renewing its lease while
  it waits; a lease that ran out means no answer will ever be recorded.
- ``answered``: the status, headers and body to give every retry.

Rows are kept ``window`` seconds from their creation, then deleted (and the key
may be used again). All methods block: call them from a worker thread.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.postgres import PostgresRecorder

from chainloom.infra.eventlog import EventLog, FenceRefused
from chainloom.infra.logwriter import appending_under
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.schema import schema_lock

# How long an attempt holds its key without renewing (its process may have died), and how often it renews.
LEASE = 10.0
RENEW_EVERY = LEASE / 4

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS idempotency_keys ("
    " scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, token TEXT NOT NULL,"
    " state TEXT NOT NULL, held_until DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
    " status INTEGER, headers TEXT, body TEXT, PRIMARY KEY (scope, key))",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at)",
)
_COLUMNS = "scope, key, fingerprint, token, state, held_until, expires_at, status, headers, body"
_TAG = "_chainloom_idempotency"


class KeySuperseded(FenceRefused):
    """An attempt's key was taken over by a retry: its append is refused whole (nothing is stored)."""


@dataclass(eq=False)
class Attempt:
    """One request's hold on a key, and the fence of its appends (``infra.logwriter``): an append is
    stored only while the key is still this attempt's, and marks it stored in the same transaction.
    ``stored`` turns true once an append under it has committed."""

    scope: str
    key: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    stored: bool = False
    superseded: bool = False

    def check(self, cursor: SqlCursor) -> None:
        cursor.execute(
            "UPDATE idempotency_keys SET state = 'stored'"
            " WHERE scope = ? AND key = ? AND token = ? AND state <> 'answered' RETURNING token",
            (self.scope, self.key, self.token),
        )
        if cursor.fetchone() is None:
            self.superseded = True
            raise KeySuperseded(f"the Idempotency-Key {self.key!r} was taken over by a retry")

    def committed(self) -> None:
        self.stored = True


@dataclass(frozen=True)
class KeyRow:
    """A key as another attempt left it."""

    state: str
    fingerprint: str
    held_until: float
    status: int | None
    headers: dict[str, str]
    body: bytes

    def holder_alive(self, now: float) -> bool:
        return self.held_until > now


class IdempotencyKeys:
    """The keys of one log (the table beside its events)."""

    def __init__(self, log: EventLog, window: float, clock=time.time) -> None:
        self._recorder = log.recorder
        self._placeholder = "%s" if _is_postgres(log.recorder) else "?"
        self.window = window
        self._clock = clock

    @classmethod
    def open(cls, log: EventLog, env: dict[str, str], window: float) -> IdempotencyKeys:
        keys = cls(log, window)
        with schema_lock(env), keys._transaction() as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement)
        return keys

    # -- the attempt of a request ------------------------------------------------

    @staticmethod
    @contextmanager
    def attempting(attempt: Attempt) -> Iterator[None]:
        """While the request runs (in this context), the appends it makes are fenced by ``attempt``."""
        token = appending_under.set(attempt)
        try:
            yield
        finally:
            appending_under.reset(token)

    # -- rows --------------------------------------------------------------------

    def claim(self, scope: str, key: str, fingerprint: str) -> Attempt | KeyRow:
        """Hold the key for a new attempt — or take it over from a dead one that wrote nothing — or else
        the row as it is (the request was made before, or is being made now)."""
        now = self._clock()
        attempt = Attempt(scope, key)
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND expires_at <= ?", (scope, key, now))
            cursor.execute(
                f"INSERT INTO idempotency_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, 'running', ?, ?, NULL, NULL, NULL)"
                " ON CONFLICT (scope, key) DO NOTHING",
                (scope, key, fingerprint, attempt.token, now + LEASE, now + self.window),
            )
            cursor.execute(f"SELECT {_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
            row = cursor.fetchone()
            assert row is not None
            if row["token"] == attempt.token:
                return attempt
            if row["fingerprint"] == fingerprint and row["state"] == "running" and row["held_until"] <= now:
                cursor.execute(
                    "UPDATE idempotency_keys SET token = ?, held_until = ?"
                    " WHERE scope = ? AND key = ? AND token = ? AND state = 'running' RETURNING token",
                    (attempt.token, now + LEASE, scope, key, row["token"]),
                )
                if cursor.fetchone() is not None:
                    return attempt
                cursor.execute(f"SELECT {_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
                row = cursor.fetchone()
                assert row is not None
        return _key_row(row)

    def look(self, scope: str, key: str) -> KeyRow | None:
        with self._transaction(commit=False) as cursor:
            cursor.execute(f"SELECT {_COLUMNS} FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
            row = cursor.fetchone()
        return None if row is None else _key_row(row)

    def renew(self, attempt: Attempt) -> None:
        self._update(attempt, "held_until = ?", self._clock() + LEASE)

    def answer(self, attempt: Attempt, status: int, headers: dict[str, str], body: bytes) -> None:
        """Record the answer every retry gets (the attempt lets go of the key)."""
        self._update(
            attempt,
            "state = 'answered', held_until = 0, status = ?, headers = ?, body = ?",
            status,
            json.dumps(headers),
            base64.b64encode(body).decode(),
        )

    def give_up(self, attempt: Attempt) -> None:
        """The attempt ends without an answer to record: a stored one stays stored (unanswered)."""
        self._update(attempt, "held_until = 0")

    def release(self, attempt: Attempt) -> None:
        """Forget the key, if nothing was stored under it: a retry runs the request afresh."""
        with self._transaction() as cursor:
            cursor.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND token = ? AND state = 'running'",
                (attempt.scope, attempt.key, attempt.token),
            )

    def clean(self) -> None:
        """Delete the keys kept past the window (not one an attempt still holds)."""
        now = self._clock()
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM idempotency_keys WHERE expires_at <= ? AND held_until <= ?", (now, now))

    def _update(self, attempt: Attempt, assignments: str, *values: Any) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                f"UPDATE idempotency_keys SET {assignments} WHERE scope = ? AND key = ? AND token = ?",
                (*values, attempt.scope, attempt.key, attempt.token),
            )

    @contextmanager
    def _transaction(self, *, commit: bool = True) -> Iterator[SqlCursor]:
        with self._recorder.datastore.transaction(commit=commit) as raw:  # type: ignore[attr-defined]
            yield SqlCursor(raw, self._placeholder)


def _key_row(row: dict[str, Any]) -> KeyRow:
    return KeyRow(
        state=row["state"],
        fingerprint=row["fingerprint"],
        held_until=float(row["held_until"]),
        status=row["status"],
        headers=json.loads(row["headers"]) if row["headers"] else {},
        body=base64.b64decode(row["body"]) if row["body"] else b"",
    )


def _is_postgres(recorder: Any) -> bool:
    return isinstance(recorder, PostgresRecorder)
