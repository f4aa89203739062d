"""Why a chain run failed."""

from __future__ import annotations

from typing import Any

from chainloom.domain.errors import DomainError, Unavailable, Unprocessable, UpstreamRefused


class TaskError(Exception):
    """A handler, template or compose step failed; ``str()`` is the cause as the notes word it."""


class ChainFailed(Unprocessable):
    """A chain run failed (422 on /tasks, where the reference answers 500): the chain error, the run's id
    and the state captured until then."""

    def __init__(
        self, message: str, run_id: str = "", state: list[dict[str, Any]] | None = None, *, upstream: DomainError | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.state = state if state is not None else []
        self.upstream = upstream  # the backend or hook failure that ended the run, if one did

    def as_answer(self, message: str | None = None) -> DomainError:
        """What a client is answered: 503 (with the backend's Retry-After) or 502 when an LLM backend or a
        hook was unavailable or refused and so ended the run — a client may retry those — else 422."""
        text = self.message if message is None else message
        if isinstance(self.upstream, Unavailable):
            return Unavailable(text, retry_after=self.upstream.retry_after)
        if isinstance(self.upstream, UpstreamRefused):
            return UpstreamRefused(text)
        return Unprocessable(text, param=self.param)
