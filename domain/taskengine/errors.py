"""Why a chain run failed."""

from __future__ import annotations

from typing import Any

from chainloom.domain.errors import Unprocessable


class TaskError(Exception):
    """A handler, template or compose step failed; ``str()`` is the cause as the notes word it."""


class ChainFailed(Unprocessable):
    """A chain run failed (422 on /tasks, where the reference answers 500): the chain error, the run's id
    and the state captured until then."""

    def __init__(self, message: str, run_id: str = "", state: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.state = state if state is not None else []
