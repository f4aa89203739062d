"""The one error envelope, and the middleware that turns every failure into it.

``{"error": {"message", "type", "code", "param"?}}``; ``type`` and ``code``
follow from the status. A 5xx is a bug: it is logged with its traceback.

Under ``/api`` (``web.api_surface``) the same middleware, at the edge, says every error in the
older platform's form instead: ``{"error": "<message>"}`` with its statuses (``spec/platform.md``
§1.5) — decided by error class (a rejected token 400, a missing permission 401), any error of an
Authorize-kind route 403, and a GET of a path no route serves 404 with an empty body.
"""

from __future__ import annotations

import json
import logging
import math

from aiohttp import web
from multidict import CIMultiDict

from chainloom.domain.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PermissionDenied,
    TokenRejected,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UpstreamRefused,
)
from chainloom.projections.runner import ProjectionFaulted, ReadModelsBehind
from chainloom.web.api_surface import is_authorize_kind, on_api_surface

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


# The older platform's statuses for the classes where they differ from the root's (platform.md §1.5).
_API_STATUS_OF: dict[type[DomainError], int] = {
    TokenRejected: 400,  # "token problems → 400"
    PermissionDenied: 401,  # "authenticated but not authorized → 401"
}


class ErrorAnswer(web.Response):
    """An answer in the error envelope, knowing what the ``/api`` edge needs to say it in that surface's form."""

    def __init__(
        self, status: int, message: str, param: str | None = None, headers=None, refused: DomainError | None = None
    ) -> None:
        kind, code = _TYPE_AND_CODE.get(status, ("api_error", "unknown_error"))
        error = {"message": message, "type": kind, "code": code}
        if param:
            error["param"] = param
        super().__init__(text=_dumps({"error": error}), status=status, headers=headers, content_type="application/json")
        self.message = message
        self.refused = refused  # the refusal it says, when it says one (its class decides the status at /api)


def error_response(status: int, message: str, param: str | None = None, headers=None) -> web.Response:
    return ErrorAnswer(status, message, param, headers)


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
    response = await _answer(request, handler)
    return _in_api_form(request, response) if on_api_surface(request) else response


async def _answer(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        if isinstance(error, Unavailable):
            retry = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
            return error_response(503, error.message, error.param, headers=retry)
        return ErrorAnswer(status_of(error), error.message, error.param, refused=error)
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


def _in_api_form(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """An answer at ``/api`` as the older platform gives it: errors flat, with that platform's statuses."""
    if request.match_info.http_exception is not None and response.status in (404, 405):
        # No route for the path (or not for this method): the reference's router answers, not a handler.
        if request.method in ("GET", "HEAD") and response.status == 404:
            return web.Response(status=404)
        allow = {"Allow": response.headers["Allow"]} if "Allow" in response.headers else None
        return web.Response(status=405, text="Method Not Allowed", headers=allow)
    if not isinstance(response, ErrorAnswer):
        return response  # a success, or already in this form (an answer the idempotency layer made or replays)
    headers = CIMultiDict((k, v) for k, v in response.headers.items() if k.lower() not in _BODY_HEADERS)
    return web.Response(
        text=_dumps({"error": response.message}) + "\n",
        status=_api_status(request, response),
        headers=headers,
        content_type="application/json",
    )


_BODY_HEADERS = frozenset({"content-type", "content-length"})


def _api_status(request: web.Request, answer: ErrorAnswer) -> int:
    """platform.md §1.5 in its order: oversized 413; not authorized 401; any refusal of an Authorize-kind
    route 403 (an outage stays a 5xx); a rejected token 400; else the root's status."""
    if answer.status == 413:
        return 413
    if isinstance(answer.refused, PermissionDenied):
        return 401
    if answer.status < 500 and is_authorize_kind(request):
        return 403
    if answer.refused is not None:
        for cls in type(answer.refused).__mro__:
            if cls in _API_STATUS_OF:
                return _API_STATUS_OF[cls]
    return answer.status


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
