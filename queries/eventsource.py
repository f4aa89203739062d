"""Queries of the event-source read models: events by type/source/aggregate, raw events, mappings.

Time windows are inclusive on both ends and default to the last 24 hours up
to now; ``limit`` defaults to 100 and may not exceed 1000. Messages follow the
reference runtime; statuses are plain HTTP (422 for every bad value).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import clamp_ns, format_ns, parse_ns
from chainloom.queries.pagination import DEFAULT_LIMIT, MAX_LIMIT

Json = dict[str, Any]

DAY_NS = 86_400 * 1_000_000_000
_UNPROCESSABLE = "serverops: unprocessable entity"
_LIMIT = re.compile(r"^\+?[0-9]+$")


def parse_time(text: str, name: str) -> int:
    """An RFC 3339 query value with a zone designator → nanoseconds (422 naming the parameter)."""
    try:
        return clamp_ns(parse_ns(text))
    except ValueError:
        raise Unprocessable(f"invalid '{name}' time format, expected RFC3339 {_UNPROCESSABLE}", param=name) from None


def required(query: Any, name: str) -> str:
    """A query parameter that must be present and not empty (422 otherwise)."""
    value = query.get(name, "")
    if not value:
        raise Unprocessable(f"{name} is required {_UNPROCESSABLE}", param=name)
    return value


@dataclass(frozen=True)
class Window:
    """``from ≤ created_at ≤ to``, in nanoseconds."""

    from_ns: int
    to_ns: int

    @classmethod
    def of_events(cls, query: Any, now_ns: int) -> Window:
        """``from``/``to`` of the ``/events`` lists: the last 24 h by default; ``from`` after ``to`` is 422."""
        window = cls._parse(query, now_ns)
        if window.from_ns > window.to_ns:
            raise Unprocessable(
                f"invalid parameter: 'from' time ({format_ns(window.from_ns)}) cannot be after"
                f" 'to' time ({format_ns(window.to_ns)})",
                param="from",
            )
        return window

    @classmethod
    def of_raw_events(cls, query: Any, now_ns: int) -> Window:
        window = cls._parse(query, now_ns)
        if window.from_ns > window.to_ns:
            raise Unprocessable(f"'from' cannot be after 'to' {_UNPROCESSABLE}", param="from")
        return window

    @classmethod
    def _parse(cls, query: Any, now_ns: int) -> Window:
        from_text, to_text = query.get("from", ""), query.get("to", "")
        from_ns = parse_time(from_text, "from") if from_text else now_ns - DAY_NS
        to_ns = parse_time(to_text, "to") if to_text else now_ns
        return cls(from_ns, to_ns)


def parse_limit(text: str | None) -> int:
    """``limit`` of the ``/events`` lists: a positive integer up to 1000 (422 otherwise)."""
    if not text:
        return DEFAULT_LIMIT
    if not _LIMIT.match(text):
        raise Unprocessable(f"invalid limit, must be positive integer {_UNPROCESSABLE}", param="limit")
    digits = text.lstrip("+").lstrip("0") or "0"
    if len(digits) > 18 or int(digits) > MAX_LIMIT:
        raise Unprocessable(f"invalid parameter: limit cannot exceed {MAX_LIMIT}, got {digits}", param="limit")
    if int(digits) == 0:
        raise Unprocessable(f"invalid limit, must be positive integer {_UNPROCESSABLE}", param="limit")
    return int(digits)


def parse_raw_limit(text: str | None) -> int:
    """``limit`` of ``/raw-events`` (its own message above 1000)."""
    try:
        return parse_limit(text)
    except Unprocessable as error:
        if "cannot exceed" in error.message:
            raise Unprocessable(f"limit cannot exceed {MAX_LIMIT} {_UNPROCESSABLE}", param="limit") from None
        raise


def event_json(row: Row) -> Json:
    envelope = json.loads(row["envelope"])
    envelope["nid"] = row["nid"]
    return envelope


def raw_event_json(row: Row) -> Json:
    """The contract's ``RawEvent``; ``headers`` is left out when there are none (as the reference does)."""
    raw: Json = {
        "id": row["id"],
        "nid": row["nid"],
        "received_at": format_ns(row["received_at"]),
        "path": row["path"],
        "payload": json.loads(row["payload"]),
    }
    headers = json.loads(row["headers"])
    if headers:
        raw["headers"] = headers
    return raw


_EVENT_COLUMNS = "nid, envelope"
_RAW_COLUMNS = "nid, id, received_at, path, headers, payload"


