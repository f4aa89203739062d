"""The one cursor pagination of list endpoints: newest first, cursor = RFC3339Nano ``createdAt``.

A page holds the rows created strictly before the cursor; the next cursor is
the ``createdAt`` of the last row returned. No cursor means "now".
"""

from __future__ import annotations

from dataclasses import dataclass

from chainloom.domain.errors import BadRequest, Unprocessable
from chainloom.infra.timefmt import NS_MAX, clamp_ns, parse_ns

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    before_ns: int = NS_MAX

    @classmethod
    def parse(cls, limit: str | None, cursor: str | None) -> Page:
        page_limit = DEFAULT_LIMIT
        if limit:
            try:
                page_limit = int(limit)
            except ValueError:
                raise Unprocessable(
                    "serverops: unprocessable entity: invalid limit format, expected integer", param="limit"
                ) from None
            if page_limit < 1:
                raise Unprocessable("serverops: unprocessable entity: limit must be positive", param="limit")
            if page_limit > MAX_LIMIT:
                raise BadRequest("limit exceeds maximum allowed value", param="limit")
        before = NS_MAX
        if cursor:
            try:
                before = clamp_ns(parse_ns(cursor))
            except ValueError:
                raise Unprocessable(
                    "serverops: unprocessable entity: invalid cursor format, expected RFC3339Nano", param="cursor"
                ) from None
        return cls(page_limit, before)

    @classmethod
    def lenient(cls, limit: str | None, cursor: str | None) -> Page:
        """The document API's listings (``/jobs/*``, ``/keywords``, platform notes §7.2): at most ``MAX_LIMIT``
        rows by default; a ``limit`` that is not a number from 1 to ``MAX_LIMIT`` is ignored; a bad cursor is
        400 ``invalid cursor parameter: …``."""
        page_limit = MAX_LIMIT
        if limit and limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT:
            page_limit = int(limit)
        before = NS_MAX
        if cursor:
            try:
                before = clamp_ns(parse_ns(cursor))
            except ValueError as error:
                raise BadRequest(f"invalid cursor parameter: {error}", param="cursor") from None
        return cls(page_limit, before)
