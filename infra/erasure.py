"""Erasing events from the log (``DELETE /events/type``, for GDPR), on SQLite and PostgreSQL.

The log is append-only everywhere else; this is its one exception. The audit
event is appended *first*, in the same transaction as the deletion: it gets a
position above every erased one, so SQLite (whose positions are rowids) never
hands an erased position out again, and a follower that had not yet read the
erased events simply never sees them. Copies already relayed to Kafka are not
recalled: consumers learn of the erasure from the audit event.

The hash chain (``infra.seals``) keeps the erased: every position up to the
erased ones is sealed first, in the same transaction and under the chain lock
the sealer takes, and the erased events' seals stay as tombstones naming the
audit event, so ``chainloom audit verify`` passes through them and reports them.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventsourcing.persistence import StoredEvent

from chainloom.infra import seals
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import SqlCursor

_CHUNK = 500


def erase(log: EventLog, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    """Append ``audit`` and delete the events at ``positions`` in one transaction; the audit's positions."""
    recorder = log.recorder
    seals.ensure(log)
    with seals.sealing_lock(log):
        if hasattr(recorder, "lock_table_statements"):  # PostgreSQL
            return _erase_postgres(log, recorder, positions, audit)
        return _erase_sqlite(log, recorder, positions, audit)


def _chunks(positions: Sequence[int]) -> list[list[int]]:
    ordered = sorted(positions)
    return [ordered[i : i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]


def _erase_sqlite(log: EventLog, recorder, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    with recorder.datastore.transaction(commit=True) as cursor:
        audit_positions = list(recorder._insert_events(cursor, audit))  # a write first: the transaction's lock
        if positions:
            seals.seal_in(SqlCursor(cursor, "?"), log, max(positions))
        for chunk in _chunks(positions):
            marks = ",".join("?" for _ in chunk)
            cursor.execute(f"DELETE FROM {recorder.events_table_name} WHERE rowid IN ({marks})", chunk)
        if positions:
            seals.mark_erased(SqlCursor(cursor, "?"), positions, max(audit_positions))
    return audit_positions


def _erase_postgres(log: EventLog, recorder, positions: Sequence[int], audit: Sequence[StoredEvent]) -> list[int]:
    from psycopg.sql import SQL, Identifier

    delete = SQL("DELETE FROM {0}.{1} WHERE notification_id = ANY(%s)").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    with recorder.datastore.transaction(commit=True) as cursor:
        sealing = SqlCursor(cursor, "%s")
        seals.lock_chain(sealing, log)  # before the table lock: the sealer holds it without taking that one
        if positions:
            seals.seal_in(sealing, log, max(positions))
        # Takes the table lock every writer of the log takes, then inserts.
        recorder._insert_stored_events(cursor, audit)
        audit_positions = list(recorder._fetch_ids_after_insert_events(cursor, audit))
        for chunk in _chunks(positions):
            cursor.execute(delete, (chunk,))
        if positions:
            seals.mark_erased(sealing, positions, max(audit_positions))
    return audit_positions
