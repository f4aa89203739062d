"""The sandbox worker: a process that runs one script at a time in a fresh QuickJS context.

    python -m chainloom.infra.sandbox.worker '{"memory_bytes": …, "stack_bytes": …, "max_result_bytes": …}'

Started and ended by ``pool.SandboxPool``, which talks to it over stdin/stdout in the frames of
``contract``. The pool, not the worker, enforces the wall-clock limit (it kills a worker that
overruns): the binding refuses Python callbacks — the host functions — once its CPU time limit is set.
Memory and stack are limited by QuickJS; the address space of the whole process too, as a backstop
for what QuickJS does not count.

Imports only the standard library and quickjs, for a fast start.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import BinaryIO

import quickjs

from chainloom.infra.sandbox.contract import (
    CONSOLE_LEVELS,
    FRAME_HEADER,
    HOST_FUNCTIONS,
    MAX_HOST_ARGUMENT_BYTES,
    PRELUDE,
    Limits,
)

# Above the process's size at start: room for QuickJS's own limit and the copies its values get on the
# Python side (JSON of results and host arguments).
_ADDRESS_SPACE_HEADROOM = 256 * 2**20
_PR_SET_PDEATHSIG = 1


class Channel:
    """The frames to and from the pool. A pool that has gone away ends the process."""

    def __init__(self, incoming: BinaryIO, outgoing: BinaryIO) -> None:
        self._in = incoming
        self._out = outgoing

    def send(self, payload: bytes) -> None:
        try:
            self._out.write(FRAME_HEADER.pack(len(payload)) + payload)
            self._out.flush()
        except (BrokenPipeError, ValueError):
            os._exit(0)  # also from inside a host function, where an exception would reach QuickJS

    def receive(self) -> bytes | None:
        """The next frame, None at the end of input."""
        header = self._in.read(FRAME_HEADER.size)
        if len(header) < FRAME_HEADER.size:
            return None
        (size,) = FRAME_HEADER.unpack(header)
        payload = self._in.read(size)
        return payload if len(payload) == size else None


def _host_failure(message: str) -> str:
    return json.dumps({"success": False, "error": message})


class Script:
    """One run: a fresh context, the prelude, the event, the script, then its function or ``result``.

    The context of the next run is made while the worker waits for it (``prepare``): compiling the
    prelude is most of a trivial run's cost (0.3 of 0.5 ms).
    """

    def __init__(self, channel: Channel, limits: Limits) -> None:
        self._channel = channel
        self._limits = limits
        self._prepared: tuple[quickjs.Context, quickjs.Object] | None = None

    def prepare(self) -> None:
        """Make the next run's context, the prelude evaluated in it."""
        if self._prepared is None:
            try:
                self._prepared = self._new_context()
            except Exception:  # made again by the run, which reports what fails
                self._prepared = None

    def _new_context(self) -> tuple[quickjs.Context, quickjs.Object]:
        context = quickjs.Context()
        context.set_memory_limit(self._limits.memory_bytes)
        context.set_max_stack_size(self._limits.stack_bytes)
        context.add_callable("__chainloom_host", self._host)
        context.add_callable("__chainloom_console", self._console)
        return context, context.eval(PRELUDE)

    def run(self, function: str, script: str, event: object) -> bytes:
        """The run's ``done`` frame."""
        prepared, self._prepared = self._prepared, None
        try:
            context, control = prepared or self._new_context()
            answer = control("start", json.dumps(event))  # ASCII JSON: see contract
            if not answer:
                # The script's own last value is dropped here: turned into a Python string, a lone surrogate
                # in it would fail the run. On a line of its own, it cannot join a comment of the script.
                context.eval(script + "\n;void 0")
                _run_pending_jobs(context)
                answer = control("call", json.dumps(function))
                if answer == "p":
                    _run_pending_jobs(context)
                    answer = control("settled", "")
        except quickjs.JSException as error:  # StackOverflow is one
            return _failed(_first_line(str(error)))
        except Exception as error:  # e.g. the script's text is not valid UTF-8 (a lone surrogate)
            return _failed(f"the sandbox could not run the script: {type(error).__name__}: {error}")
        return self._done(answer)

    def _done(self, answer: object) -> bytes:
        if not isinstance(answer, str) or answer[:1] not in ("n", "r", "e"):
            return _failed("the sandbox could not read the script's outcome")
        if answer == "n":
            return b'{"done":{"ok":true,"result":null,"error":""}}'
        if answer[0] == "e":
            return _failed(json.loads(answer[1:]))
        result = answer[1:].encode()
        if len(result) > self._limits.max_result_bytes:
            return _failed(f"the result is larger than {self._limits.max_result_bytes} bytes ({len(result)})")
        return b'{"done":{"ok":true,"error":"","result":' + result + b"}}"

    def _host(self, name: object, arguments: object) -> str:
        # Called by QuickJS (as are _console's calls): it must answer a string and raise nothing, or the
        # binding is left in a broken state.
        try:
            if not isinstance(name, str) or name not in HOST_FUNCTIONS or not isinstance(arguments, str):
                return _host_failure("unknown host function")
            encoded = arguments.encode()
            if len(encoded) > MAX_HOST_ARGUMENT_BYTES:
                return _host_failure(f"the arguments are larger than {MAX_HOST_ARGUMENT_BYTES} bytes")
            self._channel.send(b'{"call":"' + name.encode() + b'","args":' + encoded + b"}")
            reply = self._channel.receive()
            if reply is None:
                os._exit(0)
            return reply.decode("ascii")
        except Exception as error:
            return _host_failure(f"the sandbox could not make the call: {type(error).__name__}")

    def _console(self, level: object, line: object) -> None:
        try:
            if isinstance(level, str) and level in CONSOLE_LEVELS and isinstance(line, str):
                self._channel.send(b'{"console":"' + level.encode() + b'","line":' + line.encode() + b"}")
        except Exception:  # a line that cannot be logged is dropped
            pass


def _run_pending_jobs(context: quickjs.Context) -> None:
    """Settle promises: QuickJS runs their reactions only when asked (an endless chain meets the timeout)."""
    while context.execute_pending_job():
        pass


def _first_line(message: str) -> str:
    # The binding appends the stack ("Error: boom\n    at f (<input>)") or "undefined" for a thrown non-error.
    return message.split("\n", 1)[0] or "uncaught exception"


def _failed(error: str) -> bytes:
    return json.dumps({"done": {"ok": False, "result": None, "error": error}}).encode()


def _die_with_parent() -> None:
    # A script in an endless loop never reads the closed pipe of a parent that was killed: Linux kills
    # this process with it. Elsewhere (or if prctl is missing) the pipe is the only tie.
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _limit_address_space(limits: Limits) -> None:
    try:
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + 4 * limits.memory_bytes + _ADDRESS_SPACE_HEADROOM
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main() -> None:
    limits = Limits(**json.loads(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal reaches the whole group: the pool ends us
    _die_with_parent()
    _limit_address_space(limits)
    # Frames go out on a copy of stdout; stdout itself becomes stderr, so a stray print cannot break a frame.
    outgoing = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    channel = Channel(sys.stdin.buffer, outgoing)
    script = Script(channel, limits)
    script.prepare()
    channel.send(json.dumps({"ready": os.getpid()}).encode())
    while (frame := channel.receive()) is not None:
        run = json.loads(frame)
        channel.send(script.run(run["function"], run["script"], run["event"]))
        script.prepare()


if __name__ == "__main__":
    main()
