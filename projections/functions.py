"""Read model of functions and event triggers (``functions``, ``event_triggers``): one row per live one.

A trigger's ``active_from`` is the nid of the event that (re)created it: it fires only for events
appended after that, so an event already in the log when a trigger is created never runs it (an update
keeps the position). Indexed by listened type and by function, the two ways the dispatcher and the
API look triggers up. A function's attachments (``function.trigger_attached`` …) change no row: the
triggers' own events say the same.
"""

from __future__ import annotations

from typing import Any

from chainloom.domain.functions import EventTrigger, Function
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


def _function_fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """description, script_type, script (the column order)."""
    return data["description"], data["scriptType"], data["script"]


def _trigger_fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """description, listen_type, listen_source, trigger_type, function (the column order)."""
    return data["description"], data["listenType"], data["listenSource"], data["triggerType"], data["function"]


class FunctionsProjector(Projector):
    name = "functions"
    tables = ("functions", "event_triggers")
    schema = (
        "CREATE TABLE IF NOT EXISTS {functions} ("
        " name TEXT PRIMARY KEY, description TEXT NOT NULL, script_type TEXT NOT NULL, script TEXT NOT NULL,"
        " created_at_ns BIGINT NOT NULL, updated_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {functions_created} ON {functions} (created_at_ns, name)",
        "CREATE TABLE IF NOT EXISTS {event_triggers} ("
        " name TEXT PRIMARY KEY, description TEXT NOT NULL, listen_type TEXT NOT NULL, listen_source TEXT NOT NULL,"
        " trigger_type TEXT NOT NULL, function TEXT NOT NULL, created_at_ns BIGINT NOT NULL,"
        " updated_at_ns BIGINT NOT NULL, active_from BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {event_triggers_created} ON {event_triggers} (created_at_ns, name)",
        "CREATE INDEX IF NOT EXISTS {event_triggers_listen_type} ON {event_triggers} (listen_type)",
        "CREATE INDEX IF NOT EXISTS {event_triggers_function} ON {event_triggers} (function)",
    )

    @on(Function.Created, Function.Recreated)
    def function_created(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {functions} (description, script_type, script, name, created_at_ns, updated_at_ns)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*_function_fields(event["data"]), event["aggregate_id"], _at(event), _at(event)),
        )

    @on(Function.Updated)
    def function_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {functions} SET description = ?, script_type = ?, script = ?, updated_at_ns = ? WHERE name = ?",
            (*_function_fields(event["data"]), _at(event), event["aggregate_id"]),
        )

    @on(Function.Deleted)
    def function_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {functions} WHERE name = ?", (event["aggregate_id"],))

    @on(EventTrigger.Created, EventTrigger.Recreated)
    def trigger_created(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {event_triggers} (description, listen_type, listen_source, trigger_type, function, name,"
            " created_at_ns, updated_at_ns, active_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_trigger_fields(event["data"]), event["aggregate_id"], _at(event), _at(event), event["nid"]),
        )

    @on(EventTrigger.Updated)
    def trigger_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {event_triggers} SET description = ?, listen_type = ?, listen_source = ?, trigger_type = ?,"
            " function = ?, updated_at_ns = ? WHERE name = ?",
            (*_trigger_fields(event["data"]), _at(event), event["aggregate_id"]),
        )

    @on(EventTrigger.Deleted)
    def trigger_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {event_triggers} WHERE name = ?", (event["aggregate_id"],))
