"""Queries of the remote hooks' read model: the API's answers, and hook records for calling them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.domain.errors import NotFound
from chainloom.domain.hooks import HookSpec, InjectedProperty
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import ReadCache
from chainloom.queries.pagination import Page

Json = dict[str, Any]
_COLUMNS = "id, name, endpoint_url, timeout_ms, headers, properties, created_at, updated_at"


def hook_json(row: Row) -> Json:
    """A hook as the API answers it: ``headers`` left out when empty, ``properties`` always there."""
    answer: Json = {"id": row["id"], "name": row["name"], "endpointUrl": row["endpoint_url"], "timeoutMs": row["timeout_ms"]}
    headers = json.loads(row["headers"]) if row["headers"] else {}
    if headers:
        answer["headers"] = headers
    answer["properties"] = InjectedProperty.from_json(json.loads(row["properties"] or "{}")).to_json()
    answer["createdAt"] = format_ns(row["created_at"])
    answer["updatedAt"] = format_ns(row["updated_at"])
    return answer


def hook_spec(hook: Json) -> HookSpec:
    """The configuration of a hook, from its answer (``hook_json``)."""
    return HookSpec(
        hook["name"],
        hook["endpointUrl"],
        hook["timeoutMs"],
        hook.get("headers") or {},
        InjectedProperty.from_json(hook["properties"]),
    )


class HookQueries:
    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]], cache: ReadCache | None = None) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache or ReadCache(None)

    async def _rows(self, sql: str, *params: Any) -> list[Json]:
        """Answers remembered until the read models move (shared: never change them)."""

        async def load() -> list[Json]:
            return [hook_json(row) for row in await self._run_blocking(self._store.query, sql, params)]

        return await self._cache.get(("remote_hooks", sql, params), load)

    async def _one(self, sql: str, *params: Any) -> Json:
        rows = await self._rows(sql, *params)
        if not rows:
            raise NotFound("libdb: not found")
        return rows[0]

    async def hooks(self, page: Page) -> list[Json]:
        return await self._rows(
            f"SELECT {_COLUMNS} FROM remote_hooks WHERE created_at < ? ORDER BY created_at DESC, id DESC LIMIT ?",
            page.before_ns,
            page.limit,
        )

    async def all(self) -> list[Json]:
        """Every hook, newest first."""
        return await self._rows(f"SELECT {_COLUMNS} FROM remote_hooks ORDER BY created_at DESC, id DESC")

    async def hook(self, hook_id: str) -> Json:
        return await self._one(f"SELECT {_COLUMNS} FROM remote_hooks WHERE id = ?", hook_id)

    async def by_name(self, name: str) -> Json:
        return await self._one(f"SELECT {_COLUMNS} FROM remote_hooks WHERE name = ?", name)

    async def find(self, name: str) -> Json | None:
        """The hook named ``name``, or None."""
        rows = await self._rows(f"SELECT {_COLUMNS} FROM remote_hooks WHERE name = ?", name)
        return rows[0] if rows else None

    async def names(self) -> list[str]:
        """The names of all hooks, newest first (``GET /supported``)."""
        return [hook["name"] for hook in await self.all()]
