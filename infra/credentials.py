"""Password hashes, kept beside the log rather than on it.

The log is relayed to Kafka and read by anyone the events API serves; a hash
there would be a hash handed out. So a user's hash lives in one table of the
log's database, ``credentials(user_id, hash)``, and is written *in the
transaction that appends the user's event* (``CredentialFence``, carried by the
append as ``infra.dispatch_log.DispatchFence`` is): a registration, a password
change or a deletion stores its event and its credential together, or neither.
A user without a row has no password: direct sign-in is disabled for it.

The table is not derived from the log, so a rebuild of the read models leaves
it as it is. All methods block: call them from a worker thread.
"""

from __future__ import annotations

from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import SqlCursor

TABLE = "credentials"
SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (user_id TEXT PRIMARY KEY, hash TEXT NOT NULL)",)


class CredentialFence:
    """Sets a user's hash (or removes it: ``hash`` None) in the transaction of the append it is carried by
    (``infra.eventlog.Fence``); it never refuses the append."""

    def __init__(self, user_id: str, hash: str | None) -> None:
        self._user_id = user_id
        self._hash = hash

    def check(self, cursor: SqlCursor) -> None:
        if self._hash is None:
            cursor.execute(f"DELETE FROM {TABLE} WHERE user_id = ?", (self._user_id,))
        else:
            cursor.execute(
                f"INSERT INTO {TABLE} (user_id, hash) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash",
                (self._user_id, self._hash),
            )

    def committed(self) -> None:
        pass

    def __repr__(self) -> str:
        # Never the hash, should a fence be logged with the append it failed.
        return f"CredentialFence(user_id={self._user_id!r}, sets={self._hash is not None})"


class Credentials:
    """The credentials of one log."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def ensure(self) -> None:
        """Create the table if missing (idempotent, any process): before anything appends with a fence."""
        self._log.ensure_tables(SCHEMA)

    def hash_of(self, user_id: str) -> str | None:
        """The user's hash, or None when it has no password."""
        with self._log.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT hash FROM {TABLE} WHERE user_id = ?", (user_id,))
            row = cursor.fetchone()
        return str(row["hash"]) if row else None
