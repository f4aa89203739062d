"""Routes about the service itself: /health, /version, /openapi.json."""

from __future__ import annotations

from aiohttp import web

from infra.version import VERSION
from web.bodies import json_response
from web.keys import SETTINGS
from web.openapi import describe

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: 200 with an empty body while the service runs."""
    return web.Response(status=200)


@routes.get("/version")
async def version(request: web.Request) -> web.Response:
    """The service's name and version."""
    return json_response({"name": "chainloom", "version": VERSION})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """OpenAPI description of the operations this service implements."""
    return json_response(describe(request.app, bool(request.app[SETTINGS].api_token)))
