"""Routes about the service itself: /health, /ready, /version, /openapi.json; and the start-up work /ready reports.

A process serves from the moment its port is open, whatever its peers do.
Liveness (``/health``) is 200 as long as it runs. Readiness (``/ready``) is 200
once its start-up work is done — the default groups seeded on the log and
shown by the read models — and no read model is faulted; until then 503,
naming what it waits for. In the distributed mode the read models are kept by
projector workers fed by the relay: an API started before them serves reads,
is not ready, and answers writes 503 (``projections.tracked``) until they run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chainloom.domain.errors import DomainError
from chainloom.infra.readstore import Fault
from chainloom.infra.version import VERSION, node_instance_id
from chainloom.projections.blob_sweeper import BlobSweeper
from chainloom.projections.waits import ProjectionFaulted, ReadModels, ReadModelsBehind
from chainloom.web import authz
from chainloom.web.log_digest import SEALER
from chainloom.web.bodies import json_response
from chainloom.web.errors import error_response
from chainloom.web.keys import (
    DOWNLOAD_JOB,
    LEASE_REAPER,
    PROJECTIONS,
    RECONCILER,
    RELAY,
    SETTINGS,
    TELEGRAM_POLLER,
    TELEGRAM_WORKER,
    TRIGGER_DISPATCHER,
)
from chainloom.web.openapi import describe, fails, responds
from chainloom.web.schemas import Ready, Version

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()
_FAULTS_TIMEOUT = 2.0


class StartUp:
    """The start-up work that runs beside serving, in the background, until it has succeeded.

    First the seeding: ``seed()`` stores the default groups on the log (idempotent: a process that
    finds them stores nothing), tried again with a growing pause while the store refuses. Then the
    wait until the read models have reached the log's head as it was after seeding, looked at every
    ``LOOK_EVERY`` seconds: in the distributed mode that takes a relay and a projector worker, which
    may start later (or never, until an operator starts them). ``waiting_for`` says what is still
    awaited (``/ready`` answers it); ``None`` once done. A read model faulted on the way ends the wait:
    the seeds are stored, and ``/ready`` reports the fault.
    """

    RETRY_FIRST = 0.2
    RETRY_MAX = 5.0
    LOOK_EVERY = 1.0
    LOOK_FOR = 0.2  # each look waits this long for the read models (they are read often meanwhile)
    LOG_EVERY = 30.0  # what it waits for is logged when it changes, at most this often

    def __init__(
        self, seed: Callable[[], Awaitable[None]], head: Callable[[], Awaitable[int]], read_models: ReadModels
    ) -> None:
        self._seed = seed
        self._head = head
        self._read_models = read_models
        self.waiting_for: str | None = "the start-up seeding has not run yet"
        self._task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0

    @property
    def done(self) -> bool:
        return self.waiting_for is None

    async def start(self) -> None:
        """Seed once now, then go on in the background. A seeding the log refuses (a configured default model
        that contradicts it) fails start-up: that is the operator's to fix, not a peer's to come. A store that
        refuses for a moment is tried again in the background."""
        target: int | None = None
        try:
            target = await self._seeded()
        except DomainError:
            raise
        except Exception as error:
            self._waiting(f"the start-up seeding could not be stored yet ({type(error).__name__}: {error}); trying again")
        self._task = asyncio.create_task(self._run(target), name="start-up")

    async def settled(self, timeout: float) -> None:
        """Return when the start-up work is done, or after ``timeout`` (it goes on in the background)."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, target: int | None) -> None:
        if target is None:
            target = await self._store_seeds()
        await self._until_shown(target)
        self.waiting_for = None
        logger.info("ready: the start-up seeding is stored and shown (position %d)", target)

    async def _seeded(self) -> int:
        """Store the seeds (nothing when they are there); the log's head after them."""
        await self._seed()
        return await self._head()

    async def _store_seeds(self) -> int:
        pause = self.RETRY_FIRST
        while True:
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.RETRY_MAX)
            try:
                return await self._seeded()
            except Exception as error:
                self._waiting(f"the start-up seeding could not be stored yet ({type(error).__name__}: {error}); trying again")

    async def _until_shown(self, target: int) -> None:
        self.waiting_for = f"the read models have not yet reached the start-up seeding (position {target})"
        while True:
            try:
                await self._read_models.wait_for(target, self.LOOK_FOR)
                return
            except ProjectionFaulted as error:
                logger.warning("start-up seeding is stored but not yet shown: %s", error)
                return
            except ReadModelsBehind as error:
                diagnosis = getattr(error, "diagnosis", str(error))
                self._waiting(f"the start-up seeding (position {target}) is not shown yet: {diagnosis}")
            except Exception as error:  # the read store is away for a moment
                self._waiting(f"the read models' positions could not be read ({type(error).__name__}: {error})")
            await asyncio.sleep(self.LOOK_EVERY)

    def _waiting(self, what: str) -> None:
        now = time.monotonic()
        if what != self.waiting_for and now >= self._quiet_until:  # not at every look
            logger.warning("not ready: %s", what)
            self._quiet_until = now + self.LOG_EVERY
        self.waiting_for = what


