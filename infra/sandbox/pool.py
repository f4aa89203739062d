"""A pool of sandbox worker processes that run function scripts, one run per worker at a time.

    pool = SandboxPool(size=2, limits=Limits(timeout=5.0))
    outcome = await pool.run(Run("audit_user", script, event_object(envelope)), host)
    await pool.close()                                      # at shutdown: kills the workers

Workers start at the first runs that need them, at most ``size`` at once; a run waits for an idle one.
The pool enforces the script's wall-clock limit, counting only the time the worker is running (not
the time a host call takes): a worker that overruns is killed, as is one whose run was cancelled or
that broke the protocol, and a new one starts for a later run. ``run`` answers an ``Outcome`` for
anything a script or its worker does; it raises only what its caller does (cancellation).

A run started from inside a host call of another run (a script's ``sendEvent`` dispatching the new
event's functions) does not wait for a slot: its caller holds one and waits on it, so with every slot
held that way the pool would wait on itself. It runs on an idle worker or an extra one, ended after it.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from chainloom.infra.sandbox.contract import (
    CONSOLE_LEVELS,
    FRAME_HEADER,
    MAX_HOST_ARGUMENT_BYTES,
    Host,
    Limits,
    Outcome,
    Run,
)

# Seconds a new worker may take to start (Python and quickjs on a busy machine).
_START_TIMEOUT = 30.0
# Seconds a worker whose pipe closed gets to exit, so its exit status can be reported.
_EXIT_WAIT = 1.0
# What a worker's environment keeps of ours: enough to start Python and find chainloom, no secrets.
_ENVIRONMENT = ("PATH", "PYTHONPATH", "PYTHONHOME", "LANG", "LC_ALL", "LC_CTYPE")

_inside_host_call: contextvars.ContextVar[bool] = contextvars.ContextVar("sandbox_host_call", default=False)


class _WorkerGone(Exception):
    """The worker closed its pipe, died, or sent something that is not a frame."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process, max_frame_bytes: int) -> None:
        self.process = process
        self._max_frame_bytes = max_frame_bytes

    async def send(self, payload: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(FRAME_HEADER.pack(len(payload)) + payload)
            await stdin.drain()
        except (ConnectionError, RuntimeError) as error:  # RuntimeError: the transport is closing
            raise _WorkerGone(str(error)) from error

    async def receive(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            (size,) = FRAME_HEADER.unpack(await stdout.readexactly(FRAME_HEADER.size))
            if size > self._max_frame_bytes:
                raise _WorkerGone(f"a frame of {size} bytes")
            frame = json.loads((await stdout.readexactly(size)).decode("utf-8", "surrogatepass"))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as error:
            raise _WorkerGone(str(error)) from error
        if not isinstance(frame, dict):
            raise _WorkerGone("a frame that is not an object")
        return frame

    def kill(self) -> None:
        if self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def exit_status(self) -> str:
        """How the worker ended ("SIGKILL", "exit code 1"), once its pipe has closed."""
        try:
            code = await asyncio.wait_for(self.process.wait(), _EXIT_WAIT)
        except TimeoutError:
            return "it stopped answering"
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"


class SandboxPool:
    def __init__(self, size: int, limits: Limits = Limits(), log: logging.Logger | None = None) -> None:
        if size < 1:
            raise ValueError("a sandbox pool needs at least one worker")
        self.size = size
        self.limits = limits
        self._log = log or logging.getLogger("chainloom.functions")
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._exiting: set[asyncio.Task[int]] = set()
        self._closed = False
        # The biggest frame a worker may send: host arguments, or a result, with their envelope.
        self._max_frame_bytes = MAX_HOST_ARGUMENT_BYTES + limits.max_result_bytes + 64 * 1024
        # -P: the current directory is not searched for modules (a stray json.py there would be imported).
        self._command = [
            sys.executable, "-P", "-m", "chainloom.infra.sandbox.worker", json.dumps(dataclasses.asdict(limits))
        ]  # fmt: skip

    async def run(self, run: Run, host: Host) -> Outcome:
        """Run ``run`` in a worker; its host functions call ``host``. Never raises for what the script does."""
        try:
            frame = json.dumps({"function": run.function, "script": run.script, "event": run.event}, allow_nan=False)
        except (TypeError, ValueError) as error:
            return _failed(f"the run cannot be sent to the sandbox: {error}")
        if _inside_host_call.get():
            return await self._run_now(frame.encode(), run.function, host)
        async with self._slots:
            return await self._run_now(frame.encode(), run.function, host)

    @property
    def pids(self) -> tuple[int, ...]:
        """The process ids of the live workers, idle and busy (for operators and tests)."""
        return tuple(worker.process.pid for worker in (*self._idle, *self._busy))

    async def close(self) -> None:
        """Kill every worker (runs in progress end failed) and wait for them to exit."""
        self._closed = True
        for worker in [*self._idle, *self._busy]:
            self._end(worker)
        self._idle.clear()
        if self._exiting:
            await asyncio.gather(*self._exiting, return_exceptions=True)

    async def _run_now(self, frame: bytes, function: str, host: Host) -> Outcome:
        if self._closed:
            return _failed("the sandbox is closed")
        worker = self._idle_worker()
        if worker is None:
            try:
                worker = await self._start()
            except (_WorkerGone, OSError, TimeoutError) as error:
                return _failed(f"the sandbox process could not start: {error}")
            if self._closed:  # while it started
                self._end(worker)
                return _failed("the sandbox is closed")
        self._busy.add(worker)
        healthy = False
        try:
            outcome, healthy = await self._exchange(worker, frame, function, host)
            return outcome
        finally:
            self._busy.discard(worker)
            if healthy and not self._closed and len(self._idle) + len(self._busy) < self.size:
                self._idle.append(worker)
            else:
                self._end(worker)

    def _idle_worker(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            self._end(worker)  # it died while idle (killed from outside)
        return None

    async def _exchange(self, worker: _Worker, frame: bytes, function: str, host: Host) -> tuple[Outcome, bool]:
        """The run's frames until its outcome, and whether the worker can take another run."""
        started = time.perf_counter()
        budget = self.limits.timeout  # seconds of the worker's own running left

        def failed(error: str) -> Outcome:
            return _failed(error, started)

        try:
            await worker.send(frame)
            while True:
                waiting = time.monotonic()
                try:
                    message = await asyncio.wait_for(worker.receive(), max(budget, 0.0))
                except TimeoutError:
                    return failed(f"script timed out after {self.limits.timeout:g}s"), False
                budget -= time.monotonic() - waiting
                if "console" in message:
                    self._console(function, message)
                elif "call" in message:
                    await worker.send(await self._call(host, message))
                elif "done" in message:
                    done = message["done"]
                    result = done.get("result") if done.get("ok") else None
                    return _outcome(bool(done.get("ok")), result, str(done.get("error", "")), started), True
                else:
                    return failed("the sandbox process sent an unknown frame"), False
        except _WorkerGone:
            if self._closed:
                return failed("the sandbox is closed"), False
            return failed(f"the sandbox process died ({await worker.exit_status()})"), False

    async def _call(self, host: Host, message: dict[str, Any]) -> bytes:
        """The host's answer to a call, as the frame back; failures answered as the spec's failure object."""
        name, arguments = message["call"], message.get("args")
        token = _inside_host_call.set(True)
        try:
            answer = await asyncio.wait_for(host(name, arguments if isinstance(arguments, list) else []),
                                            self.limits.host_call_timeout)
        except TimeoutError:
            answer = {"success": False, "error": "operation timed out"}
        except Exception as error:  # the host's failure is the script's answer, as in the spec
            answer = {"success": False, "error": str(error) or type(error).__name__}
        finally:
            _inside_host_call.reset(token)
        try:
            return json.dumps(answer, allow_nan=False).encode()  # ASCII: see contract
        except (TypeError, ValueError) as error:
            return json.dumps({"success": False, "error": f"the host's answer is not JSON: {error}"}).encode()

    def _console(self, function: str, message: dict[str, Any]) -> None:
        level = logging.getLevelName(CONSOLE_LEVELS.get(str(message["console"]), "INFO"))
        # A lone surrogate (valid in a JS string) would break the log's encoding.
        line = str(message.get("line", "")).encode("utf-8", "replace").decode()
        self._log.log(level, "function %s: %s", function, line)

    async def _start(self) -> _Worker:
        environment = {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}
        process = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=environment
        )
        worker = _Worker(process, self._max_frame_bytes)
        try:
            ready = await asyncio.wait_for(worker.receive(), _START_TIMEOUT)
            if "ready" not in ready:
                raise _WorkerGone("it did not say it was ready")
        except (_WorkerGone, TimeoutError) as error:
            self._end(worker)
            raise _WorkerGone(f"{error} ({await worker.exit_status()})") from error
        except BaseException:
            self._end(worker)
            raise
        return worker

    def _end(self, worker: _Worker) -> None:
        """Kill a worker; its exit is awaited in the background (``close`` waits for it)."""
        worker.kill()
        exiting = asyncio.ensure_future(worker.process.wait())
        self._exiting.add(exiting)
        exiting.add_done_callback(self._exiting.discard)


def _outcome(ok: bool, result: Any, error: str, started: float) -> Outcome:
    return Outcome(ok, result if isinstance(result, dict) else None, error, (time.perf_counter() - started) * 1000)


def _failed(error: str, started: float | None = None) -> Outcome:
    return _outcome(False, None, error, time.perf_counter() if started is None else started)
