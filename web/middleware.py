"""Cross-cutting concerns: request ids (responses and logs), the API token, and URL values at the boundary."""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import uuid

from aiohttp import web

from chainloom.commands.base import CommandContext
from chainloom.domain.errors import TokenRejected
from chainloom.domain.storable import check_storable
from chainloom.infra.version import node_instance_id
from chainloom.web.api_surface import root_path

REQUEST_ID_HEADER = "X-Request-ID"
# Which process answered (its /version nodeInstanceID): with several workers, any of them may.
NODE_HEADER = "X-Chainloom-Node"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PUBLIC_PATHS = frozenset({"/health", "/ready", "/version"})
# Webhook senders (GitHub …) cannot send our key: a delivery without one goes on,
# marked, and is accepted only if its mapping checks signatures and it verifies.
SIGNED_PATHS = frozenset({"/ingest"})

REQUEST_ID = web.RequestKey("request_id", str)
ACTOR = web.RequestKey("actor", str)
SIGNATURE_REQUIRED = web.RequestKey("signature_required", bool)

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record emitted while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The access log names its request itself (it is written once the request's context has ended).
        record.request_id = getattr(record, "request_id", None) or current_request_id.get()
        return True


@web.middleware
async def request_id_middleware(request: web.Request, handler) -> web.StreamResponse:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = offered if _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = current_request_id.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        current_request_id.reset(token)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
        response.headers[NODE_HEADER] = node_instance_id()
    return response


def offered_token(request: web.Request) -> str:
    """The key a client sent: ``X-API-Key`` (a ``Bearer `` prefix tolerated), else ``Authorization: Bearer``."""
    offered = request.headers.get("X-API-Key", "").strip()
    if not offered:
        offered = request.headers.get("Authorization", "").strip()
        if offered[:7].lower() != "bearer ":
            return ""
    if offered[:7].lower() == "bearer ":
        offered = offered[7:].strip()
    return offered


CONFLICTING_CREDENTIALS = (
    "conflicting credentials: X-API-Key and Authorization: Bearer carry different tokens; send one"
)


def conflicting_credentials(request: web.Request) -> bool:
    """Whether a request carries two credentials that disagree: ``X-API-Key`` and ``Authorization: Bearer`` with
    different tokens. Which one the caller meant is unknowable, so neither is taken (one of them is wrong). An
    ``Authorization`` of another scheme (a proxy's Basic credentials, say) is not ours and is left alone."""
    key = request.headers.get("X-API-Key", "").strip()
    scheme, _, bearer = request.headers.get("Authorization", "").strip().partition(" ")
    if not key or scheme.lower() != "bearer":
        return False
    if key[:7].lower() == "bearer ":
        key = key[7:].strip()
    # Header bytes that are not UTF-8 arrive as surrogate escapes: compare the bytes as sent.
    sent = key.encode("utf-8", "surrogateescape"), bearer.strip().encode("utf-8", "surrogateescape")
    return not hmac.compare_digest(*sent)


def token_middleware(token: str):
    """Require the API key (``X-API-Key`` or ``Authorization: Bearer``) on every route but /health and /version.

    A webhook delivery to /ingest without a key goes on to be judged by its signature.
    """
    expected = token.encode()

    def matches(offered: str) -> bool:
        # Header bytes that are not UTF-8 arrive as surrogate escapes: compare the bytes as sent.
        return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), expected)

    @web.middleware
    async def check_token(request: web.Request, handler) -> web.StreamResponse:
        path = root_path(request)  # /api/health is /health
        if path in PUBLIC_PATHS or path == "/console" or path.startswith("/console/"):
            return await handler(request)  # the console's page and assets: its API calls carry the key
        if path not in SIGNED_PATHS and conflicting_credentials(request):  # a sender's own header at /ingest
            raise TokenRejected(CONFLICTING_CREDENTIALS)
        offered = offered_token(request)
        if offered and path in SIGNED_PATHS and "X-API-Key" not in request.headers:
            if not matches(offered):
                offered = ""  # a sender's own Authorization header, not our key: its signature decides
        if not offered and path in SIGNED_PATHS:
            request[ACTOR] = "webhook"
            request[SIGNATURE_REQUIRED] = True
            return await handler(request)
        if not offered:
            raise TokenRejected("missing API key: send it in the X-API-Key header or as Authorization: Bearer")
        if not matches(offered):
            raise TokenRejected("invalid API key")
        request[ACTOR] = "api-key"
        return await handler(request)

    return check_token


@web.middleware
async def url_values_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Path and query values are data too (names, paths, ids a store is asked for): text no store can
    hold (NUL, unpaired surrogates) is refused with 422 naming the parameter, on every route alike."""
    for name, value in request.match_info.items():
        check_storable(value, name)
    for name, value in request.query.items():
        check_storable(name, "query parameter")
        check_storable(value, name)
    return await handler(request)


def command_context(request: web.Request) -> CommandContext:
    return CommandContext(
        actor=request.get(ACTOR, "anonymous"),
        request_id=request.get(REQUEST_ID, ""),
        signature_required=request.get(SIGNATURE_REQUIRED, False),
    )
