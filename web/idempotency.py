"""``Idempotency-Key`` on every POST and PUT: a client that did not get (or could not trust) its answer
sends the same request again with the same key, and it is applied once.

- The first request with a key holds it while it runs (``infra.idempotency``:
  the key is marked stored in the very transaction of its events) and records
  its answer — status, headers, body — once it has one. A retry with the same
  key, method, path and body gets that answer again (``Idempotent-Replayed:
  true``) and writes nothing; the same key with another method, path or body is
  refused with 422 naming the header.
- A retry that arrives while the first is still running waits for its answer
  (up to ``CHAINLOOM_PROJECTION_TIMEOUT``), then is refused with 409 and
  ``Retry-After: 1`` if the first has stored nothing yet, or 503 and
  ``Retry-After: 1`` if its write is stored and waits for the read models.
- A first attempt whose write is stored but whose read models are behind
  (``ReadModelsBehind``; a faulted projector) answers its client 503 at the
  usual time, and goes on waiting for the read models in the background (up to
  ``FINISH_WITHIN``): the answer it then makes is the one its retries get.
- An attempt that stored nothing and failed (5xx) forgets the key: a retry runs
  afresh. One whose process died before writing is taken over by a retry once
  its lease has run out; one that died after writing left a stored key without
  an answer: a retry is refused with 409 (the write counted; it is not made again).

Routes whose requests or answers carry a secret (a password, a token: ``unkeyed``) ignore the header:
neither a fingerprint of their body nor their answer is kept beside the log.

Keys are scoped to the caller as the API token middleware knows it (the API
key; a webhook sender without it; anyone when no key is configured), kept for
``CHAINLOOM_IDEMPOTENCY_WINDOW`` seconds, and are 1 to 255 printable ASCII characters.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chainloom.domain.errors import Unprocessable
from chainloom.infra.eventlog import EventLog
from chainloom.infra.idempotency import RENEW_EVERY, Attempt, IdempotencyKeys, KeyRow
from chainloom.infra.settings import Settings
from chainloom.projections.waits import ProjectionFaulted, ReadModelsBehind
from chainloom.web import bodies  # read_limited, at call time (bodies → openapi → this module)
from chainloom.web.errors import error_middleware, error_response
from chainloom.web.middleware import ACTOR, NODE_HEADER, REQUEST_ID_HEADER

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
KEY_PATTERN = f"^[\\x20-\\x7e]{{1,{MAX_KEY_LENGTH}}}$"
_KEY = re.compile(KEY_PATTERN)
METHODS = frozenset({"POST", "PUT"})

# How long a first attempt whose write is stored goes on waiting for the read models after its client
# was answered 503, so that its retries get the answer it deserved.
FINISH_WITHIN = 3600.0
# How often a retry looks whether the attempt it waits on has answered (it may run in another process).
_POLL = 0.05
_FAULT_POLL = 1.0
# Headers of an answer that belong to one response, not to the answer replayed.
_NOT_REPLAYED = frozenset(
    h.lower() for h in ("Content-Length", "Date", "Server", "Transfer-Encoding", REQUEST_ID_HEADER, NODE_HEADER)
)
# Expired keys are deleted by each process at most this often.
_CLEAN_EVERY = 60.0

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(eq=False)
class _Run:
    """A first attempt as the web layer runs it: ``early`` is set when its client must be answered now."""

    attempt: Attempt
    early: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("idempotent_run", default=None)


class KeyedRequests:
    """The keys of this process's log, and the first attempts still finishing after their client was answered."""

    def __init__(self, keys: IdempotencyKeys, run_blocking: RunBlocking, settings: Settings) -> None:
        self._keys = keys
        self._run_blocking = run_blocking
        self._patience = settings.projection_timeout
        # The largest body any POST or PUT takes (JSON bodies, webhook payloads): a larger one is 413 anyway.
        self.body_limit = max(settings.json_body_limit, settings.ingest_max_bytes)
        self._finishing: set[asyncio.Task] = set()
        self._cleaned_at = 0.0

    async def close(self) -> None:
        """Stop the attempts still finishing (their keys stay stored, unanswered): before the stores close."""
        for task in list(self._finishing):
            task.cancel()
        if self._finishing:
            await asyncio.wait(list(self._finishing))

    # -- a request with a key ------------------------------------------------------

    async def handle(self, request: web.Request, handler, key: str, fingerprint: str) -> web.StreamResponse:
        scope = request.get(ACTOR, "anonymous")
        await self._clean_now_and_then()
        claimed = await self._run_blocking(self._keys.claim, scope, key, fingerprint)
        if isinstance(claimed, Attempt):
            return await self._first(request, handler, claimed)
        return await self._retried(request, handler, key, scope, fingerprint, claimed)

    async def _first(self, request: web.Request, handler, attempt: Attempt) -> web.StreamResponse:
        run = _Run(attempt)
        task = asyncio.create_task(self._attempt(request, handler, run))
        await asyncio.wait({task, run.early}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        # The write is stored and the read models are behind: the client is answered (503) now, and the
        # attempt goes on to record the answer its retries get.
        self._finishing.add(task)
        task.add_done_callback(self._finished)
        return await error_middleware(request, _raising(run.early.result()))

    def _finished(self, task: asyncio.Task) -> None:
        self._finishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("an attempt finishing after its answer failed", exc_info=task.exception())

    async def _attempt(self, request: web.Request, handler, run: _Run) -> web.StreamResponse:
        attempt = run.attempt
        with self._keys.attempting(attempt):
            _RUN.set(run)
            renewing = asyncio.create_task(self._renew(attempt))
            try:
                response = await error_middleware(request, handler)
            except asyncio.CancelledError:
                await asyncio.shield(self._let_go(attempt))
                raise
            finally:
                renewing.cancel()
        if attempt.superseded:
            return error_response(
                409, f"this request's {HEADER} was taken over by a retry of it: nothing of this attempt was stored",
                param=HEADER,
            )
        body = getattr(response, "body", None)
        if response.status < 500 and isinstance(body, (bytes, bytearray)):
            headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_REPLAYED}
            await self._run_blocking(self._keys.answer, attempt, response.status, headers, bytes(body))
        else:
            await self._let_go(attempt)
        return response

    async def _let_go(self, attempt: Attempt) -> None:
        """End an attempt without an answer: forget the key if nothing was stored, else leave it stored."""
        if attempt.stored:
            await self._run_blocking(self._keys.give_up, attempt)
        else:
            await self._run_blocking(self._keys.release, attempt)

    async def _renew(self, attempt: Attempt) -> None:
        """Keep the lease while the attempt runs (a store that cannot be reached now may be reached next time)."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await self._run_blocking(self._keys.renew, attempt)
            except Exception:
                logger.warning("renewing the lease of an %s failed", HEADER, exc_info=True)

    # -- a key used before -----------------------------------------------------------

    async def _retried(
        self, request: web.Request, handler, key: str, scope: str, fingerprint: str, row: KeyRow
    ) -> web.StreamResponse:
        if row.fingerprint != fingerprint:
            raise Unprocessable(
                f"{HEADER} {key!r} was used for a different request (method, path or body): send a new key"
                " with a new request",
                param=HEADER,
            )
        deadline = time.monotonic() + self._patience
        while row.state != "answered" and row.holder_alive(time.time()) and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)
            found = await self._run_blocking(self._keys.look, scope, key)
            if found is None or (found.state == "running" and not found.holder_alive(time.time())):
                # The attempt stored nothing and let go (or died): this request runs afresh.
                return await self.handle(request, handler, key, fingerprint)
            row = found
        if row.state == "answered":
            assert row.status is not None
            return web.Response(status=row.status, body=row.body, headers={**row.headers, REPLAYED_HEADER: "true"})
        if row.state == "running":
            return error_response(
                409, f"a request with this {HEADER} is in progress; try again", param=HEADER,
                headers={"Retry-After": "1"},
            )
        if row.holder_alive(time.time()):
            return error_response(
                503, f"the request with this {HEADER} was stored; its answer waits for the read models",
                headers={"Retry-After": "1"},
            )
        return error_response(
            409,
            f"the request with this {HEADER} was stored, but its answer was lost (the process making it stopped"
            " first): it is not applied again; read the result back",
            param=HEADER,
        )

    async def _clean_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= _CLEAN_EVERY:
            self._cleaned_at = now
            await self._run_blocking(self._keys.clean)


def _raising(error: BaseException):
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise error

    return handler


# -- the middleware and the read-your-writes wait --------------------------------------

KEYS = web.AppKey("idempotency_keys", KeyedRequests)


def unkeyed(handler):
    """Mark a route whose requests or answers carry a secret (a password, a token, its cookie): the header is
    not applied there, so neither a fingerprint of its body nor its answer is kept beside the log."""
    setattr(handler, "unkeyed", True)
    return handler


def is_unkeyed(handler) -> bool:
    return bool(getattr(handler, "unkeyed", False))


@web.middleware
async def idempotency_middleware(request: web.Request, handler) -> web.StreamResponse:
    keyed = request.app.get(KEYS)
    if keyed is None:
        return await handler(request)
    # No such route (404, 405): nothing to apply once.
    if request.method not in METHODS or HEADER not in request.headers or request.match_info.http_exception is not None:
        return await handler(request)
    if is_unkeyed(request.match_info.handler):
        return await handler(request)
    key = _key(request.headers.getall(HEADER))
    body = await bodies.read_limited(request, keyed.body_limit)
    fingerprint = hashlib.sha256(
        b"\n".join([request.method.encode(), request.raw_path.encode("utf-8", "surrogateescape"), body])
    ).hexdigest()
    return await keyed.handle(request, handler, key, fingerprint)


def _key(values: Sequence[str]) -> str:
    if len(values) != 1:
        raise Unprocessable(f"send one {HEADER} header, not {len(values)}", param=HEADER)
    key = values[0]
    if not _KEY.match(key):
        raise Unprocessable(
            f"invalid {HEADER}: 1 to {MAX_KEY_LENGTH} printable ASCII characters (a UUID, say)", param=HEADER
        )
    return key


async def read_your_writes(
    wait_for: Callable[..., Awaitable[None]], position: int | None, timeout: float, needs: Sequence[str]
) -> None:
    """A command's wait for the read models (``ReadModels.wait_for``). A keyed request whose write is
    stored is answered (503) when the wait times out, as any, but goes on waiting to make its answer."""
    run = _RUN.get()
    try:
        await wait_for(position, timeout, needs=needs)
        return
    except (ReadModelsBehind, ProjectionFaulted) as behind:
        if run is None or not run.attempt.stored:
            raise
        if not run.early.done():
            run.early.set_result(behind)
    deadline = time.monotonic() + FINISH_WITHIN
    while True:
        try:
            await wait_for(position, timeout, needs=needs)
            return
        except ReadModelsBehind:
            if time.monotonic() > deadline:
                raise
        except ProjectionFaulted:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(_FAULT_POLL)


# -- set-up ----------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Take ``Idempotency-Key`` on this application's POSTs and PUTs (innermost: after the API key check)."""
    app.middlewares.append(idempotency_middleware)
    app.on_shutdown.append(_stop_finishing)


async def open_keys(app: web.Application, log: EventLog, settings: Settings, run_blocking: RunBlocking) -> None:
    """Open the keys of the log (and make its appends fence them): at start-up, once the log is open."""
    keys = await run_blocking(IdempotencyKeys.open, log, settings.event_store_env(), settings.idempotency_window)
    app[KEYS] = KeyedRequests(keys, run_blocking, settings)


async def _stop_finishing(app: web.Application) -> None:
    if KEYS in app:
        await app[KEYS].close()
