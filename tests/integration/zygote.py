"""``chainloom serve`` for the tests, forked from a process that has imported it once.

Starting ``chainloom serve`` costs about 1.3 s of CPU before it does anything: importing the service. The
tests start some 450 services, so that was a third of the suite's CPU on a 2-core machine. A *zygote* —
one process per test run that imports the service and nothing else, starts no thread and no event loop,
then forks a service whenever asked — pays it once. A forked service is exactly what the command runs:
the same ``chainloom.infra.cli.main(["serve", ...])``, in a session of its own, with the environment,
working directory and log file it was given (``os.fork`` from a single-threaded process is what
``chainloom serve`` itself does for its workers).

The test process talks to the zygote over a Unix socket, one JSON line per request: ``start`` (answers
the pid), ``status`` (the exit code once the zygote has reaped the process, else null) and ``signal`` (sent
by the zygote, which alone knows whether the pid is still the service's). ``Forked`` is
the part of ``subprocess.Popen`` the tests use (``pid``, ``poll``, ``wait``, ``send_signal``,
``returncode``). The zygote exits when the test process does (it watches its parent, and is sent SIGTERM at
exit), killing any service a test left running.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

_REAP_EVERY = 0.02  # seconds between looks for ended services (a zombie shows as not running anyway)


# -- the zygote (its own process) ------------------------------------------------------------------------------


def _serve_forever(path: str) -> None:
    import chainloom.infra.cli as cli  # everything `serve` imports, once
    import chainloom.web.app  # noqa: F401

    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    ended: dict[int, int] = {}  # pid → Popen-style return code (negative: the signal that ended it)
    started: set[int] = set()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))  # the test run is over
    while os.getppid() == parent and not stopping:
        while started:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            started.discard(pid)
            ended[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if not _readable(listener, _REAP_EVERY):
            continue
        connection, _ = listener.accept()
        with connection, connection.makefile("rwb") as stream:
            request = json.loads(stream.readline())
            if request["op"] == "start":
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    connection.close()
                    _run_service(cli, request)  # never returns
                started.add(pid)
                # The number may be an earlier service's, reaped long ago: its exit code is not this one's (it made
                # a service that had just started look as if it had exited, with that one's -9).
                ended.pop(pid, None)
                answer: dict[str, Any] = {"pid": pid}
            elif request["op"] == "signal":
                answer = {"sent": _signal(request["pid"], request["signal"], request["group"], started)}
            else:
                answer = {"returncode": ended.get(request["pid"])}
            stream.write(json.dumps(answer).encode() + b"\n")
            stream.flush()
    # A service a test did not stop (it failed first, say) is in a session of its own: nothing else ends it.
    for pid in started:
        _signal(pid, signal.SIGKILL, True, started)


def _signal(pid: int, number: int, group: bool, unreaped: set[int]) -> bool:
    """Signal a service (``group``: its whole process group) only while the number is still its own.

    Once the zygote has reaped a service, its pid is free: with the machine forking hundreds of processes a
    second (PostgreSQL's backends, other test passes' services), it can soon be another process's, and a late
    ``killpg`` of it (as ``Service.shut_down`` sent after every stop) would kill that process's group.
    Unreaped (running, or a zombie), the pid is reserved; after, the group's number is reserved only while a
    process of the group is left (a worker the parent left behind), so that is looked for first.
    """
    if pid not in unreaped and not (group and any(_group_of(other) == pid for other in _pids())):
        return False
    try:
        os.killpg(pid, number) if group else os.kill(pid, number)
    except ProcessLookupError:
        return False
    return True


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _group_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _readable(listener: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _run_service(cli: Any, request: dict[str, Any]) -> None:
    code = 1
    try:
        os.setsid()
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        import random

        random.seed()  # not the zygote's sequence in every service
        sys.argv = ["chainloom", *request["argv"]]
        code = cli.main(request["argv"]) or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the service's log, as an interpreter would
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- the test process's side -----------------------------------------------------------------------------------

_zygote: tuple[subprocess.Popen[bytes], str] | None = None
_lock = threading.Lock()


def _socket_path() -> str:
    global _zygote
    with _lock:
        if _zygote is None or _zygote[0].poll() is not None:
            path = os.path.join(tempfile.mkdtemp(prefix="chainloom-zygote-"), "socket")
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.zygote", path], cwd=Path(__file__).resolve().parents[2],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert process.stdout is not None and process.stdout.readline().strip() == b"ready", "the zygote did not start"
            atexit.register(_stop, process)
            _zygote = (process, path)
        return _zygote[1]


def _stop(zygote: subprocess.Popen[bytes]) -> None:
    """End the zygote, and with it every service left running."""
    zygote.terminate()
    try:
        zygote.wait(10)
    except subprocess.TimeoutExpired:
        zygote.kill()
        zygote.wait()


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(_socket_path())
        with connection.makefile("rwb") as stream:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            answer: dict[str, Any] = json.loads(stream.readline())
            return answer


class Forked:
    """A service the zygote forked, as the tests use a ``subprocess.Popen``."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = argv
        self.returncode: int | None = None
        self.pid: int = _ask({"op": "start", "argv": argv, "env": env, "cwd": os.getcwd(), "log": str(log_path)})["pid"]

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _ask({"op": "status", "pid": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(_REAP_EVERY)
        return code

    def send_signal(self, number: int) -> None:
        """Signal the service's parent, unless it has ended (the zygote sends it: only it knows whether the pid
        is still this service's)."""
        _ask({"op": "signal", "pid": self.pid, "signal": int(number), "group": False})

    def signal_group(self, number: int) -> None:
        """Signal every process left of the service's process group (its parent's session)."""
        _ask({"op": "signal", "pid": self.pid, "signal": int(number), "group": True})

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    _serve_forever(sys.argv[1])
