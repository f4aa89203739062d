"""The real ``chainloom serve`` with its worker processes, driven over loopback HTTP.

The multi-process tests must see what users see: a parent that supervises
several API workers sharing one port, each answering with ``X-Chainloom-Node``.
Every connection here is a new one (no keep-alive), so the kernel chooses the
worker for each request and a test reaches every worker by asking often enough.

The service runs in a process group of its own: whatever a test leaves behind
(a worker the parent failed to stop, one it restarted) is killed by group id at
the end, and "no worker is left running" can be checked by that group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_broker import free_port
from chainloom.infra.settings import Settings
from tests.integration.zygote import Forked

BIN = Path(sys.executable).parent
NODE_HEADER = "X-Chainloom-Node"


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The settings as a ``chainloom`` process reads them; nothing of the test runner's own CHAINLOOM_* leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINLOOM_") and k not in ("TOKEN", "PORT", "DATABASE_URL")}
    env.update({
        "CHAINLOOM_DATA_DIR": str(settings.data_dir),
        "CHAINLOOM_DATABASE_URL": settings.database_url,
        "CHAINLOOM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CHAINLOOM_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CHAINLOOM_LOG_LEVEL": "WARNING",
        "CHAINLOOM_PROJECTION_TIMEOUT": "20",
    })
    env.update(extra)
    return env


def serve_env(settings: Settings, workers: int, **extra: str) -> dict[str, str]:
    """``process_env`` for ``chainloom serve`` with ``workers`` workers and no API token."""
    defaults = {"CHAINLOOM_API_TOKEN": "", "CHAINLOOM_PROJECTION_TIMEOUT": "10", "CHAINLOOM_WORKERS": str(workers)}
    return process_env(settings, **(defaults | extra))


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2])


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an exited child nobody reaped yet)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


# A line of the service's log: "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s" (chainloom.infra.cli).
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) (\S+) \[[^\]]*\] (.*)$")


@dataclass
class LogRecord:
    """A record of the service's log, as far as its text tells: level, logger, message, a traceback after it."""

    levelno: int
    name: str
    message: str
    traceback: bool = False


