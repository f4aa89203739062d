"""Queries of users and access entries: the API's answers, and the grants authorization looks up.

Two shapes of a user are answered (platform notes §2.1): the *user response* of
``/users`` (``friendlyName`` left out when empty) and the *full user* of sign-in
answers and ``/ui/me``, whose ``hashedPassword``, ``recoveryCodeHash`` and
``salt`` are always ``""`` (what existing clients read; the hash never leaves the
server). An access entry answers its permission by name.
"""

from __future__ import annotations

from typing import Any

from chainloom.domain.identity import NOT_FOUND, Grant, Permission
from chainloom.infra.readstore import Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries

Json = dict[str, Any]
# Rows a list answers at most (the reference's bound).
MAX_ROWS = 10_000
_USER_COLUMNS = "id, email, friendly_name, created_at_ns, updated_at_ns"
_ENTRY_COLUMNS = "e.id, e.identity, e.resource, e.resource_type, e.permission, e.created_at_ns, e.updated_at_ns"
# The entry's user, for ``expand=user`` (NULL when the identity is no user's).
_DETAILS_COLUMNS = "u.id AS user_id, u.email AS user_email, u.friendly_name AS user_friendly_name"
_ENTRIES_WITH_USERS = f"SELECT {_ENTRY_COLUMNS}, {_DETAILS_COLUMNS} FROM access_entries e LEFT JOIN users u ON u.id = e.identity"
_NEWEST_FIRST = "ORDER BY created_at_ns DESC, id DESC"


def user_json(row: Row) -> Json:
    """A user as ``/users`` answers it."""
    answer: Json = {"id": row["id"]}
    if row["friendly_name"]:
        answer["friendlyName"] = row["friendly_name"]
    answer |= {
        "email": row["email"],
        "subject": row["id"],
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }
    return answer


def full_user_json(row: Row) -> Json:
    """A user as sign-in answers and ``/ui/me`` give it: every key, the secret ones empty."""
    return {
        "id": row["id"],
        "friendlyName": row["friendly_name"],
        "email": row["email"],
        "subject": row["id"],
        "hashedPassword": "",
        "recoveryCodeHash": "",
        "salt": "",
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }


def entry_json(row: Row) -> Json:
    """An access entry as ``/access-control`` answers it (without details)."""
    return {
        "id": row["id"],
        "identity": row["identity"],
        "resource": row["resource"],
        "resourceType": row["resource_type"],
        "permission": Permission(row["permission"]).label,
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }


def entry_with_user_json(row: Row) -> Json:
    """An access entry with ``identityDetails``, its user's (left out when the identity is no user's)."""
    answer = entry_json(row)
    if row["user_id"] is not None:
        answer["identityDetails"] = {
            "id": row["user_id"],
            "friendlyName": row["user_friendly_name"],
            "email": row["user_email"],
            "subject": row["user_id"],
        }
    return answer


def grant(row: Row) -> Grant:
    return Grant(
        row["id"],
        row["identity"],
        row["resource"],
        row["resource_type"],
        Permission(row["permission"]),
        format_ns(row["created_at_ns"]),
        format_ns(row["updated_at_ns"]),
    )


class IdentityQueries(RememberedQueries):
    namespace = "identity"
    not_found = NOT_FOUND

    # -- authorization ---------------------------------------------------------------

    async def grants(self, identity: str, resource: str) -> list[Grant]:
        """The entries granting ``identity`` something on ``resource`` (any level, none included)."""
        return await self._rows(
            grant,
            f"SELECT {_ENTRY_COLUMNS} FROM access_entries e WHERE e.identity = ? AND e.resource = ?",
            identity,
            resource,
        )

    async def grants_of(self, identity: str) -> list[Grant]:
        """Every entry of ``identity``, oldest first: what a token issued now carries."""
        return await self._rows(
            grant,
            f"SELECT {_ENTRY_COLUMNS} FROM access_entries e WHERE e.identity = ? ORDER BY e.created_at_ns, e.id",
            identity,
        )

    # -- users -------------------------------------------------------------------------

    async def user(self, user_id: str) -> Json:
        return await self._one(user_json, f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", user_id)

    async def full_user(self, user_id: str) -> Json:
        return await self._one(full_user_json, f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", user_id)

    async def users(self, before_ns: int, limit: int = MAX_ROWS) -> list[Json]:
        """Users created before ``before_ns``, newest first."""
        return await self._rows(
            user_json,
            f"SELECT {_USER_COLUMNS} FROM users WHERE created_at_ns < ? {_NEWEST_FIRST} LIMIT ?",
            before_ns,
            limit,
        )

    # -- access entries ----------------------------------------------------------------

    async def entry(self, entry_id: str, with_user: bool = False) -> Json:
        if with_user:
            return await self._one(entry_with_user_json, f"{_ENTRIES_WITH_USERS} WHERE e.id = ?", entry_id)
        return await self._one(entry_json, f"SELECT {_ENTRY_COLUMNS} FROM access_entries e WHERE e.id = ?", entry_id)

    async def entries(self, identity: str | None, before_ns: int, limit: int = MAX_ROWS, with_user: bool = False) -> list[Json]:
        """An identity's entries (all of them), or else the entries created before ``before_ns``; newest first."""
        convert = entry_with_user_json if with_user else entry_json
        select = _ENTRIES_WITH_USERS if with_user else f"SELECT {_ENTRY_COLUMNS} FROM access_entries e"
        order = "ORDER BY e.created_at_ns DESC, e.id DESC"
        if identity is not None:
            return await self._rows(convert, f"{select} WHERE e.identity = ? {order} LIMIT ?", identity, limit)
        return await self._rows(convert, f"{select} WHERE e.created_at_ns < ? {order} LIMIT ?", before_ns, limit)
