"""Read model of users and access entries (``users``, ``access_entries``): one row per live one.

No secret reaches it: the events carry none (a user's hash is kept beside the
log, ``infra.credentials``). Sign-ins and a user's attachments
(``user.access_attached`` …) change no row: the entries' own events say the
same. Entries are indexed by identity and resource, the look-up authorization
makes for every request whose token says nothing of a resource.
"""

from __future__ import annotations

from typing import Any

from chainloom.domain.identity import AccessEntry, Permission, User
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


def _entry_fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """identity, resource, resource_type, permission (the column order; the level as its number)."""
    return data["identity"], data["resource"], data["resourceType"], int(Permission[data["permission"].upper()])


class IdentityProjector(Projector):
    name = "identity"
    tables = ("users", "access_entries")
    schema = (
        "CREATE TABLE IF NOT EXISTS {users} ("
        " id TEXT PRIMARY KEY, email TEXT NOT NULL, friendly_name TEXT NOT NULL,"
        " created_at_ns BIGINT NOT NULL, updated_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {users_created} ON {users} (created_at_ns, id)",
        "CREATE TABLE IF NOT EXISTS {access_entries} ("
        " id TEXT PRIMARY KEY, identity TEXT NOT NULL, resource TEXT NOT NULL, resource_type TEXT NOT NULL,"
        " permission INTEGER NOT NULL, created_at_ns BIGINT NOT NULL, updated_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {access_entries_created} ON {access_entries} (created_at_ns, id)",
        "CREATE INDEX IF NOT EXISTS {access_entries_identity} ON {access_entries} (identity, resource)",
    )

    @on(User.Registered, User.Recreated)
    def user_registered(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {users} (id, email, friendly_name, created_at_ns, updated_at_ns) VALUES (?, ?, ?, ?, ?)",
            (event["aggregate_id"], data["email"], data["friendlyName"], _at(event), _at(event)),
        )

    @on(User.Updated)
    def user_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {users} SET email = ?, friendly_name = ?, updated_at_ns = ? WHERE id = ?",
            (data["email"], data["friendlyName"], _at(event), event["aggregate_id"]),
        )

    @on(User.Deleted)
    def user_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {users} WHERE id = ?", (event["aggregate_id"],))

    @on(AccessEntry.Granted, AccessEntry.Regranted)
    def entry_granted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {access_entries} (identity, resource, resource_type, permission, id, created_at_ns,"
            " updated_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_entry_fields(event["data"]), event["aggregate_id"], _at(event), _at(event)),
        )

    @on(AccessEntry.Changed)
    def entry_changed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {access_entries} SET identity = ?, resource = ?, resource_type = ?, permission = ?,"
            " updated_at_ns = ? WHERE id = ?",
            (*_entry_fields(event["data"]), _at(event), event["aggregate_id"]),
        )

    @on(AccessEntry.Revoked)
    def entry_revoked(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {access_entries} WHERE id = ?", (event["aggregate_id"],))
