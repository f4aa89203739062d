"""Routes about the service itself: /health, /ready, /version, /openapi.json."""

from __future__ import annotations

import asyncio
import os
import logging
from typing import Any

from aiohttp import web

from chainloom.infra.readstore import Fault
from chainloom.infra.version import VERSION, node_instance_id
from chainloom.web.bodies import json_response
from chainloom.web.errors import error_response
from chainloom.web.keys import PROJECTIONS, RELAY, SETTINGS
from chainloom.web.openapi import describe, fails, responds
from chainloom.web.schemas import Ready, Version

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()
_FAULTS_TIMEOUT = 2.0


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
    """Readiness: 200 while every read model follows the log; 503 naming the faulted ones."""
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
    held = ["projections"] if app[PROJECTIONS].holding else []
    relay = app.get(RELAY)
    if relay is not None and relay.holding:
        held.append("kafka-relay")
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


@routes.get("/openapi.json")
@responds(200, dict[str, Any])
async def openapi(request: web.Request) -> web.Response:
    """OpenAPI description of the operations this service implements."""
    return json_response(describe(request.app, bool(request.app[SETTINGS].api_token)))
