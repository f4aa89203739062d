"""The console (``/console``): the operator's web page, served as files from ``web/console_assets``.

No build step: the page is plain HTML, CSS and ES modules, loaded as they are. The page itself carries no
data and no credential; every figure it shows comes from the public API, called by the browser with the
caller's own credential (the ``auth_token`` cookie of ``/ui/login``, or the API key the operator types in),
so it shows exactly what that caller may see. The one thing the server fills in is how calls are
authorized here (``security``, ``api-key`` or ``open``), so the page knows whether to ask for a sign-in
before its first call.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from aiohttp import web

from chainloom.infra.settings import Settings
from chainloom.web.keys import SETTINGS
from chainloom.web.openapi import undocumented

ASSETS = Path(__file__).parent / "console_assets"
# The page runs our scripts only, talks to this origin only, and is never framed (clickjacking).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (cheap: a 304 by ETag), so an upgraded service never runs yesterday's script.
    "Cache-Control": "no-cache",
}

routes = web.RouteTableDef()


def access_of(settings: Settings) -> str:
    if settings.security_enabled:
        return "security"
    return "api-key" if settings.api_token else "open"


@lru_cache(maxsize=4)
def _page(access: str) -> bytes:
    return (ASSETS / "index.html").read_text(encoding="utf-8").replace("{{access}}", access).encode()


@routes.get("/console")
@routes.get("/console/")
@undocumented
async def console_page(request: web.Request) -> web.Response:
    """The console's page (its views are ``#/<view>`` fragments of this one address)."""
    page = _page(access_of(request.app[SETTINGS]))
    return web.Response(body=page, content_type="text/html", charset="utf-8", headers=_HEADERS)


@routes.get("/console/{asset:.+}")
@undocumented
async def console_asset(request: web.Request) -> web.StreamResponse:
    """A script, style or view of the console: only files of ``console_assets``, never a path out of it."""
    name = request.match_info["asset"]
    if name in ("", "index.html"):
        return await console_page(request)
    path = (ASSETS / name).resolve()
    if ASSETS.resolve() not in path.parents or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=_HEADERS)
