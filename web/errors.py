"""The one error envelope, and the middleware that turns every failure into it.

``{"error": {"message", "type", "code", "param"?}}``; ``type`` and ``code``
follow from the status. A 5xx is a bug: it is logged with its traceback.
"""

from __future__ import annotations

import json
import logging
import math

from aiohttp import web

from chainloom.domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UpstreamRefused,
)
from chainloom.projections.runner import ProjectionFaulted, ReadModelsBehind

logger = logging.getLogger(__name__)

_TYPE_AND_CODE = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authorization_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("api_error", "internal_error"),
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
}

class UnsupportedMediaType(DomainError):
    """The request body is in a media type this endpoint does not read."""


_STATUS_OF = {
    UnsupportedMediaType: 415,
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    TooLarge: 413,
    Unprocessable: 422,
    UpstreamRefused: 502,
    Unavailable: 503,
}


def error_response(status: int, message: str, param: str | None = None, headers=None) -> web.Response:
    kind, code = _TYPE_AND_CODE.get(status, ("api_error", "unknown_error"))
    error = {"message": message, "type": kind, "code": code}
    if param:
        error["param"] = param
    return web.json_response({"error": error}, status=status, headers=headers, dumps=_dumps)


def _dumps(value) -> str:
    # ASCII escapes: a message may quote input that is not valid Unicode text.
    return json.dumps(value, separators=(",", ":"))


def status_of(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS_OF:
            return _STATUS_OF[cls]
    return 422


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        if isinstance(error, Unavailable):
            retry = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
            return error_response(503, error.message, error.param, headers=retry)
        return error_response(status_of(error), error.message, error.param)
    except ProjectionFaulted as error:
        # A read model the command answers from is stopped at a poison event: waiting would not help.
        return error_response(503, str(error))
    except ReadModelsBehind as error:
        logger.warning("read-your-writes wait timed out: %s", error)
        return error_response(503, str(error), headers={"Retry-After": "1"})
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(error.status, _http_message(error), headers=headers)
    except ConnectionError:
        if not _client_gone(request):
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal error")
        # The client left before sending its whole body (or reading the answer): not a server error.
        # 400 (an incomplete request) is what the access log shows; nobody reads the answer.
        logger.info("client disconnected during %s %s", request.method, request.path)
        return error_response(400, "client disconnected before the request was complete")
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")


def _client_gone(request: web.Request) -> bool:
    """Whether the request's own connection is lost (not, say, a store's or a provider's)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _http_message(error: web.HTTPException) -> str:
    if error.status == 404:
        return "serverops: not found"
    if isinstance(error, web.HTTPMethodNotAllowed):
        return f"method {error.method} not allowed; allowed: {', '.join(sorted(error.allowed_methods))}"
    return error.text or error.reason