class EventIndex:
    """Which events a deletion would erase (blocking; for the command that erases them)."""

    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def matching(self, event_type: str, window: Window, up_to: int) -> list[Row]:
        return self._store.query(
            "SELECT nid, event_source FROM event_index"
            " WHERE event_type = ? AND created_at >= ? AND created_at <= ? AND nid <= ?",
            (event_type, window.from_ns, window.to_ns, up_to),
        )


class EventSourceQueries:
    def __init__(
        self,
        store: ReadStore,
        run_blocking: Callable[..., Awaitable[Any]],
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self.clock = clock or (lambda: time.time_ns())  # looked up per call, so tests can pin it

    async def _rows(self, sql: str, *params: Any) -> list[Row]:
        return await self._run_blocking(self._store.query, sql, params)

    # -- events --------------------------------------------------------------

    async def events_of_type(self, event_type: str, window: Window, limit: int) -> list[Json]:
        rows = await self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM event_index WHERE event_type = ? AND created_at >= ? AND created_at <= ?"
            " ORDER BY created_at DESC, nid DESC LIMIT ?",
            event_type,
            window.from_ns,
            window.to_ns,
            limit,
        )
        return [event_json(r) for r in rows]

    async def events_of_type_after(self, event_type: str, after_nid: int, limit: int) -> list[Json]:
        """Events of a type after a log position, in log order (an SSE stream resuming from Last-Event-ID)."""
        rows = await self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM event_index WHERE event_type = ? AND nid > ? ORDER BY nid LIMIT ?",
            event_type,
            after_nid,
            limit,
        )
        return [event_json(r) for r in rows]

    async def events_of_source(self, event_type: str, event_source: str, window: Window, limit: int) -> list[Json]:
        rows = await self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM event_index WHERE event_type = ? AND event_source = ?"
            " AND created_at >= ? AND created_at <= ? ORDER BY created_at DESC, nid DESC LIMIT ?",
            event_type,
            event_source,
            window.from_ns,
            window.to_ns,
            limit,
        )
        return [event_json(r) for r in rows]

    async def events_of_aggregate(
        self, event_type: str, aggregate_type: str, aggregate_id: str, window: Window, limit: int
    ) -> list[Json]:
        rows = await self._rows(
            f"SELECT {_EVENT_COLUMNS} FROM event_index WHERE event_type = ? AND aggregate_type = ?"
            " AND aggregate_id = ? AND created_at >= ? AND created_at <= ?"
            " ORDER BY created_at DESC, version DESC, nid DESC LIMIT ?",
            event_type,
            aggregate_type,
            aggregate_id,
            window.from_ns,
            window.to_ns,
            limit,
        )
        return [event_json(r) for r in rows]

    async def event_types(self, window: Window, limit: int) -> list[str]:
        """Distinct types in the window, newest last occurrence first (ties by type, the same on every
        database): a client looking for the type it just posted finds it within any limit."""
        rows = await self._rows(
            "SELECT event_type, MAX(created_at) AS last_at, MAX(nid) AS last_nid FROM event_index"
            " WHERE created_at >= ? AND created_at <= ? GROUP BY event_type"
            " ORDER BY last_at DESC, last_nid DESC LIMIT ?",
            window.from_ns,
            window.to_ns,
            limit,
        )
        return [r["event_type"] for r in rows]

    # -- raw events ----------------------------------------------------------

    async def raw_events(self, window: Window, limit: int) -> list[Json]:
        rows = await self._rows(
            f"SELECT {_RAW_COLUMNS} FROM raw_events WHERE received_at >= ? AND received_at <= ?"
            " ORDER BY received_at DESC, nid DESC LIMIT ?",
            window.from_ns,
            window.to_ns,
            limit,
        )
        return [raw_event_json(r) for r in rows]

    async def raw_event(self, nid: int, window: Window) -> Json:
        rows = await self._rows(
            f"SELECT {_RAW_COLUMNS} FROM raw_events WHERE nid = ? AND received_at >= ? AND received_at <= ?",
            nid,
            window.from_ns,
            window.to_ns,
        )
        if not rows:
            raise NotFound("not found: raw event not found")
        return raw_event_json(rows[0])

    # -- mappings ------------------------------------------------------------

    async def mappings(self) -> list[Json]:
        """Every mapping, ascending by path (code point order, the same on every database)."""
        rows = await self._rows("SELECT path, config FROM event_mappings")
        return [json.loads(r["config"]) for r in sorted(rows, key=lambda r: r["path"])]

    async def mapping(self, path: str) -> Json:
        rows = await self._rows("SELECT config FROM event_mappings WHERE path = ?", path)
        if not rows:
            raise NotFound("not found: mapping not found")
        return json.loads(rows[0]["config"])
