"""``chainloom worker``: the document worker, chunking files for the index through the HTTP API alone.

It needs nothing of a chainloom process but its HTTP API (platform notes §7, §8.1, §9), so workers run
on other machines and scale out; the loop is the reference worker's:

1. Sign in (``POST /login``) with the worker account, once; a request answered 401, or 400 with
   ``token is expired``, signs in again and is sent once more; a token the service refreshes on the way (the
   ``auth_token`` cookie it sends when a token is close to its expiry) replaces the one in use. Without
   credentials it signs in not at all (security off), or sends the API key as ``X-API-Key`` (which wins over
   the credentials when both are set).
2. ``POST /leases`` for the job types of its kind (``WORKER_TYPE``: ``plaintext``, ``pdf`` or ``all``) with
   ``leaseDuration`` ``"<N>s"``; 404 is "no work": it waits ``idle`` seconds (1) and asks again.
3. ``GET /files/{entityId}/download``; plain text is decoded (``infra.text_extract``: UTF-8 or the charset
   the job's content type names, U+FFFD for what does not decode), a PDF's text extracted with pypdf
   (in a thread: the loop keeps answering signals).
4. The text is chunked (512-character windows, ``infra.text_extract.chunk_text``); chunks that are only
   whitespace are left out.
5. ``POST /index`` with ``replace: true`` for every operation but ``create`` (the notes' advice for a new
   worker: a renamed, moved or changed file's chunks replace its old ones); 200 or 204 is success.
6. Any error of a job: ``PATCH /jobs/{id}/failed`` with ``{"leaserId", "error": "<what went wrong>"}``
   (200 or 204; a 404 there means the job is gone already: its file was deleted, or its lease expired and
   was taken back). After a failure that was the document's own (a PDF pypdf cannot read) or a job that
   is gone (404), it goes on at once; after any other — the service or the network in trouble — and after
   an error outside a job (signing in, leasing), it waits ``error_backoff`` seconds (30).

The server leases exact job types: the plain-text worker asks for each content type sniffing gives text
(``text/plain; charset=utf-8``, ``…utf-16be``, ``…utf-16le``), the PDF worker for ``application/pdf``.

SIGINT or SIGTERM stops it once the job in hand is done (a second one stops it at once, the job's lease
left to expire). Run by hand (stderr a terminal) it shows one progress line (jobs done and failed, chunks
indexed, what it is doing); otherwise it logs a line per job. ``run_until_idle`` (``--until-idle``)
processes jobs until a lease answers 404 and returns, for scripts and tests.

Settings come from the reference worker's variables (``API_BASE_URL`` — with or without the ``/api`` suffix:
chainloom serves both —, ``WORKER_EMAIL``, ``WORKER_PASSWORD``, ``WORKER_LEASER_ID``,
``WORKER_LEASE_DURATION_SECONDS``, ``WORKER_REQUEST_TIMEOUT_SECONDS``, ``WORKER_TYPE``) and chainloom's
own (the same names prefixed ``CHAINLOOM_``, which win; plus ``WORKER_API_KEY``, ``WORKER_IDLE_SECONDS``,
``WORKER_ERROR_BACKOFF_SECONDS``), or the sub-command's options, which win over both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import aiohttp
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chainloom.infra.text_extract import UnreadableDocument, chunk_text, document_text, media_type

logger = logging.getLogger(__name__)

JOB_PREFIX = "vectorize_"
PLAINTEXT_TYPES = (
    "text/plain; charset=utf-8",
    "text/plain; charset=utf-16be",
    "text/plain; charset=utf-16le",
)
PDF_TYPES = ("application/pdf",)
JOB_TYPES: dict[str, tuple[str, ...]] = {
    "plaintext": tuple(JOB_PREFIX + t for t in PLAINTEXT_TYPES),
    "pdf": tuple(JOB_PREFIX + t for t in PDF_TYPES),
    "all": tuple(JOB_PREFIX + t for t in PLAINTEXT_TYPES + PDF_TYPES),
}
ERROR_TEXT_LIMIT = 2000  # characters of an error sent with a failed job
TOKEN_COOKIE = "auth_token"  # where the service sends a token it refreshed (platform notes §1.6, sliding refresh)


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"CHAINLOOM_{name}", name)


def _default_leaser() -> str:
    return f"chainloom-worker-{socket.gethostname()}-{os.getpid()}"


class WorkerConfig(BaseSettings):
    """The worker's settings (module docstring)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    api_base_url: str = Field("http://localhost:8081/api", validation_alias=_env("API_BASE_URL"))
    email: str = Field("", validation_alias=_env("WORKER_EMAIL"))
    password: str = Field("", validation_alias=_env("WORKER_PASSWORD"))
    api_key: str = Field("", validation_alias=_env("WORKER_API_KEY"))
    leaser_id: str = Field(default_factory=_default_leaser, validation_alias=_env("WORKER_LEASER_ID"))
    lease_duration_seconds: float = Field(300.0, gt=0, validation_alias=_env("WORKER_LEASE_DURATION_SECONDS"))
    request_timeout_seconds: float = Field(300.0, gt=0, validation_alias=_env("WORKER_REQUEST_TIMEOUT_SECONDS"))
    worker_type: Literal["plaintext", "pdf", "all"] = Field("all", validation_alias=_env("WORKER_TYPE"))
    idle_seconds: float = Field(1.0, ge=0, validation_alias=_env("WORKER_IDLE_SECONDS"))
    error_backoff_seconds: float = Field(30.0, ge=0, validation_alias=_env("WORKER_ERROR_BACKOFF_SECONDS"))

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("API_BASE_URL must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("leaser_id")
    @classmethod
    def _leaser_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("WORKER_LEASER_ID must not be empty")
        return value

    @property
    def job_types(self) -> tuple[str, ...]:
        return JOB_TYPES[self.worker_type]

    @property
    def lease_duration(self) -> str:
        """The lease duration as the Go duration ``POST /leases`` takes: ``"30s"``, ``"1500ms"``."""
        seconds = self.lease_duration_seconds
        return f"{int(seconds)}s" if seconds == int(seconds) else f"{max(1, round(seconds * 1000))}ms"


# -- what goes wrong ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the service answered with a status the worker did not expect."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"{what} answered {status}: {message}")
        self.status = status
        self.message = message


def _message_of(data: bytes) -> str:
    """The error text of an answer: ``{"error": "…"}`` (the reference) or ``{"error": {"message": "…"}}``."""
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace").strip()[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error is not None else json.dumps(body)[:500]


def _describe(error: BaseException) -> str:
    if isinstance(error, (ApiError, UnreadableDocument)):
        text = str(error)
    elif isinstance(error, asyncio.TimeoutError):
        text = "the request timed out"
    else:
        text = f"{type(error).__name__}: {error}"
    return text[:ERROR_TEXT_LIMIT]


def _goes_on_at_once(error: BaseException) -> bool:
    """Whether the loop goes on without backing off after a job failed so: the document's own fault, or a job
    that is gone (its file deleted, its lease taken back)."""
    return isinstance(error, UnreadableDocument) or (isinstance(error, ApiError) and error.status == 404)


# -- jobs and progress -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """The part of a leased job (platform notes §7.1) the worker uses."""

    id: str
    task_type: str
    operation: str
    entity_id: str

    @property
    def content_type(self) -> str:
        return self.task_type.removeprefix(JOB_PREFIX)

    @classmethod
    def from_json(cls, body: Any) -> Job:
        try:
            return cls(str(body["id"]), str(body["taskType"]), str(body.get("operation", "")), str(body["entityId"]))
        except (KeyError, TypeError) as error:
            raise ApiError("POST /leases", 201, f"not a job: {str(body)[:200]}") from error


@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    chunks: int = 0


class Progress(Protocol):
    """Where the worker says what it does: a progress line on a terminal, log lines otherwise."""

    def working(self, job: Job) -> None: ...
    def done(self, job: Job, chunks: int, seconds: float) -> None: ...
    def failed(self, job: Job, error: str) -> None: ...
    def idle(self) -> None: ...
    def close(self) -> None: ...


class LogProgress:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._idle = False

    def working(self, job: Job) -> None:
        self._idle = False

    def done(self, job: Job, chunks: int, seconds: float) -> None:
        logger.info(
            "job %s (%s of file %s, %s): %d chunks indexed in %.2f s",
            job.id, job.operation, job.entity_id, job.content_type, chunks, seconds,
        )  # fmt: skip

    def failed(self, job: Job, error: str) -> None:
        logger.warning("job %s (%s of file %s) failed: %s", job.id, job.operation, job.entity_id, error)

    def idle(self) -> None:
        if not self._idle:
            logger.info("no work: %d jobs done, %d failed, %d chunks indexed", self.tally.done, self.tally.failed, self.tally.chunks)
        self._idle = True

    def close(self) -> None:
        pass


class BarProgress:
    """One tqdm line: jobs done and failed, chunks indexed, and what the worker does."""

    def __init__(self, tally: Tally) -> None:
        from tqdm import tqdm

        self.tally = tally
        self._bar = tqdm(desc="chainloom worker", unit="job", bar_format="{desc}{postfix} [{elapsed}]", file=sys.stderr)
        self._show("starting")

    def _show(self, doing: str) -> None:
        t = self.tally
        self._bar.set_postfix_str(f"{t.done} done, {t.failed} failed, {t.chunks} chunks indexed; {doing}")

    def working(self, job: Job) -> None:
        self._show(f"{media_type(job.content_type)} file {job.entity_id[:8]} ({job.operation})")

    def done(self, job: Job, chunks: int, seconds: float) -> None:
        self._bar.update(1)
        self._show("leasing")

    def failed(self, job: Job, error: str) -> None:
        self._bar.update(1)
        self._show("leasing")
        logger.warning("job %s (%s of file %s) failed: %s", job.id, job.operation, job.entity_id, error)

    def idle(self) -> None:
        self._show("idle")

    def close(self) -> None:
        self._bar.close()


# -- the worker ----------------------------------------------------------------------------------------


class DocumentWorker:
    """The loop of the module docstring. ``async with DocumentWorker(config) as worker:`` owns its HTTP
    session; then ``await worker.run()`` (until ``stop()`` or a signal) or ``await worker.run_until_idle()``."""

    def __init__(self, config: WorkerConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.tally = Tally()
        self.progress: Progress = progress if progress is not None else LogProgress(self.tally)
        self._session: aiohttp.ClientSession | None = None
        self.token = ""
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> DocumentWorker:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_seconds)
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": "chainloom-worker"}, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.progress.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def signs_in(self) -> bool:
        return bool(self.config.email) and not self.config.api_key

    def stop(self) -> None:
        """Stop once the job in hand is done."""
        self._stopping.set()

    # -- loops

    async def run(self) -> Tally:
        """Work until stopped: idle pauses on 404, back-off pauses after errors (module docstring)."""
        while not self._stopping.is_set():
            try:
                worked = await self.process_next()
            except Exception as error:
                logger.error("%s; trying again in %g s", _describe(error), self.config.error_backoff_seconds)
                await self._pause(self.config.error_backoff_seconds)
                continue
            if not worked:
                self.progress.idle()
                await self._pause(self.config.idle_seconds)
        return self.tally

    async def run_until_idle(self) -> Tally:
        """Process jobs until a lease answers 404 (or ``stop()``). An error outside a job, or a job failure
        the service is to blame for, is raised (after the job was marked failed) instead of backed off."""
        while not self._stopping.is_set() and await self.process_next():
            pass
        self.progress.idle()
        return self.tally

    async def process_next(self) -> bool:
        """Lease one job and work on it: True; False when there is none (404)."""
        job = await self._lease()
        if job is None:
            return False
        await self._work_on(job)
        return True

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- one job

    async def _work_on(self, job: Job) -> None:
        self.progress.working(job)
        started = time.monotonic()
        try:
            chunks = await self._index(job)
        except Exception as error:
            message = _describe(error)
            await self._mark_failed(job, message)
            self.tally.failed += 1
            self.progress.failed(job, message)
            if not _goes_on_at_once(error):
                raise
            return
        self.tally.done += 1
        self.tally.chunks += chunks
        self.progress.done(job, chunks, time.monotonic() - started)

    async def _index(self, job: Job) -> int:
        data = await self._download(job.entity_id)
        if media_type(job.content_type) == "application/pdf":
            text = await asyncio.to_thread(document_text, data, job.content_type)
        else:
            text = document_text(data, job.content_type)
        chunks = [chunk for chunk in chunk_text(text) if chunk.strip()]
        body = {
            "id": job.entity_id,
            "chunks": chunks,
            "replace": job.operation != "create",
            "jobId": job.id,
            "leaserId": self.config.leaser_id,
        }
        status, answer = await self._request("POST", "/index", body)
        if status not in (200, 204):
            raise ApiError("POST /index", status, _message_of(answer))
        return len(chunks)

    async def _lease(self) -> Job | None:
        body = {
            "leaserId": self.config.leaser_id,
            "leaseDuration": self.config.lease_duration,
            "jobTypes": list(self.config.job_types),
        }
        status, answer = await self._request("POST", "/leases", body)
        if status == 404:
            return None
        if status != 201:
            raise ApiError("POST /leases", status, _message_of(answer))
        try:
            leased = json.loads(answer)
        except ValueError as error:
            raise ApiError("POST /leases", status, "the answer is not JSON") from error
        return Job.from_json(leased)

    async def _download(self, file_id: str) -> bytes:
        status, data = await self._request("GET", f"/files/{quote(file_id, safe='')}/download?skip=true")
        if status != 200:
            raise ApiError(f"GET /files/{file_id}/download", status, _message_of(data))
        return data

    async def _mark_failed(self, job: Job, error: str) -> None:
        body = {"leaserId": self.config.leaser_id, "error": error}
        status, answer = await self._request("PATCH", f"/jobs/{quote(job.id, safe='')}/failed", body)
        if status == 404:
            logger.info("job %s is gone (its file deleted, or its lease taken back): not marked failed", job.id)
        elif status not in (200, 204):
            raise ApiError(f"PATCH /jobs/{job.id}/failed", status, _message_of(answer))

    # -- HTTP

    async def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send a request (signing in first, and once more on an expired or refused token); its status and body."""
        if self.signs_in and not self.token:
            await self._sign_in()
        status, data = await self._send(method, path, body)
        if self.signs_in and self._token_refused(status, data):
            await self._sign_in()
            status, data = await self._send(method, path, body)
        return status, data

    @staticmethod
    def _token_refused(status: int, data: bytes) -> bool:
        return status == 401 or (status == 400 and "token is expired" in _message_of(data).lower())

    async def _send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("use the worker as `async with DocumentWorker(config) as worker:`")
        headers: dict[str, str] = {}
        if self.config.api_key:
            headers["X-API-Key"] = self.config.api_key
        elif self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self._session.request(method, self.config.api_base_url + path, json=body, headers=headers) as response:
            slid = response.cookies.get(TOKEN_COOKIE)
            if slid is not None and slid.value and self.token:
                self.token = slid.value  # the service refreshed a token close to its expiry: use the new one
            return response.status, await response.read()

    async def _sign_in(self) -> None:
        self.token = ""
        credentials = {"email": self.config.email, "password": self.config.password}
        status, data = await self._send("POST", "/login", credentials)
        if status != 200:
            raise ApiError(f"signing in as {self.config.email} (POST /login)", status, _message_of(data))
        try:
            token = json.loads(data)["token"]
        except (ValueError, KeyError, TypeError) as error:
            raise ApiError("POST /login", status, "no token in the answer") from error
        self.token = str(token)
        logger.info("signed in as %s", self.config.email)


# -- the process ------------------------------------------------------------------------------------


@contextmanager
def _console(tally: Tally) -> Iterator[Progress]:
    """A progress line when a person watches (stderr is a terminal), with log lines above it; else log lines."""
    if not sys.stderr.isatty():
        yield LogProgress(tally)
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield BarProgress(tally)


async def _main(config: WorkerConfig, until_idle: bool) -> Tally:
    worker = DocumentWorker(config)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logger.warning("stopping once the job in hand is done (signal again to stop at once)")
            worker.stop()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, on_signal)
            installed.append(number)
        except (NotImplementedError, RuntimeError):  # not on this platform, or not the main thread
            pass
    try:
        with _console(worker.tally) as worker.progress:
            async with worker:
                logger.info(
                    "worker %s against %s for %s", config.leaser_id, config.api_base_url, ", ".join(config.job_types)
                )
                return await (worker.run_until_idle() if until_idle else worker.run())
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


def run_worker(config: WorkerConfig, until_idle: bool = False) -> int:
    """Run the worker in this process until stopped (or, ``until_idle``, until there is no work); exit status."""
    try:
        tally = asyncio.run(_main(config, until_idle))
    except asyncio.CancelledError:
        logger.warning("stopped at once")
        return 130
    except Exception as error:  # until_idle: what stopped it
        logger.error("worker stopped: %s", _describe(error))
        return 1
    logger.info("worker stopped: %d jobs done, %d failed, %d chunks indexed", tally.done, tally.failed, tally.chunks)
    return 0
