"""Authorization on every route: who is asking (a JWT, or the service API key) and whether they may.

With security on (``CHAINLOOM_SECURITY_ENABLED``) every route needs a credential but the public ones:

- **Which credential**: ``X-API-Key`` (a ``Bearer `` prefix tolerated), else ``Authorization: Bearer``,
  else the ``auth_token`` cookie, else an ``Authorization`` header taken whole (as the reference does).
  ``X-API-Key`` and ``Authorization: Bearer`` with different tokens are refused (401): one of them is wrong.
  The service API key (``CHAINLOOM_API_TOKEN``) acts as the admin; anything else must be a JWT that
  verifies (``infra.tokens``). None, or one that does not verify → ``TokenRejected`` (401 at the root,
  400 at ``/api``). A webhook delivery to ``/ingest`` without one of ours goes on to be judged by its
  mapping's signature, as without security.
- **What the route needs** (``requirement_of``, ``spec/platform.md`` §2.7): nothing, a valid token, or
  a level on a service, checked by ``domain.authorization`` (the token's entries first, the stored ones
  for a resource the token says nothing about). Not granted → ``PermissionDenied`` (403 at the root,
  401 at ``/api``). A path no route serves goes on to the router's 404/405: it reveals nothing.
- **Sliding refresh**: a request with a ``User-Agent`` whose token expires within 20 minutes gets a fresh
  one (same claims) as the ``auth_token`` cookie, whatever its answer, streams included.

A request's caller is then ``request[IDENTITY]`` (the token's ``Claims``; None for the API key) and
``request[ACTOR]`` (the subject, or ``api-key``). With security off nothing is checked, as before: the
optional API key alone guards the routes (``web.middleware.token_middleware``), every caller acts as the
admin, and ``request.get(IDENTITY)`` is None.

A token is verified once per process (``infra.tokens`` remembers its claims and looks at its expiry on
every use), so an authorised request whose token decides costs look-ups, not an HMAC.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import hdrs, web

from chainloom.domain.authorization import authorized, resource_candidates, service_candidates
from chainloom.domain.errors import PermissionDenied, TokenRejected
from chainloom.domain.identity import SERVER, Permission
from chainloom.infra.settings import Settings
from chainloom.infra.tokens import Claims
from chainloom.web.keys import IDENTITY_QUERIES, SETTINGS, TOKENS
from chainloom.web.middleware import (
    ACTOR,
    CONFLICTING_CREDENTIALS,
    SIGNATURE_REQUIRED,
    SIGNED_PATHS,
    conflicting_credentials,
    token_middleware,
)

logger = logging.getLogger(__name__)

IDENTITY: web.RequestKey[Claims | None] = web.RequestKey("identity")
_REFRESHED: web.RequestKey[tuple[str, int]] = web.RequestKey("refreshed_token")  # (token, expires_at) to send

COOKIE = "auth_token"
SLIDE_WITHIN = 20 * 60  # seconds before its expiry from which a token is refreshed by the way
NO_TOKEN = (
    "invalid token claims: no token (send a JWT as Authorization: Bearer, in the auth_token cookie or as X-API-Key)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- what each route needs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """What a route needs: nothing (public), a valid token (``service`` None), or ``level`` on ``service``."""

    token: bool = True
    service: str | None = None
    level: Permission = Permission.VIEW

    @property
    def candidates(self) -> tuple[str, ...]:
        return service_candidates(self.service) if self.service else ()


PUBLIC = Requirement(token=False)
SIGNED_IN = Requirement()
ADMIN_ONLY = Requirement(service=SERVER, level=Permission.MANAGE)  # what a route nobody mapped needs

_PUBLIC_PATHS = frozenset(
    {
        "/health", "/ready", "/version", "/openapi.json",
        "/register", "/login", "/token_refresh", "/permissions", "/system/services", "/system/resources",
        "/ui/login", "/ui/logout", "/ui/register", "/ui/token_refresh",
    }
)  # fmt: skip
_SIGNED_IN_ROUTES = frozenset(
    {
        ("GET", "/ui/me"),
        ("PUT", "/files/{id}/name"),  # a rename is checked on the file alone (edit), no service check
    }
)
# The service of each area of paths (its first segment): reads need view, writes manage, but for _LEVELS.
_SERVICE_OF_AREA = {
    **dict.fromkeys(
        ("backends", "models", "groups", "group-by-name", "group-by-purpose", "backend-affinity", "model-affinity",
         "providers", "state", "queue", "execute", "embed", "defaultmodel", "supported"),
        "backendservice",
    ),
    **dict.fromkeys(("events", "raw-events", "mapping", "mappings", "ingest", "replay", "sync"), "eventservice"),
    **dict.fromkeys(("functions", "event-triggers", "executor"), "functionservice"),
    **dict.fromkeys(("taskchains", "chains", "tasks", "hooks", "openai"), "chainservice"),
    **dict.fromkeys(("v1", "chats"), "chatservice"),
    "users": "userservice",
    "access-control": "accessservice",
    **dict.fromkeys(("files", "folders"), "fileservice"),
    **dict.fromkeys(("index", "search", "keywords"), "indexservice"),
    **dict.fromkeys(("jobs", "leases"), "dispatchservice"),
    "telegram-frontends": "telegramservice",
    "activity": "activityservice",
    "log": "auditservice",  # the log by position (/log, /log/stream) and its digest (/log/digest): auditors
    # What an operator watches and does: /metrics, the projections' status with retry and skip, the relay.
    **dict.fromkeys(("metrics", "projections", "relay"), "auditservice"),
}  # fmt: skip
_LEVELS = {
    # Running a prompt, a chain or a completion reads configuration and writes none: view, as the
    # reference has it for POST /v1/chat/completions.
    ("POST", "/v1/chat/completions"): Permission.VIEW,
    ("POST", "/openai/{chainID}/v1/chat/completions"): Permission.VIEW,
    ("POST", "/execute"): Permission.VIEW,
    ("POST", "/embed"): Permission.VIEW,
    ("POST", "/tasks"): Permission.VIEW,
    ("POST", "/index"): Permission.EDIT,
    # Users are the admin's: listing or reading one needs manage too.
    ("GET", "/users"): Permission.MANAGE,
    ("GET", "/users/{id}"): Permission.MANAGE,
}


def service_names() -> list[str]:
    """Every service a route's requirement names (``GET /system/services``)."""
    return list(dict.fromkeys(_SERVICE_OF_AREA.values()))


