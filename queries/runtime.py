"""Queries of the backends' observed state (``projections.runtime``) and of what each grouped backend should
hold (the catalog's groups, for the reconciler).

``RuntimeQueries.states()`` is what routing reads: every grouped backend the
reconciler has observed, as ``domain.runtime.BackendState``. Results are
remembered until the read models move (``ReadCache``), like the catalog's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chainloom.domain.backend_state import ZERO_TIME
from chainloom.domain.runtime import BackendState, PulledModel
from chainloom.infra.readstore import ReadStore, Row
from chainloom.queries.cache import ReadCache
from chainloom.queries.catalog import backend_json, runtime_fields

Json = dict[str, Any]
RunBlocking = Callable[..., Awaitable[Any]]


def pulled_model(entry: Mapping[str, Any]) -> PulledModel:
    """A ``ModelPullStatus`` as recorded → the domain's value object (``modified_at`` "" for the zero time)."""
    modified = entry.get("modifiedAt") or ""
    return PulledModel(
        name=entry.get("name", ""),
        model=entry.get("model", ""),
        modified_at="" if modified == ZERO_TIME else modified,
        size=entry.get("size", 0),
        digest=entry.get("digest", ""),
        details=dict(entry.get("details") or {}),
        context_length=entry.get("contextLength", 0),
        can_chat=bool(entry.get("canChat")),
        can_embed=bool(entry.get("canEmbed")),
        can_prompt=bool(entry.get("canPrompt")),
        can_stream=bool(entry.get("canStream")),
    )


@dataclass(frozen=True)
class DeclaredModel:
    """A model declared in one of a backend's groups (what the reconciler compares with the upstream)."""

    id: str
    name: str
    context_length: int
    can_chat: bool
    can_embed: bool
    can_prompt: bool
    can_stream: bool
    updated_at: int  # ns

    def capabilities(self) -> Json:
        return {
            "contextLength": self.context_length,
            "canChat": self.can_chat,
            "canEmbed": self.can_embed,
            "canPrompt": self.can_prompt,
            "canStream": self.can_stream,
        }


@dataclass(frozen=True)
class GroupedBackend:
    """A backend in at least one group, with the union (by name) of its groups' models, sorted by name."""

    id: str
    name: str
    type: str
    base_url: str
    models: tuple[DeclaredModel, ...]

    def declared(self, name: str) -> DeclaredModel | None:
        return next((m for m in self.models if m.name == name), None)


_STATE_SQL = (
    "SELECT b.id, b.name, b.base_url, b.type, b.created_at, b.updated_at, s.models, s.pulled_models, s.error"
    " FROM backend_states s JOIN backends b ON b.id = s.backend_id"
    " WHERE EXISTS (SELECT 1 FROM group_backends gb WHERE gb.backend_id = b.id)"
    " ORDER BY b.created_at, b.id"
)
_DECLARED_SQL = (
    "SELECT b.id AS backend_id, b.name AS backend_name, b.type, b.base_url, m.id AS model_id, m.model,"
    " m.context_length, m.can_chat, m.can_embed, m.can_prompt, m.can_stream, m.updated_at"
    " FROM group_backends gb JOIN backends b ON b.id = gb.backend_id"
    " LEFT JOIN group_models gm ON gm.group_id = gb.group_id LEFT JOIN models m ON m.id = gm.model_id"
)


class RuntimeQueries:
    def __init__(self, store: ReadStore, run_blocking: RunBlocking, cache: ReadCache | None = None) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache or ReadCache(None)

    async def _load(self, key: str, sql: str, shape: Callable[[list[Row]], Any]) -> Any:
        """Shaped rows, remembered until the read models move (shared: never change them)."""

        async def load() -> Any:
            return shape(await self._run_blocking(self._store.query, sql, ()))

        return await self._cache.get(("runtime", key, sql), load)

    async def states(self) -> list[BackendState]:
        """Every grouped backend the reconciler has observed (routing's view)."""
        return await self._load("states", _STATE_SQL, _states)

    async def state_json(self) -> list[Json]:
        """``GET /state``: the contract's ``BackendRuntimeState`` of every grouped, observed backend."""
        return await self._load("state_json", _STATE_SQL, _state_json)

    async def grouped_backends(self) -> tuple[GroupedBackend, ...]:
        """Every backend in a group, with the models of its groups (what the reconciler reconciles)."""
        return await self._load("grouped", _DECLARED_SQL, _grouped)

    async def tracked(self) -> frozenset[str]:
        """The ids of the backends with a recorded state (grouped or not, existing or not)."""
        return await self._load("tracked", "SELECT backend_id FROM backend_states", lambda rows: frozenset(r["backend_id"] for r in rows))


def _states(rows: list[Row]) -> list[BackendState]:
    return [
        BackendState(
            id=row["id"],
            name=row["name"],
            type=row["type"],
            base_url=row["base_url"],
            models=tuple(json.loads(row["models"])),
            pulled_models=tuple(pulled_model(entry) for entry in json.loads(row["pulled_models"])),
            error=row["error"],
        )
        for row in rows
    ]


def _state_json(rows: list[Row]) -> list[Json]:
    answers = []
    for row in rows:
        answer: Json = {"id": row["id"], "name": row["name"]}
        answer.update(runtime_fields(row["models"], row["pulled_models"], row["error"]))
        answer["backend"] = backend_json(row)
        answers.append(answer)
    return answers


def _grouped(rows: list[Row]) -> tuple[GroupedBackend, ...]:
    backends: dict[str, tuple[Row, dict[str, DeclaredModel]]] = {}
    for row in rows:
        _, models = backends.setdefault(row["backend_id"], (row, {}))
        if row["model_id"] is not None:
            models[row["model"]] = DeclaredModel(
                id=row["model_id"],
                name=row["model"],
                context_length=row["context_length"],
                can_chat=bool(row["can_chat"]),
                can_embed=bool(row["can_embed"]),
                can_prompt=bool(row["can_prompt"]),
                can_stream=bool(row["can_stream"]),
                updated_at=row["updated_at"],
            )
    return tuple(
        GroupedBackend(
            id=backend_id,
            name=row["backend_name"],
            type=row["type"],
            base_url=row["base_url"],
            models=tuple(models[name] for name in sorted(models)),
        )
        for backend_id, (row, models) in sorted(backends.items())
    )
