"""Routes of the backends' observed state: ``GET /state``.

What the reconciler (``projections.reconciler``) last observed of every grouped
backend, from the read model (``projections.runtime``); the same state shows in
the runtime fields of ``GET /backends`` and ``/backends/{id}``.
"""

from __future__ import annotations

from aiohttp import web

from chainloom.web.bodies import json_response
from chainloom.web.keys import RUNTIME_QUERIES
from chainloom.web.openapi import responds
from chainloom.web.schemas import BackendRuntimeState

routes = web.RouteTableDef()


@routes.get("/state")
@responds(200, list[BackendRuntimeState])
async def state(request: web.Request) -> web.Response:
    """The runtime state of every backend in a group, as the reconciler last observed it: the models its
    groups declare for it, the models it holds, and the last error talking to it (omitted when none).
    Empty before the first cycle and when no backend is in a group."""
    return json_response(await request.app[RUNTIME_QUERIES].state_json())
