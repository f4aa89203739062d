"""The access log as JSON fields (``CHAINLOOM_LOG_FORMAT=json``): one record per answered request.

Its fields say what an operator asks of a request — which one (``request_id``, also in
the ``X-Request-ID`` answer header), who (``actor``: a user id, ``api-key``, ``webhook``
or ``anonymous``), what (``method`` and the ``route`` template, never the path as sent:
paths carry ids and queries carry values), how it ended (``status``, ``duration_ms``) —
and nothing that may be a secret: no header, cookie, query value or body.
With the text format, aiohttp's own access log writes its lines as before.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from chainloom.infra.metrics import UNMATCHED
from chainloom.infra.settings import Settings
from chainloom.web.api_surface import root_path
from chainloom.web.middleware import ACTOR, REQUEST_ID, REQUEST_ID_HEADER


def route_of(request: web.BaseRequest) -> str:
    """The route template the request matched (``/groups/{id}``, also when it came in under ``/api``), or
    ``unmatched``: never the path as sent, which would make a series (or a logged value) per id. The access
    log and the request metrics name routes so."""
    match_info = getattr(request, "match_info", None)
    if match_info is None or match_info.http_exception is not None or match_info.route.resource is None:
        return UNMATCHED
    return root_path(request)  # type: ignore[arg-type]


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_of(request)
        duration_ms = round(time * 1000, 3)
        fields = {
            "request_id": request.get(REQUEST_ID) or response.headers.get(REQUEST_ID_HEADER),
            "actor": request.get(ACTOR, "anonymous"),
            "method": request.method,
            "route": route,
            "status": response.status,
            "duration_ms": duration_ms,
            "remote": request.remote,
        }
        self.logger.info("%s %s %d %.1fms", request.method, route, response.status, duration_ms, extra=fields)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def runner_options(settings: Settings) -> dict[str, Any]:
    """What ``web.AppRunner`` takes for the configured access log."""
    return {"access_log_class": JsonAccessLogger} if settings.log_format == "json" else {}