@dataclass
class Service:
    popen: Forked
    base: str
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def children(self) -> set[int]:
        """The parent's running child processes (its workers)."""
        return {pid for pid in _all_pids() if (stat := _stat(pid)) and stat[1] == self.popen.pid and stat[0] != "Z"}

    def group_members(self) -> set[int]:
        """Every running process of the service's process group (the parent, its workers, theirs)."""
        return {pid for pid in _all_pids() if (stat := _stat(pid)) and stat[2] == self.popen.pid and stat[0] != "Z"}

    def output(self, access_log: bool = True) -> str:
        """The end of the service's log (without aiohttp's access log lines, which a service logging at INFO
        writes for every request, the start-up's polling of /ready included)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if not access_log:
            text = "".join(line for line in text.splitlines(keepends=True) if " INFO aiohttp.access " not in line)
        return text[-6000:]

    def log_records(self) -> list[LogRecord]:
        """The records of the service's log so far, in order (a traceback goes with the record it follows)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        records: list[LogRecord] = []
        for line in text.splitlines():
            match = _LOG_LINE.match(line)
            if match:
                level, name, message = match.groups()
                records.append(LogRecord(logging.getLevelName(level), name, message))
            elif records and line.startswith("Traceback"):
                records[-1].traceback = True
        return records

    def logged_errors(self) -> list[str]:
        """The ERROR lines of the service's log (it logs at WARNING): a healthy run has none."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]

    def assert_running(self) -> None:
        assert self.popen.poll() is None, f"chainloom serve exited with {self.popen.returncode}:\n{self.output()}"

    def shut_down(self) -> None:
        """SIGTERM the parent; then kill whatever of its group is left (a failed test leaves no process)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.popen.signal_group(signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (nothing of the service is left to look at)."""
        self.popen.signal_group(signal.SIGKILL)
        self.popen.wait(10)


# A free port can be taken by another test's process before ours binds it: the start is tried again.
_BIND_ATTEMPTS = 3


def start_service(env: dict[str, str], log_path: Path, timeout: float = 60.0) -> Service:
    """Start ``chainloom serve`` on a free port; return once each of its CHAINLOOM_WORKERS answered /ready."""
    for attempt in range(_BIND_ATTEMPTS):
        try:
            return _start_service(env, log_path, timeout)
        except _PortTaken:
            if attempt == _BIND_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _PortTaken(AssertionError):
    """The service exited at once: the free port it was given was taken meanwhile."""


def _start_service(env: dict[str, str], log_path: Path, timeout: float) -> Service:
    port = free_port()
    logged_before = log_path.stat().st_size if log_path.exists() else 0
    # Forked from a process that has imported the service once (the same `chainloom serve`, in a session of
    # its own, logging to log_path), sparing every test's service the 1.3 s of CPU its imports take.
    popen = Forked(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log_path)
    service = Service(popen, f"http://127.0.0.1:{port}", log_path)
    workers = int(env.get("CHAINLOOM_WORKERS") or os.cpu_count() or 1)
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None and b"address already in use" in log_path.read_bytes()[logged_before:].lower():
            raise _PortTaken(f"port {port} was taken before chainloom serve bound it")
        service.assert_running()
        try:
            with urllib.request.urlopen(f"{service.base}/ready", timeout=2) as response:  # a new connection each
                ready = json.loads(response.read())
                if "pid" not in ready:
                    service.shut_down()
                    raise AssertionError(f"/ready does not name the worker's pid: {ready}")
                pids.add(ready["pid"])
                if len(pids) >= workers:
                    return service
        except OSError:
            pass
        if time.monotonic() > deadline:
            service.shut_down()
            raise AssertionError(
                f"{len(pids)} of {workers} workers answered /ready within {timeout:g}s:\n{service.output()}"
            )
        time.sleep(0.02 if pids else 0.1)


# -- HTTP, a new connection per request ----------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    node: str | None  # X-Chainloom-Node: the worker that answered


def fresh_connections(base: str) -> aiohttp.ClientSession:
    """A client that opens a new connection for every request, so the kernel picks the worker each time."""
    return aiohttp.ClientSession(
        base_url=base,
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def call(session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Answer:
    async with session.request(method, path, json=body) as response:
        raw = await response.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return Answer(response.status, payload, response.headers.get(NODE_HEADER))


async def ready_workers(session: aiohttp.ClientSession, count: int, timeout: float = 30.0) -> dict[int, dict]:
    """Ask /ready until ``count`` distinct worker pids answered 200; their latest answers by pid."""
    seen: dict[int, dict] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    attempts = 0
    while len(seen) < count:
        attempts += 1
        try:
            answer = await call(session, "GET", "/ready")
        except aiohttp.ClientError:
            answer = None
        if answer is not None and answer.status == 200:
            body = answer.body
            assert answer.node == body.get("nodeInstanceID"), f"/ready header {answer.node} names another node: {body}"
            seen[body["pid"]] = body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(seen)} of {count} workers answered /ready in {attempts} attempts: {seen}")
        await asyncio.sleep(0.02)
    return seen


async def current_holders(session: aiohttp.ClientSession, pids: set[int], job: str, timeout: float = 30.0) -> dict[int, bool]:
    """Whether each of ``pids`` holds ``job`` now, from a fresh /ready answer of every one of them."""
    holds: dict[int, bool] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while set(holds) != pids:
        try:
            answer = await call(session, "GET", "/ready")
        except aiohttp.ClientError:
            answer = None
        if answer is not None and answer.status == 200 and answer.body["pid"] in pids:
            holds[answer.body["pid"]] = job in answer.body["holds"]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not every worker of {pids} answered /ready: {holds}")
        await asyncio.sleep(0.02)
    return holds


async def sole_holder(session: aiohttp.ClientSession, pids: set[int], job: str, timeout: float = 15.0) -> int:
    """The one worker of ``pids`` that holds ``job``; fails if two ever do, or none does within ``timeout``
    (a job takes its lock shortly after its worker starts answering)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        holds = await current_holders(session, pids, job)
        holders = [pid for pid, held in holds.items() if held]
        assert len(holders) <= 1, f"more than one worker holds {job}: {holders}"
        if holders:
            return holders[0]
        assert asyncio.get_running_loop().time() < deadline, f"no worker of {pids} reports holding {job} on /ready"
        await asyncio.sleep(0.1)


def log_events(settings: Settings) -> list[dict]:
    """Every event of the log, read directly (not through the service)."""
    log = EventLog(settings.event_store_env())
    try:
        return log.read(after=0, limit=1_000_000)
    finally:
        log.close()


# -- the API tests' client, against the real service ------------------------------------

# Settings the harness itself decides for a ``chainloom serve`` it starts: where it listens, how many workers.
_NOT_PASSED = {"host", "port", "workers", "log_level"}


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the ``CHAINLOOM_*`` variable a process reads it from, so a service started with
    them runs on exactly ``settings`` (checked: the variables read back give ``settings`` again)."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        if name in _NOT_PASSED:
            continue
        value = getattr(settings, name)
        if value is None:  # derived from another setting (blob_dir from data_dir …): not passed, derived there too
            continue
        env[field.validation_alias.choices[0]] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    read_back = Settings.model_validate(env)  # what the process will read (the variables alone, no os.environ)
    differing = {n for n in Settings.model_fields if n not in _NOT_PASSED and getattr(read_back, n) != getattr(settings, n)}
    assert not differing, f"settings that do not survive the trip through the environment: {sorted(differing)}"
    return env


class _Server:
    """``TestClient.server`` as far as a separate service has it: where it listens. Its application lives
    in other processes: a test that reaches into it runs in-process only (mark it ``in_process``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"client.server.{name}: the service runs in separate worker processes (CHAINLOOM_TEST_WORKERS);"
            " a test that inspects the in-process server must be marked @pytest.mark.in_process(reason=...)"
        )


class ServiceClient:
    """What the API tests use of aiohttp's ``TestClient`` — ``get``/``post``/``put``/``patch``/``delete``/
    ``request`` (awaitable and ``async with``), ``make_url``, ``host``/``port``, ``close`` — against a
    running ``chainloom serve``.

    Every request opens a new connection, so the kernel picks the worker that accepts it, request by
    request: a write answered by one worker is read back through either (consecutive requests of a test
    switch workers about half the time). ``nodes`` records the ``X-Chainloom-Node`` of every answer.
    ``close`` ends the service (as ``TestClient.close`` stops its server), after noting what went wrong
    on the service's side: a worker that died, errors in its log. It is killed rather than stopped
    gracefully, which tests/integration/test_multiprocess.py covers: the test is over, and a PostgreSQL
    database must be left to the next test at once.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.host = "127.0.0.1"
        self.port = service.port
        self.server = _Server(self.host, self.port)
        self.nodes: list[str | None] = []  # X-Chainloom-Node of each answer, in order (None: no header)
        self.problems: list[str] = []
        self._workers = set(service.children())
        self._closed = False
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._answered)
        self.session = aiohttp.ClientSession(
            base_url=service.base,
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            trace_configs=[trace],
        )

    async def _answered(self, _session: Any, _context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        self.nodes.append(params.response.headers.get(NODE_HEADER))

    def make_url(self, path: str) -> URL:
        return URL(self.service.base).join(URL(path))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.session.put(path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.session.patch(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.session.delete(path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.session.head(path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> Any:
        return self.session.options(path, **kwargs)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.session.close()
        if self.service.popen.poll() is not None:
            self.problems.append(f"chainloom serve exited with {self.service.popen.returncode}")
        else:
            died = self._workers - self.service.children()
            if died:
                self.problems.append(f"worker processes {sorted(died)} died during the test")
        errors = self.service.logged_errors()
        if errors:
            self.problems.append("the service logged errors:\n" + "\n".join(errors[:20]))
        await asyncio.to_thread(self.service.kill)
        if self.problems:
            self.problems.append(f"--- service output (access log left out) ---\n{self.service.output(access_log=False)}")


async def start_client(settings: Settings, workers: int, log_path: Path, log_level: str = "WARNING") -> ServiceClient:
    """Start ``chainloom serve`` with ``workers`` workers on ``settings``, logging at ``log_level`` to
    ``log_path``; its client once every worker answers."""
    env = serve_env(settings, workers, **settings_env(settings), CHAINLOOM_LOG_LEVEL=log_level)
    service = await asyncio.to_thread(start_service, env, log_path)
    return ServiceClient(service)
