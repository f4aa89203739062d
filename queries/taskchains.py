"""Queries of stored task chains (the ``taskchains`` read model): for /taskchains, the engine and /openai."""

from __future__ import annotations

import json
from functools import lru_cache
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.domain.errors import DomainError, NotFound
from chainloom.domain.taskchains import ChainDefinition
from chainloom.infra.readstore import ReadStore
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import ReadCache
from chainloom.queries.pagination import Page

Json = dict[str, Any]


class TaskChainQueries:
    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]], cache: ReadCache | None = None) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache or ReadCache(None)

    async def _rows(self, sql: str, *params: Any) -> list[tuple[Json, int]]:
        """(definition as answered, created_at) per row, remembered until the read models move (shared: never
        change them). A stored value that does not parse is skipped, as the reference does."""

        async def load() -> list[tuple[Json, int]]:
            rows = await self._run_blocking(self._store.query, sql, params)
            loaded = []
            for row in rows:
                try:
                    loaded.append((json.loads(row["definition"]), row["created_at"]))
                except (TypeError, ValueError):
                    continue
            return loaded

        return await self._cache.get(("taskchains", sql, params), load)

    async def chain(self, chain_id: str) -> Json:
        """The chain as ``/taskchains`` answers it (``ChainDefinition.to_json``)."""
        rows = await self._rows("SELECT definition, created_at FROM taskchains WHERE id = ?", chain_id)
        if not rows:
            raise NotFound("failed to get task chain: libdb: not found")
        return rows[0][0]

    async def chains(self, page: Page) -> tuple[list[Json], str | None]:
        """A page of chains, newest first (ties: id descending), and the cursor of the next page (the
        ``createdAt`` of the last one, RFC3339Nano; None for an empty page)."""
        rows = await self._rows(
            "SELECT definition, created_at FROM taskchains WHERE created_at < ? ORDER BY created_at DESC, id DESC"
            " LIMIT ?",
            page.before_ns,
            page.limit,
        )
        return [definition for definition, _ in rows], (format_ns(rows[-1][1]) if rows else None)

    async def definition(self, chain_id: str) -> ChainDefinition | None:
        """The stored chain decoded, for running it; None when there is no chain with this id."""

        async def load() -> ChainDefinition | None:
            rows = await self._run_blocking(
                self._store.query, "SELECT definition FROM taskchains WHERE id = ?", (chain_id,)
            )
            if not rows:
                return None
            return _decoded(rows[0]["definition"])

        return await self._cache.get(("taskchain-definition", chain_id), load)


@lru_cache(maxsize=256)
def _decoded(definition: str) -> ChainDefinition | None:
    """A stored definition decoded once per text: the read cache forgets at every projected event, and a chain
    is run (a chat turn) far more often than it changes. Definitions are immutable, so one may be shared."""
    try:
        return ChainDefinition.from_json(json.loads(definition))
    except (TypeError, ValueError, DomainError):
        return None
