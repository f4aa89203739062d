"""The log by position for the web layer: ``infra.log_reader`` through the app's thread pool.

Not a read model: these read the log itself, so they answer what it holds even while a projector
lags or is faulted (``GET /log`` needs no read-your-writes wait, a ``/log/stream`` catch-up no
event index).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.infra.eventlog import EventLog
from chainloom.infra.log_reader import SCAN_LIMIT, Event, LogFilter, LogPage, read_log, read_page


class LogQueries:
    def __init__(
        self, log: EventLog, run_blocking: Callable[..., Awaitable[Any]], scan_limit: int = SCAN_LIMIT
    ) -> None:
        self._log = log
        self._run_blocking = run_blocking
        self.scan_limit = scan_limit

    async def page(self, after: int, limit: int, filters: LogFilter) -> LogPage:
        """``GET /log``: one bounded scan; the events found, where to go on, the head."""
        page: LogPage = await self._run_blocking(read_page, self._log, after, limit, filters, self.scan_limit)
        return page

    async def read_after(self, after: int, limit: int, filters: LogFilter) -> list[Event]:
        """A stream's catch-up page: ``limit`` accepted events after ``after`` — fewer only when the log (as
        far as it went when asked) ends first, however many bounded scans that takes (each one call to
        the pool, so a long scan does not hold a thread)."""
        found: list[Event] = []
        head: int = await self._run_blocking(self._log.head)
        while len(found) < limit:
            events, position = await self._run_blocking(
                read_log, self._log, after, limit - len(found), filters, self.scan_limit
            )
            found.extend(events)
            if position == after or position >= head:
                break
            after = position
        return found
