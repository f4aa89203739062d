"""Queries of activity: the ``/activity/*`` routes, from the projection's rows (``projections.activity``: what
requests did on the log, their runs, the alerts) and the records beside them (``web.activity_record``: reads
and failures).

An activity event answers as the platform notes' (§12): ``{id, operation, subject, start, end, duration
(ms), error?, entityID?, metadata, requestID}``. Lists are newest first. Before it answers, a query waits
until the read models have reached the log's head and this process's records are written (``settle``):
what a client did just before is shown, the run of its chain too once the run is on the log (a run is
recorded right after it answers).

Not remembered (``queries.cache``): the records beside the log move without the log.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns

Json = dict[str, Any]

_RUN = ("run", "task_chain")  # projections.activity.RUN
_COLUMNS = "id, request_id, operation, subject, entity_id, start_ns, end_ns, error, metadata"
_RECORDS = "activity_records"  # web.activity_record.RECORDS_TABLE


def activity_json(row: Row) -> Json:
    """An activity event (§12); ``error`` and ``entityID`` only when there is one."""
    event: Json = {
        "id": row["id"],
        "operation": row["operation"],
        "subject": row["subject"],
        "start": format_ns(row["start_ns"]),
        "end": format_ns(row["end_ns"]),
        "duration": (row["end_ns"] - row["start_ns"]) / 1e6,
    }
    if row["error"]:
        event["error"] = row["error"]
    if row["entity_id"]:
        event["entityID"] = row["entity_id"]
    event["metadata"] = json.loads(row["metadata"] or "{}")
    event["requestID"] = row["request_id"]
    return event


def alert_json(row: Row) -> Json:
    """An alert, as the reference writes it (its time is ``Timestamp``)."""
    return {
        "id": row["id"],
        "message": row["message"],
        "requestID": row["request_id"],
        "metadata": json.loads(row["metadata"] or "{}"),
        "Timestamp": format_ns(row["at_ns"]),
    }


def _newest_first(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: (row["end_ns"], row["id"]), reverse=True)


class ActivityQueries:
    def __init__(
        self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]], settle: Callable[[], Awaitable[None]]
    ) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._settle = settle

    async def _query(self, sql: str, *params: Any) -> list[Row]:
        return await self._run_blocking(self._store.query, sql, params)

    async def logs(self, limit: int) -> list[Json]:
        """The newest ``limit`` activity events of every request."""
        await self._settle()
        logged = await self._query(f"SELECT {_COLUMNS} FROM activity ORDER BY n DESC LIMIT ?", limit)
        recorded = await self._query(f"SELECT {_COLUMNS} FROM {_RECORDS} ORDER BY end_ns DESC LIMIT ?", limit)
        return [activity_json(row) for row in _newest_first(logged + recorded)[:limit]]

    async def request(self, request_id: str) -> list[Json]:
        """A request's activity events (none for a request nobody knows)."""
        await self._settle()
        logged = await self._query(f"SELECT {_COLUMNS} FROM activity WHERE request_id = ?", request_id)
        recorded = await self._query(f"SELECT {_COLUMNS} FROM {_RECORDS} WHERE request_id = ?", request_id)
        return [activity_json(row) for row in _newest_first(logged + recorded)]

    async def requests(self) -> list[Json]:
        """Every request with activity (``[{"id"}]``), the most recent first."""
        await self._settle()
        return _ids(
            await self._query(
                "SELECT request_id, MAX(end_ns) AS at FROM activity GROUP BY request_id"
                f" UNION ALL SELECT request_id, MAX(end_ns) AS at FROM {_RECORDS} GROUP BY request_id"
            )
        )

    async def operations(self) -> list[Json]:
        """Every (operation, subject) there was activity of, in order."""
        await self._settle()
        rows = await self._query(
            f"SELECT DISTINCT operation, subject FROM activity UNION SELECT DISTINCT operation, subject FROM {_RECORDS}"
        )
        return [{"operation": o, "subject": s} for o, s in sorted({(r["operation"], r["subject"]) for r in rows})]

    async def requests_of(self, operation: str, subject: str) -> list[Json]:
        """The requests with activity of (``operation``, ``subject``) (``[{"id"}]``), the most recent first."""
        await self._settle()
        return _ids(
            await self._query(
                "SELECT request_id, MAX(end_ns) AS at FROM activity WHERE operation = ? AND subject = ? GROUP BY request_id"
                f" UNION ALL SELECT request_id, MAX(end_ns) AS at FROM {_RECORDS} WHERE operation = ? AND subject = ?"
                " GROUP BY request_id",
                operation, subject, operation, subject,
            )
        )  # fmt: skip

    async def state(self, request_id: str) -> list[Json]:
        """The task-engine steps the request's chain runs recorded (the §10.1 step shape), in order."""
        await self._settle()
        rows = await self._query(
            "SELECT s.step FROM activity a JOIN task_run_steps s ON s.run_id = a.entity_id"
            " WHERE a.request_id = ? AND a.operation = ? AND a.subject = ? ORDER BY a.start_ns, a.entity_id, s.seq",
            request_id, *_RUN,
        )  # fmt: skip
        return [json.loads(row["step"]) for row in rows]

    async def stateful_requests(self) -> list[str]:
        """The requests whose chain runs recorded steps, the most recent first."""
        await self._settle()
        rows = await self._query(
            "SELECT a.request_id, MAX(a.end_ns) AS at FROM activity a WHERE a.operation = ? AND a.subject = ?"
            " AND EXISTS (SELECT 1 FROM task_run_steps s WHERE s.run_id = a.entity_id) GROUP BY a.request_id",
            *_RUN,
        )
        return [entry["id"] for entry in _ids(rows)]

    async def alerts(self, limit: int) -> list[Json]:
        """The newest ``limit`` alerts."""
        await self._settle()
        rows = await self._query(
            "SELECT id, request_id, message, metadata, at_ns FROM activity_alerts ORDER BY n DESC LIMIT ?", limit
        )
        return [alert_json(row) for row in rows]


def _ids(rows: list[Row]) -> list[Json]:
    """Request ids with their latest time (from either table) → ``[{"id"}]``, the most recent first."""
    latest: dict[str, int] = {}
    for row in rows:
        latest[row["request_id"]] = max(latest.get(row["request_id"], row["at"]), row["at"])
    return [{"id": request_id} for request_id, _ in sorted(latest.items(), key=lambda item: (item[1], item[0]), reverse=True)]
