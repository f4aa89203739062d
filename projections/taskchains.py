"""Read model of stored task chains: each chain's definition (``ChainDefinition.to_json``) as JSON text."""

from __future__ import annotations

import json

from chainloom.domain.taskchains import TaskChain
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


def _definition(event: Event) -> str:
    return json.dumps(event["data"]["definition"], separators=(",", ":"), ensure_ascii=False)


class TaskChainsProjector(Projector):
    name = "taskchains"
    tables = ("taskchains",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {taskchains} ("
        " id TEXT PRIMARY KEY, definition TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {taskchains_created} ON {taskchains} (created_at, id)",
    )

    @on(TaskChain.Created, TaskChain.Recreated)
    def chain_created(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {taskchains} (id, definition, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (event["aggregate_id"], _definition(event), _at(event), _at(event)),
        )

    @on(TaskChain.Updated)
    def chain_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {taskchains} SET definition = ?, updated_at = ? WHERE id = ?",
            (_definition(event), _at(event), event["aggregate_id"]),
        )

    @on(TaskChain.Deleted)
    def chain_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {taskchains} WHERE id = ?", (event["aggregate_id"],))
