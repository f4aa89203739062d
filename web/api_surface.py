"""The ``/api`` surface: every route served a second time under ``/api``, for the older platform's clients.

Those clients (its UI, its Python document worker) are set up with a base URL ending in ``/api``
and expect that platform's conventions: the flat error body ``{"error": "<message>"}`` and its
status mapping (``spec/platform.md`` §1.5). Here the surface is one resource at ``/api`` that
resolves the rest of the path among the root routes — the same route, the same handler, so every
route added at the root is served under ``/api`` at once, and ``/openapi.json`` (which lists the
root routes) documents the root only. The translation of errors happens once, at the edge
(``web.errors.error_middleware``), by error class; which routes are of the Authorize kind (any error
of theirs is 403 there) is said here, once.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from yarl import URL

API_PREFIX = "/api"
# The reference's "Authorize" operations: at /api, any error of theirs is 403 (platform.md §1.5 rule 4).
AUTHORIZE_PATHS = frozenset({"/login", "/ui/login", "/token_refresh", "/ui/me", "/ui/token_refresh"})


class ApiSurface(web.AbstractResource):
    """Matches ``/api/<path>`` wherever the root router matches ``/<path>``, with the root's route."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        super().__init__()
        self._router = router

    @property
    def canonical(self) -> str:
        return API_PREFIX

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        raw_path = request.rel_url.raw_path
        if not raw_path.startswith(API_PREFIX + "/") or raw_path.startswith(API_PREFIX * 2 + "/"):
            return None, set()
        rooted = request.clone(rel_url=URL(raw_path[len(API_PREFIX) :], encoded=True))
        match = await self._router.resolve(rooted)
        refusal = match.http_exception
        if refusal is None:
            return match, {match.route.method}
        return None, set(getattr(refusal, "allowed_methods", ()))

    def url_for(self, **kwargs: str) -> URL:
        raise NotImplementedError("the /api surface has no URL of its own: build the root route's and prefix it")

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("the /api surface is not for sub-applications")

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"prefix": API_PREFIX}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0  # its routes are the root's: the route table lists each once

    def __iter__(self):
        return iter(())


def serve_under_api(app: web.Application) -> None:
    """Serve every route of ``app`` under ``/api`` too (root routes added later are served there as well)."""
    app.router.register_resource(ApiSurface(app.router))


def on_api_surface(request: web.Request) -> bool:
    path = request.rel_url.raw_path
    return path.startswith(API_PREFIX) and (len(path) == len(API_PREFIX) or path[len(API_PREFIX)] == "/")


def root_path(request: web.Request) -> str:
    """The route's path as the root has it (``/groups/{id}``), whichever surface it came in by; for a path
    no route matches, the path as sent, without ``/api``."""
    route = request.match_info.route
    if request.match_info.http_exception is None and route.resource is not None:
        return route.resource.canonical
    path = request.path
    return path[len(API_PREFIX) :] if on_api_surface(request) else path


def is_authorize_kind(request: web.Request) -> bool:
    return root_path(request) in AUTHORIZE_PATHS
