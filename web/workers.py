"""``chainloom serve`` with several API worker processes sharing one port.

Python runs one thread of Python at a time per process, so the service uses
every core by running ``CHAINLOOM_WORKERS`` processes (default: one per core).
The parent binds the listening socket, forks the workers (before it has
started any thread or event loop, so forking is safe), and supervises them:
a worker that dies is started again; SIGTERM or SIGINT is passed on to every
worker, each of which drains its in-flight requests (aiohttp's graceful
shutdown), and the parent exits once all have.

Nothing a request needs lives in one worker's memory: the log and the read
models are shared through the store; work that must run once — the projection
runner, the Kafka relay — is a singleton job (``infra/singleton.py``) that one
worker holds and another takes over when it dies; the read cache is stamped
with a version all workers share (``SharedVersion``), and a worker that wrote or
projected wakes the others at once (``Doorbell``).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop
from aiohttp import web

from chainloom.infra import metrics
from chainloom.infra.settings import Settings

logger = logging.getLogger(__name__)

# How long a stopping worker may take to drain its requests before it is killed.
SHUTDOWN_GRACE = 60.0
# A worker that dies is started again after this long (so a crash loop does not spin).
RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class SharedVersion:
    """A count every worker sees. As the read models' version it is moved after each projected batch
    and each read-your-writes wait, so a query result remembered by any worker is dropped as soon as any
    read model may have moved; as the count of mapping changes, by each change of a webhook mapping.

    Lock-free, so a worker killed at any instant cannot block the others: each worker counts in a slot
    of its own (a restarted worker goes on counting in its slot), and the version is their sum, which
    every bump moves.
    """

    def __init__(self, workers: int) -> None:
        self._counts = multiprocessing.get_context("fork").RawArray("q", workers)
        self._slot = 0

    def in_slot(self, slot: int) -> SharedVersion:
        """This version as the worker in ``slot`` moves it."""
        self._slot = slot
        return self

    def __call__(self) -> int:
        return sum(self._counts)

    def bump(self) -> None:
        self._counts[self._slot] += 1


class Doorbell:
    """Wakes the other workers at once: after a write (the holder of the projection runner projects it
    now) and after a projected batch (the others release their waiting commands now), instead of at
    their next look at the store.

    One datagram socket pair per worker slot, made before the workers are forked: a worker reads its
    slot's receiving end (a restarted worker inherits it again from the parent) and rings the others by
    sending a byte to theirs. Never blocking: a ring that finds a full queue is dropped — a wake-up is
    already waiting there — and the workers' polling remains the fallback.
    """

    def __init__(self, workers: int) -> None:
        self._pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
        for pair in self._pairs:
            for end in pair:
                end.setblocking(False)
        self._slot = 0
        self._listening: asyncio.AbstractEventLoop | None = None

    def in_slot(self, slot: int) -> Doorbell:
        self._slot = slot
        return self

    def ring(self) -> None:
        """Wake every other worker (from any thread)."""
        for slot, (_, bell) in enumerate(self._pairs):
            if slot != self._slot:
                try:
                    bell.send(b"!")
                except OSError:  # full (a wake-up is pending) or the worker is being restarted
                    pass

    def listen(self, on_ring: Callable[[], None]) -> None:
        """Call ``on_ring()`` on the running event loop whenever another worker rings (once per batch of rings)."""
        receiving = self._pairs[self._slot][0]

        def drain() -> None:
            try:
                while receiving.recv(64):
                    pass
            except OSError:  # drained
                pass
            on_ring()

        self._listening = asyncio.get_running_loop()
        self._listening.add_reader(receiving.fileno(), drain)

    def stop_listening(self) -> None:
        if self._listening is not None:
            self._listening.remove_reader(self._pairs[self._slot][0].fileno())
            self._listening = None


@dataclass
class Siblings:
    """What a worker shares with the other workers of one ``chainloom serve``."""

    version: SharedVersion
    doorbell: Doorbell
    mapping_changes: SharedVersion  # moved by every change of a webhook mapping (their caches)
    trigger_changes: SharedVersion  # moved by every change of a function or event trigger (their caches)

    @classmethod
    def of(cls, workers: int) -> Siblings:
        return cls(SharedVersion(workers), Doorbell(workers), SharedVersion(workers), SharedVersion(workers))

    def in_slot(self, slot: int) -> Siblings:
        """As the worker in ``slot`` (after the fork) uses them."""
        return Siblings(
            self.version.in_slot(slot),
            self.doorbell.in_slot(slot),
            self.mapping_changes.in_slot(slot),
            self.trigger_changes.in_slot(slot),
        )


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(settings: Settings, access_log_format: str, announce: Callable[[str], None]) -> int:
    """Run the workers until SIGTERM or SIGINT (``access_log_format`` and ``announce`` as ``web.run_app`` takes them)."""
    sock = listening_socket(settings.host, settings.port)
    siblings = Siblings.of(settings.workers)
    # The workers' counters, summed at a scrape: counted in files of a fresh private directory (infra/metrics.py).
    counted_in = metrics.enable_multiprocess() if settings.metrics else None
    workers: dict[int, int] = {}  # pid -> slot
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("serving on %s:%d with %d worker processes", settings.host, settings.port, settings.workers)

    def start(slot: int) -> None:
        run = lambda: _run_worker(settings, sock, siblings.in_slot(slot), access_log_format, announce)  # noqa: E731
        workers[_fork(slot, run)] = slot

    for slot in range(settings.workers):
        start(slot)
    restarts: list[tuple[float, int]] = []  # (when, slot)
    while not stopping:
        time.sleep(0.1)
        for pid, status in _reaped(workers):
            slot = workers.pop(pid)
            metrics.worker_ended(pid)
            if not stopping:
                logger.warning("worker %d (pid %d) ended (%s); starting it again", slot, pid, _describe(status))
                restarts.append((time.monotonic() + RESTART_DELAY, slot))
        due = [r for r in restarts if r[0] <= time.monotonic()]
        for restart in due:
            restarts.remove(restart)
            start(restart[1])
    logger.info("stopping %d workers", len(workers))
    for pid in workers:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE + 5
    while workers and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid, _ in _reaped(workers):
            workers.pop(pid)
    for pid in workers:
        _signal(pid, signal.SIGKILL)
    sock.close()
    if counted_in is not None:
        metrics.disable_multiprocess(counted_in)
    return 0


def _run_worker(
    settings: Settings,
    sock: socket.socket,
    siblings: Siblings,
    access_log_format: str,
    announce: Callable[[str], None],
) -> None:
    from chainloom.web.app import create_app

    run_until_stopped(create_app(settings, siblings), web.SockSite, access_log_format, announce, sock=sock)


def run_until_stopped(
    app: web.Application,
    site: Callable[..., web.BaseSite],
    access_log_format: str,
    announce: Callable[[str], None],
    **where: Any,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then drain: stop accepting connections, let the requests in
    flight finish — bodies still arriving included — up to SHUTDOWN_GRACE seconds, then close the
    connections and the service's resources.

    (``aiohttp.web.run_app`` cancels its main task on a signal, which cuts the requests in flight short,
    and aiohttp's own shutdown stops reading a connection at once, so a body still arriving is lost;
    hence the wait for the requests in flight before it.)
    """
    in_flight = 0

    @web.middleware
    async def counted(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    app.middlewares.insert(0, counted)
    from chainloom.web.access_log import runner_options
    from chainloom.web.keys import SETTINGS

    async def serve() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log_format=access_log_format,
            shutdown_timeout=SHUTDOWN_GRACE,
            **runner_options(app[SETTINGS]),
        )
        await runner.setup()
        try:
            listening = site(runner, **where)
            await listening.start()
            announce(f"serving on {listening.name} (pid {os.getpid()})")
            await stopped.wait()
            announce(f"stopping (pid {os.getpid()}): finishing {in_flight} requests in flight")
            await listening.stop()
            deadline = loop.time() + SHUTDOWN_GRACE
            while in_flight and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()

    uvloop.run(serve())  # measured: 12–17 % less CPU per request than asyncio's own loop


def _fork(slot: int, run: Callable[[], None]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handlers; run_app installs its own
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _end_with(parent)
        run()
    except BaseException:
        logger.exception("worker %d failed", slot)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _end_with(parent: int) -> None:
    """A worker must not outlive its parent: killed with -9, the parent cannot stop them, and a worker
    left behind would go on serving and projecting unsupervised. The kernel kills the worker as the
    parent dies (Linux), as if the service were one process; a parent already gone ends it now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        logger.warning("workers cannot follow their parent's death on this system")
    if os.getppid() != parent:
        os._exit(0)


def _reaped(workers: dict[int, int]) -> list[tuple[int, int]]:
    ended = []
    for pid in list(workers):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            ended.append((pid, status))
    return ended


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
