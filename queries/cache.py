"""Query results remembered until the read models move.

A result is stamped with the read models' position taken *before* the query
ran and is served again only while that position is still current: any newly
projected event makes it stale. A command answers only once the read models
have reached its write, so reading your own write always misses the cache —
read-your-writes holds. Used only where this process follows the log itself
(embedded mode); with projector workers elsewhere the position seen here lags
and no result is remembered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar

from eventsourcing.application import LRUCache

from chainloom.domain.errors import NotFound
from chainloom.infra.readstore import ReadStore, Row


class ReadCache:
    def __init__(self, position: Callable[[], int] | None, maxsize: int = 4096) -> None:
        self._position = position
        self._entries: LRUCache[Hashable, tuple[int, Any]] = LRUCache(maxsize=maxsize)

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        if self._position is None:
            return await load()
        stamp = self._position()
        try:
            seen_at, value = self._entries.get(key)
        except KeyError:
            pass
        else:
            if seen_at == stamp:
                return value
        value = await load()
        self._entries.put(key, (stamp, value))
        return value


class RememberedQueries:
    """The queries of one read model, each answer remembered in ``cache`` until the read models move."""

    namespace: ClassVar[str]  # keeps one context's remembered answers apart from another's
    not_found: ClassVar[str] = "not found"  # what ``_one`` refuses a missing row with

    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]], cache: ReadCache | None = None) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache or ReadCache(None)

    async def _rows(self, convert: Callable[[Row], Any], sql: str, *params: Any) -> list[Any]:
        """``convert`` of each row the query answers (shared with other callers: never change them)."""

        async def load() -> list[Any]:
            return [convert(row) for row in await self._run_blocking(self._store.query, sql, params)]

        return await self._cache.get((self.namespace, convert.__name__, sql, params), load)

    async def _one(self, convert: Callable[[Row], Any], sql: str, *params: Any) -> Any:
        """The first row's ``convert``; ``NotFound`` when there is none."""
        rows = await self._rows(convert, sql, *params)
        if not rows:
            raise NotFound(self.not_found)
        return rows[0]
