"""Queries of functions and event triggers: the API's answers, and the listeners the dispatcher runs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from chainloom.domain.functions import NOT_FOUND
from chainloom.infra.readstore import Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries
from chainloom.queries.pagination import Page

Json = dict[str, Any]
_FUNCTION_COLUMNS = "name, description, script_type, script, created_at_ns, updated_at_ns"
_TRIGGER_COLUMNS = (
    "name, description, listen_type, listen_source, trigger_type, function, created_at_ns, updated_at_ns"
)
_NEWEST_FIRST = "ORDER BY created_at_ns DESC, name DESC"
# Event types asked about in one statement at most (the stores bound the parameters of one).
_TYPES_PER_QUERY = 500


def function_json(row: Row) -> Json:
    """A function as the API answers it."""
    return {
        "name": row["name"],
        "description": row["description"],
        "scriptType": row["script_type"],
        "script": row["script"],
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }


def trigger_json(row: Row) -> Json:
    """An event trigger as the API answers it; ``listenFor.source`` "" listens to every source."""
    return {
        "name": row["name"],
        "description": row["description"],
        "listenFor": {"type": row["listen_type"], "source": row["listen_source"]},
        "type": row["trigger_type"],
        "function": row["function"],
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }


@dataclass(frozen=True)
class Listener:
    """A trigger with the script of its function: what the dispatcher runs for an event it listens for."""

    trigger: str
    function: str
    script: str
    source: str  # "" = any event_source
    active_from: int  # nid of the trigger's (re)creation event: it fires only for later events
    created_at_ns: int  # the trigger's createdAt


def _listener(row: Row) -> Listener:
    return Listener(
        row["name"], row["function"], row["script"], row["listen_source"], row["active_from"], row["created_at_ns"]
    )


class FunctionQueries(RememberedQueries):
    namespace = "functions"
    not_found = NOT_FOUND

    async def function(self, name: str) -> Json:
        return await self._one(function_json, f"SELECT {_FUNCTION_COLUMNS} FROM functions WHERE name = ?", name)

    async def functions(self, page: Page) -> list[Json]:
        """A page of functions, newest first."""
        return await self._rows(
            function_json,
            f"SELECT {_FUNCTION_COLUMNS} FROM functions WHERE created_at_ns < ? {_NEWEST_FIRST} LIMIT ?",
            page.before_ns,
            page.limit,
        )

    async def trigger(self, name: str) -> Json:
        return await self._one(trigger_json, f"SELECT {_TRIGGER_COLUMNS} FROM event_triggers WHERE name = ?", name)

    async def triggers(self, page: Page) -> list[Json]:
        """A page of triggers, newest first."""
        return await self._rows(
            trigger_json,
            f"SELECT {_TRIGGER_COLUMNS} FROM event_triggers WHERE created_at_ns < ? {_NEWEST_FIRST} LIMIT ?",
            page.before_ns,
            page.limit,
        )

    async def triggers_listening_for(self, event_type: str) -> list[Json]:
        """Every trigger whose ``listenFor.type`` is ``event_type`` (exactly), newest first."""
        return await self._rows(
            trigger_json,
            f"SELECT {_TRIGGER_COLUMNS} FROM event_triggers WHERE listen_type = ? {_NEWEST_FIRST}",
            event_type,
        )

    async def triggers_of_function(self, function: str) -> list[Json]:
        """Every trigger that runs ``function``, newest first."""
        return await self._rows(
            trigger_json,
            f"SELECT {_TRIGGER_COLUMNS} FROM event_triggers WHERE function = ? {_NEWEST_FIRST}",
            function,
        )

    async def listeners(self, event_types: Collection[str]) -> dict[str, list[Listener]]:
        """Triggers listening for each of ``event_types`` whose function exists (joined), newest trigger
        first; a type no trigger listens for is left out. Shared: never change what it answers."""
        wanted = sorted(set(event_types))
        found: dict[str, list[Listener]] = {}
        for start in range(0, len(wanted), _TYPES_PER_QUERY):
            chunk = tuple(wanted[start : start + _TYPES_PER_QUERY])
            marks = ", ".join("?" for _ in chunk)
            rows = await self._rows(
                _typed_listener,
                "SELECT t.listen_type, t.name, t.function, f.script, t.listen_source, t.active_from, t.created_at_ns"
                " FROM event_triggers t JOIN functions f ON f.name = t.function"
                f" WHERE t.listen_type IN ({marks}) ORDER BY t.created_at_ns DESC, t.name DESC",
                *chunk,
            )
            for event_type, listener in rows:
                found.setdefault(event_type, []).append(listener)
        return found

    async def listened_types(self) -> frozenset[str]:
        """Every ``listenFor.type`` of a trigger whose function exists."""
        rows = await self._rows(
            _listen_type,
            "SELECT DISTINCT t.listen_type FROM event_triggers t JOIN functions f ON f.name = t.function",
        )
        return frozenset(rows)


def _typed_listener(row: Row) -> tuple[str, Listener]:
    return row["listen_type"], _listener(row)


def _listen_type(row: Row) -> str:
    return row["listen_type"]
