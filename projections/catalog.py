"""Read models of backends, models, affinity groups and their memberships."""

from __future__ import annotations

from typing import Any

from chainloom.domain.backends import Backend
from chainloom.domain.groups import AffinityGroup
from chainloom.domain.models import Model
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


def _model_fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """A declaration's fields in the column order (model, context_length, can_chat … can_stream)."""
    return (
        data["model"],
        data["contextLength"],
        data["canChat"],
        data["canEmbed"],
        data["canPrompt"],
        data["canStream"],
    )


class CatalogProjector(Projector):
    name = "catalog"
    tables = ("backends", "models", "affinity_groups", "group_backends", "group_models")
    schema = (
        "CREATE TABLE IF NOT EXISTS {backends} ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, base_url TEXT NOT NULL, type TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {backends_created} ON {backends} (created_at, id)",
        "CREATE TABLE IF NOT EXISTS {models} ("
        " id TEXT PRIMARY KEY, model TEXT NOT NULL, context_length INTEGER NOT NULL,"
        " can_chat BOOLEAN NOT NULL, can_embed BOOLEAN NOT NULL, can_prompt BOOLEAN NOT NULL,"
        " can_stream BOOLEAN NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {models_created} ON {models} (created_at, id)",
        "CREATE INDEX IF NOT EXISTS {models_name} ON {models} (model)",
        "CREATE TABLE IF NOT EXISTS {affinity_groups} ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, purpose_type TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {affinity_groups_created} ON {affinity_groups} (created_at, id)",
        "CREATE INDEX IF NOT EXISTS {affinity_groups_name} ON {affinity_groups} (name)",
        "CREATE INDEX IF NOT EXISTS {affinity_groups_purpose} ON {affinity_groups} (purpose_type, created_at)",
        "CREATE TABLE IF NOT EXISTS {group_backends} ("
        " group_id TEXT NOT NULL, backend_id TEXT NOT NULL, assigned_at BIGINT NOT NULL,"
        " PRIMARY KEY (group_id, backend_id))",
        "CREATE INDEX IF NOT EXISTS {group_backends_backend} ON {group_backends} (backend_id)",
        "CREATE TABLE IF NOT EXISTS {group_models} ("
        " group_id TEXT NOT NULL, model_id TEXT NOT NULL, assigned_at BIGINT NOT NULL,"
        " PRIMARY KEY (group_id, model_id))",
        "CREATE INDEX IF NOT EXISTS {group_models_model} ON {group_models} (model_id)",
    )

    @on(Backend.Created, Backend.Recreated)
    def backend_created(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {backends} (id, name, base_url, type, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (event["aggregate_id"], data["name"], data["baseUrl"], data["type"], _at(event), _at(event)),
        )

    @on(Backend.Updated)
    def backend_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {backends} SET name = ?, base_url = ?, type = ?, updated_at = ? WHERE id = ?",
            (data["name"], data["baseUrl"], data["type"], _at(event), event["aggregate_id"]),
        )

    @on(Backend.Deleted)
    def backend_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {backends} WHERE id = ?", (event["aggregate_id"],))
        cursor.execute("DELETE FROM {group_backends} WHERE backend_id = ?", (event["aggregate_id"],))

    @on(Model.Declared, Model.Redeclared)
    def model_declared(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {models} (model, context_length, can_chat, can_embed, can_prompt, can_stream,"
            " id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_model_fields(data), event["aggregate_id"], _at(event), _at(event)),
        )

    @on(Model.Updated)
    def model_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {models} SET model = ?, context_length = ?, can_chat = ?, can_embed = ?, can_prompt = ?,"
            " can_stream = ?, updated_at = ? WHERE id = ?",
            (*_model_fields(data), _at(event), event["aggregate_id"]),
        )

    @on(Model.Deleted)
    def model_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {models} WHERE id = ?", (event["aggregate_id"],))
        cursor.execute("DELETE FROM {group_models} WHERE model_id = ?", (event["aggregate_id"],))

    @on(AffinityGroup.Created, AffinityGroup.Recreated)
    def group_created(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {affinity_groups} (id, name, purpose_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (event["aggregate_id"], data["name"], data["purposeType"], _at(event), _at(event)),
        )

    @on(AffinityGroup.Updated)
    def group_updated(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {affinity_groups} SET name = ?, purpose_type = ?, updated_at = ? WHERE id = ?",
            (data["name"], data["purposeType"], _at(event), event["aggregate_id"]),
        )

    @on(AffinityGroup.Deleted)
    def group_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        group_id = event["aggregate_id"]
        cursor.execute("DELETE FROM {affinity_groups} WHERE id = ?", (group_id,))
        cursor.execute("DELETE FROM {group_backends} WHERE group_id = ?", (group_id,))
        cursor.execute("DELETE FROM {group_models} WHERE group_id = ?", (group_id,))

    @on(AffinityGroup.BackendAssigned)
    def backend_assigned(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {group_backends} (group_id, backend_id, assigned_at) VALUES (?, ?, ?)",
            (event["aggregate_id"], event["data"]["backendId"], _at(event)),
        )

    @on(AffinityGroup.BackendRemoved)
    def backend_removed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "DELETE FROM {group_backends} WHERE group_id = ? AND backend_id = ?",
            (event["aggregate_id"], event["data"]["backendId"]),
        )

    @on(AffinityGroup.ModelAssigned)
    def model_assigned(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {group_models} (group_id, model_id, assigned_at) VALUES (?, ?, ?)",
            (event["aggregate_id"], event["data"]["modelId"], _at(event)),
        )

    @on(AffinityGroup.ModelRemoved)
    def model_removed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "DELETE FROM {group_models} WHERE group_id = ? AND model_id = ?",
            (event["aggregate_id"], event["data"]["modelId"]),
        )