def requirement_of(method: str, path: str) -> Requirement | None:
    """What the route ``method path`` (its root path, as the router has it: ``/groups/{id}``) needs;
    None for a route this table does not know (served as ``ADMIN_ONLY``: add it here)."""
    method = "GET" if method == "HEAD" else method  # a HEAD is the GET without its body
    if path in _PUBLIC_PATHS or path == "/console" or path.startswith("/console/"):
        # The console's page and assets reveal nothing; each API call it makes is authorized as any other.
        return PUBLIC
    if (method, path) in _SIGNED_IN_ROUTES:
        return SIGNED_IN
    service = _SERVICE_OF_AREA.get(path.split("/", 2)[1])
    if service is None:
        return None
    level = _LEVELS.get((method, path), Permission.VIEW if method == "GET" else Permission.MANAGE)
    return Requirement(service=service, level=level)


def refusals_of(method: str, path: str) -> tuple[int, ...]:
    """What the guard of a route may answer (for /openapi.json): nothing for a public route, 401 without a
    valid token, 403 without the permission."""
    requirement = requirement_of(method, path) or ADMIN_ONLY
    if not requirement.token:
        return ()
    return (401, 403) if requirement.service else (401,)


# -- credentials -------------------------------------------------------------------------------


def offered_credential(request: web.Request) -> str:
    """The credential a request carries (a JWT or the API key), by the precedence above; "" when none."""
    offered = request.headers.get("X-API-Key", "").strip()
    if offered:
        return offered[7:].strip() if offered[:7].lower() == "bearer " else offered
    authorization = request.headers.get("Authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE, "") or authorization


# -- the middleware ------------------------------------------------------------------------------


def access_middlewares(settings: Settings) -> list:
    """The middleware guarding the routes: authorization with security on; else, as before it, the optional
    API key alone (and a warning: the service is open to whoever reaches it)."""
    if settings.security_enabled:
        return [authorization_middleware(settings.api_token)]
    logger.warning(
        "security is off (CHAINLOOM_SECURITY_ENABLED=false): no route checks a user's token, every caller acts as"
        " the admin%s",
        "; the API key still guards the routes" if settings.api_token else "",
    )
    return [token_middleware(settings.api_token)] if settings.api_token else []


def authorization_middleware(api_key: str):
    expected_key = api_key.encode()

    def is_api_key(offered: str) -> bool:
        # Header bytes that are not UTF-8 arrive as surrogate escapes: compare the bytes as sent.
        return bool(expected_key) and hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), expected_key)

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is not None or match.route.resource is None:
            return await handler(request)  # no route: the router's 404 or 405
        path = match.route.resource.canonical
        requirement = requirement_of(request.method, path) or ADMIN_ONLY
        if not requirement.token:
            return await handler(request)
        if path not in SIGNED_PATHS and conflicting_credentials(request):  # a sender's own header at /ingest
            raise TokenRejected(CONFLICTING_CREDENTIALS)
        offered = offered_credential(request)
        if offered and is_api_key(offered):
            request[IDENTITY] = None
            request[ACTOR] = "api-key"
            return await handler(request)
        try:
            if not offered:
                raise TokenRejected(NO_TOKEN)
            claims = request.app[TOKENS].verify(offered)
        except TokenRejected:
            if path in SIGNED_PATHS and "X-API-Key" not in request.headers:
                # No credential of ours (a sender's own Authorization header, say): the signature decides.
                request[ACTOR] = "webhook"
                request[SIGNATURE_REQUIRED] = True
                return await handler(request)
            raise
        request[IDENTITY] = claims
        request[ACTOR] = claims.subject
        if requirement.service is not None and not await _granted(request, claims, requirement):
            raise PermissionDenied(f"service {requirement.service} is not authorized: authz: not authorized")
        _slide(request, claims)
        return await handler(request)

    return authorize


