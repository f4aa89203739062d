"""A read-only service (``chainloom serve --read-only``): it answers reads and refuses every write.

For an auditor's look at the read models as they stood at a point in the past
(``chainloom projections rebuild --until … --into DIR``, then ``chainloom serve
--read-only --data-dir DIR``), or a replica that must not change the store it
reads. Two guards, so that nothing this process does appends to the log:

- **The middleware** refuses every method but GET, HEAD and OPTIONS on a route
  that exists, before its handler runs: **405 Method Not Allowed**, in the
  contract's envelope, with ``Allow`` naming the read methods the route has
  (empty when it has none — RFC 9110's "disabled by configuration"). 405, not
  403: the refusal is the server's configuration for every caller alike, not a
  missing right, and 403 means "ask for the permission" to this API's clients
  (and to the ``/api`` surface, which turns it into 401). It sits after the
  authorization guard, so a caller without a credential still gets 401, and a
  path no route serves still gets the router's 404.
- **The log writer** (``ReadOnlyWriter``) refuses every decision and append, so
  a read path that would write (none should) fails loudly instead of writing.

What runs in such a process (``web/app.py``): the projection runner, which catches the read models up with
the log at start (``/ready`` is 200 once it has) and follows it after (a copy's log never moves; a replica's
does); the live event streams; ``GET /log/digest`` (the seals it has: a copy's came with its log). Not the
start-up seeding, the Kafka relay, the reconciler, the download job, the trigger dispatcher, the lease
reaper, the blob sweeper, the sealer: each would append, remove or seal (``read_only_jobs``).
Signing in is a write (a sign-in is recorded): with security on, an auditor uses the API key, or a token of
the live service when both share ``CHAINLOOM_JWT_SECRET``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from eventsourcing.persistence import StoredEvent

from chainloom.domain.errors import DomainError
from chainloom.infra.eventlog import Fence
from chainloom.infra.logwriter import Decided, LogWriter
from chainloom.infra.settings import Settings
from chainloom.web.errors import error_response

T = TypeVar("T")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WriteRefused(DomainError):
    """This process is read-only: it appends nothing to the log."""


def refusal(method: str) -> str:
    return (
        f"this service is read-only (chainloom serve --read-only): {method} is not allowed;"
        " only GET, HEAD and OPTIONS are answered"
    )


def _read_methods_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    methods = {route.method for route in resource} if resource is not None else set()
    return ", ".join(sorted(methods & READ_METHODS))


@web.middleware
async def read_only_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method in READ_METHODS or request.match_info.http_exception is not None:
        return await handler(request)  # a read; or no route: the router's 404 or 405
    return _refused(request, request.method)


def _refused(request: web.Request, method: str) -> web.Response:
    return error_response(405, refusal(method), headers={"Allow": _read_methods_of(request)})


@web.middleware
async def refused_writes_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A read that tried to write (``ReadOnlyWriter``): the same refusal, not an error of the read."""
    try:
        return await handler(request)
    except WriteRefused:
        return _refused(request, f"{request.method} {request.path} (it would write)")


def middlewares(settings: Settings) -> list[Any]:
    return [read_only_middleware, refused_writes_middleware] if settings.read_only else []


def read_only_jobs(settings: Settings) -> Settings:
    """The settings a read-only process runs its jobs by: every switch of a job that writes turned off."""
    if not settings.read_only:
        return settings
    return settings.model_copy(
        update={
            "reconciler": False, "triggers": False, "lease_reaper": False, "blob_sweeper": False, "sealer": False,
            "kafka_relay_in_serve": False, "telegram_bots": False,
        }
    )  # fmt: skip


class ReadOnlyWriter(LogWriter):
    """The log writer of a read-only process: every decision and append refused (``WriteRefused``)."""

    async def decide(
        self, decide: Callable[[Any], Decided[T]], metadata: Mapping[str, Any], fences: Sequence[Fence] = ()
    ) -> tuple[T, int | None]:
        raise WriteRefused("this service is read-only (chainloom serve --read-only): it appends nothing to the log")

    async def append(self, events: Sequence[StoredEvent]) -> list[int]:
        raise WriteRefused("this service is read-only (chainloom serve --read-only): it appends nothing to the log")
