"""Read model of the remote hooks (``remote_hooks``): one row per live hook, headers and properties as JSON."""

from __future__ import annotations

import json
from typing import Any

from chainloom.domain.hooks import RemoteHook
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """name, endpoint_url, timeout_ms, headers, properties (the column order)."""
    return (
        data["name"],
        data["endpointUrl"],
        data["timeoutMs"],
        _dumps(data.get("headers") or {}),
        _dumps(data.get("properties") or {}),
    )


class HooksProjector(Projector):
    name = "hooks"
    tables = ("remote_hooks",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {remote_hooks} ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, endpoint_url TEXT NOT NULL, timeout_ms BIGINT NOT NULL,"
        " headers TEXT NOT NULL, properties TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {remote_hooks_created} ON {remote_hooks} (created_at, id)",
        "CREATE INDEX IF NOT EXISTS {remote_hooks_name} ON {remote_hooks} (name)",
    )

    @on(RemoteHook.Created, RemoteHook.Recreated)
    def created(self, cursor: TemplatedCursor, event: Event) -> None:
        at = parse_ns(event["created_at"])
        cursor.execute(
            "INSERT INTO {remote_hooks} (name, endpoint_url, timeout_ms, headers, properties, id, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*_fields(event["data"]), event["aggregate_id"], at, at),
        )

    @on(RemoteHook.Updated)
    def updated(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {remote_hooks} SET name = ?, endpoint_url = ?, timeout_ms = ?, headers = ?, properties = ?,"
            " updated_at = ? WHERE id = ?",
            (*_fields(event["data"]), parse_ns(event["created_at"]), event["aggregate_id"]),
        )

    @on(RemoteHook.Deleted)
    def deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {remote_hooks} WHERE id = ?", (event["aggregate_id"],))
