"""Queries of the ``task_runs`` read model (``projections.task_runs``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.domain.errors import NotFound
from chainloom.infra.readstore import ReadStore
from chainloom.infra.timefmt import format_ns

Json = dict[str, Any]


class TaskRunQueries:
    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self._store = store
        self._run_blocking = run_blocking

    async def get(self, run_id: str) -> Json:
        """``GET /tasks/runs/{id}``: the run as recorded so far."""
        found = await self._run_blocking(self._get, run_id)
        if found is None:
            raise NotFound(f"task run {run_id} not found", param="id")
        return found

    def _get(self, run_id: str) -> Json | None:
        with self._store.transaction(commit=False) as cursor:  # the run and its steps as of one moment
            cursor.execute(
                "SELECT id, chain_id, input_type, step_limit, status, output, output_type, output_sha256, output_size,"
                " error, started_at, finished_at FROM task_runs WHERE id = ?",
                (run_id,),
            )
            rows = cursor.fetchall()
            if not rows:
                return None
            row = rows[0]
            cursor.execute(
                "SELECT step, output, output_sha256, output_size FROM task_run_steps WHERE run_id = ? ORDER BY seq", (run_id,)
            )
            steps = cursor.fetchall()
        run: Json = {
            "id": row["id"],
            "chainId": row["chain_id"],
            "inputType": row["input_type"],
            "stepLimit": row["step_limit"],
            "status": row["status"],
            "state": [json.loads(s["step"]) for s in steps],
            "stepOutputs": [_recorded(s["output"], s["output_sha256"], s["output_size"]) for s in steps],
            "startedAt": format_ns(row["started_at"]),
            "finishedAt": format_ns(row["finished_at"]) if row["finished_at"] is not None else None,
        }
        if row["status"] == "finished":
            run["outputType"] = row["output_type"]
            run["output"] = json.loads(row["output"]) if row["output"] is not None else None
            if row["output_sha256"]:
                run["outputSha256"] = row["output_sha256"]
                run["outputSize"] = row["output_size"]
        elif row["status"] == "failed":
            run["error"] = row["error"]
        return run


def _recorded(output: str | None, digest: str, size: int) -> Json:
    if digest:
        return {"sha256": digest, "size": size}
    return {"value": json.loads(output) if output is not None else None, "size": size}