STARTUP = web.AppKey("startup", StartUp)
# Removes content no live file names any more while this process holds its lock (CHAINLOOM_BLOB_SWEEPER).
BLOB_SWEEPER = web.AppKey("blob_sweeper", BlobSweeper)


@routes.get("/health")
@responds(
    200,
    None,
    'Alive. The body is empty while every projector runs; when one is faulted it is a JSON report'
    ' `{"status": "degraded", "faulted": [...]}` naming them.',
)
async def health(request: web.Request) -> web.Response:
    """Liveness: 200 while the service runs; an empty body when all is well, a degraded report otherwise."""
    faults = await _faults(request, fallback=True)
    if not faults:
        return web.Response(status=200)
    return json_response({"status": "degraded", "faulted": [fault.public() for fault in faults]})


@routes.get("/ready")
@responds(200, Ready)
@fails(503)
async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 once the start-up seeding is stored and shown and while every read model follows the
    log; 503 naming what the process still waits for (a relay, a projector worker) or the faulted read models."""
    startup = request.app.get(STARTUP)
    if startup is not None and not startup.done:
        return error_response(503, f"not ready: {startup.waiting_for}", headers={"Retry-After": "1"})
    try:
        faults = await _faults(request, fallback=False)
    except Exception as error:
        logger.warning("ready: reading projection faults failed", exc_info=True)
        return error_response(503, f"read store unavailable: {type(error).__name__}")
    if faults:
        described = "; ".join(
            f"{f.projection} stopped at position {f.position} ({f.event_type} {f.event_id}): {f.error}" for f in faults
        )
        return error_response(503, f"read models faulted: {described}")
    return json_response({"status": "ready", "nodeInstanceID": node_instance_id(), "pid": os.getpid(), "holds": _holds(request.app)})


def _holds(app: web.Application) -> list[str]:
    """The singleton jobs this process holds now (with several worker processes, one holds each)."""
    jobs = (
        ("projections", app[PROJECTIONS]),
        ("reconciler", app.get(RECONCILER)),
        ("downloads", app.get(DOWNLOAD_JOB)),
        ("triggers", app.get(TRIGGER_DISPATCHER)),
        ("leases", app.get(LEASE_REAPER)),
        ("blobs", app.get(BLOB_SWEEPER)),
        ("telegram-poller", app.get(TELEGRAM_POLLER)),
        ("telegram-worker", app.get(TELEGRAM_WORKER)),
        ("seals", app.get(SEALER)),
    )
    held = [name for name, job in (*jobs, ("kafka-relay", app.get(RELAY))) if job is not None and job.holding]
    return held


async def _faults(request: web.Request, *, fallback: bool) -> list[Fault]:
    """The faulted projections as the read store has them (every process's); with ``fallback``, as last seen
    here when the store cannot be read (liveness must not depend on the store)."""
    projections = request.app[PROJECTIONS]
    try:
        faults = await asyncio.wait_for(projections.read_faults(), _FAULTS_TIMEOUT)
    except Exception:
        if not fallback:
            raise
        logger.warning("health: reading projection faults failed; answering from the last batch", exc_info=True)
        faults = projections.faults
    return list(faults.values())


@routes.get("/version")
@responds(200, Version)
async def version(request: web.Request) -> web.Response:
    """The service's version, the answering process's node id (stable for its life) and the tenancy UUID."""
    return json_response(
        {
            "version": VERSION,
            "nodeInstanceID": node_instance_id(),
            "tenancy": str(request.app[SETTINGS].tenancy),
            "name": "chainloom",
        }
    )


# The services the older platform's clients look for (its own, and the runtime's it proxied), whether this
# service guards a route with them or not (platform notes §13), then the ones its routes are guarded by.
REFERENCE_SERVICES = (
    "chatservice", "accessservice", "userservice", "fileservice", "indexservice", "dispatchservice", "chainservice",
    "activityservice", "githubservice", "botservice", "telegramservice", "modelservice", "downloadservice",
    "backendservice",
)  # fmt: skip
# The resource types of access entries with a meaning (platform notes §2.4).
RESOURCE_TYPES = ("system", "files", "blobs", "chunks")


@routes.get("/system/services")
@responds(200, list[str])
async def system_services(request: web.Request) -> web.Response:
    """Lists the names of the services permissions are granted on (public)."""
    return json_response(list(dict.fromkeys((*REFERENCE_SERVICES, *authz.service_names()))))


@routes.get("/system/resources")
@responds(200, list[str])
async def system_resources(request: web.Request) -> web.Response:
    """Lists the resource types of access entries with a meaning: system, files, blobs, chunks (public)."""
    return json_response(list(RESOURCE_TYPES))


@routes.get("/openapi.json")
@responds(200, dict[str, Any])
async def openapi(request: web.Request) -> web.Response:
    """OpenAPI description of the operations this service implements."""
    settings = request.app[SETTINGS]
    guard = authz.refusals_of if settings.security_enabled else None
    return json_response(describe(request.app, bool(settings.api_token), guard))
