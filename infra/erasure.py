"""Erasing events from the log (``DELETE /events/type``, for GDPR), on SQLite and PostgreSQL.

The log is append-only everywhere else; this is its one exception. The audit
event is appended *first*, in the same transaction as the deletion: it gets a
position above every erased one, so SQLite (whose positions are rowids) never
hands an erased position out again, and a follower that had not yet read the
erased events simply never sees them. Copies already relayed to Kafka are not
recalled: consumers learn of the erasure from the audit event.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import StoredEvent

from chainloom.infra.eventlog import EventLog

_CHUNK = 500


def erase(log: EventLog, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    """Append ``audit`` and delete the events at ``positions`` in one transaction; the audit's positions."""
    recorder = log.recorder
    if hasattr(recorder, "lock_table_statements"):  # PostgreSQL
        return _erase_postgres(recorder, positions, audit)
    return _erase_sqlite(recorder, positions, audit)


def _chunks(positions: Sequence[int]) -> list[list[int]]:
    ordered = sorted(positions)
    return [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]


def _erase_sqlite(recorder, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    with recorder.datastore.transaction(commit=True) as cursor:
        audit_positions = list(recorder._insert_events(cursor, audit))
        for chunk in _chunks(positions):
            marks = ",".join("?" for _ in chunk)
            cursor.execute(f"DELETE FROM {recorder.events_table_name} WHERE rowid IN ({marks})", chunk)
    return audit_positions


def _erase_postgres(recorder, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    from psycopg.sql import SQL, Identifier

    delete = SQL("DELETE FROM {0}.{1} WHERE notification_id = ANY(%s)").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    with recorder.datastore.transaction(commit=True) as cursor:
        # Takes the table lock every writer of the log takes, then inserts.
        recorder._insert_stored_events(cursor, audit)
        audit_positions = list(recorder._fetch_ids_after_insert_events(cursor, audit))
        for chunk in _chunks(positions):
            cursor.execute(delete, (chunk,))
    return audit_positions