async def _granted(request: web.Request, claims: Claims, requirement: Requirement) -> bool:
    queries = request.app[IDENTITY_QUERIES]
    return await authorized(
        claims.permissions,
        requirement.candidates,
        requirement.level,
        lambda resource: queries.grants(claims.subject, resource),
    )


async def check_resource(request: web.Request, resource_type: str, resource_id: str, level: Permission) -> None:
    """The resource check of §2.5 (a file, a folder: ``[type, id]``) for the caller, on top of the route's
    service check; passes for the API key and with security off."""
    claims = request.get(IDENTITY)
    if claims is None:
        return
    queries = request.app[IDENTITY_QUERIES]
    if not await authorized(
        claims.permissions,
        resource_candidates(resource_type, resource_id),
        level,
        lambda resource: queries.grants(claims.subject, resource),
    ):
        raise PermissionDenied(
            f"unauthorized: user {claims.subject} lacks permission {level.label} for resource {resource_id}"
            f" type {resource_type}"
        )


# -- the cookie and the sliding refresh -------------------------------------------------------------


def set_token_cookie(response: web.StreamResponse, token: str, expires_at: int, *, secure: bool) -> None:
    """The ``auth_token`` cookie as UI clients get it: HttpOnly, SameSite=Strict, gone when the token expires."""
    response.set_cookie(
        COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
        expires=formatdate(expires_at, usegmt=True),
    )


def clear_token_cookie(response: web.StreamResponse) -> None:
    """The ``auth_token`` cookie emptied and expired (signing out)."""
    response.set_cookie(
        COOKIE, "", path="/", httponly=True, samesite="Strict", max_age=0, expires=formatdate(0, usegmt=True)
    )


def _slide(request: web.Request, claims: Claims) -> None:
    """A UI client's token close to its expiry: a fresh one for the rest of the request and as its cookie."""
    if "User-Agent" not in request.headers or claims.expires_at - time.time() > SLIDE_WITHIN:
        return
    tokens = request.app[TOKENS]
    try:
        token, expires_at = tokens.refresh(claims)
        request[IDENTITY] = tokens.verify(token)
    except Exception:  # the request goes on with the token it came with (the reference ignores failures too)
        logger.warning("sliding refresh of a token failed", exc_info=True)
        return
    request[_REFRESHED] = (token, expires_at)


async def _send_refreshed(request: web.Request, response: web.StreamResponse) -> None:
    refreshed = request.get(_REFRESHED)
    if refreshed is None or COOKIE in response.cookies:  # a handler's own cookie (sign-out) wins
        return
    set_token_cookie(response, *refreshed, secure=request.app[SETTINGS].cookie_secure)
    # The response's cookies went into its headers before this hook: this one goes in by hand.
    response.headers.add(hdrs.SET_COOKIE, response.cookies[COOKIE].OutputString())


def setup(app: web.Application) -> None:
    """Send a token refreshed on the way as the request's cookie, on whatever answer it gets."""
    app.on_response_prepare.append(_send_refreshed)
