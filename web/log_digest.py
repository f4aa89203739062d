"""``GET /log/digest``: the last sealed position of the log's hash chain and its hash (``infra/seals.py``).

An auditor records the answer somewhere chainloom cannot write (a ticket, a notary, another system) and
later runs ``chainloom audit verify --digest POSITION:HASH``: if the log was rewritten anywhere up to that
position — an event altered, removed outside an erasure, inserted — the chain no longer leads to that
hash. The seal follows the log within the sealer's lag: ``head`` says how far the log itself is.
Guarded like ``/log`` (``view`` on ``auditservice`` with security on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.projections.sealer import SealerService
from chainloom.web.bodies import json_response
from chainloom.web.openapi import responds

routes = web.RouteTableDef()

# The digest as ``LogDigest`` has it (blocking work done in the app's pool): set by ``web.app``.
DIGEST: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("log_digest")
# This process's sealer, when it takes part in sealing (``/ready`` names it while it holds the lock).
SEALER = web.AppKey("sealer", SealerService)


class LogDigest(BaseModel):
    """``infra.seals.Digest.public``."""

    model_config = ConfigDict(populate_by_name=True)

    position: int = Field(
        ge=0, description="The last sealed position (the nid of the last sealed event); 0 while nothing is sealed."
    )
    hash: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="Its hash in the chain, sha256(previous hash ‖ canonical event) as hex; 64 zeros at position 0.",
    )
    sealed_at: datetime | None = Field(alias="sealedAt", description="When that position was sealed (UTC); null at 0.")
    head: int = Field(ge=0, description="The log's head: positions after `position` are not sealed yet (the lag).")


@routes.get("/log/digest")
@responds(200, LogDigest)
async def log_digest(request: web.Request) -> web.Response:
    """The log's hash chain up to its last sealed position: record it to verify the log against it later."""
    return json_response(await request.app[DIGEST]())
