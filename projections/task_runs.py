"""The ``task_runs`` read model: each chain run with its captured state (``GET /tasks/runs/{id}``).

``task_runs`` holds a row per run (chain, status, result or error, times); ``task_run_steps`` a row per
recorded step, in order (the CapturedStateUnit and the handler's output, as recorded: by value up to
64 KiB, else by digest).
"""

from __future__ import annotations

import json

from chainloom.domain.task_runs import FAILED, FINISHED, RUNNING, TaskRun
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class TaskRunsProjector(Projector):
    name = "task_runs"
    tables = ("task_runs", "task_run_steps")
    schema = (
        "CREATE TABLE IF NOT EXISTS {task_runs} ("
        " id TEXT PRIMARY KEY, chain_id TEXT NOT NULL, input_type TEXT NOT NULL, step_limit BIGINT NOT NULL,"
        " status TEXT NOT NULL, output TEXT, output_type TEXT NOT NULL, output_sha256 TEXT NOT NULL,"
        " output_size BIGINT NOT NULL, error TEXT NOT NULL, steps BIGINT NOT NULL,"
        " started_at BIGINT NOT NULL, finished_at BIGINT)",
        "CREATE TABLE IF NOT EXISTS {task_run_steps} ("
        " run_id TEXT NOT NULL, seq BIGINT NOT NULL, step TEXT NOT NULL, output TEXT,"
        " output_sha256 TEXT NOT NULL, output_size BIGINT NOT NULL, PRIMARY KEY (run_id, seq))",
    )

    @on(TaskRun.Started)
    def started(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {task_runs} (id, chain_id, input_type, step_limit, status, output, output_type,"
            " output_sha256, output_size, error, steps, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, '', '', 0, '', 0, ?, NULL)",
            (event["aggregate_id"], data["chainId"], data["inputType"], data["stepLimit"], RUNNING, parse_ns(event["created_at"])),
        )

    @on(TaskRun.StepRecorded)
    def step_recorded(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        # The step's number: its event's version (1 is ``started``).
        cursor.execute(
            "INSERT INTO {task_run_steps} (run_id, seq, step, output, output_sha256, output_size) VALUES (?, ?, ?, ?, ?, ?)",
            (event["aggregate_id"], event["version"], _json(data["step"]), _json(data["output"]), data["outputSha256"], data["outputSize"]),
        )
        cursor.execute("UPDATE {task_runs} SET steps = steps + 1 WHERE id = ?", (event["aggregate_id"],))

    @on(TaskRun.Finished)
    def finished(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {task_runs} SET status = ?, output = ?, output_type = ?, output_sha256 = ?, output_size = ?,"
            " finished_at = ? WHERE id = ?",
            (FINISHED, _json(data["output"]), data["outputType"], data["outputSha256"], data["outputSize"],
             parse_ns(event["created_at"]), event["aggregate_id"]),
        )

    @on(TaskRun.Failed)
    def failed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {task_runs} SET status = ?, error = ?, finished_at = ? WHERE id = ?",
            (FAILED, event["data"]["error"], parse_ns(event["created_at"]), event["aggregate_id"]),
        )
