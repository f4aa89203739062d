"""Queries of the catalog read models (backends, models, groups, memberships)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.domain.errors import NotFound
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import ReadCache
from chainloom.queries.pagination import Page

Json = dict[str, Any]

_BACKEND_COLUMNS = "b.id, b.name, b.base_url, b.type, b.created_at, b.updated_at"
# A backend with its observed state (a row only for backends the reconciler tracks).
_STATUS_COLUMNS = f"{_BACKEND_COLUMNS}, s.models, s.pulled_models, s.error"
_WITH_STATE = "backends b LEFT JOIN backend_states s ON s.backend_id = b.id"
_MODEL_COLUMNS = (
    "m.id, m.model, m.context_length, m.can_chat, m.can_embed, m.can_prompt, m.can_stream,"
    " m.created_at, m.updated_at"
)
_GROUP_COLUMNS = "g.id, g.name, g.purpose_type, g.created_at, g.updated_at"


def backend_json(row: Row) -> Json:
    return {
        "id": row["id"],
        "name": row["name"],
        "baseUrl": row["base_url"],
        "type": row["type"],
        "createdAt": format_ns(row["created_at"]),
        "updatedAt": format_ns(row["updated_at"]),
    }


def runtime_fields(models: str | None, pulled_models: str | None, error: str | None) -> Json:
    """A backend's runtime fields as the API answers them (``projections.runtime`` keeps them as JSON text):
    lists, empty when the backend is not observed, and ``error`` only when there is one."""
    fields: Json = {
        "models": json.loads(models) if models else [],
        "pulledModels": json.loads(pulled_models) if pulled_models else [],
    }
    if error:
        fields["error"] = error
    return fields


def backend_status_json(row: Row) -> Json:
    """A backend with its runtime fields: its observed state (``projections.runtime``), if any."""
    return backend_json(row) | runtime_fields(row["models"], row["pulled_models"], row["error"])


def model_json(row: Row) -> Json:
    return {
        "id": row["id"],
        "model": row["model"],
        "contextLength": row["context_length"],
        "canChat": bool(row["can_chat"]),
        "canEmbed": bool(row["can_embed"]),
        "canPrompt": bool(row["can_prompt"]),
        "canStream": bool(row["can_stream"]),
        "createdAt": format_ns(row["created_at"]),
        "updatedAt": format_ns(row["updated_at"]),
    }


def group_json(row: Row) -> Json:
    return {
        "id": row["id"],
        "name": row["name"],
        "purposeType": row["purpose_type"],
        "createdAt": format_ns(row["created_at"]),
        "updatedAt": format_ns(row["updated_at"]),
    }


class CatalogMemberships:
    """Which groups hold a backend or model; blocking, for commands that cascade deletions."""

    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def groups_of_backend(self, backend_id: str) -> list[str]:
        rows = self._store.query("SELECT group_id FROM group_backends WHERE backend_id = ?", (backend_id,))
        return [r["group_id"] for r in rows]

    def groups_of_model(self, model_id: str) -> list[str]:
        rows = self._store.query("SELECT group_id FROM group_models WHERE model_id = ?", (model_id,))
        return [r["group_id"] for r in rows]


class CatalogQueries:
    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]], cache: ReadCache) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache

    async def _rows(self, shape: Callable[[Row], Json], sql: str, *params: Any) -> list[Json]:
        """The rows as the API shows them, remembered until the read models move (shared by every answer
        that uses them until then: never change them)."""

        async def load() -> list[Json]:
            return [shape(row) for row in await self._run_blocking(self._store.query, sql, params)]

        return await self._cache.get((shape, sql, params), load)

    async def _one(self, shape: Callable[[Row], Json], sql: str, *params: Any) -> Json:
        rows = await self._rows(shape, sql, *params)
        if not rows:
            raise NotFound("libdb: not found")
        return rows[0]

    # -- backends ------------------------------------------------------------

    async def backends(self, page: Page) -> list[Json]:
        return await self._rows(
            backend_status_json,
            f"SELECT {_STATUS_COLUMNS} FROM {_WITH_STATE} WHERE b.created_at < ?"
            " ORDER BY b.created_at DESC, b.id DESC LIMIT ?",
            page.before_ns,
            page.limit,
        )

    async def backend(self, backend_id: str) -> Json:
        return await self._one(
            backend_status_json, f"SELECT {_STATUS_COLUMNS} FROM {_WITH_STATE} WHERE b.id = ?", backend_id
        )

    async def plain_backend(self, backend_id: str) -> Json:
        return await self._one(backend_json, f"SELECT {_BACKEND_COLUMNS} FROM backends b WHERE b.id = ?", backend_id)

    async def backends_of_group(self, group_id: str) -> list[Json]:
        return await self._rows(
            backend_json,
            f"SELECT {_BACKEND_COLUMNS} FROM group_backends gb JOIN backends b ON b.id = gb.backend_id"
            " WHERE gb.group_id = ? ORDER BY gb.assigned_at DESC, b.id DESC",
            group_id,
        )

    # -- models --------------------------------------------------------------

    async def models(self, page: Page) -> list[Json]:
        return await self._rows(
            model_json,
            f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.created_at < ?"
            " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
            page.before_ns,
            page.limit,
        )

    async def model(self, model_id: str) -> Json:
        return await self._one(model_json, f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.id = ?", model_id)

    async def models_of_group(self, group_id: str) -> list[Json]:
        return await self._rows(
            model_json,
            f"SELECT {_MODEL_COLUMNS} FROM group_models gm JOIN models m ON m.id = gm.model_id"
            " WHERE gm.group_id = ? ORDER BY gm.assigned_at DESC, m.id DESC",
            group_id,
        )

    # -- groups --------------------------------------------------------------

    async def groups(self) -> list[Json]:
        return await self._rows(group_json, f"SELECT {_GROUP_COLUMNS} FROM affinity_groups g ORDER BY g.created_at DESC, g.id DESC")

    async def group(self, group_id: str) -> Json:
        return await self._one(group_json, f"SELECT {_GROUP_COLUMNS} FROM affinity_groups g WHERE g.id = ?", group_id)

    async def group_by_name(self, name: str) -> Json:
        return await self._one(group_json, f"SELECT {_GROUP_COLUMNS} FROM affinity_groups g WHERE g.name = ?", name)

    async def groups_by_purpose(self, purpose_type: str, page: Page) -> list[Json]:
        return await self._rows(
            group_json,
            f"SELECT {_GROUP_COLUMNS} FROM affinity_groups g WHERE g.purpose_type = ? AND g.created_at < ?"
            " ORDER BY g.created_at DESC, g.id DESC LIMIT ?",
            purpose_type,
            page.before_ns,
            page.limit,
        )

    async def groups_of_backend(self, backend_id: str) -> list[Json]:
        return await self._rows(
            group_json,
            f"SELECT {_GROUP_COLUMNS} FROM group_backends gb JOIN affinity_groups g ON g.id = gb.group_id"
            " WHERE gb.backend_id = ? ORDER BY gb.assigned_at DESC, g.id DESC",
            backend_id,
        )

    async def groups_of_model(self, model_id: str) -> list[Json]:
        return await self._rows(
            group_json,
            f"SELECT {_GROUP_COLUMNS} FROM group_models gm JOIN affinity_groups g ON g.id = gm.group_id"
            " WHERE gm.model_id = ? ORDER BY gm.assigned_at DESC, g.id DESC",
            model_id,
        )
