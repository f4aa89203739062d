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
from typing import Any

from eventsourcing.application import LRUCache


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
