"""A chain run (``POST /tasks``, the OpenAI-compatible endpoints): what the engine did, on the log.

One aggregate per run, keyed by the run id (a UUID):

- ``task_run.started`` {chainId, inputType, stepLimit}: the run began;
- ``task_run.step_recorded`` {step, output, outputSha256, outputSize}: one attempt of one task — its
  CapturedStateUnit (``step``; the debug ``input``/``output`` texts bounded like ``output``) and the
  handler's output by value when its JSON is at most 64 KiB, else null with its SHA-256 and size;
- ``task_run.finished`` {outputType, output, outputSha256, outputSize}: the chain's result (same rule);
- ``task_run.failed`` {error}: the chain error.

The engine records ``started`` when the run begins and the steps in batches (at the end, or every
``STEP_BATCH`` steps or ``FLUSH_SECONDS`` of a long run), so a run that dies half-way leaves ``started``
and what had been recorded. Every event carries what the next one needs (the run is resumed from its
last event, ``TaskRun.resume``): recording costs one append per batch, however long the run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict

# Values up to this size (their compact JSON, in bytes) are recorded as they are; larger ones by digest.
MAX_RECORDED_BYTES = 64 * 1024
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"


def bounded(value: Any) -> tuple[Any, str, int]:
    """(value, "", size) when its JSON is at most 64 KiB; else (None, its SHA-256, size)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(str(value), ensure_ascii=False)
        value = str(value)
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_RECORDED_BYTES:
        return value, "", len(data)
    return None, hashlib.sha256(data).hexdigest(), len(data)


def bounded_text(text: str) -> str:
    """A debug text of a step: itself up to 64 KiB, else a note with its SHA-256 and size."""
    if len(text) * 4 <= MAX_RECORDED_BYTES:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_RECORDED_BYTES:
        return text
    return f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}>"


class TaskRun(Aggregate):
    aggregate_type = "task_run"

    class Started(Aggregate.Created):
        chain_id: str
        input_type: str
        step_limit: int

    class StepRecorded(Aggregate.Event):
        step: dict
        output: Any
        output_sha256: str
        output_size: int

    class Finished(Aggregate.Event):
        output_type: str
        output: Any
        output_sha256: str
        output_size: int

    class Failed(Aggregate.Event):
        error: str

    @classmethod
    def start(cls, run_id: str, chain_id: str, input_type: str, step_limit: int) -> TaskRun:
        return cls._create(cls.Started, id=cls.stream_id(run_id), chain_id=chain_id, input_type=input_type, step_limit=step_limit)

    @event(Started)
    def __init__(self, chain_id: str, input_type: str, step_limit: int) -> None:
        self.chain_id = chain_id
        self.status = RUNNING

    @classmethod
    def resume(cls, run_id: str, last_event: Any | None) -> TaskRun | None:
        """The run as its last event left it (none of its events needs the earlier ones), or None."""
        if last_event is None:
            return None
        run = object.__new__(cls)
        run.__base_init__(last_event.originator_id, last_event.originator_version, last_event.timestamp)
        run.chain_id = getattr(last_event, "chain_id", "")
        run.status = FINISHED if isinstance(last_event, cls.Finished) else FAILED if isinstance(last_event, cls.Failed) else RUNNING
        return run

    def _running(self) -> None:
        if self.status != RUNNING:
            raise Conflict(f"task run {self.key} has {self.status}")

    def record_step(self, step: dict[str, Any], output: Any) -> None:
        self._running()
        step = dict(step)
        for key in ("input", "output"):
            if isinstance(step.get(key), str):
                step[key] = bounded_text(step[key])
        value, digest, size = bounded(output)
        self._record_step(step=step, output=value, output_sha256=digest, output_size=size)

    @event(StepRecorded)
    def _record_step(self, step: dict, output: Any, output_sha256: str, output_size: int) -> None:
        pass

    def finish(self, output_type: str, output: Any) -> None:
        self._running()
        value, digest, size = bounded(output)
        self._finish(output_type=output_type, output=value, output_sha256=digest, output_size=size)

    @event(Finished)
    def _finish(self, output_type: str, output: Any, output_sha256: str, output_size: int) -> None:
        self.status = FINISHED

    def fail(self, error: str) -> None:
        self._running()
        self._fail(error=bounded_text(error or "the run failed"))

    @event(Failed)
    def _fail(self, error: str) -> None:
        self.status = FAILED

