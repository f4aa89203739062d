"""The index of unique values (``domain.uniqueness``): who holds what, kept beside the log and written with it.

Table ``unique_values`` in the log's database maps ``(scope, value)`` — its
primary key — to the stream of the aggregate holding it. A change of what an
aggregate holds is written in the transaction that appends the aggregate's
events (``record``), after the events (on PostgreSQL, after the log's table
lock, so appenders never wait on each other's rows in two orders): a value
that another aggregate holds makes the database refuse the whole transaction,
and the log writer decides again, one command at a time.

The index is derived from the aggregates, so a log without it (written before
it existed) gets it built from its aggregates, in the transaction that
creates the table, at the first start (``ensure``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.domain.backends import Backend
from chainloom.domain.documents import File, Folder
from chainloom.domain.base import Aggregate
from chainloom.domain.groups import AffinityGroup
from chainloom.domain.hooks import RemoteHook
from chainloom.domain.identity import User
from chainloom.domain.models import Model
from chainloom.domain.telegram import TelegramFrontend
from chainloom.infra.readstore import SqlCursor

# The aggregates that hold unique values (a unit test checks that none is missing).
HOLDERS: tuple[type[Aggregate], ...] = (Backend, Model, AffinityGroup, RemoteHook, User, File, Folder, TelegramFrontend)

TABLE = "unique_values"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " scope TEXT NOT NULL, value TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (scope, value))",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_owner ON {TABLE} (owner)",
)


@dataclass(frozen=True)
class Holding:
    """``owner`` (a stream id) takes (``held``) or gives up a value of ``scope``."""

    scope: str
    value: str
    owner: str
    held: bool


def changes(owner: str, before: Mapping[str, str], after: Mapping[str, str]) -> list[Holding]:
    """What ``owner`` gives up and takes when its unique values go from ``before`` to ``after``."""
    return [Holding(scope, value, owner, False) for scope, value in before.items() if after.get(scope) != value] + [
        Holding(scope, value, owner, True) for scope, value in after.items() if before.get(scope) != value
    ]


def record(cursor: SqlCursor, holdings: Iterable[Holding]) -> None:
    """Write ``holdings`` in order, in the cursor's transaction (a value held by another: IntegrityError)."""
    for holding in holdings:
        if holding.held:
            cursor.execute(
                f"INSERT INTO {TABLE} (scope, value, owner) VALUES (?, ?, ?)",
                (holding.scope, holding.value, holding.owner),
            )
        else:
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE scope = ? AND value = ? AND owner = ?",
                (holding.scope, holding.value, holding.owner),
            )


class _Log(Protocol):
    def get(self, aggregate_class: type[Any], key: str) -> Any: ...


def ensure(cursor: SqlCursor, exists: bool, log: _Log, streams: Any) -> None:
    """Create the index in the cursor's transaction if it does not ``exist``, with the values of every
    aggregate in the log (``streams(prefix)``: the stream ids that start with it)."""
    if exists:
        return
    for statement in _SCHEMA:
        cursor.execute(statement)
    for holder in HOLDERS:
        for stream_id in streams(f"{holder.aggregate_type}:"):
            key = stream_id.split(":", 1)[1]
            aggregate = log.get(holder, key)
            if aggregate is not None:
                record(cursor, changes(stream_id, {}, aggregate.unique_values()))
